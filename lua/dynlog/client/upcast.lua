--- Upcasters: an event's payload brought, on read, from the schema version
-- it was stored in to the latest one its type has, one version at a time.
--
--   local reg = dynlog.upcasters()
--   reg:add("signup", 1, function(payload, event)    -- version 1 → 2
--     payload.name, payload.fullName = payload.fullName, nil
--     return payload
--   end)
--   local c = dynlog.new{ table = "events", upcasters = reg }
--   -- or c:upcaster("signup", 1, function(payload, event) … end)
--
-- The schema version of a stored event is its meta.schema_version (an
-- integer; absent: 1). get, head, query and query_page (and so
-- handler.project) return the event with the latest version's payload and
-- that version in meta.schema_version; the stored item never changes.
-- The latest version of a type is one more than its highest `from`. An
-- event stored at that version or after it, and every event of a type with
-- no upcasters, is returned as it was read: no copy, no call.
--
-- An event that cannot be brought up (a step missing, an upcaster that
-- raised or returned no table, a stored version that is no positive
-- integer) is the read's failure: nil, err with code "upcast_failed",
-- naming the event, its type and the versions.
local errors = require "dynlog.errors"

local error, getmetatable, pcall, setmetatable, tonumber, tostring, type =
  error, getmetatable, pcall, setmetatable, tonumber, tostring, type
local math_floor = math.floor
local str_format = string.format

local _M = {}

local Registry = {}
Registry.__index = Registry

--- new() -> an empty registry.
function _M.new()
  return setmetatable({ types = {} }, Registry)
end

--- is(v) -> true when v is a registry made by new().
function _M.is(v)
  return type(v) == "table" and getmetatable(v) == Registry
end

local function is_version(v)
  return type(v) == "number" and v >= 1 and v == math_floor(v) and v < 2 ^ 53
end

--- add(reg, type, from, fn, where, level): registers the upcaster of
-- `type` from version `from` to from + 1. Raises, with error()'s `level`
-- counted from here, on a bad argument and on a second upcaster of the
-- same type and version.
function _M.add(reg, event_type, from, fn, where, level)
  if type(event_type) ~= "string" or event_type == "" then
    error(where .. ": type must be a non-empty string, got " .. (event_type == "" and "an empty one"
      or type(event_type)), level)
  end
  if not is_version(from) then
    error(where .. ": from_version must be an integer from 1 (the schema version the upcaster reads), got "
      .. tostring(from), level)
  end
  if type(fn) ~= "function" then
    error(where .. ": the upcaster must be a function(payload, event) returning the new payload, got "
      .. type(fn), level)
  end
  local chain = reg.types[event_type]
  if not chain then
    chain = { steps = {}, latest = 1 }
    reg.types[event_type] = chain
  end
  if chain.steps[from] then
    error(str_format("%s: an upcaster of %q from version %d to %d is registered already", where, event_type,
      from, from + 1), level)
  end
  chain.steps[from] = fn
  if from + 1 > chain.latest then chain.latest = from + 1 end
end

--- reg:add(type, from_version, fn) -> reg. fn(payload, event) returns the
-- payload of version from_version + 1.
function Registry:add(event_type, from, fn)
  _M.add(self, event_type, from, fn, "upcasters:add", 3)
  return self
end

--- reg:latest(type) -> the latest schema version of type: one more than
-- the highest from_version registered, 1 when it has no upcasters.
function Registry:latest(event_type)
  local chain = self.types[event_type]
  return chain and chain.latest or 1
end

-- The error of an event that cannot be brought up.
local function failed(ev, stored, latest, what, fields)
  local key = type(ev.key) == "table" and ev.key or ev
  local message = str_format("%s %s: event type %q stored at schema version %s (latest %d): %s",
    tostring(key.pk), tostring(key.sk), tostring(ev.type), tostring(stored), latest, what)
  fields = fields or {}
  fields.type, fields.stored_version, fields.latest = ev.type, stored, latest
  return nil, errors.new("upcast_failed", message, fields)
end

--- apply(reg, ev, numbers) -> ev, or nil, err. ev is changed in place: it
-- is a table just read (or a detail handed to c:upcast), the caller's
-- alone. numbers = "string" writes the resulting version as text, as the
-- read would have given it.
function _M.apply(reg, ev, numbers)
  local chain = reg.types[ev.type]
  if not chain then return ev end
  local latest = chain.latest
  local meta, stored = ev.meta, 1
  if meta ~= nil then
    if type(meta) ~= "table" then
      return failed(ev, "?", latest, "its meta is a " .. type(meta) .. ", not a map")
    end
    local v = meta.schema_version
    if v ~= nil then
      stored = tonumber(v)
      if not is_version(stored) then
        return failed(ev, tostring(v), latest, "that is not a schema version (an integer from 1)")
      end
    end
  end
  if stored >= latest then return ev end
  if meta == nil then
    meta = {}
    ev.meta = meta
  end
  local steps, payload = chain.steps, ev.payload
  -- payload.id is always the stream's id: read before an upcaster can change it.
  local id = type(payload) == "table" and payload.id or nil
  for from = stored, latest - 1 do
    local to = from + 1
    local fields = { from = from, to = to }
    local fn = steps[from]
    if not fn then
      return failed(ev, stored, latest, str_format("no upcaster from version %d to %d is registered", from, to),
        fields)
    end
    local ok, new = pcall(fn, payload, ev)
    if not ok then
      fields.cause = new
      return failed(ev, stored, latest, str_format("the upcaster from version %d to %d raised: %s", from, to,
        tostring(new)), fields)
    end
    if type(new) ~= "table" then
      return failed(ev, stored, latest, str_format("the upcaster from version %d to %d returned a %s, not the"
        .. " new payload (a table)", from, to, type(new)), fields)
    end
    if new.id == nil then
      new.id = id
    elseif new.id ~= id then
      return failed(ev, stored, latest, str_format("the upcaster from version %d to %d changed payload.id to %s",
        from, to, tostring(new.id)), fields)
    end
    payload = new
    ev.payload = new
    meta.schema_version = numbers == "string" and tostring(to) or to
  end
  return ev
end

return _M
