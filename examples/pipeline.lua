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

local M = {}

-- The log's client: publishes to the local bus instead of AWS EventBridge.
-- (Against AWS, leave events_endpoint out.)
M.client = dynlog.new({ table = log_table, events_endpoint = base_url .. "/bus" })

-- For init_worker_by_lua: the trigger, run by the stream consumer on timers.
M.consumer = {
  client = M.client,
  checkpoint_table = log_table .. "-checkpoints",
  handler = function(batch) return trigger.handle(M.client, batch) end,
}

-- For the bus location: one rule, the users log's events to the receiver.
M.bus = {
  name = "dynamodb-log",
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
    return users.project(event)
  end,
}

return M
