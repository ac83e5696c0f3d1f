--- One loop on nginx timers for the workers dynlog runs in an nginx worker
-- (the stream consumer, subscriptions): a round per timer, never a loop
-- that holds the nginx worker.
local logger = require "dynlog.logger"
local retry = require "dynlog.aws.retry"

local ngx = ngx -- luacheck: ignore
local pcall, tostring = pcall, tostring

local _M = {}

--- start(what, worker, hooks) -> true, or nil, err when the first timer
-- could not be made. worker: poll_once() -> n | nil, err, release(), and
-- poll_interval. hooks (all optional):
--   prepare() -> true | nil, err   before the first round, until it succeeds
--   done() -> true                 the loop ends (after release) when it says so
--   ended()                        called once the loop has ended
-- Rounds that handed something over are followed at once, idle ones after
-- poll_interval, failed ones after a growing pause (up to 10 s). A worker
-- that exits (reload, quit) hands its leases back.
function _M.start(what, worker, hooks)
  hooks = hooks or {}
  local prepared, failures = hooks.prepare == nil, 0
  local tick
  local function hand_back()
    local ok, err = pcall(worker.release, worker)
    if not ok then logger.log("error", what .. ": releasing leases on exit: " .. tostring(err)) end
    if hooks.ended then hooks.ended() end
  end
  tick = function(premature)
    if premature or ngx.worker.exiting() then return hand_back() end -- no next round
    local delay = worker.poll_interval
    local ok, n, err = pcall(function()
      if not prepared then
        local done, perr = hooks.prepare()
        if not done then return nil, perr end
        prepared = true
      end
      return worker:poll_once()
    end)
    if not ok or not n then
      failures = failures + 1
      logger.log("error", what .. ": " .. tostring(ok and err or n))
      delay = retry.delay(failures, worker.poll_interval > 0 and worker.poll_interval or 0.05, 10)
    else
      failures = 0
      if n > 0 then delay = 0 end
    end
    if hooks.done and hooks.done() then return hand_back() end
    -- A quit that arrives during the round leaves no pending timer to run
    -- prematurely, and nginx refuses new ones: hand the leases back here.
    if ngx.worker.exiting() then return hand_back() end
    local started, terr = ngx.timer.at(delay, tick)
    if not started then
      logger.log("error", what .. ": could not schedule a timer: " .. tostring(terr))
      return hand_back()
    end
  end
  return ngx.timer.at(0, tick)
end

return _M
