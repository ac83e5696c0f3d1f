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

--- start_consumer(opts) in init_worker_by_lua*: runs a dynlog.consumer
-- consumer on timers in this worker (opts as for dynlog.consumer.new). Every
-- worker, and every host sharing the checkpoint table, takes a share of the
-- shards; a worker that exits (reload, quit) hands its leases back.
-- Returns the consumer, whose stats() a location may show.
function _M.start_consumer(opts)
  if type(opts) ~= "table" then error("start_consumer: expects the options of dynlog.consumer.new", 2) end
  local consumer = stream._new(opts, "start_consumer") -- raises at our caller's line
  local tables_ready, failures = false, 0
  local tick
  local function hand_back()
    local ok, err = pcall(consumer.release, consumer)
    if not ok then logger.log("error", "dynlog consumer: releasing leases on exit: " .. tostring(err)) end
  end
  tick = function(premature)
    if premature or ngx.worker.exiting() then return hand_back() end -- no next round
    local delay = consumer.poll_interval
    local ok, n, err = pcall(function()
      if not tables_ready then
        local created, cerr = consumer:create_tables()
        if not created then return nil, cerr end
        tables_ready = true
      end
      return consumer:poll_once()
    end)
    if not ok or not n then
      failures = failures + 1
      logger.log("error", "dynlog consumer: " .. tostring(ok and err or n))
      delay = retry.delay(failures, consumer.poll_interval, 10)
    else
      failures = 0
      if n > 0 then delay = 0 end
    end
    -- A quit that arrives during the round leaves no pending timer to run
    -- prematurely, and nginx refuses new ones: hand the leases back here.
    if ngx.worker.exiting() then return hand_back() end
    local started, terr = ngx.timer.at(delay, tick)
    if not started then
      logger.log("error", "dynlog consumer: could not schedule a timer: " .. tostring(terr))
      return hand_back()
    end
  end
  local started, err = ngx.timer.at(0, tick)
  if not started then error("start_consumer: could not start a timer: " .. tostring(err), 2) end
  return consumer
end

return _M
