-- The users example's trigger: DynamoDB Streams records → EventBridge.
--
--   lua5.4 examples/trigger.lua
--
-- Run as a script, it reads every record of the table's stream once, from
-- the start of each shard, and hands them to the trigger in batches as a
-- Lambda event-source mapping would. As a module, `handle(batch)` is the
-- Lambda-style entry point. EventBridge is AWS_ENDPOINT_URL_EVENTBRIDGE, or
-- the regional endpoint.
local dynlog = require "dynlog"
local trigger = require "dynlog.trigger"

local c = dynlog.new({ table = os.getenv("DYNLOG_TABLE") or "dynlog-example" })

local M = {}

function M.handle(batch)
  return trigger.handle(c, batch)
end

local function check(value, err)
  if value == nil then
    io.stderr:write("trigger.lua: ", tostring(err), "\n")
    os.exit(1)
  end
  return value
end

if arg and arg[0] and arg[0]:match("trigger%.lua$") then -- run as a script, not required
  local stream = check(c:describe_stream(check(c:latest_stream_arn())))
  local published = 0
  for _, shard in ipairs(stream.Shards) do
    local iterator = check(c:get_shard_iterator(stream.StreamArn, shard.ShardId, "TRIM_HORIZON"))
    while iterator do
      local page = check(c:get_records(iterator, 100))
      if #page.records == 0 then break end -- caught up with this shard
      local result = M.handle({ Records = page.records })
      if #result.batchItemFailures > 0 then
        check(nil, #result.batchItemFailures .. " record(s) not published")
      end
      published = published + #page.records
      iterator = page.next_iterator
    end
  end
  print(("handed %d stream record(s) to the trigger"):format(published))
end

return M
