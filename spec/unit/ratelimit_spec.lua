-- The token bucket of dynlog replay and dynlog.rebuild, on a clock of its
-- own: the sleeps it asks for are counted, none is waited.
local ratelimit = require "dynlog.base.ratelimit"

local function fake_clock()
  local clock = { t = 1000, sleeps = {} }
  function clock.now() return clock.t end
  function clock.sleep(s)
    clock.sleeps[#clock.sleeps + 1] = s
    clock.t = clock.t + s
  end
  return clock
end

local function near(expected, got)
  assert.is_true(math.abs(expected - got) < 1e-9, ("expected %s, got %s"):format(expected, got))
end

describe("ratelimit", function()
  it("lets the first burst go at once, then paces takes to the rate", function()
    local clock = fake_clock()
    local bucket = ratelimit.new({ rate = 10, now = clock.now, sleep = clock.sleep })
    near(0, bucket:take(10))
    near(0.5, bucket:take(5))
    near(1, bucket:take(10))
    assert.are.equal(2, #clock.sleeps)
    -- 25 units in 1.5 s: the burst of 10, then 10 a second
    near(1001.5, clock.t)
  end)

  it("never lets more than burst + rate * t units pass in t seconds", function()
    local clock = fake_clock()
    local bucket = ratelimit.new({ rate = 20, burst = 4, now = clock.now, sleep = clock.sleep })
    local start, passed = clock.t, 0
    for i = 1, 200 do
      local n = (i % 4) + 1
      bucket:take(n)
      passed = passed + n
      assert.is_true(passed <= 4 + 20 * (clock.t - start) + 1e-9, "too fast after " .. passed .. " units")
      -- time spent elsewhere between takes
      if i % 7 == 0 then clock.t = clock.t + 0.01 end
    end
    -- and not much slower either
    assert.is_true(clock.t - start <= passed / 20 + 0.01)
  end)

  it("refills while the caller works, up to the burst", function()
    local clock = fake_clock()
    local bucket = ratelimit.new({ rate = 2, now = clock.now, sleep = clock.sleep })
    near(0, bucket:take(2))
    clock.t = clock.t + 60 -- a minute of other work fills it to 2, not 120
    near(0, bucket:take(2))
    near(1, bucket:take(2))
  end)

  it("a take larger than the bucket waits for what it lacks; a rate below 1 has a bucket of 1", function()
    local clock = fake_clock()
    local bucket = ratelimit.new({ rate = 0.5, now = clock.now, sleep = clock.sleep })
    near(0, bucket:take(1))
    near(2, bucket:take(1))
    near(6, bucket:take(3))
  end)

  it("refuses a rate, a burst or clocks that are not", function()
    local clock = fake_clock()
    for _, opts in ipairs({
      { rate = 0, now = clock.now, sleep = clock.sleep },
      { rate = -1, now = clock.now, sleep = clock.sleep },
      { rate = 1 / 0, now = clock.now, sleep = clock.sleep },
      { rate = "5", now = clock.now, sleep = clock.sleep },
      { rate = 5, burst = 0.5, now = clock.now, sleep = clock.sleep },
      { rate = 5, sleep = clock.sleep },
      { rate = 5, rates = 5, now = clock.now, sleep = clock.sleep },
    }) do
      assert.has_error(function() ratelimit.new(opts) end)
    end
  end)
end)
