-- The users example's trigger: DynamoDB Streams records → EventBridge.
--
--   lua5.4 examples/trigger.lua                      # publish to EventBridge
--   lua5.4 examples/trigger.lua --envelopes > events.jsonl
--
-- Run as a script, it reads the records of the table's stream from the start
-- of each shard until it has caught up, and hands them to the trigger in
-- batches as a Lambda event-source mapping would. EventBridge is
-- AWS_ENDPOINT_URL_EVENTBRIDGE, or the regional endpoint; with --envelopes
-- there is none: each event is written to stdout, one line each, as
-- EventBridge would deliver it to a rule's target (the input of
-- examples/handler.lua). As a module, `handle(batch)` is the Lambda-style
-- entry point.
local dynlog = require "dynlog"
local trigger = require "dynlog.trigger"

local json = dynlog.json
local to_stdout = arg and arg[1] == "--envelopes"

-- Stands in for EventBridge's PutEvents when there is none at hand: writes
-- each entry in the envelope a target receives and answers as EventBridge
-- does. Every other request (DynamoDB, its streams) goes out as usual.
local function envelope_writer(out)
  local http = require("dynlog.transport.curl").new()
  return {
    request = function(_, req)
      if not (req.headers["X-Amz-Target"] or ""):find("^AWSEvents%.") then return http:request(req) end
      local answers = json.array()
      for i, entry in ipairs(json.decode(req.body).Entries) do
        answers[i] = { EventId = dynlog.ulid() }
        out:write(json.encode({
          version = "0", id = answers[i].EventId, ["detail-type"] = entry.DetailType, source = entry.Source,
          account = "000000000000", time = os.date("!%Y-%m-%dT%H:%M:%SZ"), region = "local",
          resources = json.array(), detail = json.decode(entry.Detail),
        }), "\n")
      end
      return { status = 200, headers = {}, body = json.encode({ FailedEntryCount = 0, Entries = answers }) }
    end,
  }
end

local c = dynlog.new({ table = os.getenv("DYNLOG_TABLE") or "dynlog-example",
                       transport = to_stdout and envelope_writer(io.stdout) or nil })

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

-- An empty page does not prove a shard caught up (DynamoDB Streams may need
-- several calls to reach its records): stop after a few in a row.
local EMPTY_PAGES_WHEN_CAUGHT_UP = 3

local function publish_shard(arn, shard)
  local iterator = check(c:get_shard_iterator(arn, shard.ShardId, "TRIM_HORIZON"))
  local published, empty = 0, 0
  while iterator and empty < EMPTY_PAGES_WHEN_CAUGHT_UP do
    local page = check(c:get_records(iterator, 100))
    if #page.records == 0 then
      empty = empty + 1
      if page.next_iterator then require("dynlog.core").sleep(0.2) end
    else
      empty = 0
      local result = M.handle({ Records = page.records })
      if #result.batchItemFailures > 0 then
        check(nil, #result.batchItemFailures .. " record(s) not published")
      end
      published = published + #page.records
    end
    iterator = page.next_iterator -- nil once a closed shard is read to its end
  end
  return published
end

if arg and arg[0] and arg[0]:match("trigger%.lua$") then -- run as a script, not required
  local stream = check(c:describe_stream(check(c:latest_stream_arn())))
  local published = 0
  for _, shard in ipairs(stream.Shards) do published = published + publish_shard(stream.StreamArn, shard) end
  io.stderr:write(("handed %d stream record(s) to the trigger\n"):format(published))
end

return M
