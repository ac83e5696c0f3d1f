-- dynlog.ngx.metrics and the receiver's trace ids inside nginx: metrics the
-- workers share through a lua_shared_dict, a clear error without it, and the
-- X-Amzn-Trace-Id of a delivery handed to the handler.
local json = require "dynlog.json"
local nginx = require "spec.support.nginx"
local promtool = require "spec.support.promtool"
local http = require "socket.http"
local ltn12 = require "ltn12"
local socket = require "socket"

local function request(method, url, body, headers)
  local chunks = {}
  headers = headers or {}
  if body then headers["content-length"] = tostring(#body) end
  local _, status = http.request({ method = method, url = url, headers = headers,
    sink = ltn12.sink.table(chunks), source = body and ltn12.source.string(body) or nil })
  return status, table.concat(chunks)
end

local function event(meta)
  return json.encode({ version = "0", id = "1", ["detail-type"] = "stream changes", source = "dynamodb-log",
    account = "000000000000", time = "2026-11-25T12:00:00Z", region = "us-east-1", resources = json.array(),
    detail = { log = "users", key = { pk = "users#1#stream", sk = "x" }, type = "signup", payload = { id = "1" },
               meta = meta } })
end

-- The handler records the context it was given.
local RECEIVER = [[
  require("dynlog.ngx").receive({ handle = function(ev, context)
    ngx.shared.rx:set("trace", context.trace_id or "none")
    if ev.detail.payload.fail then return nil, require("dynlog.errors").new("invalid_argument", "no") end
    return true
  end })
]]

describe("dynlog.ngx.metrics", function()
  local srv
  setup(function()
    srv = nginx.start({
      workers = 2,
      http = [[
        lua_shared_dict rx 1m;
        lua_shared_dict dynlog_metrics 1m;
        lua_shared_dict dynlog_bus 1m;
        init_worker_by_lua_block { require("dynlog.ngx").start_bus({}) }
      ]],
      server = [[
        location = /metrics { content_by_lua_block { require("dynlog.ngx").metrics() } }
        location = /bus { content_by_lua_block {
          require("dynlog.ngx").bus(require("spec.support.ngx_app").trace_bus(ngx.var.server_port)) } }
        location = /rx { content_by_lua_block { ]] .. RECEIVER .. [[ } }
        location = /trace { content_by_lua_block { ngx.print(ngx.shared.rx:get("trace")) } }
      ]],
    })
  end)
  teardown(function() if srv then srv.stop() end end)

  local function value(text, line_start)
    for line in text:gmatch("[^\n]+") do
      if line:sub(1, #line_start + 1) == line_start .. " " then return tonumber(line:sub(#line_start + 2)) end
    end
  end

  it("serves every worker's deliveries, by status, in a text promtool accepts", function()
    local before_status, before = request("GET", srv.url .. "/metrics")
    assert.are.equal(200, before_status, before)
    local ok0 = value(before, 'dynlog_receiver_deliveries_total{status="200"}') or 0
    local bad0 = value(before, 'dynlog_receiver_deliveries_total{status="400"}') or 0
    -- Many requests on new connections: both workers answer some.
    for _ = 1, 30 do assert.are.equal(200, (request("POST", srv.url .. "/rx", event()))) end
    local failing = json.decode(event())
    failing.detail.payload.fail = true
    for _ = 1, 3 do assert.are.equal(400, (request("POST", srv.url .. "/rx", json.encode(failing)))) end
    assert.are.equal(405, (request("GET", srv.url .. "/rx")))
    local status, text = request("GET", srv.url .. "/metrics")
    assert.are.equal(200, status)
    assert.are.equal(ok0 + 30, value(text, 'dynlog_receiver_deliveries_total{status="200"}'), text)
    assert.are.equal(bad0 + 3, value(text, 'dynlog_receiver_deliveries_total{status="400"}'))
    assert.is_true(value(text, 'dynlog_receiver_deliveries_total{status="405"}') >= 1)
    assert.is_truthy(text:find("# TYPE dynlog_request_duration_seconds histogram\n", 1, true))
    local pstatus, out = promtool.check(text)
    assert.are.equal(0, pstatus, out .. "\n" .. text)
    assert.are.equal("", out)
  end)

  it("hands the handler the delivery's X-Amzn-Trace-Id, else the event's meta.trace_id, else nil", function()
    local header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    assert.are.equal(200, (request("POST", srv.url .. "/rx", event({ trace_id = "Root=1-meta" }),
      { ["X-Amzn-Trace-Id"] = header })))
    assert.are.same({ 200, header }, { request("GET", srv.url .. "/trace") })
    assert.are.equal(200, (request("POST", srv.url .. "/rx", event({ trace_id = "Root=1-meta" }))))
    assert.are.same({ 200, "Root=1-meta" }, { request("GET", srv.url .. "/trace") })
    assert.are.equal(200, (request("POST", srv.url .. "/rx", event())))
    assert.are.same({ 200, "none" }, { request("GET", srv.url .. "/trace") })
  end)

  it("gets, from the local bus, an entry's TraceHeader as EventBridge passes it on: X-Amzn-Trace-Id", function()
    local function put(trace)
      local body = json.encode({ Entries = { { Source = "trace-test", DetailType = "t", TraceHeader = trace,
        Detail = json.encode({ log = "users", key = { pk = "users#1#stream", sk = "x" }, payload = { id = "1" },
                               meta = { trace_id = "Root=1-meta" } }) } } })
      local status, answer = request("POST", srv.url .. "/bus", body, { ["X-Amz-Target"] = "AWSEvents.PutEvents",
        ["Content-Type"] = "application/x-amz-json-1.1" })
      assert.are.equal(200, status, answer)
      assert.are.equal(0, json.decode(answer).FailedEntryCount, answer)
    end
    local function trace_becomes(want)
      for _ = 1, 200 do
        local _, got = request("GET", srv.url .. "/trace")
        if got == want then return true end
        socket.sleep(0.02)
      end
      local _, got = request("GET", srv.url .. "/trace")
      return got
    end
    local header = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
    put(header)
    assert.is_true(trace_becomes(header))
    -- One that could not be a header is dropped: the event's meta.trace_id is what the handler gets.
    put("Root=1-a\r\nX-Evil: 1")
    assert.is_true(trace_becomes("Root=1-meta"))
  end)
end)

describe("dynlog.ngx.metrics without its shared dict", function()
  local srv
  setup(function()
    srv = nginx.start({
      http = [[
        lua_shared_dict other_metrics 1m;
        lua_shared_dict rx 1m;
      ]],
      server = [[
        location = /metrics { content_by_lua_block { require("dynlog.ngx").metrics() } }
        location = /metrics-other { content_by_lua_block {
          require("dynlog.metrics").configure{ shared_dict = "other_metrics" }
          require("dynlog.ngx").metrics()
        } }
        location = /rx { content_by_lua_block { ]] .. RECEIVER .. [[ } }
      ]],
    })
  end)
  teardown(function() if srv then srv.stop() end end)

  it("answers 500 and logs which lua_shared_dict to add; another name is set by configure", function()
    local status = request("GET", srv.url .. "/metrics")
    assert.are.equal(500, status)
    assert.is_truthy(srv.error_log():find("metrics: nginx has no lua_shared_dict dynlog_metrics, where the workers"
      .. " keep dynlog's metrics: add `lua_shared_dict dynlog_metrics 1m;` to the http block", 1, true),
      srv.error_log())
    local text
    status, text = request("GET", srv.url .. "/metrics-other")
    assert.are.equal(200, status, text)
    assert.are.equal(200, (request("POST", srv.url .. "/rx", event())))
    status, text = request("GET", srv.url .. "/metrics-other")
    assert.are.equal(200, status, text)
    assert.is_truthy(text:find('dynlog_receiver_deliveries_total{status="200"} 1\n', 1, true), text)
  end)
end)
