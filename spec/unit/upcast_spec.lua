-- The registry of upcasters: registration and its checks, and the
-- bringing up of an event table, without DynamoDB.
local dynlog = require "dynlog"

local function client(opts)
  local o = { table = "events", region = "us-east-1", endpoint = "http://127.0.0.1:1" }
  for k, v in pairs(opts or {}) do o[k] = v end
  return dynlog.new(o)
end

local function noop(p) return p end

describe("upcasters", function()
  it("refuse a second upcaster of a type and version, at the caller's line", function()
    local reg = dynlog.upcasters():add("signup", 1, noop)
    local line = debug.getinfo(1, "l").currentline + 1
    local ok, err = pcall(function() reg:add("signup", 1, noop) end)
    assert.is_false(ok)
    assert.matches("upcast_spec.lua:" .. line .. ': upcasters:add: an upcaster of "signup" from version 1 to 2'
      .. " is registered already", err, 1, true)
    local c = client()
    c:upcaster("signup", 1, noop)
    line = debug.getinfo(1, "l").currentline + 1
    ok, err = pcall(function() c:upcaster("signup", 1, noop) end)
    assert.is_false(ok)
    assert.matches("upcast_spec.lua:" .. line .. ': upcaster: an upcaster of "signup" from version 1 to 2', err, 1,
      true)
  end)

  it("refuse what is no upcaster, no type or no version", function()
    local reg = dynlog.upcasters()
    assert.error_matches(function() reg:add("signup", 1, "f") end,
      "upcasters:add: the upcaster must be a function(payload, event) returning the new payload, got string",
      1, true)
    assert.error_matches(function() reg:add("signup", 1) end, "must be a function", 1, true)
    assert.error_matches(function() reg:add(nil, 1, noop) end, "type must be a non-empty string, got nil", 1, true)
    assert.error_matches(function() reg:add("", 1, noop) end, "type must be a non-empty string, got an empty one",
      1, true)
    for _, bad in ipairs({ 0, -1, 1.5, "1", 2 ^ 53, 0 / 0 }) do
      assert.error_matches(function() reg:add("signup", bad, noop) end, "from_version must be an integer from 1",
        1, true)
    end
    assert.error_matches(function() client():upcaster("signup", 1, {}) end,
      "upcaster: the upcaster must be a function", 1, true)
    assert.are.equal(1, reg:latest("signup"))         -- nothing was registered
  end)

  it("are given to dynlog.new as a registry, and c:upcaster adds to it", function()
    assert.error_matches(function() client({ upcasters = { signup = { noop } } }) end,
      "dynlog.new: upcasters must be a registry made by dynlog.upcasters(), got table", 1, true)
    local reg = dynlog.upcasters()
    local c = client({ upcasters = reg })
    assert.are.equal(c, c:upcaster("signup", 3, noop):upcaster("signup", 1, noop))
    assert.are.equal(4, reg:latest("signup"))
    assert.are.equal(1, reg:latest("other"))
    local own = client()
    assert.is_false(own.upcasters)
    own:upcaster("signup", 1, noop)
    assert.are.equal(2, own.upcasters:latest("signup"))
    assert.are.equal(4, reg:latest("signup"))         -- another client's registry is its own
  end)

  it("leave events of other types, and events at the latest version, untouched", function()
    local called = 0
    local c = client():upcaster("signup", 1, function(p) called = called + 1 return p end)
    local other = { type = "login", payload = { id = "1" } }
    local payload = other.payload
    assert.are.equal(other, c:upcast(other))
    assert.are.equal(payload, other.payload)
    assert.is_nil(other.meta)
    local current = { type = "signup", payload = { id = "1" }, meta = { schema_version = 2 } }
    assert.are.equal(current, c:upcast(current))
    assert.are.equal(0, called)
    local old = assert(c:upcast({ type = "signup", payload = { id = "1" } }))
    assert.are.same({ schema_version = 2 }, old.meta)
    assert.are.equal(1, called)
    -- A client without upcasters returns any event as it is.
    local plain = { type = "signup", payload = {} }
    assert.are.equal(plain, client():upcast(plain))
    assert.error_matches(function() c:upcast("signup") end, "upcast: event must be a table, got string", 1, true)
  end)

  it("refuse a meta that is not a map", function()
    local c = client():upcaster("signup", 1, noop)
    local _, err = c:upcast({ type = "signup", key = { pk = "users#1#stream", sk = "01J" }, payload = {},
                             meta = "v1" })
    assert.are.equal("upcast_failed", err.code)
    assert.matches('users#1#stream 01J: event type "signup" stored at schema version ? (latest 2): its meta is a'
      .. " string, not a map", err.message, 1, true)
  end)
end)
