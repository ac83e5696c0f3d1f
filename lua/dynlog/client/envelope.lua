--- What an event carries beside its type and payload: the time it was
-- appended and its metadata.
--
-- appended_at: milliseconds since the epoch (wall clock) when the event was
-- appended, a DynamoDB number. meta: a map of the caller's, with known keys
-- correlation_id, causation_id, trace_id (strings) and schema_version (a
-- positive integer), and free keys whose values are JSON-like. Both are new
-- attributes beside {pk, sk, type, log, payload}, which stay as they were.
--
-- Time ranges: since (inclusive) and till (exclusive), each milliseconds
-- since the epoch or an RFC 3339 text.
local core = require "dynlog.core"
local errors = require "dynlog.errors"
local timeutil = require "dynlog.base.timeutil"

local error, next, pairs, tonumber, tostring, type = error, next, pairs, tonumber, tostring, type
local math_floor, math_huge = math.floor, math.huge
local str_format, str_match, str_rep = string.format, string.match, string.rep
local is_binary, is_set, null = core.is_binary, core.is_set, core.null

local _M = {
  TIME = "appended_at",
  META = "meta",
  -- EventBridge's limit on an entry's TraceHeader.
  MAX_TRACE_ID = 500,
}

-- The largest time a ULID holds, 2^48 - 1 ms.
local MAX_ULID_TIME = 281474976710655

--- The wall clock in whole milliseconds since the epoch.
function _M.now_ms()
  return math_floor(core.now() * 1000)
end

local function invalid(message)
  return nil, errors.new("invalid_argument", message)
end

-- A JSON-like value: a string, a finite number, a boolean, null, or a table
-- of such values (a list, or string keys). Returns true or false, why.
local function json_like(v, path, depth)
  local t = type(v)
  if t == "string" or t == "boolean" or v == null then return true end
  if t == "number" then
    if v ~= v or v == math_huge or v == -math_huge then return false, path .. " is not a finite number" end
    return true
  end
  if t == "table" and core.is_number(v) then return true end
  if t ~= "table" or is_binary(v) or is_set(v) then
    return false, path .. " is a " .. (t == "table" and "binary or set" or t) .. ", not a JSON value"
  end
  if depth > 30 then return false, path .. " is nested too deep" end
  for k, x in pairs(v) do
    if type(k) ~= "string" and type(k) ~= "number" then return false, path .. " has a key that is a " .. type(k) end
    local ok, why = json_like(x, path .. "." .. tostring(k), depth + 1)
    if not ok then return false, why end
  end
  return true
end

local KNOWN_STRINGS = { "correlation_id", "causation_id", "trace_id" }

--- The metadata to store, or nil when there is none (nil or {}), or nil,
-- err (invalid_argument) for a value that is not metadata. A meta that is
-- not a table is the caller's mistake: raised at `level`.
function _M.check_meta(meta, at, level)
  at = at or ""
  if meta == nil then return nil end
  if type(meta) ~= "table" or is_binary(meta) or is_set(meta) then
    error(at .. "meta must be a table, got " .. type(meta), level and level + 1 or 2)
  end
  if next(meta) == nil then return nil end
  for _, k in pairs(KNOWN_STRINGS) do
    local v = meta[k]
    if v ~= nil and (type(v) ~= "string" or v == "") then
      return invalid(at .. "meta." .. k .. " must be a non-empty string, got " .. type(v))
    end
  end
  if meta.trace_id and #meta.trace_id > _M.MAX_TRACE_ID then
    return invalid(at .. "meta.trace_id is " .. #meta.trace_id .. " bytes; EventBridge takes at most "
      .. _M.MAX_TRACE_ID)
  end
  local sv = meta.schema_version
  if sv ~= nil and (type(sv) ~= "number" or sv < 1 or sv ~= math_floor(sv) or sv > 2 ^ 53) then
    return invalid(at .. "meta.schema_version must be a positive integer, got " .. tostring(sv))
  end
  local copy = {}
  for k, v in pairs(meta) do
    if type(k) ~= "string" or k == "" then
      return invalid(at .. "meta keys must be non-empty strings, got the " .. type(k) .. " " .. tostring(k))
    end
    local ok, why = json_like(v, "meta." .. k, 1)
    if not ok then return invalid(at .. why) end
    copy[k] = v
  end
  return copy
end

--- The item's envelope attributes set: appended_at (now, unless `time` is
-- given, or false for none) and meta.
function _M.stamp(item, meta, time)
  if time ~= false then item[_M.TIME] = time or _M.now_ms() end
  if meta then item[_M.META] = meta end
  return item
end

--- A time given as milliseconds since the epoch or as RFC 3339 text → ms,
-- or nil, message.
function _M.parse_time(v)
  if type(v) == "number" then
    if v ~= v or v == math_huge or v == -math_huge then return nil, "is not a finite number" end
    return math_floor(v)
  end
  if type(v) ~= "string" then return nil, "must be milliseconds since the epoch or an RFC 3339 text" end
  if str_match(v, "^%d+$") then return tonumber(v) end
  local seconds = timeutil.parse_rfc3339(v)
  if not seconds then
    return nil, "must be milliseconds since the epoch or an RFC 3339 text (2026-11-25T12:00:00Z), got " .. v
  end
  local fraction = str_match(v, "%d%d:%d%d:%d%d(%.%d+)")
  return seconds * 1000 + (fraction and math_floor(tonumber("0" .. fraction) * 1000) or 0)
end

-- The bounds of a time range in ULID sort keys: every ULID of a time at or
-- after `since` is greater than the first, every ULID of a time before
-- `till` less than the second (both exclusive, as after and before are).
function _M.ulid_after(since)
  if since <= 0 then return nil end
  if since - 1 > MAX_ULID_TIME then since = MAX_ULID_TIME + 1 end
  return core.ulid_encode(since - 1, str_rep("\255", 10))
end

function _M.ulid_before(till)
  if till < 0 then till = 0 end
  if till > MAX_ULID_TIME then return nil end
  return core.ulid_encode(till, str_rep("\0", 10))
end

--- The time of an event item in milliseconds, as time ranges read it: in
-- ulid mode its ULID's, in version mode its appended_at; nil when it has none.
function _M.time_of(item, sort_key)
  if sort_key == "ulid" then
    if type(item.sk) ~= "string" then return nil end
    return (core.ulid_decode(item.sk)) or nil
  end
  return tonumber(tostring(item[_M.TIME]))
end

--- The key of an event as a causation id: "<pk>/<sk>".
function _M.event_ref(ev)
  return ev.pk .. "/" .. (type(ev.sk) == "number" and str_format("%.0f", ev.sk) or tostring(ev.sk))
end

--- caused_by(ev [, extra]) -> the metadata of an event that `ev` (an event
-- as query, get or a handler gives it) caused: causation_id = ev's key,
-- correlation_id = ev's, or ev's key when it has none, trace_id carried
-- over; then the keys of `extra`.
function _M.caused_by(ev, extra)
  if type(ev) ~= "table" or type(ev.pk) ~= "string" or ev.sk == nil then
    error("caused_by: ev must be an event (with pk and sk)", 2)
  end
  if extra ~= nil and type(extra) ~= "table" then error("caused_by: extra must be a table", 2) end
  local ref = _M.event_ref(ev)
  local parent = type(ev.meta) == "table" and ev.meta or {}
  local meta = { causation_id = ref, correlation_id = parent.correlation_id or ref, trace_id = parent.trace_id }
  for k, v in pairs(extra or {}) do meta[k] = v end
  return meta
end

return _M
