--- The stream consumer on nginx timers: dynlog.ngx.start_consumer is its
-- public name.
--
--   init_worker_by_lua_block { require("dynlog.ngx").start_consumer{ ... } }
local logger = require "dynlog.logger"
local retry = require "dynlog.aws.retry"
local stream = require "dynlog.pipeline.consumer"

local ngx = ngx -- luacheck: ignore
local error, pcall, tostring, type = error, pcall, tostring, type

local _M = {}

--- on_timers(worker, label) -> worker: runs worker (a consumer, or anything
-- with its create_tables(), poll_once(), release() and poll_interval) on
-- timers in this nginx worker: its tables made first, then one round per
-- timer, at once again after a round that handed records over, after
-- poll_interval after an empty one, with backoff after a failure; its
-- leases handed back when the nginx worker exits. label names it in log
-- lines. Raises when no timer can be started.
function _M.on_timers(worker, label, where)
  local tables_ready, failures = false, 0
  local tick
  local function hand_back()
    local ok, err = pcall(worker.release, worker)
    if not ok then logger.log("error", label .. ": releasing leases on exit: " .. tostring(err)) end
  end
  tick = function(premature)
    if premature or ngx.worker.exiting() then return hand_back() end -- no next round
    local delay = worker.poll_interval
    local ok, n, err = pcall(function()
      if not tables_ready then
        local created, cerr = worker:create_tables()
        if not created then return nil, cerr end
        tables_ready = true
      end
      return worker:poll_once()
    end)
    if not ok or not n then
      failures = failures + 1
      logger.log("error", label .. ": " .. tostring(ok and err or n))
      delay = retry.delay(failures, worker.poll_interval, 10)
    else
      failures = 0
      if n > 0 then delay = 0 end
    end
    -- A quit that arrives during the round leaves no pending timer to run
    -- prematurely, and nginx refuses new ones: hand the leases back here.
    if ngx.worker.exiting() then return hand_back() end
    local started, terr = ngx.timer.at(delay, tick)
    if not started then
      logger.log("error", label .. ": could not schedule a timer: " .. tostring(terr))
      return hand_back()
    end
  end
  local started, err = ngx.timer.at(0, tick)
  if not started then error(where .. ": could not start a timer: " .. tostring(err), 3) end
  return worker
end

--- start_consumer(opts) in init_worker_by_lua*: runs a dynlog.consumer
-- consumer on timers in this worker (opts as for dynlog.consumer.new). Every
-- worker, and every host sharing the checkpoint table, takes a share of the
-- shards; a worker that exits (reload, quit) hands its leases back.
-- Returns the consumer, whose stats() a location may show.
function _M.start_consumer(opts)
  if type(opts) ~= "table" then error("start_consumer: expects the options of dynlog.consumer.new", 2) end
  local consumer = stream._new(opts, "start_consumer") -- raises at our caller's line
  _M.on_timers(consumer, "dynlog consumer", "start_consumer")
  return consumer
end

return _M
