--- The partition key of an event: `<log>#<id>#stream`, one stream per log
-- and id. Every module that builds, reads or recognises it asks here.
--
--   local eventkey = require "dynlog.client.eventkey"
--   eventkey.build("users", "42")          --> "users#42#stream"
--   eventkey.parse("users#42#stream")      --> "users", "42"
--   eventkey.is_event({ pk = "users#42#stream" })   --> true
local core = require "dynlog.core"
local errors = require "dynlog.errors"

local error, tostring, type = error, tostring, type
local str_find, str_match, str_sub = string.find, string.match, string.sub
local utf8_valid = core.utf8_valid

local _M = {}

local SUFFIX = "#stream"
local TOMBSTONE_SUFFIX = "#tombstone"
local MAX_PARTITION_KEY = 2048
_M.MAX_BYTES = MAX_PARTITION_KEY

local function invalid(message)
  return nil, errors.new("invalid_argument", message)
end

-- `at` ("events[3]: ", or "") begins the messages about one event of many.
local function check_name(what, s, at)
  -- level 3: the caller of build
  if type(s) ~= "string" then error(at .. what .. " must be a string, got " .. type(s), 3) end
  if s == "" then return invalid(at .. what .. " must not be empty") end
  local ok, pos = utf8_valid(s)
  if not ok then return invalid(at .. what .. " is not valid UTF-8 (byte " .. tostring(pos) .. ")") end
  if str_find(s, "#", 1, true) then return invalid(at .. what .. " must not contain '#'") end
  return true
end

--- build(log, id [, at]) -> the partition key of the stream log/id, or nil,
-- err (invalid_argument: an empty log or id, one that is not UTF-8 or holds
-- '#'; too_large: a key beyond DynamoDB's 2048 bytes). `at` begins every
-- message ("events[3]: "). Raises, at the caller's line, when log or id is
-- not a string.
function _M.build(log, id, at)
  at = at or ""
  local ok, err = check_name("log", log, at)
  if not ok then return nil, err end
  ok, err = check_name("id", id, at)
  if not ok then return nil, err end
  local pk = log .. "#" .. id .. SUFFIX
  if #pk > MAX_PARTITION_KEY then
    return nil, errors.new("too_large", at .. "partition key is " .. #pk .. " bytes; DynamoDB allows 2048")
  end
  return pk
end

--- The partition key of the guard item of an event id: `<log>#<id>#<event
-- id>#eventid` (log and id hold no '#', so it names one stream and one event
-- id; it never ends in "#stream", so no reader takes it for an event), or
-- nil, err (invalid_argument: an empty event id, one that is not UTF-8 or
-- longer than MAX_EVENT_ID bytes; too_large: a key beyond 2048 bytes).
-- Raises, at the caller's line, when event_id is not a string. log and id
-- are checked already (build).
_M.MAX_EVENT_ID = 512
local EVENT_ID_SUFFIX = "#eventid"

function _M.event_id_key(log, id, event_id, at)
  at = at or ""
  if type(event_id) ~= "string" then error(at .. "event_id must be a string, got " .. type(event_id), 2) end
  if event_id == "" then return invalid(at .. "event_id must not be empty") end
  local ok, pos = utf8_valid(event_id)
  if not ok then return invalid(at .. "event_id is not valid UTF-8 (byte " .. tostring(pos) .. ")") end
  if #event_id > _M.MAX_EVENT_ID then
    return invalid(at .. "event_id is " .. #event_id .. " bytes; at most " .. _M.MAX_EVENT_ID)
  end
  local pk = log .. "#" .. id .. "#" .. event_id .. EVENT_ID_SUFFIX
  if #pk > MAX_PARTITION_KEY then
    return nil, errors.new("too_large", at .. "the event id's partition key is " .. #pk
      .. " bytes; DynamoDB allows 2048")
  end
  return pk
end

--- parse(pk) -> log, id of a key of the form build makes (a log and an id,
-- neither empty nor holding '#'), or nil for any other value.
function _M.parse(pk)
  if type(pk) ~= "string" then return nil end
  local log, id = str_match(pk, "^([^#]+)#([^#]+)#stream$")
  if not log then return nil end
  return log, id
end

-- The pk of an item ({pk = "..."}), or of the new image of a DynamoDB
-- Streams record ({dynamodb = {NewImage = {pk = {S = "..."}}}}).
local function pk_of(x)
  if type(x) ~= "table" then return nil end
  local ddb = x.dynamodb
  if type(ddb) == "table" then
    local image = ddb.NewImage
    local pk = type(image) == "table" and image.pk
    return type(pk) == "table" and pk.S or nil
  end
  return x.pk
end

--- is_event(item or record) -> true when the item (or the new image of the
-- stream record) has a pk that ends in "#stream": an event, as the trigger,
-- `dynlog tail` and `dynlog replay` tell events from the other items a table
-- may hold.
function _M.is_event(x)
  local pk = pk_of(x)
  return type(pk) == "string" and str_sub(pk, -#SUFFIX) == SUFFIX
end

-- The sort keys of the items beside the events: an event id's guard and a
-- stream's tombstone, in the table's sort-key type (ulid: S, version: N).
_M.GUARD_SK = { ulid = "eventid", version = 0 }
_M.TOMBSTONE_SK = { ulid = "tombstone", version = 0 }

--- tombstone(pk) -> the partition key of the tombstone of the stream whose
-- pk is given: "<log>#<id>#tombstone" (see dynlog.client.erasure). It does
-- not end in "#stream": no Query of a stream and no is_event sees it.
function _M.tombstone(pk)
  return str_sub(pk, 1, -#SUFFIX - 1) .. TOMBSTONE_SUFFIX
end

--- is_tombstone(item) -> true for a tombstone item (an unmarshalled image):
-- a pk that ends in "#tombstone" and the stream's pk in `stream`.
function _M.is_tombstone(item)
  local pk = type(item) == "table" and item.pk
  return type(pk) == "string" and str_sub(pk, -#TOMBSTONE_SUFFIX) == TOMBSTONE_SUFFIX
    and type(item.stream) == "string"
end

return _M
