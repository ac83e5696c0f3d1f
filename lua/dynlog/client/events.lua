--- The event log: append, append_batch, get, head, query, query_page.
-- These are methods of the client (dynlog.client mixes them in).
--
-- One event is one item: {pk = "<log>#<id>#stream", sk = <ULID string or
-- version number>, type, log, payload}, where payload.id == id. Every write
-- carries attribute_not_exists(pk), so no event is ever overwritten.
local concurrent = require "dynlog.transport.concurrent"
local core = require "dynlog.core"
local envelope = require "dynlog.client.envelope"
local errors = require "dynlog.errors"
local eventkey = require "dynlog.client.eventkey"
local options = require "dynlog.base.options"
local upcast_apply = require("dynlog.client.upcast").apply

local error, ipairs, next, pairs, pcall, rawget, setmetatable, tonumber, tostring, type =
  error, ipairs, next, pairs, pcall, rawget, setmetatable, tonumber, tostring, type
local debug_getinfo = debug.getinfo
local math_floor, math_huge, math_min, math_random = math.floor, math.huge, math.min, math.random
local str_find, str_format, str_gsub, str_match = string.find, string.format, string.gsub, string.match
local attribute_map, array, item_size = core.attribute_map, core.array, core.item_size
local core_ulid, utf8_valid = core.ulid, core.utf8_valid
local base64_encode, base64_decode = core.base64_encode, core.base64_decode
local build_key, event_id_key = eventkey.build, eventkey.event_id_key

local _M = {}

local MAX_ITEM = 400 * 1024
local MAX_TRANSACTION_ITEMS = 100
local MAX_TRANSACTION_BYTES = 4 * 1024 * 1024
local CONDITION = "attribute_not_exists(pk)"
-- The largest version: every version up to it, and the one after each but
-- the last, is an integer that both Lua 5.4 and LuaJIT (whose numbers are
-- doubles) hold exactly.
local MAX_VERSION = 9007199254740991 -- 2^53 - 1

-- The options of each method, and the fields of the events of
-- append_batch and append_many.
local APPEND = options.known{ "expected_version", "event_id", "meta" }
local APPEND_MANY = options.known{ "concurrency" }
local MANY_EVENT = options.known{ "log", "id", "type", "payload", "expected_version", "sk", "event_id", "meta",
                                  "appended_at" }
local BATCH_EVENT = options.known{ "type", "payload", "event_id", "meta" }
local READ = options.known{ "consistent", "numbers" }
local QUERY = options.known{ "after", "before", "limit", "reverse", "consistent", "page_size", "numbers",
                             "since", "till" }
local QUERY_PAGE = options.known{ "after", "before", "limit", "reverse", "consistent", "page_size", "cursor",
                                  "numbers", "since", "till" }


-- Programming errors are blamed on the line that called dynlog: the first
-- function on the stack that is not of this module. outside_level() is
-- that function's level as error() counts it from outside_level's caller.
local SOURCE = debug_getinfo(1, "S").source

local function outside_level()
  local level = 3
  while true do
    local info = debug_getinfo(level, "S")
    if not info or info.source ~= SOURCE then return level - 1 end
    level = level + 1
  end
end

local function raise(message)
  error(message, outside_level())
end

local function invalid(message)
  return nil, errors.new("invalid_argument", message)
end

-- How a read returns numbers: the client's `numbers` unless the call says.
local NUMBERS = { string = true, exact = true }
local function numbers_of(client, opts)
  local numbers = opts and opts.numbers
  if numbers == nil then return client.numbers end
  if not NUMBERS[numbers] then raise('numbers must be nil, "string" or "exact", got ' .. tostring(numbers)) end
  return numbers
end

---------------------------------------------------------------------------
-- The client's sort-key mode and the table's
---------------------------------------------------------------------------

-- The DynamoDB type of sort keys in each mode, and what they hold.
local SORT_KEY_TYPE = { ulid = "S", version = "N" }
local HOLDS = { S = "ULIDs", N = "versions" }
local MODE_OF = { S = "ulid", N = "version" }

-- A table made for the other mode (or for something else): every request
-- of this client would fail on it, or read back keys it cannot use.
-- `table_type` is the table's sk type; `key` a key attribute other than sk
-- when that one is at fault.
local function schema_mismatch(client, table_type, key)
  local want = SORT_KEY_TYPE[client.sort_key]
  if key and key ~= "sk" then
    return errors.new("schema_mismatch", "table " .. client.table .. " is not a dynlog table: its key " .. key
      .. " is of type " .. tostring(table_type) .. " (dynlog tables have pk S and sk " .. want .. ")")
  end
  table_type = table_type or (want == "S" and "N" or "S")
  local message = "table " .. client.table .. " has sort keys of type " .. table_type .. ", but this client has"
    .. ' sort_key = "' .. client.sort_key .. '", whose sort keys are of type ' .. want .. " ("
    .. HOLDS[want] .. ")"
  if MODE_OF[table_type] then
    message = message .. '; the table was made for sort_key = "' .. MODE_OF[table_type] .. '"'
  end
  return errors.new("schema_mismatch", message)
end

-- DynamoDB's words for a key of the wrong type. AWS adds
-- "sk expected: N actual: S"; DynamoDB Local stops after "key".
local function key_type_mismatch(message)
  if type(message) ~= "string" then return false end
  if str_find(message, "Type mismatch for key", 1, true) then
    local key, expected = str_match(message, "Type mismatch for key (%S+) expected: (%a+)")
    return true, expected, key
  end
  return str_find(message, "Condition parameter type does not match schema type", 1, true) ~= nil
end

-- A request of the event log: client:_request to DynamoDB (`params` a
-- table, or a body encoded already), with a refusal for a key of the wrong
-- type told as what it is (a table of the other mode) instead of a
-- ValidationException.
local function send(client, operation, params, unwrap, numbers)
  local resp, err = client:_request("dynamodb", operation, params, unwrap, numbers)
  if resp ~= nil then return resp end
  local mismatch, table_type, key
  if err.code == "ValidationException" then
    mismatch, table_type, key = key_type_mismatch(err.message)
  elseif err.code == "TransactionCanceledException" and type(err.reasons) == "table" then
    for _, r in ipairs(err.reasons) do
      if type(r) == "table" and r.Code == "ValidationError" then
        mismatch, table_type, key = key_type_mismatch(r.Message)
        if mismatch then break end
      end
    end
  end
  if mismatch then return nil, schema_mismatch(client, table_type, key) end
  return nil, err
end

