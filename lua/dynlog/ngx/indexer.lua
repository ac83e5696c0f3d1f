--- The indexer on nginx timers: dynlog.ngx.start_indexer is its public name.
--
--   init_worker_by_lua_block { require("dynlog.ngx").start_indexer{ ... } }
local indexer = require "dynlog.pipeline.indexer"
local timers = require "dynlog.ngx.timers"

local error, tostring, type = error, tostring, type

local _M = {}

--- start_indexer(opts) in init_worker_by_lua*: runs a dynlog.indexer on
-- timers in this worker (opts as for dynlog.indexer.new), as start_consumer
-- runs a consumer: every worker, and every host sharing the checkpoint
-- table, takes a share of the shards; a worker that exits hands its leases
-- back. The checkpoint and feed tables are made on the first round.
-- Returns the indexer, whose stats() a location may show.
function _M.start_indexer(opts)
  if type(opts) ~= "table" then error("start_indexer: expects the options of dynlog.indexer.new", 2) end
  local ix = indexer._new(opts, "start_indexer") -- raises at our caller's line
  local started, err = timers.start("dynlog indexer", ix, {
    prepare = function() return ix:create_tables() end,
  })
  if not started then error("start_indexer: could not start a timer: " .. tostring(err), 2) end
  return ix
end

return _M
