-- dynlog.options: the one rule for unknown option keys.
local options = require "dynlog.base.options"

local KNOWN = options.known{ "expected_version", "condition", "limit" }

local function caller_line_of(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok)
  return err
end

describe("dynlog.base.options", function()
  it("accepts nil and tables of known keys", function()
    options.check(nil, KNOWN, "append")
    options.check({}, KNOWN, "append")
    options.check({ expected_version = 1, limit = 2 }, KNOWN, "append")
  end)

  it("raises on a misspelt key, naming it and the nearest known key", function()
    local err = caller_line_of(function() options.check({ expected_verison = 1 }, KNOWN, "append") end)
    assert.matches('append: unknown option "expected_verison" %(did you mean "expected_version"%?%)', err)
  end)

  it("lists the known keys when none is near", function()
    local err = caller_line_of(function() options.check({ zzz = 1 }, KNOWN, "append") end)
    assert.matches('unknown option "zzz" %(known: condition, expected_version, limit%)', err)
  end)

  it("names a key that is not a string", function()
    local err = caller_line_of(function() options.check({ 1 }, KNOWN, "append") end)
    assert.matches("unknown option 1 ", err, 1, true)
  end)

  it("refuses options that are not a table", function()
    local err = caller_line_of(function() options.check("fast", KNOWN, "append") end)
    assert.matches("append: options must be a table, got string", err, 1, true)
  end)

  it("valid says whether check would pass, without a message", function()
    assert.is_true(options.valid(nil, KNOWN))
    assert.is_true(options.valid({ limit = 1 }, KNOWN))
    assert.is_false(options.valid({ limt = 1 }, KNOWN))
    assert.is_false(options.valid("fast", KNOWN))
  end)

  it("blames the line that called the public function", function()
    local function append(opts) options.check(opts, KNOWN, "append") end
    local line = debug.getinfo(1, "l").currentline + 1
    local ok, err = pcall(function() append({ bogus = true }) end)
    assert.is_false(ok)
    assert.matches("options_spec.lua:" .. line .. ":", err, 1, true)
  end)
end)
