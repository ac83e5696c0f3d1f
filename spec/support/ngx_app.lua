-- The receiver and bus the nginx specs configure (loaded inside nginx).
-- A shared dict "rx" counts calls and holds scripted faults:
--   fail_remaining: how many calls still answer with a failure
--   calls, handled: counters; last: the last event received (JSON)
local json = require "dynlog.json"
local errors = require "dynlog.errors"

local ngx = ngx -- luacheck: ignore

local M = {}

local function rx() return ngx.shared.rx end

M.receiver = {
  auth = { header = "x-api-key", value = "test-key" },
  max_body = 4096,
  handle = function(event)
    local d = rx()
    d:incr("calls", 1, 0)
    d:set("last", json.encode(event))
    local remaining = d:get("fail_remaining") or 0
    if remaining > 0 then
      d:incr("fail_remaining", -1)
      return nil, errors.new("unavailable", "scripted failure")
    end
    if event.detail.bad then return nil, errors.new("invalid_argument", "will never succeed") end
    -- detail.fail = "<code>": fails with that error code ("plain": a string)
    if event.detail.fail == "plain" then return nil, "a plain message" end
    if event.detail.fail then return nil, errors.new(event.detail.fail, "scripted " .. event.detail.fail) end
    d:incr("handled", 1, 0)
    return true
  end,
}

-- A receiver on defaults (max_body included), counting "default_handled".
M.default_receiver = {
  handle = function() rx():incr("default_handled", 1, 0) return true end,
}

M.basic_receiver = {
  auth = { basic = { user = "bus", password = "s3cret" } },
  handle = function() rx():incr("handled", 1, 0) return true end,
}

function M.bus(port)
  M.bus_config = M.bus_config or {
    name = "dynamodb-log", max_attempts = 5, retry_base_delay = 0.05, retry_max_delay = 0.1,
    rules = {
      { name = "users", pattern = { source = { "dynamodb-log" }, detail = { log = { "users" } } },
        targets = { { url = "http://127.0.0.1:" .. port .. "/rx", headers = { ["x-api-key"] = "test-key" } } } },
      { name = "raw", pattern = { source = { "raw-test" } },
        targets = { { url = "http://127.0.0.1:" .. port .. "/raw-target" } } },
      { name = "defaults", pattern = { source = { "big-test" } },
        targets = { { url = "http://127.0.0.1:" .. port .. "/rx-defaults" } } },
    },
  }
  return M.bus_config
end

-- A bus whose one rule sends "trace-test" events to /rx, whose handler
-- (spec/nginx/metrics_spec.lua) records the trace id it is given.
function M.trace_bus(port)
  M.trace_bus_config = M.trace_bus_config or {
    name = "dynamodb-log", max_attempts = 3, retry_base_delay = 0.05, retry_max_delay = 0.1,
    rules = { { name = "trace", pattern = { source = { "trace-test" } },
                targets = { { url = "http://127.0.0.1:" .. tostring(port) .. "/rx" } } } },
  }
  return M.trace_bus_config
end

-- A bus whose one target is slow and counts how many deliveries it has at
-- once: "slow_now", the highest in "slow_peak", those done in "slow_done".
function M.slow_bus(port)
  M.slow_bus_config = M.slow_bus_config or {
    name = "dynamodb-log", max_in_flight = 2,
    rules = { { pattern = { source = { "dynamodb-log" } },
                targets = { { url = "http://127.0.0.1:" .. port .. "/slow" } } } },
  }
  return M.slow_bus_config
end

function M.slow_target()
  local d = rx()
  local now = d:incr("slow_now", 1, 0)
  if now > (d:get("slow_peak") or 0) then d:set("slow_peak", now) end
  ngx.sleep(0.1)
  d:incr("slow_now", -1)
  d:incr("slow_done", 1, 0)
  ngx.say("{}")
end

function M.slow_report()
  local d = rx()
  ngx.say(json.encode({ done = d:get("slow_done") or 0, peak = d:get("slow_peak") or 0 }))
end

-- One ListTables through a fresh client (one attempt): response or nil, err.
-- Outside the phases that have cosockets it raises.
function M.list_tables(endpoint)
  local c = require("dynlog").new({ table = "events", region = "us-east-1", endpoint = endpoint, max_attempts = 1,
    credentials = { access_key_id = "AKIDNGXAPP", secret_access_key = "ngx-app-secret" } })
  return c:call("ListTables", {})
