-- The watch for leaked secrets (spec/support/leakwatch.lua) is on in every
-- busted run and catches what it should: without this, a silent watch
-- would pass every suite.
local errors = require "dynlog.errors"
local leakwatch = require "spec.support.leakwatch"
local logger = require "dynlog.logger"

describe("the secrets watch", function()
  before_each(function() leakwatch.rehearsal = true end)
  after_each(function() leakwatch.rehearsal = nil end)

  local secret = leakwatch.SECRETS[1]

  it("is installed in this busted run", function()
    assert.is_true(leakwatch.installed)
  end)

  it("raises on an error value whose message holds a secret", function()
    assert.error_matches(function() errors.new("x", "key " .. secret) end, "leaked into an error message")
  end)

  it("raises on the text of an error value whose message was changed to hold one", function()
    local err = errors.new("x", "fine")
    err.message = "now " .. secret
    assert.error_matches(function() return tostring(err) end, "leaked into tostring of an error")
  end)

  it("raises on a log line that holds one", function()
    logger.set_handler(function() end)
    finally(function() logger.set_handler(nil) end)
    assert.error_matches(function() logger.log("error", "oops " .. secret) end, "leaked into a log line")
  end)

  it("lets everything else through", function()
    assert.are.equal("x: fine", tostring(errors.new("x", "fine")))
    local before = leakwatch.checked
    leakwatch.check("no secret here", "a spec")
    assert.are.equal(before + 1, leakwatch.checked)
  end)
end)
