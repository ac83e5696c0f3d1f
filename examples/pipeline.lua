-- The users example's pipeline inside nginx (see examples/nginx.conf): the
-- trigger publishes to the local bus, whose rule delivers each event to the
-- receiver, which projects it into the core table.
--
-- Configuration from the environment (nginx passes only what its `env`
-- directives name): DYNLOG_TABLE, DYNLOG_CORE_TABLE, DYNLOG_API_KEY,
-- DYNLOG_NGINX_URL (where this nginx listens), and the usual AWS_* variables.
local dynlog = require "dynlog"
local handler = require "dynlog.handler"
local trigger = require "dynlog.trigger"
local users = require "examples.handler"

local log_table = os.getenv("DYNLOG_TABLE") or "dynlog-example"
local core_table = os.getenv("DYNLOG_CORE_TABLE") or (log_table .. "-core")
local api_key = os.getenv("DYNLOG_API_KEY") or "dev-key"
local base_url = os.getenv("DYNLOG_NGINX_URL") or "http://127.0.0.1:8088"

local ngx = ngx -- luacheck: ignore

local M = {}

-- Counters for the /stats location, shared by the workers.
local function count(name, n)
  local stats = ngx.shared.dynlog_stats
  if stats and n > 0 then stats:incr(name, n, 0) end
end

-- The log's client: publishes to the local bus instead of AWS EventBridge.
-- (Against AWS, leave events_endpoint out.)
M.client = dynlog.new({ table = log_table, events_endpoint = base_url .. "/bus" })

-- For init_worker_by_lua: the trigger, run by the stream consumer on timers.
M.consumer = {
  client = M.client,
  checkpoint_table = log_table .. "-checkpoints",
  -- An idle shard is asked again after 0.1 s (a busy one at once).
  poll_interval = 0.1,
  handler = function(batch)
    local result = trigger.handle(M.client, batch)
    count("published", #batch.Records - #result.batchItemFailures)
    return result
  end,
}

-- For the bus location: one rule, the users log's events to the receiver.
M.bus = {
  name = "dynamodb-log",
  -- Deliveries under way at once to the receiver: those of a read model
  -- being projected wait for it and hold their place meanwhile.
  max_in_flight = 32,
  rules = {
    {
      name = "users-to-core",
      pattern = { source = { "dynamodb-log" }, ["detail-type"] = { "stream changes" },
                  detail = { log = { "users" } } },
      targets = { { url = base_url .. "/users", headers = { ["x-api-key"] = api_key } } },
    },
  },
}

-- For the receiver location: API-key check, then the projection.
local core_ready = false
M.receiver = {
  auth = { header = "x-api-key", value = api_key },
  handle = function(event)
    if not core_ready then
      local ok, err = handler.create_table(M.client, core_table)
      if not ok then return nil, err end
      core_ready = true
    end
    local result, err = users.project(event)
    if result then count("deliveries", 1) end
    return result, err
  end,
}

-- For the /stats location: events this nginx has published, and deliveries
-- its receiver has handled.
function M.stats()
  local stats = ngx.shared.dynlog_stats
  ngx.header["Content-Type"] = "application/json"
  ngx.say(dynlog.json.encode({ published = stats:get("published") or 0, deliveries = stats:get("deliveries") or 0 }))
end

return M
