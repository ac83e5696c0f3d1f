-- `make demo`, the README's first command, run as a user would (with few
-- users and a free port), twice: the second run sees the first run's data.
local run = require "spec.support.run"

local free_port = run.free_port

-- make demo on a free port; again on another if, between our look and
-- nginx's bind, some other process took that one (nginx starts before any
-- event is appended, so a retry repeats nothing).
local function demo(users)
  local status, out
  for _ = 1, 3 do
    status, out = run.run("make -s demo", { DEMO_USERS = tostring(users), DEMO_PORT = tostring(free_port()) })
    if status == 0 or not out:find("Address already in use", 1, true) then break end
  end
  return status, out
end

describe("make demo", function()
  teardown(function() os.execute("make -s demo-clean >/dev/null 2>&1") end)

  it("runs the users pipeline end to end and prints its summary", function()
    os.execute("make -s demo-clean >/dev/null 2>&1")
    local status, out = demo(5)
    assert.are.equal(0, status, out)
    assert.matches("events appended     20", out, 1, true)
    assert.matches("events published    20", out, 1, true)
    assert.matches("events projected    20 (5 users at their latest version)", out, 1, true)
    assert.matches("append → projection p50 %d+ ms, p90 %d+ ms, p99 %d+ ms", out)
    local samples = 0
    for line in out:gmatch("\n  (%b{})") do
      if line:find('"verifiedPhoneNumber":true', 1, true) then samples = samples + 1 end
    end
    assert.are.equal(3, samples, out)
  end)

  it("keeps the first run's events for the second", function()
    local status, out = demo(3)
    assert.are.equal(0, status, out)
    -- The stream still holds the first run's 20 events: the consumer has
    -- them checkpointed, so only the new 12 are published now.
    assert.matches("events published    12", out, 1, true)
    assert.matches("events projected    12", out, 1, true)
  end)
end)
