-- dynlog.metrics fed by real work in a Lua process: requests to DynamoDB
-- Local by operation and outcome, their latency, retries, publish (against
-- a loopback EventBridge) and projections; the text passes promtool.
local ddb = require "spec.support.ddb"
local dynlog = require "dynlog"
local handler = require "dynlog.handler"
local logger = require "dynlog.logger"
local metrics = require "dynlog.metrics"
local promtool = require "spec.support.promtool"
local server = require "spec.support.server"

local function requests(service, operation, outcome)
  return metrics.value("dynlog_requests_total", { service = service, operation = operation, outcome = outcome })
end

-- Every (service, operation) of the histogram has as many observations as
-- requests were counted, whatever their outcome.
local function assert_histogram_counts_requests()
  local counted, observed = {}, {}
  for _, s in ipairs(metrics.snapshot()) do
    local key = (s.labels.service or "") .. " " .. (s.labels.operation or "")
    if s.name == "dynlog_requests_total" then counted[key] = (counted[key] or 0) + s.value end
    if s.name == "dynlog_request_duration_seconds" then
      observed[key] = s.count
      assert.are.equal(s.count, s.buckets[#s.buckets].count, key .. ": +Inf holds every observation")
    end
  end
  assert.are.same(counted, observed)
  assert.is_not_nil(next(counted))
end

describe("dynlog.metrics in a Lua process", function()
  before_each(function()
    metrics.reset()
    logger.set_handler(function() end) -- the failures below are on purpose
  end)
  after_each(function() logger.set_handler(nil) end)

  it("counts DynamoDB requests by operation and outcome, with their latency, and promtool accepts the text",
    function()
      local c = ddb.ready_client()
      local key
      for i = 1, 3 do key = assert(c:append("users", "m1", "signup", { n = i })) end
      assert(c:query_page("users", "m1"))
      assert.is_true(requests("dynamodb", "PutItem", "ok") >= 3)
      assert.is_true(requests("dynamodb", "Query", "ok") >= 1)
      assert.is_true(requests("dynamodb", "CreateTable", "ok") == 1)
      -- A write on a condition that fails: conditional, not an error of the client.
      local _, err = c:call("PutItem", { TableName = c.table, ConditionExpression = "attribute_not_exists(pk)",
        Item = { pk = { S = "users#m1#stream" }, sk = { S = key.sk } } })
      assert.are.equal("ConditionalCheckFailedException", err.code)
      assert.are.equal(1, requests("dynamodb", "PutItem", "conditional"))
      -- A request DynamoDB refuses: a client error.
      _, err = c:call("GetItem", { TableName = c.table, Key = { nope = { S = "x" } } })
      assert.are.equal("ValidationException", err.code)
      assert.are.equal(1, requests("dynamodb", "GetItem", "client_error"))
      local h = metrics.value("dynlog_request_duration_seconds", { service = "dynamodb", operation = "PutItem" })
      assert.is_true(h.sum > 0)
      assert_histogram_counts_requests()
      local status, out = promtool.check(metrics.prometheus())
      assert.are.equal(0, status, out)
      assert.are.equal("", out)
    end)

  it("counts each attempt of a request that cannot connect as transport, and the retries", function()
    local c = ddb.client({ endpoint = "http://127.0.0.1:1", max_attempts = 3, sleep = function() end })
    local _, err = c:describe_table()
    assert.are.equal("connection", err.code)
    assert.are.equal(3, requests("dynamodb", "DescribeTable", "transport"))
    assert.are.equal(2, metrics.value("dynlog_request_retries_total",
      { service = "dynamodb", operation = "DescribeTable" }))
    -- Nothing went out: not ambiguous.
    assert.are.equal(0, metrics.value("dynlog_request_ambiguous_total",
      { service = "dynamodb", operation = "DescribeTable" }))
    assert_histogram_counts_requests()
  end)

  it("counts server errors, throttles and ambiguous outcomes, through a proxy that injects them", function()
    local upstream = ddb.client().services.dynamodb.url:match("^http://([^/]+)")
    local port_file = os.tmpname()
    os.remove(port_file)
    local pipe = assert(io.popen(("lua5.4 spec/support/chaos_proxy.lua --upstream %s --port-file %s --rate 0"
      .. " --sequence http500,throttle --max-seconds 60 >/dev/null 2>&1 & echo $!"):format(upstream, port_file)))
    local proxy_pid = pipe:read("*l")
    pipe:close()
    finally(function()
      os.execute("kill " .. proxy_pid .. " 2>/dev/null")
      os.remove(port_file)
    end)
    local port
    for _ = 1, 200 do
      local f = io.open(port_file)
      if f then port = f:read("*l") f:close() end
      if port then break end
      require("dynlog.core").sleep(0.025)
    end
    assert(port, "the fault proxy did not start")
    local c = ddb.client({ endpoint = "http://127.0.0.1:" .. port, max_attempts = 2 })
    local _, err = c:describe_table()
    assert.is_true(err.ambiguous)
    assert.are.equal(1, requests("dynamodb", "DescribeTable", "server_error"))
    assert.are.equal(1, requests("dynamodb", "DescribeTable", "throttled"))
    assert.are.equal(1, metrics.value("dynlog_request_retries_total",
      { service = "dynamodb", operation = "DescribeTable" }))
    assert.are.equal(1, metrics.value("dynlog_request_ambiguous_total",
      { service = "dynamodb", operation = "DescribeTable" }))
    _, err = c:describe_table()
    assert.are.equal("ResourceNotFoundException", err.code)
    assert.are.equal(1, requests("dynamodb", "DescribeTable", "client_error"))
    assert.are.equal(1, metrics.value("dynlog_request_ambiguous_total",
      { service = "dynamodb", operation = "DescribeTable" }), "a refusal is not ambiguous")
    assert_histogram_counts_requests()
  end)

  it("counts PutEvents calls, entries, throttles and retries of publish", function()
    local srv = server.start({ { method = "POST", path = "/", responses = {
      { status = 400, body = { __type = "ThrottlingException", message = "slow down" } },
      { putevents = true, fail = { { index = 2, code = "ThrottlingException" } } },
      { putevents = true } } } })
    local c = dynlog.new{ table = "events", region = "eu-west-1", endpoint = "http://127.0.0.1:1",
      events_endpoint = srv.url, sleep = function() end,
      credentials = { access_key_id = "AKIDMETRICS", secret_access_key = "metrics-secret-key" } }
    local entry = { source = "s", detail_type = "d", detail = { n = 1 } }
    local ok, err = c:publish({ entry, entry })
    srv.stop()
    assert(ok, tostring(err))
    assert.are.equal(1, requests("events", "PutEvents", "throttled"))
    assert.are.equal(2, requests("events", "PutEvents", "ok"))
    assert.are.equal(1, metrics.value("dynlog_request_retries_total", { service = "events", operation = "PutEvents" }))
    assert.are.equal(2, metrics.value("dynlog_publish_calls_total"))
    assert.are.equal(2, metrics.value("dynlog_publish_entries_total"))
    assert.are.equal(1, metrics.value("dynlog_publish_retries_total"))
    assert.are.equal(0, metrics.value("dynlog_publish_failed_entries_total"))
    assert_histogram_counts_requests()
  end)

  it("counts events applied by projections, and their errors", function()
    local c = ddb.ready_client()
    local core_table = c.table .. "-core"
    assert(handler.create_table(c, core_table))
    local last
    for i = 1, 3 do last = assert(c:append("users", "p1", "e", { n = i })) end
    local spec = { table = core_table,
                   handlers = { e = function(s, ev) s = s or {}; s.n = ev.payload.n; return s end } }
    local event = { detail = { log = "users", key = { pk = "users#p1#stream", sk = last.sk }, type = "e" } }
    assert(handler.project(c, event, spec))
    assert.are.equal(3, metrics.value("dynlog_projection_events_applied_total", { table = core_table }))
    assert.is_nil(handler.project(c, { detail = { key = { pk = "nope" } } }, spec))
    assert.are.equal(1, metrics.value("dynlog_projection_errors_total", { table = core_table }))
    local status, out = promtool.check(metrics.prometheus())
    assert.are.equal(0, status, out)
  end)

  it("counts the consumer's records, batches and handler errors, the feed the indexer fills, and what a"
    .. " subscription delivers and parks", function()
    local c = ddb.ready_client()
    assert(c:create_feed_table())
    for i = 1, 4 do assert(c:append("users", "s" .. i, "e", { n = i })) end
    local ix = require("dynlog.indexer").new{ client = c, checkpoint_table = ddb.table_name("cp"), batch_size = 25,
      retry_base_delay = 0.001, retry_max_delay = 0.002, discovery_interval = 0.05 }
    assert(ix:create_tables())
    for _ = 1, 200 do
      assert(ix:poll_once())
      if assert(c:feed_head()) >= 4 then break end
    end
    local group, feed_table = c.table .. "#feed", c.feed_table
    assert.are.equal(4, metrics.value("dynlog_consumer_records_total", { group = group }))
    assert.is_true(metrics.value("dynlog_consumer_batches_total", { group = group }) >= 1)
    assert.are.equal(4, metrics.value("dynlog_feed_events_indexed_total", { feed = feed_table }))
    assert.are.equal(4, metrics.value("dynlog_feed_head", { feed = feed_table }))
    assert.is_true(metrics.value("dynlog_feed_lag_seconds", { feed = feed_table }) >= 0)

    -- A consumer whose handler fails once: a handler error, then the batch again.
    local failed = false
    local consumer = require("dynlog.consumer").new{ client = c, checkpoint_table = ddb.table_name("cp"),
      group = "flaky", retry_base_delay = 0.001, retry_max_delay = 0.002, discovery_interval = 0.05,
      handler = function()
        if not failed then failed = true return nil, "not yet" end
        return true
      end }
    assert(consumer:create_tables())
    for _ = 1, 200 do
      assert(consumer:poll_once())
      if metrics.value("dynlog_consumer_records_total", { group = "flaky" }) >= 4 then break end
      require("dynlog.core").sleep(0.002)
    end
    assert.are.equal(1, metrics.value("dynlog_consumer_handler_errors_total", { group = "flaky" }))
    assert.are.equal(4, metrics.value("dynlog_consumer_records_total", { group = "flaky" }))
    -- Caught up: no lag (a round that finds nothing new says so).
    for _ = 1, 20 do
      assert(consumer:poll_once())
      if metrics.value("dynlog_consumer_lag_seconds", { group = "flaky" }) == 0 then break end
    end
    assert.are.equal(0, metrics.value("dynlog_consumer_lag_seconds", { group = "flaky" }))

    -- A subscription that parks the event it can never handle.
    local sub = dynlog.subscribe{ client = c, name = "m", batch_size = 4, max_tries = 2, on_poison = "dead_letter",
      poll_interval = 0, retry_base_delay = 0, retry_max_delay = 0, lease_duration = 5,
      handler = function(events)
        for _, ev in ipairs(events) do
          if ev.payload.n == 2 then return nil, "poison" end
        end
        return true
      end }
    for _ = 1, 50 do
      assert(sub:poll_once())
      if metrics.value("dynlog_subscription_delivered_total", { subscription = "m" }) >= 3 then break end
    end
    assert.are.equal(3, metrics.value("dynlog_subscription_delivered_total", { subscription = "m" }))
    assert.are.equal(1, metrics.value("dynlog_subscription_dead_letters_total", { subscription = "m" }))
    assert(sub:poll_once()) -- at the head
    assert.are.equal(0, metrics.value("dynlog_subscription_lag_events", { subscription = "m" }))
    assert.are.equal(0, metrics.value("dynlog_subscription_lag_seconds", { subscription = "m" }))
    local status, out = promtool.check(metrics.prometheus())
    assert.are.equal(0, status, out)
    assert.are.equal("", out)
  end)
end)
