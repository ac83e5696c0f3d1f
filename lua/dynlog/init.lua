--- dynlog: append-only event logs on Amazon DynamoDB.
-- This module is the entry point; the C core (`dynlog.core`) does signing,
-- ULIDs, JSON and HTTP, and the Lua modules beside this one build on it.
local core = require "dynlog.core"
local errors = require "dynlog.errors"

local rawset, require, setmetatable = rawset, require, setmetatable
local core_ulid, core_ulid_decode = core.ulid, core.ulid_decode

local _M = {
  _VERSION = core._VERSION,
  errors = errors,
  -- Values with no plain Lua equivalent, for payloads (see dynlog.marshal).
  null = core.null,          -- NULL; the same value as cjson.null
  array = core.array,        -- array(t): a list (L), even when empty
  binary = core.binary,      -- binary(bytes): B
  set = core.set,            -- set{...}: SS, NS or BS
  number = core.number,      -- number(text): N with exactly those digits
}

--- ulid() -> a new 26-character ULID, strictly greater than every ULID this
-- process made before, or nil, err if the random part overflowed (2^80 ULIDs
-- in one millisecond).
function _M.ulid()
  return errors.from_core(core_ulid())
end

--- ulid_time(s) -> the ULID's time in milliseconds since the epoch, or
-- nil, err (code "invalid_argument") when s is not a valid ULID.
function _M.ulid_time(s)
  if type(s) ~= "string" then error("dynlog.ulid_time: expects a string, got " .. type(s), 2) end
  return errors.from_core(core_ulid_decode(s))
end

--- caused_by(ev [, extra]) -> the metadata of an event caused by the event
-- ev (as query, get or a handler gives it): causation_id = ev's key
-- ("<pk>/<sk>"), correlation_id = ev's (or ev's key when it has none),
-- trace_id carried over, then the keys of extra. For append's opts.meta.
function _M.caused_by(ev, extra)
  if type(ev) ~= "table" or type(ev.pk) ~= "string" or ev.sk == nil then
    error("dynlog.caused_by: ev must be an event (with pk and sk)", 2)
  end
  if extra ~= nil and type(extra) ~= "table" then error("dynlog.caused_by: extra must be a table", 2) end
  return require("dynlog.client.envelope").caused_by(ev, extra)
end

--- new(opts) -> a client of one event table; see dynlog.client.
function _M.new(opts)
  return require("dynlog.client").new(opts)
end

--- rebuild(opts) -> summary, or nil, err: a read model projected again
-- from the feed into its table (new or the same), resumable, with an alias
-- readers follow once it has caught up; see dynlog.pipeline.rebuild.
function _M.rebuild(opts)
  return require("dynlog.pipeline.rebuild").rebuild(opts)
end

--- subscribe(opts) -> a catch-up subscription of the feed, not yet running
-- (sub:run(), sub:poll_once()); see dynlog.pipeline.subscription.
function _M.subscribe(opts)
  local sub = require("dynlog.pipeline.subscription")._new(opts, "dynlog.subscribe") -- raises at our caller's line
  return sub
end

--- upcasters() -> an empty registry of upcasters, for dynlog.new's
-- `upcasters` option; see dynlog.client.upcast.
function _M.upcasters()
  return require("dynlog.client.upcast").new()
end

--- marshal(v) -> v as an AttributeValue table; raises on values DynamoDB
-- cannot hold, naming their path. unmarshal(av [, numbers]) -> the plain
-- value, or nil, err. See dynlog.marshal for the type mapping.
function _M.marshal(v)
  return core.marshal(v)
end

function _M.unmarshal(av, numbers)
  return require("dynlog.marshal").unmarshal(av, numbers)
end

-- Submodules load on first use, so `require "dynlog"` stays cheap.
local lazy = { sigv4 = "dynlog.sigv4", json = "dynlog.json" }
return setmetatable(_M, {
  __index = function(t, name)
    local module = lazy[name]
    if not module then return nil end
    local value = require(module)
    rawset(t, name, value)
    return value
  end,
})
