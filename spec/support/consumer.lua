-- A stream consumer process for the specs: records every record it is
-- handed (as its batch starts), and every batch with its start and end time
-- (once it is done), to OUTFILE.
--   lua5.4 spec/support/consumer.lua TABLE CHECKPOINT_TABLE WORKER OUTFILE LEASE_DURATION BATCH_SIZE DELAY [LABEL]
-- Lines: "record LABEL SHARD SEQUENCE PK SK" and "batch LABEL SHARD START END" (ms); LABEL
-- (default: WORKER) tells apart processes started under the same worker_id.
-- Runs until SIGTERM (then hands its leases back) or SIGKILL (then not).
local core = require "dynlog.core"
local dynlog = require "dynlog"
local stream = require "dynlog.consumer"

local table_name, checkpoints, worker, outfile = arg[1], arg[2], arg[3], arg[4]
local lease_duration, batch_size, delay = tonumber(arg[5]), tonumber(arg[6]), tonumber(arg[7])
local label = arg[8] or worker

local c = dynlog.new({
  table = table_name, endpoint = os.getenv("DYNLOG_TEST_ENDPOINT"), region = "us-east-1",
  credentials = { access_key_id = "AKIDSPEC", secret_access_key = "spec-secret-key" },
  base_delay = 0.001, max_delay = 0.05,
})
local out = assert(io.open(outfile, "a"))
out:setvbuf("line")

local consumer = stream.new({
  client = c, checkpoint_table = checkpoints, worker_id = worker,
  lease_duration = lease_duration, batch_size = batch_size, poll_interval = 0.05,
  handler = function(batch, shard)
    local started = core.now()
    -- Records are logged as the batch starts, its "batch" line once it is
    -- done: a process killed in between leaves its unfinished batch visible.
    for _, r in ipairs(batch.Records) do
      local keys = r.dynamodb.Keys
      out:write(("record %s %s %s %s %s\n"):format(label, shard, r.dynamodb.SequenceNumber, keys.pk.S, keys.sk.S))
    end
    if delay > 0 then core.sleep(delay) end
    out:write(("batch %s %s %d %d\n"):format(label, shard, math.floor(started * 1000), math.floor(core.now() * 1000)))
  end,
})
assert(consumer:create_tables())
consumer:run()
out:write(("stopped %s\n"):format(label))
out:close()
