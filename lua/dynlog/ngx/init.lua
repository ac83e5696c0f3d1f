--- dynlog inside nginx (OpenResty, or nginx with lua-nginx-module): the
-- trigger on timers, a receiver for EventBridge API destinations, and a
-- local event bus for development. Nothing here blocks a worker: every
-- request goes over cosockets (dynlog.transport.cosocket).
--
--   lua_shared_dict dynlog_bus 64m;    # the bus's deliveries, which outlive a worker
--   init_worker_by_lua_block { require("dynlog.ngx").start_consumer{ ... } }
--   init_worker_by_lua_block { require("dynlog.ngx").start_indexer{ ... } }   -- the feed
--   init_worker_by_lua_block { require("dynlog.ngx").start_subscription{ ... } }
--   init_worker_by_lua_block { require("dynlog.ngx").start_bus(config) }   -- one block holds all
--   location = /events { content_by_lua_block { require("dynlog.ngx").receive(spec) } }
--   location = /bus    { content_by_lua_block { require("dynlog.ngx").bus(config) } }
--   location = /metrics { content_by_lua_block { require("dynlog.ngx").metrics() } }
--   lua_shared_dict dynlog_metrics 1m; # the workers' metrics, for /metrics
--
-- Each lives in a module of its own: the consumer in dynlog.ngx.consumer,
-- the indexer in dynlog.ngx.indexer, subscriptions in
-- dynlog.ngx.subscription (all three on dynlog.ngx.timers),
-- the receiver in dynlog.ngx.receiver, the bus in dynlog.eventbridge.bus.
-- The functions are theirs (not wrappers), so an error raised at the
-- caller's line still names the caller's line.
local bus = require "dynlog.eventbridge.bus"
local consumer = require "dynlog.ngx.consumer"
local indexer = require "dynlog.ngx.indexer"
local metrics = require "dynlog.ngx.metrics"
local receiver = require "dynlog.ngx.receiver"
local subscription = require "dynlog.ngx.subscription"

return {
  --- start_consumer(opts) in init_worker_by_lua*: a dynlog.consumer on timers.
  start_consumer = consumer.start_consumer,
  --- start_indexer(opts) in init_worker_by_lua*: a dynlog.indexer (the feed) on timers.
  start_indexer = indexer.start_indexer,
  --- start_subscription(opts) in init_worker_by_lua*: a dynlog.subscribe subscription on timers.
  start_subscription = subscription.start_subscription,
  --- receive(spec) in content_by_lua*: one EventBridge event per request.
  receive = receiver.receive,
  --- metrics() in content_by_lua*: dynlog's metrics in Prometheus's text format.
  metrics = metrics.serve,
  --- bus(config) in content_by_lua*: EventBridge's PutEvents, locally.
  bus = bus.serve,
  --- start_bus(config) in init_worker_by_lua*: takes up the bus's waiting deliveries.
  start_bus = bus.start,
}
