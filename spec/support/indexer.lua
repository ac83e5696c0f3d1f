-- An indexer process for the specs: dynlog.indexer over TABLE, its leases in
-- CHECKPOINT_TABLE under WORKER, that writes a line to OUTFILE after each
-- transaction of the feed it committed, then pauses PAUSE seconds: a
-- process killed in that pause dies after a commit and before its batch's
-- checkpoint.
--   lua5.4 spec/support/indexer.lua TABLE CHECKPOINT_TABLE WORKER OUTFILE PAUSE LABEL
-- Lines: "commit LABEL SEEN INDEXED" (the indexer's counts before the batch
-- that committed) and, on SIGTERM, "stopped LABEL SEEN INDEXED".
local core = require "dynlog.core"
local dynlog = require "dynlog"
local http = require "dynlog.transport.curl"
local indexer = require "dynlog.indexer"

local table_name, checkpoints, worker, outfile = arg[1], arg[2], arg[3], arg[4]
local pause, label = tonumber(arg[5]), arg[6]

local out = assert(io.open(outfile, "a"))
out:setvbuf("line")

local ix
local real = http.new()
local transport = { request = function(_, req)
  local res, err = real:request(req)
  if res and res.status == 200 and req.headers["X-Amz-Target"] == "DynamoDB_20120810.TransactWriteItems" then
    local s = ix:stats()
    out:write(("commit %s %d %d\n"):format(label, s.seen, s.indexed))
    if pause > 0 then core.sleep(pause) end
  end
  return res, err
end }

local c = dynlog.new({
  table = table_name, endpoint = os.getenv("DYNLOG_TEST_ENDPOINT"), region = "us-east-1",
  credentials = { access_key_id = "AKIDSPEC", secret_access_key = "spec-secret-key" },
  base_delay = 0.001, max_delay = 0.05, transport = transport,
})
ix = indexer.new({ client = c, checkpoint_table = checkpoints, worker_id = worker, batch_size = 100,
                   poll_interval = 0.05, lease_duration = 5 })
assert(ix:create_tables())
ix:run()
local s = ix:stats()
out:write(("stopped %s %d %d\n"):format(label, s.seen, s.indexed))
out:close()
