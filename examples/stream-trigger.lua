-- The trigger without Lambda: follows the table's stream and publishes new
-- events to EventBridge until interrupted (Ctrl-C or SIGTERM hands the shard
-- leases back, so another instance takes over at once).
--
--   lua5.4 examples/stream-trigger.lua
--
-- Several instances may run at once, here or on other hosts: they share the
-- shards through the checkpoint table. Configuration as in examples/append.lua;
-- DYNLOG_CHECKPOINT_TABLE names the checkpoint table (default: the log table's
-- name with "-checkpoints").
local dynlog = require "dynlog"
local stream = require "dynlog.consumer"
local trigger = require "dynlog.trigger"

local log_table = os.getenv("DYNLOG_TABLE") or "dynlog-example"
local c = dynlog.new({ table = log_table })
assert(c:create_table()) -- the log table with its stream, if it is not there yet

local consumer = stream.new({
  client = c,
  checkpoint_table = os.getenv("DYNLOG_CHECKPOINT_TABLE") or (log_table .. "-checkpoints"),
  handler = function(batch) return trigger.handle(c, batch) end,
})
assert(consumer:create_tables())
print("following the stream of " .. log_table .. " as " .. consumer:stats().worker)
consumer:run()

for shard, s in pairs(consumer:stats().shards) do
  print(("%s: %d record(s) in %d batch(es), %d retries"):format(shard, s.records, s.batches, s.retries))
end
