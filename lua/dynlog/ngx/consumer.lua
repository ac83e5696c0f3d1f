--- The stream consumer on nginx timers: dynlog.ngx.start_consumer is its
-- public name.
--
--   init_worker_by_lua_block { require("dynlog.ngx").start_consumer{ ... } }
local stream = require "dynlog.pipeline.consumer"
local timers = require "dynlog.ngx.timers"

local error, tostring, type = error, tostring, type

local _M = {}

--- start_consumer(opts) in init_worker_by_lua*: runs a dynlog.consumer
-- consumer on timers in this worker (opts as for dynlog.consumer.new). Every
-- worker, and every host sharing the checkpoint table, takes a share of the
-- shards; a worker that exits (reload, quit) hands its leases back.
-- Returns the consumer, whose stats() a location may show.
function _M.start_consumer(opts)
  if type(opts) ~= "table" then error("start_consumer: expects the options of dynlog.consumer.new", 2) end
  local consumer = stream._new(opts, "start_consumer") -- raises at our caller's line
  local started, err = timers.start("dynlog consumer", consumer, {
    prepare = function() return consumer:create_tables() end,
  })
  if not started then error("start_consumer: could not start a timer: " .. tostring(err), 2) end
  return consumer
end

return _M