end

-- One client of the worker, kept between requests: its transport is made
-- in the first phase that uses it, and later uses may come from others.
local kept_client
function M.kept_client_list_tables()
  kept_client = kept_client or require("dynlog").new({ table = "events", region = "us-east-1",
    endpoint = "http://127.0.0.1:1", max_attempts = 1,
    credentials = { access_key_id = "AKIDNGXAPP", secret_access_key = "ngx-app-secret" } })
  return kept_client:call("ListTables", {})
end

-- A target that keeps the last body it got, byte for byte ("raw_last").
function M.raw_target()
  ngx.req.read_body()
  rx():set("raw_last", ngx.req.get_body_data())
  rx():incr("raw_count", 1, 0)
  ngx.say("{}")
end

function M.raw_report()
  ngx.say(json.encode({ count = rx():get("raw_count") or 0, last = rx():get("raw_last") }))
end

-- Receivers whose secret is empty: a configuration error, never a receiver
-- that lets anyone in. Each counts what it handles in "empty_handled".
local function count_empty() rx():incr("empty_handled", 1, 0) return true end
M.empty_key_receiver = { auth = { header = "x-api-key", value = "" }, handle = count_empty }
M.empty_basic_receiver = { auth = { basic = { user = "", password = "" } }, handle = count_empty }
M.empty_password_receiver = { auth = { basic = { user = "bus", password = "" } }, handle = count_empty }

-- A bus whose one target is slow and takes one delivery at a time, so that
-- deliveries wait in the queue when the worker holding them is killed.
function M.crash_bus(port)
  M.crash_bus_config = M.crash_bus_config or {
    name = "dynamodb-log", max_in_flight = 1, max_attempts = 100, retry_base_delay = 0.05, retry_max_delay = 0.2,
    rules = { { pattern = { source = { "crash-test" } },
                targets = { { url = "http://127.0.0.1:" .. port .. "/crash-target", timeout = 2 } } } },
  }
  return M.crash_bus_config
end

-- Buses that refuse what they cannot keep: one whose queue per target holds
-- two deliveries, one on a lua_shared_dict too small for many events.
function M.short_bus(port)
  M.short_bus_config = M.short_bus_config or {
    name = "dynamodb-log", max_in_flight = 1, max_queue = 2,
    rules = { { pattern = { source = { "crash-test" } },
                targets = { { url = "http://127.0.0.1:" .. port .. "/crash-target" } } } },
  }
  return M.short_bus_config
end

function M.tiny_bus(port)
  M.tiny_bus_config = M.tiny_bus_config or {
    name = "dynamodb-log", shared_dict = "tiny_bus",
    rules = { { pattern = { source = { "crash-test" } },
                targets = { { url = "http://127.0.0.1:" .. port .. "/crash-target" } } } },
  }
  return M.tiny_bus_config
end

-- The crash bus's target: counts each event by its detail.n ("got:<n>").
function M.crash_target()
  ngx.req.read_body()
  local event = json.decode(ngx.req.get_body_data())
  ngx.sleep(0.15)
  rx():incr("got:" .. tostring(event.detail.n), 1, 0)
  rx():incr("crash_done", 1, 0)
  ngx.say("{}")
end

-- How many deliveries the crash target took, and how many times each of
-- events from..n (?from=&n=, from 1) arrived.
function M.crash_report()
  local args = ngx.req.get_uri_args()
  local from, n = tonumber(args.from) or 1, tonumber(args.n) or 0
  local got = {}
  for i = from, n do got[#got + 1] = rx():get("got:" .. i) or 0 end
  ngx.say(json.encode({ done = rx():get("crash_done") or 0, got = got, bus_pid = rx():get("bus_pid") }))
end

-- A location that reports the counters.
function M.report()
  local d = rx()
  ngx.say(json.encode({ calls = d:get("calls") or 0, handled = d:get("handled") or 0, last = d:get("last"),
                        default_handled = d:get("default_handled") or 0,
                        empty_handled = d:get("empty_handled") or 0 }))
end

function M.script()
  local args = ngx.req.get_uri_args()
  rx():set("fail_remaining", tonumber(args.fail) or 0)
  ngx.say("ok")
end

return M
