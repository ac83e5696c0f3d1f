--- Subscriptions of the feed on nginx timers: dynlog.ngx.start_subscription
-- is its public name.
--
--   init_worker_by_lua_block { require("dynlog.ngx").start_subscription{ ... } }
local subscription = require "dynlog.pipeline.subscription"
local timers = require "dynlog.ngx.timers"

local error, tostring, type = error, tostring, type

local _M = {}

--- start_subscription(opts) in init_worker_by_lua*: runs a subscription
-- (opts as for dynlog.subscribe) on timers in this worker. Every worker,
-- and every host, may start the same name: one holds its lease and
-- delivers, the others wait and take over when it stops or dies. The loop
-- ends on sub:stop(), when a poison event stops the subscription, or when
-- the worker exits, and the lease is released then. Returns the
-- subscription, whose stats() a location may show.
function _M.start_subscription(opts)
  if type(opts) ~= "table" then error("start_subscription: expects the options of dynlog.subscribe", 2) end
  local sub = subscription._new(opts, "start_subscription") -- raises at our caller's line
  sub.running, sub.stopping = true, false
  local started, err = timers.start("dynlog subscription " .. sub.name, sub, {
    done = function() return sub.stopping or sub.failed ~= nil end,
    ended = function() sub.running = false end,
  })
  if not started then error("start_subscription: could not start a timer: " .. tostring(err), 2) end
  return sub
end

return _M