-- Checks the sort keys of items read back, which tell the table's type
-- even when no request failed (a version-mode client reading ULIDs would
-- do arithmetic on strings). With numbers = "string" every N reads back as
-- text: version-mode sort keys become numbers again here, and in ulid mode
-- a key of decimal digits that is not 26 characters long (a ULID's
-- length) was a number. Returns true, or nil, err.
local function check_sort_keys(client, items, numbers)
  local version, as_text = client.sort_key == "version", (numbers or client.numbers) == "string"
  for _, item in ipairs(items) do
    local sk = item.sk
    if version then
      if as_text then
        sk = tonumber(sk) or sk
        item.sk = sk
      end
      if type(sk) ~= "number" then return nil, schema_mismatch(client, "S") end
    elseif type(sk) ~= "string" or (as_text and #sk ~= 26 and str_find(sk, "^%d+$")) then
      return nil, schema_mismatch(client, "N")
    end
  end
  return true
end

---------------------------------------------------------------------------
-- Keys and items
---------------------------------------------------------------------------

-- `at` ("events[3]: ", or "") begins the messages about one event of many.
-- The partition key of a stream, or nil, err for an invalid log or id
-- (dynlog.client.eventkey owns the key). A log or id that is not a string is
-- the mistake of the line that called dynlog: eventkey.build raises it
-- unplaced here (its caller is pcall), and raise places it.
local function stream_key(log, id, at)
  local ok, pk, err = pcall(build_key, log, id, at)
  if not ok then raise(pk) end
  return pk, err
end

-- The payload stored: the caller's, with id filled in (a copy: the caller's
-- table is not changed).
local function event_payload(id, payload, at)
  if payload == nil then return { id = id } end
  if type(payload) ~= "table" then raise(at .. "payload must be a table, got " .. type(payload)) end
  if payload.id ~= nil then
    if payload.id ~= id then
      local given = payload.id
      local shown = type(given) == "string" and str_format("%q", given)
        or str_format("the %s %s (not a string)", type(given), tostring(given))
      return invalid(str_format("%spayload.id is %s, but the event is for id %q", at, shown, id))
    end
    return payload
  end
  local copy = {}
  for k, v in pairs(payload) do copy[k] = v end
  copy.id = id
  return copy
end

-- The item's size as DynamoDB counts it, checked against the limit; this
-- walks the whole item, and finds values DynamoDB cannot hold on the way.
local function check_size(item, at)
  at = at or ""
  local sized, size = pcall(item_size, item)
  if not sized then return invalid(at .. (tostring(size):gsub("^[^:]*:%d+: ", ""))) end
  if size > MAX_ITEM then
    return nil, errors.new("too_large", at .. "event is " .. size .. " bytes; DynamoDB items hold at most 409600")
  end
  return size
end

-- The envelope of an event (dynlog.client.envelope): its metadata checked
-- and copied, and the time it is appended (`time`: now when nil, none
-- when false). Returns the meta to store (nil for none), or nil, err.
local function event_meta(meta, at)
  if meta ~= nil and type(meta) ~= "table" then raise(at .. "meta must be a table, got " .. type(meta)) end
  local m, err = envelope.check_meta(meta, at)
  if err then return false, err end
  return m
end

-- The item of an event, or nil, err. `unsized`: leave the size to
-- put_body, which learns it more cheaply while encoding. `at` as for
-- stream_key. `meta` and `time` as for event_meta; `expires_at`: the expiry
-- of the event under the client's max_age, or nil.
local function event_item(log, id, pk, sk, event_type, payload, at, unsized, meta, time, expires_at)
  if type(event_type) ~= "string" then raise(at .. "type must be a string, got " .. type(event_type)) end
  if event_type == "" then return invalid(at .. "type must not be empty") end
  local ok, pos = utf8_valid(event_type)
  if not ok then return invalid(at .. "type is not valid UTF-8 (byte " .. tostring(pos) .. ")") end
  local p, err = event_payload(id, payload, at)
  if not p then return nil, err end
  local m, merr = event_meta(meta, at)
  if m == false then return nil, merr end
  local item = attribute_map(envelope.stamp({ pk = pk, sk = sk, type = event_type, log = log, payload = p,
                                              expires_at = expires_at }, m, time))
  if unsized then return item end
  local size, serr = check_size(item, at)
  if not size then return nil, serr end
  return item, size
end

---------------------------------------------------------------------------
-- Comparing a stored event with ours, after an ambiguous failure
---------------------------------------------------------------------------

local same

