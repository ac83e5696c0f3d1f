-- `make demo`, the README's first command, run as a user would (with few
-- users and a free port), twice: the second run sees the first run's data.
local run = require "spec.support.run"

local free_port = run.free_port

describe("make demo", function()
  teardown(function() os.execute("make -s demo-clean >/dev/null 2>&1") end)

  it("runs the users pipeline end to end and prints its summary", function()
    os.execute("make -s demo-clean >/dev/null 2>&1")
    local status, out = run.run("make -s demo", { DEMO_USERS = "5", DEMO_PORT = tostring(free_port()) })
    assert.are.equal(0, status, out)
    assert.matches("events appended     20", out, 1, true)
    assert.matches("events published    20", out, 1, true)
    assert.matches("events projected    20 (5 users at their latest version)", out, 1, true)
    assert.matches("append → projection p50 %d+ ms, p99 %d+ ms", out)
    local samples = 0
    for line in out:gmatch("\n  (%b{})") do
      if line:find('"verifiedPhoneNumber":true', 1, true) then samples = samples + 1 end
    end
    assert.are.equal(3, samples, out)
  end)

  it("keeps the first run's events for the second", function()
    local status, out = run.run("make -s demo", { DEMO_USERS = "3", DEMO_PORT = tostring(free_port()) })
    assert.are.equal(0, status, out)
    -- The stream still holds the first run's 20 events: the consumer has
    -- them checkpointed, so only the new 12 are published now.
    assert.matches("events published    12", out, 1, true)
    assert.matches("events projected    12", out, 1, true)
  end)
end)
