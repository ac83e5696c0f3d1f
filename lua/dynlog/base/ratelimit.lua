--- A token bucket: work paced to at most `rate` units per second.
--
--   local bucket = ratelimit.new{ rate = 50, now = c.now, sleep = c.sleep }
--   bucket:take(#batch)   -- sleeps until the batch may go, returns the seconds slept
--
-- The bucket holds `burst` tokens (default: one second's worth, at least 1)
-- and starts full; it fills at `rate` tokens per second. take(n) spends n
-- tokens, sleeping first for those it lacks, so that over any span of t
-- seconds at most burst + rate * t units pass: never faster than `rate`
-- once the first burst is spent. A take larger than the bucket waits for
-- what it lacks, and goes (it never waits for ever).
--
-- `now` (seconds, a monotonic or wall clock) and `sleep` (seconds) are the
-- caller's: a client's c.now and c.sleep (which yield inside nginx), or a
-- spec's, which can count the sleeps without waiting.
local options = require "dynlog.base.options"

local error, setmetatable, tostring, type = error, setmetatable, tostring, type
local math_min = math.min

local _M = {}

local NEW = options.known{ "rate", "burst", "now", "sleep" }

local mt = { __index = {} }
local methods = mt.__index

--- new{rate =, burst =, now =, sleep =} -> a bucket. rate: units per second
-- (a number > 0); burst: the bucket's size (default max(1, rate)).
function _M.new(opts)
  if type(opts) ~= "table" then error("ratelimit.new: expects a table of options", 2) end
  options.check(opts, NEW, "ratelimit.new")
  local rate = opts.rate
  if type(rate) ~= "number" or not (rate > 0) or rate == 1 / 0 then
    error("ratelimit.new: rate must be a number of units per second above 0, got " .. tostring(rate), 2)
  end
  local burst = opts.burst
  if burst == nil then burst = rate < 1 and 1 or rate end
  if type(burst) ~= "number" or not (burst >= 1) then
    error("ratelimit.new: burst must be a number >= 1, got " .. tostring(burst), 2)
  end
  if type(opts.now) ~= "function" or type(opts.sleep) ~= "function" then
    error("ratelimit.new: now and sleep must be functions", 2)
  end
  local self = { rate = rate, burst = burst, now = opts.now, sleep = opts.sleep, tokens = burst }
  self.last = self.now()
  return setmetatable(self, mt)
end

--- bucket:take(n) -> the seconds it slept before n units may go.
function methods:take(n)
  n = n or 1
  local t = self.now()
  if t > self.last then
    self.tokens = math_min(self.burst, self.tokens + (t - self.last) * self.rate)
    self.last = t
  end
  self.tokens = self.tokens - n
  if self.tokens >= 0 then return 0 end
  local wait = -self.tokens / self.rate
  self.sleep(wait)
  -- The tokens lacking have come in while it slept: the bucket is empty at
  -- the end of the wait, whatever the clock says after the sleep.
  self.tokens, self.last = 0, t + wait
  return wait
end

return _M