local function count_keys(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- Sets come back from DynamoDB in any order.
local function same_set(a, b)
  if #a ~= #b then return false end
  local used = {}
  for _, x in ipairs(a) do
    local found = false
    for j, y in ipairs(b) do
      if not used[j] and same(x, y) then used[j], found = true, true break end
    end
    if not found then return false end
  end
  return true
end

same = function(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  if core.is_set(a) or core.is_set(b) then return core.is_set(a) and core.is_set(b) and same_set(a, b) end
  if core.is_binary(a) or core.is_binary(b) then
    return core.is_binary(a) and core.is_binary(b) and a.value == b.value
  end
  if count_keys(a) ~= count_keys(b) then return false end
  for k, v in pairs(a) do
    if not same(v, b[k]) then return false end
  end
  return true
end

-- Our conditional put failed after an attempt whose outcome we could not
-- know: if the stored item is ours, that attempt wrote it. Returns true or false, or nil, err
-- when the item could not be read: then nobody knows whether the event was
-- written, and saying "conflict" could make a caller write it again.
local function written_by_us(client, item)
  -- numbers as Lua numbers, as ours are, whatever the client's `numbers`
  local stored, err = client:_get_item(item.pk, item.sk, true, "number")
  if err then
    return nil, errors.new(err.code, "the event may have been written (an attempt's outcome is unknown)"
      .. " and reading it back failed: " .. tostring(err.message),
      { status = err.status, request_id = err.request_id, retryable = err.retryable, ambiguous = true })
  end
  return stored ~= nil and same(stored, item)
end

---------------------------------------------------------------------------
-- Event ids: exactly-once appends
---------------------------------------------------------------------------

-- An event appended with an event id is written in one transaction with
-- the guard item of that id, {pk = "<log>#<id>#<event id>#eventid", sk =
-- GUARD_SK, event_id, type, key = the event's sk}, both on
-- attribute_not_exists(pk). The guard is kept for ever: the same event id
-- appended to the same stream again, at any time, finds it and answers with
-- the key of the event written (existing = true), writing nothing; another
-- event under that id is a conflict.
local GUARD_SK = eventkey.GUARD_SK

-- Gives the event item its event id (a new attribute, `event_id`) and
-- returns the guard item and the event's size, or nil, err. The size is
-- counted again: the event id is part of the item.
-- `who` ("append_many: ") begins raised messages.
local function with_event_id(client, item, log, id, event_id, at, who)
  at = at or ""
  local ok, gpk, gerr = pcall(event_id_key, log, id, event_id, at)
  if not ok then raise((who or "") .. gpk) end
  if not gpk then return nil, gerr end
  item.event_id = event_id
  local size, serr = check_size(item, at)
  if not size then return nil, serr end
  local guard = attribute_map({ pk = gpk, sk = GUARD_SK[client.sort_key], event_id = event_id,
                                type = item.type, key = item.sk })
  return guard, size
end

local function read_failed(err)
  return errors.new(err.code, "reading the event of an event id failed: " .. tostring(err.message),
    { status = err.status, request_id = err.request_id, retryable = err.retryable, ambiguous = err.ambiguous })
end

-- The key of the event that the guard of `item`'s event id guards, when
-- that event is `item` (same type and payload): {pk=, sk=, existing = true};
-- false when there is no guard; nil, conflict when the event id was used by
-- another event; nil, err when reading failed.
local function guarded_event(client, item, guard)
  local stored, err = client:_get_item(guard.pk, guard.sk, true, "number")
  if err then return nil, read_failed(err) end
  if not stored then return false end
  local ev
  ev, err = client:_get_item(item.pk, stored.key, true, "number")
  if err then return nil, read_failed(err) end
  if ev and ev.type == item.type and same(ev.payload, item.payload) then
    return { pk = item.pk, sk = stored.key, existing = true }
  end
  local what = ev and ("the event of type " .. str_format("%q", tostring(ev.type)) .. " at sort key "
    .. tostring(stored.key)) or ("an event no longer there (sort key " .. tostring(stored.key) .. ")")
  return nil, errors.new("conflict", str_format("event id %q is used already in %s, by %s", guard.event_id,
    item.pk, what) .. ": another type or payload under an event id is not the same event",
    { event_id = guard.event_id, key = { pk = item.pk, sk = stored.key } })
end

-- The keys of a batch's events that are there already, each found through
-- its event id: the list when every one is, false when none is, or nil,
-- conflict when only some are (a batch is written whole or not at all) or
-- one is another event.
local function existing_keys(client, items, guards)
  local keys, found, missing = {}, 0, nil
  for i, guard in ipairs(guards) do
    local key, err = guarded_event(client, items[i], guard)
    if key == nil then
      if #guards > 1 then
        err.message = "events[" .. i .. "]: " .. err.message
        err.index = i
      end
      return nil, err
    end
    if key then found, keys[i] = found + 1, key else missing = missing or i end
    if found > 0 and missing then
      return nil, errors.new("conflict", found .. " of the batch's event ids are used already, but events["
        .. missing .. "]'s (" .. str_format("%q", guards[missing].event_id) .. ") is not: this is not the batch"
        .. " written under them", { index = missing, event_id = guards[missing].event_id })
    end
  end
  if found == 0 then return false end
  return keys
end

-- Whether a cancelled transaction's reasons refuse a guard (actions from
-- `first` on).
local function guard_refused(err, first)
  if type(err.reasons) ~= "table" then return false end
  for i = first, #err.reasons do
    local r = err.reasons[i]
    if type(r) == "table" and r.Code == "ConditionalCheckFailed" then return true end
  end
  return false
end

local transact

-- Writes `items` with the guards of their event ids in one transaction.
-- When a guard is there already (a retry), or the outcome is unknown, the
-- events already written under those ids answer instead: their keys, or a
-- conflict. Returns the keys, or nil, err.
local function transact_guarded(client, items, guards)
  local n, all = #items, {}
  for i, item in ipairs(items) do
    guards[i].key = item.sk
    all[i], all[n + i] = item, guards[i]
  end
  local keys, err = transact(client, all)
  if keys then
    for i = n + 1, #all do keys[i] = nil end
    return keys
  end
  if err.code == "conflict" and err.index and err.index > n then err.index = nil end
  if not (err.ambiguous or guard_refused(err, n + 1)) then return nil, err end
  local existing, xerr = existing_keys(client, items, guards)
  if existing then return existing end
  if existing == nil then
    -- after a write of unknown outcome, a failed read leaves it unknown
    if err.ambiguous and xerr.code ~= "conflict" then xerr.ambiguous = true end
    return nil, xerr
  end
  return nil, err
end

-- One event with the guard of its event id: a key, or nil, err as put_event.
local function put_guarded(client, item, guard)
  local keys, err = transact_guarded(client, { item }, { guard })
  if keys then return keys[1] end
  if err.code == "conflict" and err.index == 1 then
    return nil, errors.new("conflict", "an event with sort key " .. tostring(item.sk) .. " already exists in "
      .. item.pk, { status = err.status, request_id = err.request_id })
  end
  return nil, err
end

---------------------------------------------------------------------------
-- Append
---------------------------------------------------------------------------

-- The PutItem request of an event, or nil, err for one that cannot be
-- stored. JSON text is never shorter than the item's size as DynamoDB
-- counts it (names and strings are quoted, numbers and binaries take more
-- room as text), so only a body over the limit needs the exact count.
local function put_body(client, item, at)
  local body, err = client:_encode({ TableName = client.table, Item = item, ConditionExpression = CONDITION })
  if not body then
    if at then err.message = at .. tostring(err.message) end
    return nil, err
  end
  if #body > MAX_ITEM then
    local sized, serr = check_size(item, at)
    if not sized then return nil, serr end
  end
  return body
end

local function put_event(client, item, body)
  if not body then
    local berr
    body, berr = put_body(client, item)
    if not body then return nil, berr end
  end
  local _, err = send(client, "PutItem", body)
  if not err then return { pk = item.pk, sk = item.sk } end
  if err.code == "ConditionalCheckFailedException" then
    -- After an attempt whose outcome is unknown (ours, or the transport's
    -- own unseen re-send: see client.lua), the event there may be ours.
    -- Only then: an identical event written by another command is a
    -- conflict like any other.
    if err.ambiguous then
      local ours, rerr = written_by_us(client, item)
      if ours == nil then return nil, rerr end
      if ours then return { pk = item.pk, sk = item.sk } end
    end
    return nil, errors.new("conflict", "an event with sort key " .. tostring(item.sk)
      .. " already exists in " .. item.pk, { status = err.status, request_id = err.request_id })
  end
  return nil, err
end

-- A version n + 1 must be stored and read back exactly: n is an integer
-- from 0 to MAX_VERSION - 1 (math.maxinteger would wrap to -2^63, and 2^53
-- as a float has no successor).
-- A number as its digits (LuaJIT would write 2^53 as 9.007199254741e+15).
local math_type = rawget(math, "type") -- Lua 5.4 only

local function digits(v)
  if type(v) == "number" and not (math_type and math_type(v) == "integer") and v == math_floor(v)
      and v - 1 ~= v then
    return str_format("%.0f", v)
  end
  return tostring(v)
end

local function check_expected(expected, at)
  if expected == nil or expected == "any" or expected == "no_stream" then return end
  if type(expected) ~= "number" or not (expected >= 0 and expected <= MAX_VERSION - 1)
      or expected ~= math_floor(expected) then
    raise((at or "") .. "expected_version must be an integer from 0 to " .. digits(MAX_VERSION - 1)
      .. ' (versions stop at 2^53 - 1), "no_stream" or "any"; got ' .. digits(expected))
  end
end

-- The versions after `version` for `count` events, or nil, err when the
-- stream has no room for them.
local function room_after(client, pk, version, count)
  if version + count <= MAX_VERSION then return true end
  return nil, errors.new("too_large", pk .. " is at version " .. digits(version) .. "; " .. count
    .. " more would pass the largest version, 2^53 - 1 (" .. digits(MAX_VERSION) .. ")", { table = client.table })
end

-- Under "any", a conflict means another writer took the version we read:
-- read the head again and retry, a bounded number of times.
local function with_conflict_retries(client, write)
  local err
  for attempt = 1, client.conflict_retries do
    local head, herr = client:head_version_of(write.pk)
    if not head then return nil, herr end
    local result
    result, err = write.at(head)
    -- an event id used by another event stays so at every version
    if result or err.code ~= "conflict" or err.event_id ~= nil then return result, err end
    client.sleep(math_random() * math_min(0.2, 0.005 * 2 ^ attempt))
  end
  return nil, err
end

-- Writes a version-mode item (its sk is set here) after `expected`. Under
-- "any", `head` is the version this stream is believed to be at (the last
-- one this caller wrote, say): tried first, without reading the head.
local function put_versioned(client, item, expected, head, guard)
  local function at(version)
    local ok, err = room_after(client, item.pk, version, 1)
    if not ok then return nil, err end
    item.sk = version + 1
    if guard then return put_guarded(client, item, guard) end
    return put_event(client, item)
  end
  if expected == "no_stream" then return at(0) end
  if type(expected) == "number" then return at(expected) end
  if head then
    local result, err = at(head)
    if result or err.code ~= "conflict" then return result, err end
  end
  return with_conflict_retries(client, { pk = item.pk, at = at })
end

-- expected_version means something only when sort keys are versions: in
-- ULID mode it is a mistake of the caller's, not a condition to ignore.
local function check_no_expected(expected, at)
  if expected ~= nil then
    raise((at or "") .. 'expected_version applies to version-mode clients (sort_key = "version");'
      .. " this client uses ULIDs")
  end
end

--- append(log, id, type, payload [, opts]) -> key {pk=, sk=}, or nil, err.
-- opts.expected_version (version mode): a number n writes exactly n + 1;
-- "no_stream" writes 1; "any" (the default) writes after the current head.
-- Versions are integers from 1 to 2^53 - 1.
-- opts.event_id (a string): the append is done once per event id and stream,
-- whenever it is retried; see append_identified.
function _M:append(log, id, event_type, payload, opts)
  options.check(opts, APPEND, "append")
  local pk, err = stream_key(log, id)
  if not pk then return nil, err end
  local expires = self:_expires_at(log)
  if opts and opts.event_id ~= nil then
    return self:_append_identified(log, id, pk, event_type, payload, opts, expires)
  end
  if self.sort_key == "ulid" then
    check_no_expected(opts and opts.expected_version)
    local sk, ucode, umessage = core_ulid()
    if not sk then return errors.from_core(nil, ucode, umessage) end
    local item, ierr = event_item(log, id, pk, sk, event_type, payload, "", true, opts and opts.meta, nil, expires)
    if not item then return nil, ierr end
    local body, berr = put_body(self, item)
    if not body then return nil, berr end
    local open, derr = self:_refuse_deleted(pk)
    if not open then return nil, derr end
    return put_event(self, item, body)
  end
  local expected = opts and opts.expected_version
  check_expected(expected)
  -- Validate once, before any read.
  local item, ierr = event_item(log, id, pk, 1, event_type, payload, "", false, opts and opts.meta, nil, expires)
  if not item then return nil, ierr end
  local open, derr = self:_refuse_deleted(pk)
  if not open then return nil, derr end
  return put_versioned(self, item, expected)
end

-- append with an event id: the event and its guard in one transaction.
-- Appended again (the same id and event), it answers with the key of the
-- event written, existing = true, and writes nothing; under every
-- expected_version, since the guard is looked at before the version.
function _M:_append_identified(log, id, pk, event_type, payload, opts, expires)
  local expected = opts.expected_version
  local sk = 1
  if self.sort_key == "ulid" then
    check_no_expected(expected)
    local ucode, umessage
    sk, ucode, umessage = core_ulid()
    if not sk then return errors.from_core(nil, ucode, umessage) end
  else
    check_expected(expected)
  end
  local item, ierr = event_item(log, id, pk, sk, event_type, payload, "", true, opts.meta, nil, expires)
  if not item then return nil, ierr end
  local guard, gerr = with_event_id(self, item, log, id, opts.event_id)
  if not guard then return nil, gerr end
  local open, derr = self:_refuse_deleted(pk)
  if not open then return nil, derr end
  if self.sort_key == "ulid" then return put_guarded(self, item, guard) end
  return put_versioned(self, item, expected, nil, guard)
end

---------------------------------------------------------------------------
-- Many appends in flight
---------------------------------------------------------------------------

local DEFAULT_CONCURRENCY = 16
local MAX_CONCURRENCY = 1024

local function check_concurrency(opts)
  local n = opts and opts.concurrency
  if n == nil then return DEFAULT_CONCURRENCY end
  if type(n) ~= "number" or n < 1 or n > MAX_CONCURRENCY or n ~= math_floor(n) then
    raise("append_many: concurrency must be an integer from 1 to " .. MAX_CONCURRENCY)
  end
  return n
end

local function indexed(i, err)
  err.message = "events[" .. i .. "]: " .. tostring(err.message)
  err.index = i
  return err
end

-- The item of events[i], or nil, err for an event that cannot be stored.
-- Raises, as append does, for arguments of the wrong type.
-- A sort key given with the event (ev.sk): a ULID in ulid mode, a version
-- number (a positive integer) in version mode; raises for the wrong type.
local function kept_key(client, ev, at)
  local sk = ev.sk
  if ev.expected_version ~= nil then
    raise("append_many: " .. at .. "sk and expected_version exclude each other")
  end
  if client.sort_key == "ulid" then
    if type(sk) ~= "string" then raise("append_many: " .. at .. "sk must be a ULID string, got " .. type(sk)) end
    if not core.ulid_decode(sk) then return invalid(at .. "sk " .. sk .. " is not a ULID") end
  else
    if type(sk) ~= "number" then raise("append_many: " .. at .. "sk must be a version number, got " .. type(sk)) end
    if not (sk >= 1 and sk <= MAX_VERSION and sk == math_floor(sk)) then
      return invalid(at .. "sk " .. digits(sk) .. " is not a version number (an integer from 1 to "
        .. digits(MAX_VERSION) .. ")")
    end
  end
  return sk
end

-- The item of an event of append_many with an event id, nil, and its guard.
local function many_identified(client, ev, pk, kept, at, time)
  local sk = kept or 1
  if client.sort_key == "ulid" then
    check_no_expected(ev.expected_version, at)
    local ucode, umessage
    if not kept then sk, ucode, umessage = core_ulid() end
    if not sk then return errors.from_core(nil, ucode, at .. tostring(umessage)) end
  else
    check_expected(ev.expected_version, at)
  end
  local item, ierr = event_item(ev.log, ev.id, pk, sk, ev.type, ev.payload, at, true, ev.meta, time,
                                client:_expires_at(ev.log))
  if not item then return nil, ierr end
  local guard, gerr = with_event_id(client, item, ev.log, ev.id, ev.event_id, at, "append_many: ")
  if not guard then return nil, gerr end
  return item, nil, nil, guard
end

-- The appended_at of an event of append_many: now (nil) for a new one. An
-- event kept at its sort key keeps its time too, so that appending it
-- again writes the same item: ev.appended_at when given (milliseconds), else
-- its ULID's time in ulid mode, and none (false) for a version.
local function kept_time(client, ev, kept, at)
  local t = ev.appended_at
  if t ~= nil then
    if not kept then raise("append_many: " .. at .. "appended_at is kept only with sk") end
    if type(t) ~= "number" then raise("append_many: " .. at .. "appended_at must be a number, got " .. type(t)) end
    if not (t >= 0 and t <= MAX_VERSION and t == math_floor(t)) then
      return invalid(at .. "appended_at must be milliseconds since the epoch, got " .. digits(t))
    end
    return t
  end
  if not kept then return nil end
  if client.sort_key == "ulid" then return (core.ulid_decode(kept)) end
  return false
end

local function many_item(client, events, i)
  local ev = events[i]
  local at = "events[" .. i .. "]: "
  if type(ev) ~= "table" then raise("append_many: " .. at .. "must be a table {log=, id=, type=, payload=}") end
  if not options.valid(ev, MANY_EVENT) then
    options.check(ev, MANY_EVENT, "append_many: events[" .. i .. "]", outside_level())
  end
  local pk, err = stream_key(ev.log, ev.id, at)
  if not pk then return nil, err end
  local kept
  if ev.sk ~= nil then
    kept, err = kept_key(client, ev, at)
    if not kept then return nil, err end
  end
  local time, terr = kept_time(client, ev, kept, at)
  if terr then return nil, terr end
  if ev.event_id ~= nil then return many_identified(client, ev, pk, kept, at, time) end
  if client.sort_key ~= "ulid" then
    check_expected(ev.expected_version, at)
    return event_item(ev.log, ev.id, pk, kept or 1, ev.type, ev.payload, at, false, ev.meta, time,
                      client:_expires_at(ev.log))
  end
  check_no_expected(ev.expected_version, at)
  -- The whole request is known: encode it now, once.
  local sk, ucode, umessage = kept, nil, nil
  if not sk then sk, ucode, umessage = core_ulid() end
  if not sk then return errors.from_core(nil, ucode, at .. tostring(umessage)) end
  local item, ierr = event_item(ev.log, ev.id, pk, sk, ev.type, ev.payload, at, true, ev.meta, time,
                                client:_expires_at(ev.log))
  if not item then return nil, ierr end
  local body, berr = put_body(client, item, at)
  if not body then return nil, berr end
  return item, nil, body
end

-- Events grouped by stream, each group in the order of the list.
local function stream_lanes(client, events, errs)
  local lanes, by_pk = {}, {}
  for i = 1, #events do
    local item, err, body, guard = many_item(client, events, i)
    if item then
      local lane = by_pk[item.pk]
      if not lane then
        lane = {}
        by_pk[item.pk] = lane
        lanes[#lanes + 1] = lane
      end
      lane[#lane + 1] = { index = i, item = item, body = body, expected = events[i].expected_version,
                          kept = events[i].sk ~= nil, guard = guard }
    else
      err.index = i -- its message names the event already
      errs[i] = err
    end
  end
  return lanes
end

-- An event whose sort key was given is known by that key: when the key is
-- taken by an identical event (the same list appended again, an import run
-- twice), that event is this one, already there.
local function put_kept(client, item, body)
  local key, err = put_event(client, item, body)
  if key or err.code ~= "conflict" then return key, err end
  local ours, rerr = written_by_us(client, item)
  if ours == nil then return nil, rerr end
  if ours then return { pk = item.pk, sk = item.sk, existing = true } end
  return nil, err
end

-- Tombstones read per BatchGetItem (its limit).
local TOMBSTONE_READS = 100

-- Whether each lane's stream takes appends (see _refuse_deleted_many): the
-- tombstones of all of them, read 100 to a request with up to `concurrency`
-- requests in flight, before any event is written. {[pk] = true | err}.
local function open_streams(client, lanes, concurrency)
  if not client.tombstones then return {} end
  local chunks = {}
  for first = 1, #lanes, TOMBSTONE_READS do
    local pks = {}
    for i = first, math_min(first + TOMBSTONE_READS - 1, #lanes) do pks[#pks + 1] = lanes[i][1].item.pk end
    chunks[#chunks + 1] = pks
  end
  local open, next_chunk = {}, 0
  concurrent.run(client, math_min(concurrency, #chunks), function(view)
    while next_chunk < #chunks do
      next_chunk = next_chunk + 1
      view:_refuse_deleted_many(chunks[next_chunk], open)
    end
  end)
  return open
end

-- Appends the events of one stream, one after the other. After a failure
-- the rest of the stream is not sent, so that no later event lands before
-- an earlier one that may still be retried. `known` is what open_streams
-- learnt of the stream's tombstone (nil: nothing, read it now).
local function append_lane(view, lane, results, errs, known)
  local failed, head
  -- A deleted stream (or a failure to tell) fails its first event.
  local open, derr = known, nil
  if known == nil then
    open, derr = view:_refuse_deleted(lane[1].item.pk)
  elseif known ~= true then
    open, derr = nil, known
  end
  if not open then
    failed = lane[1].index
    errs[failed] = indexed(failed, derr)
  end
  for _, entry in ipairs(lane) do
    local i = entry.index
    if failed then
      errs[i] = errs[i] or errors.new("aborted", "events[" .. i .. "]: not sent, because events[" .. failed
        .. "] of the same stream failed", { index = i, cause = errs[failed] })
    else
      local key, err
      if entry.guard and (entry.kept or view.sort_key == "ulid") then
        key, err = put_guarded(view, entry.item, entry.guard)
        head = key and key.sk
      elseif entry.guard then
        key, err = put_versioned(view, entry.item, entry.expected, head, entry.guard)
        head = key and key.sk
      elseif entry.kept then
        key, err = put_kept(view, entry.item, entry.body)
        head = key and key.sk
      elseif view.sort_key == "ulid" then
        key, err = put_event(view, entry.item, entry.body)
      else
        key, err = put_versioned(view, entry.item, entry.expected, head)
        head = key and key.sk
      end
      if key then results[i] = key else errs[i], failed = indexed(i, err), i end
    end
  end
end

--- append_many(events [, opts]) -> keys, or nil, err, keys.
-- events = { {log=, id=, type=, payload=, expected_version=, sk=}, ... }: each is
-- appended as append would, with up to opts.concurrency (default 16)
-- requests in flight. Events of one stream are written one after the
-- other, in the order of the list; streams go in parallel. keys[i] is the
-- key of events[i] when it was written. When some were not, err (code
-- "append_failed", see errors.items) has err[i], why events[i] was not: an
-- invalid event is never sent, and after a failed write the later events
-- of that stream are "aborted".
-- An event with `sk` is written at that sort key (a ULID, or a version
-- number in version mode) instead of a new one, still only where no event
-- is; an identical event already there counts as written, and its key has
-- existing = true. An event with `event_id` is written as append writes it
-- with that event id.
function _M:append_many(events, opts)
  if type(events) ~= "table" then error("append_many: events must be a list of events", 2) end
  options.check(opts, APPEND_MANY, "append_many")
  local concurrency = check_concurrency(opts)
  local results, errs = {}, {}
  local lanes = stream_lanes(self, events, errs)
  if #lanes > 0 then
    local open = open_streams(self, lanes, concurrency)
    local next_lane = 0
    concurrent.run(self, math_min(concurrency, #lanes), function(view)
      while next_lane < #lanes do
        next_lane = next_lane + 1
        local lane = lanes[next_lane]
        append_lane(view, lane, results, errs, open[lane[1].item.pk])
      end
    end)
  end
  if next(errs) == nil then return results end
  return nil, errors.items("append_failed", "events were not written", errs, results, #events), results
end

local function batch_items(log, id, pk, events, first_version, expires)
  if type(events) ~= "table" then raise("append_batch: events must be a list of {type=, payload=}") end
  local n = #events
  if n == 0 then return invalid("events must not be empty") end
  if n > MAX_TRANSACTION_ITEMS then
    return nil, errors.new("too_large", n .. " events; one transaction holds at most 100")
  end
  -- One time for the whole batch: its events are appended at once.
  local items, total, batch_time = {}, 0, envelope.now_ms()
  for i = 1, n do
    local ev = events[i]
    local at = "events[" .. i .. "]: "
    if type(ev) ~= "table" then raise("append_batch: " .. at .. "must be a table {type=, payload=}") end
    if not options.valid(ev, BATCH_EVENT) then
      options.check(ev, BATCH_EVENT, "append_batch: events[" .. i .. "]", outside_level())
    end
    local sk
    if first_version then
      sk = first_version + i - 1
    else
      local ucode, umessage
      sk, ucode, umessage = core_ulid()
      if not sk then return errors.from_core(nil, ucode, at .. tostring(umessage), { index = i }) end
    end
    local item, size_or_err = event_item(log, id, pk, sk, ev.type, ev.payload, at, false, ev.meta, batch_time,
                                         expires)
    if not item then
      size_or_err.index = i
      return nil, size_or_err
    end
    items[i], total = item, total + size_or_err
  end
  -- DynamoDB counts the items' sizes against the transaction's limit, not
  -- the request's bytes (escaping and base64 make those larger).
  if total > MAX_TRANSACTION_BYTES then
    return nil, errors.new("too_large", "the events are " .. total .. " bytes; one transaction holds at most "
      .. MAX_TRANSACTION_BYTES .. " (4 MB)")
  end
  return items
end

transact = function(client, items)
  local actions = {}
  for i, item in ipairs(items) do
    actions[i] = { Put = { TableName = client.table, Item = item, ConditionExpression = CONDITION } }
  end
  -- One token for all the attempts of this transaction: a retry of one
  -- that did commit is answered with success instead of running again.
  local token, tcode, tmessage = core_ulid()
  if not token then return errors.from_core(nil, tcode, "the transaction's token: " .. tostring(tmessage)) end
  local _, err = send(client, "TransactWriteItems", { TransactItems = actions, ClientRequestToken = token })
  if not err then
    local keys = {}
    for i, item in ipairs(items) do keys[i] = { pk = item.pk, sk = item.sk } end
    return keys
  end
  -- DynamoDB gives one reason per event: name the first event refused.
  if err.code == "TransactionCanceledException" and not err.retryable and type(err.reasons) == "table" then
    for i, r in ipairs(err.reasons) do
      if type(r) == "table" and r.Code == "ConditionalCheckFailed" and items[i] then
        return nil, errors.new("conflict", "events[" .. i .. "]: an event with sort key " .. tostring(items[i].sk)
          .. " already exists in " .. items[i].pk,
          { status = err.status, request_id = err.request_id, reasons = err.reasons, index = i })
      end
    end
    for i, r in ipairs(err.reasons) do
      if type(r) == "table" and r.Code and r.Code ~= "None" then
        err.message = "events[" .. i .. "]: " .. tostring(r.Code) .. ": " .. tostring(r.Message)
          .. " (" .. tostring(err.message) .. ")"
        err.index = i
        break
      end
    end
  end
  return nil, err
end

-- The guards of a batch's events (every event has an event id, or none
-- has), nil when none has, or nil, err. The events and their guards
-- together must fit one transaction.
local function batch_guards(client, log, id, events, items)
  local n, named = #items, 0
  for i = 1, n do
    if events[i].event_id ~= nil then named = named + 1 end
  end
  if named == 0 then return nil end
  if named < n then
    return nil, errors.new("invalid_argument", named .. " of " .. n .. " events have an event_id: a batch is"
      .. " retried whole, so every event of it has one, or none")
  end
  if 2 * n > MAX_TRANSACTION_ITEMS then
    return nil, errors.new("too_large", n .. " events with event ids; one transaction holds at most "
      .. MAX_TRANSACTION_ITEMS / 2 .. " (each event and its event id's guard are two of its 100 items)")
  end
  local guards, seen, total = {}, {}, 0
  for i, item in ipairs(items) do
    local at = "events[" .. i .. "]: "
    local event_id = events[i].event_id
    if seen[event_id] then
      return nil, errors.new("invalid_argument", at .. str_format("event_id %q is the one of events[%d] too",
        tostring(event_id), seen[event_id]), { index = i })
    end
    local guard, size = with_event_id(client, item, log, id, event_id, at, "append_batch: ")
    if not guard then
      size.index = i
      return nil, size
    end
    seen[event_id] = i
    guards[i], total = guard, total + size + item_size(guard)
  end
  if total > MAX_TRANSACTION_BYTES then
    return nil, errors.new("too_large", "the events and their event ids' guards are " .. total
      .. " bytes; one transaction holds at most " .. MAX_TRANSACTION_BYTES .. " (4 MB)")
  end
  return guards
end

local function append_batch(self, log, id, events, opts)
  local pk, err = stream_key(log, id)
  if not pk then return nil, err end
  local expires = self:_expires_at(log)
  if self.sort_key == "ulid" then
    check_no_expected(opts and opts.expected_version)
    local items, ierr = batch_items(log, id, pk, events, nil, expires)
    if not items then return nil, ierr end
    local open, derr = self:_refuse_deleted(pk)
    if not open then return nil, derr end
    local guards, gerr = batch_guards(self, log, id, events, items)
    if gerr then return nil, gerr end
    if guards then return transact_guarded(self, items, guards) end
    return transact(self, items)
  end
  local expected = opts and opts.expected_version
  check_expected(expected)
  local probe, perr = batch_items(log, id, pk, events, 1, expires)
  if not probe then return nil, perr end
  local open, derr = self:_refuse_deleted(pk)
  if not open then return nil, derr end
  local guards, gerr = batch_guards(self, log, id, events, probe)
  if gerr then return nil, gerr end
  local function at(version)
    local ok, rerr = room_after(self, pk, version, #probe)
    if not ok then return nil, rerr end
    for i, item in ipairs(probe) do item.sk = version + i end
    if guards then return transact_guarded(self, probe, guards) end
    return transact(self, probe)
  end
  if expected == "no_stream" then return at(0) end
  if type(expected) == "number" then return at(expected) end
  return with_conflict_retries(self, { pk = pk, at = at })
end

--- append_batch(log, id, events [, opts]) -> list of keys, or nil, err,
-- results (empty: nothing was written).
-- events = { {type=, payload=}, ... }: all are written or none, in one
-- transaction (at most 100 events and 4 MB). Events may carry event ids
-- (event_id: every event of the batch, or none): then at most 50 events;
-- the batch appended again finds them all and answers with the keys of the
-- events written (existing = true), writing nothing; a batch of which only
-- some event ids are used already is a conflict.
function _M:append_batch(log, id, events, opts)
  options.check(opts, APPEND, "append_batch")
  local keys, err = append_batch(self, log, id, events, opts)
  if keys then return keys end
  err.results = {}
  return nil, err, err.results
end

---------------------------------------------------------------------------
-- Reading
---------------------------------------------------------------------------

-- An event read, as the caller's code knows its type: brought to the latest
-- schema version by the client's upcasters (dynlog.client.upcast), or
-- returned as it is when there are none for its type. get, head, query
-- and query_page pass every event they return through it (and only those:
-- the checks of appends read stored events as they are); ev is a table
-- just decoded (or nil, or false), so it is changed in place.
local function upcast(client, ev, numbers)
  local reg = client.upcasters
  if not reg or not ev then return ev end
  return upcast_apply(reg, ev, numbers)
end

function _M:_get_item(pk, sk, consistent, numbers)
  numbers = numbers or self.numbers
  local resp, err = send(self, "GetItem", { TableName = self.table, Key = attribute_map({ pk = pk, sk = sk }),
                                            ConsistentRead = consistent == true }, true, numbers)
  if not resp then return nil, err end
  if resp.Item then
    local ok, kerr = check_sort_keys(self, { resp.Item }, numbers)
    if not ok then return nil, kerr end
  end
  return resp.Item
end

--- get(log, id, sk [, opts]) -> the event, nil when there is none, or nil, err.
function _M:get(log, id, sk, opts)
  options.check(opts, READ, "get")
  local pk, err = stream_key(log, id)
  if not pk then return nil, err end
  local ok, serr = self:_check_sort_key("sk", sk)
  if not ok then return nil, serr end
  local numbers = numbers_of(self, opts)
  local ev, gerr = self:_get_item(pk, sk, opts and opts.consistent, numbers)
  if gerr then return nil, gerr end
  return upcast(self, ev, numbers)
end

function _M:_check_sort_key(what, sk)
  if self.sort_key == "ulid" then
    if type(sk) ~= "string" then raise(what .. " must be a ULID string in ulid mode, got " .. type(sk)) end
  elseif type(sk) ~= "number" then
    raise(what .. " must be a version number in version mode, got " .. type(sk))
  end
  return true
end

local function latest(client, pk, consistent, numbers)
  local resp, err = send(client, "Query", {
    TableName = client.table, KeyConditionExpression = "pk = :pk",
    ExpressionAttributeValues = attribute_map({ [":pk"] = pk }),
    ScanIndexForward = false, Limit = 1, ConsistentRead = consistent,
  }, true, numbers)
  if not resp then return nil, err end
  local ok, kerr = check_sort_keys(client, resp.Items, numbers)
  if not ok then return nil, kerr end
  return resp.Items[1] or false
end

--- head(log, id [, opts]) -> the latest event, nil when the stream is empty,
-- or nil, err. Reads are strongly consistent unless opts.consistent == false.
function _M:head(log, id, opts)
  options.check(opts, READ, "head")
  local pk, err = stream_key(log, id)
  if not pk then return nil, err end
  local numbers = numbers_of(self, opts)
  local ev, qerr = latest(self, pk, not (opts and opts.consistent == false), numbers)
  if ev == nil then return nil, qerr end
  return upcast(self, ev or nil, numbers)
end

--- The latest version number of a stream (0 when empty), or nil, err.
function _M:head_version_of(pk)
  local ev, err = latest(self, pk, true, self.numbers)
  if ev == nil then return nil, err end
  return ev and ev.sk or 0
end

---------------------------------------------------------------------------
-- Query
---------------------------------------------------------------------------

local CURSOR_VERSION = 1

local function encode_cursor(pk, sk, reverse)
  local text = core.json_encode({ v = CURSOR_VERSION, pk = pk, sk = sk, r = reverse or false })
  return (str_gsub(str_gsub(base64_encode(text), "+", "-"), "/", "_"))
end

local function decode_cursor(client, cursor, pk, reverse)
  if type(cursor) ~= "string" then raise("query_page: cursor must be a string") end
  local text = base64_decode((str_gsub(str_gsub(cursor, "-", "+"), "_", "/")))
  local doc = text and core.json_decode(text)
  if type(doc) ~= "table" or doc.v ~= CURSOR_VERSION or type(doc.pk) ~= "string" then
    return invalid("cursor is not one that query_page returned")
  end
  if doc.pk ~= pk then return invalid("cursor belongs to another stream") end
  if doc.r ~= (reverse or false) then return invalid("cursor was made for the other direction") end
  local expected = client.sort_key == "ulid" and "string" or "number"
  if type(doc.sk) ~= expected then return invalid("cursor was made for the other sort-key mode") end
  return doc.sk
end

-- A time range (opts.since, inclusive; opts.till, exclusive: milliseconds
-- since the epoch or RFC 3339) folded into the query. In ulid mode it
-- narrows the sort-key bounds, since a ULID holds its time: the range costs
-- nothing more. In version mode it is a FilterExpression on appended_at:
-- DynamoDB reads (and bills) every event within the sort-key bounds, and
-- returns those in the range; pages may come back empty, and are followed.
-- Events without appended_at (written before dynlog kept it, or imported
-- with their versions) are outside every range in version mode.
local function time_range(client, q, opts)
  local bounds = {}
  for _, name in ipairs({ "since", "till" }) do
    local v = opts[name]
    if v ~= nil then
      local ms, why = envelope.parse_time(v)
      if not ms then raise(name .. " " .. why) end
      bounds[name] = ms
    end
  end
  local since, till = bounds.since, bounds.till
  if since == nil and till == nil then return end
  if since ~= nil and till ~= nil and not (since < till) then q.empty = true end
  if client.sort_key == "version" then
    q.since, q.till = since, till
    return
  end
  local after = since and envelope.ulid_after(since)
  local before = till and envelope.ulid_before(till)
  if after ~= nil and (q.after == nil or after > q.after) then q.after = after end
  if before ~= nil and (q.before == nil or before < q.before) then q.before = before end
end

-- The FilterExpression of a version-mode time range, its values put in
-- `values`; nil without a range.
local function time_filter(q, values)
  if q.since ~= nil and q.till ~= nil then
    values[":since"], values[":till"] = q.since, q.till
    return "#t >= :since AND #t < :till"
  elseif q.since ~= nil then
    values[":since"] = q.since
    return "#t >= :since"
  elseif q.till ~= nil then
    values[":till"] = q.till
    return "#t < :till"
  end
end

-- The Query request of one page.
local function query_params(client, pk, q, start_sk, page_limit)
  local values = { [":pk"] = pk }
  local cond = "pk = :pk"
  if q.after ~= nil and q.before ~= nil then
    cond = cond .. " AND sk BETWEEN :after AND :before"
    values[":after"], values[":before"] = q.after, q.before
  elseif q.after ~= nil then
    cond = cond .. " AND sk > :after"
    values[":after"] = q.after
  elseif q.before ~= nil then
    cond = cond .. " AND sk < :before"
    values[":before"] = q.before
  end
  local filter = time_filter(q, values)
  return {
    TableName = client.table, KeyConditionExpression = cond, FilterExpression = filter,
    ExpressionAttributeNames = filter and { ["#t"] = envelope.TIME } or nil,
    ExpressionAttributeValues = attribute_map(values),
    ScanIndexForward = not q.reverse, ConsistentRead = q.consistent == true,
    Limit = page_limit,
    ExclusiveStartKey = start_sk ~= nil and attribute_map({ pk = pk, sk = start_sk }) or nil,
  }
end

-- Reads a query's options and checks them. Returns the query state.
local function new_query(client, log, id, opts)
  opts = opts or {}
  local pk, err = stream_key(log, id)
  if not pk then return nil, err end
  local q = { client = client, pk = pk, after = opts.after, before = opts.before,
              reverse = opts.reverse == true, consistent = opts.consistent == true,
              limit = opts.limit, page_size = opts.page_size, numbers = numbers_of(client, opts),
              fetched = {}, pos = 1, returned = 0 }
  if q.after ~= nil then client:_check_sort_key("after", q.after) end
  if q.before ~= nil then client:_check_sort_key("before", q.before) end
  for _, name in ipairs({ "limit", "page_size" }) do
    local v = q[name]
    if v ~= nil and (type(v) ~= "number" or v < 1 or v ~= math_floor(v)) then
      raise(name .. " must be a positive integer")
    end
  end
  time_range(client, q, opts)
  -- BETWEEN with its bounds the wrong way round is a DynamoDB error; an
  -- empty range is simply empty.
  q.empty = q.empty or (q.after ~= nil and q.before ~= nil and not (q.after < q.before))
  return q
end

-- Fetches the next DynamoDB page into q.fetched. Returns true, or nil, err.
local function fetch_page(q, wanted)
  local client = q.client
  -- Bounds are exclusive but BETWEEN includes them: up to two extra items.
  local limit = q.page_size
  if wanted then limit = math_min(limit or math_huge, wanted + 2) end
  if limit == math_huge then limit = nil end
  local resp, err = send(client, "Query", query_params(client, q.pk, q, q.start, limit), true, q.numbers)
  if not resp then return nil, err end
  local ok, kerr = check_sort_keys(client, resp.Items, q.numbers)
  if not ok then return nil, kerr end
  q.fetched, q.pos = resp.Items, 1
  local last = resp.LastEvaluatedKey
  if last then
    ok, kerr = check_sort_keys(client, { last }, q.numbers)
    if not ok then return nil, kerr end
  end
  q.start = last and last.sk
  q.exhausted = last == nil
  return true
end

local function is_bound(q, ev)
  return (q.after ~= nil and ev.sk == q.after) or (q.before ~= nil and ev.sk == q.before)
end

-- The next event of the query, false at its end, or nil, err.
local function next_event(q)
  if q.empty or (q.limit and q.returned >= q.limit) then return false end
  while true do
    local ev = q.fetched[q.pos]
    if ev then
      q.pos = q.pos + 1
      if not is_bound(q, ev) then
        q.returned = q.returned + 1
        q.last_sk = ev.sk
        return ev
      end
    elseif q.exhausted then
      return false
    else
      local ok, err = fetch_page(q, q.limit and (q.limit - q.returned))
      if not ok then return nil, err end
    end
  end
end

local Events = {}
Events.__index = Events

-- for ev in events do … end: ends at the last event, or at an error, which
-- is then in events.err.
function Events.__call(self)
  if self.done then return nil end
  local q = self.q
  local ev, err = next_event(q)
  if ev then ev, err = upcast(q.client, ev, q.numbers) end
  if ev then return ev end
  self.done, self.err = true, err
  return nil
end

--- events:all() -> a list of every remaining event, or nil, err.
function Events:all()
  local list = {}
  for ev in self do list[#list + 1] = ev end
  if self.err then return nil, self.err end
  return list
end

--- query(log, id [, opts]) -> an iterator over the stream's events in order,
-- one DynamoDB page at a time. opts: after, before (exclusive sort-key
-- bounds), limit, reverse, consistent, page_size. After the loop,
-- `events.err` holds the error that ended it early, if any:
--   local events = c:query("users", "42")
--   for ev in events do … end
--   if events.err then … end
-- Invalid log or id: nil, err.
function _M:query(log, id, opts)
  options.check(opts, QUERY, "query")
  local q, err = new_query(self, log, id, opts)
  if not q then return nil, err end
  q.exhausted = false
  return setmetatable({ q = q }, Events)
end

--- query_page(log, id [, opts]) -> {items=, cursor=}, or nil, err.
-- opts as for query plus cursor (from the previous page); page_size (or
-- limit) is the number of events per page, default 100. cursor is nil on
-- the last page.
function _M:query_page(log, id, opts)
  options.check(opts, QUERY_PAGE, "query_page")
  opts = opts or {}
  local q, err = new_query(self, log, id, opts)
  if not q then return nil, err end
  local size = opts.page_size or opts.limit or 100
  q.limit, q.page_size = size + 1, math_min(size + 1, 1000)
  q.exhausted = false
  if opts.cursor ~= nil then
    local sk, cerr = decode_cursor(self, opts.cursor, q.pk, q.reverse)
    if sk == nil then return nil, cerr end
    q.start = sk
  end
  local items = array()
  for _ = 1, size + 1 do
    local ev, qerr = next_event(q)
    if ev == nil then return nil, qerr end
    if not ev then break end
    items[#items + 1] = ev
  end
  -- One event beyond the page tells whether there is a next page.
  local cursor
  if #items > size then
    items[#items] = nil
    cursor = encode_cursor(q.pk, items[#items].sk, q.reverse)
  end
  for i = 1, #items do
    local ev, uerr = upcast(self, items[i], q.numbers)
    if not ev then return nil, uerr end
  end
  return { items = items, cursor = cursor }
end

return _M
