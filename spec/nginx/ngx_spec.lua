-- dynlog inside nginx: the receiver, the local bus, and the whole users
-- pipeline of examples/nginx.conf against DynamoDB Local.
local ddb = require "spec.support.ddb"
local env = require "spec.support.env"
local json = require "dynlog.json"
local nginx = require "spec.support.nginx"
local promtool = require "spec.support.promtool"
local run = require "spec.support.run"
local socket = require "socket"
local http = require "socket.http"
local ltn12 = require "ltn12"

local function request(method, url, body, headers)
  local chunks = {}
  local _, status, response_headers = http.request({
    method = method, url = url, headers = headers or {}, sink = ltn12.sink.table(chunks),
    source = body and ltn12.source.string(body) or nil,
  })
  return status, table.concat(chunks), response_headers
end

local function post(url, body, headers)
  headers = headers or {}
  headers["content-length"] = tostring(#body)
  headers["content-type"] = headers["content-type"] or "application/json"
  return request("POST", url, body, headers)
end

local function wait_for(cond, seconds)
  local deadline = socket.gettime() + seconds
  while socket.gettime() < deadline do
    local v = cond()
    if v then return v end
    socket.sleep(0.05)
  end
  return nil
end

local EVENT = json.encode({ version = "0", id = "1", ["detail-type"] = "stream changes", source = "dynamodb-log",
  account = "000000000000", time = "2026-11-25T12:00:00Z", region = "us-east-1", resources = json.array(),
  detail = { log = "users", key = { pk = "users#1#stream", sk = "x" }, type = "signup", payload = { id = "1" } } })

describe("dynlog.ngx receiver and bus", function()
  local srv

  setup(function()
    srv = nginx.start({
      http = [[
        lua_shared_dict rx 1m;
        lua_shared_dict dynlog_bus 8m;
        # A request where nginx has no cosockets: at start-up, in init and init_worker.
        init_by_lua_block {
          local ok, err = pcall(require("spec.support.ngx_app").list_tables, "http://127.0.0.1:1")
          ngx.shared.rx:set("init", tostring(ok) .. " " .. tostring(err))
        }
        init_worker_by_lua_block {
          require("dynlog.ngx").start_bus({})
          local ok, err = pcall(require("spec.support.ngx_app").list_tables, "http://127.0.0.1:1")
          ngx.shared.rx:set("init_worker", tostring(ok) .. " " .. tostring(err))
        }
      ]],
      server = [[
        # Cosockets work in the server's rewrite phase: the request goes out
        # (and finds nothing listening on port 1).
        server_rewrite_by_lua_block {
          if ngx.var.uri ~= "/server-rewrite" then return end
          local ok, res, err = pcall(require("spec.support.ngx_app").list_tables, "http://127.0.0.1:1")
          ngx.say(tostring(ok), " ", tostring(res), " ", ok and err and err.code or tostring(res))
          return ngx.exit(200)
        }
        location = /start-up { content_by_lua_block {
          ngx.say(ngx.shared.rx:get("init"), "\n", ngx.shared.rx:get("init_worker")) } }
        location = /rx { content_by_lua_block {
          require("dynlog.ngx").receive(require("spec.support.ngx_app").receiver) } }
        location = /rx-defaults { content_by_lua_block {
          require("dynlog.ngx").receive(require("spec.support.ngx_app").default_receiver) } }
        location = /basic { content_by_lua_block {
          require("dynlog.ngx").receive(require("spec.support.ngx_app").basic_receiver) } }
        location = /bus { content_by_lua_block {
          require("dynlog.ngx").bus(require("spec.support.ngx_app").bus(ngx.var.server_port)) } }
        location = /rx-empty-key { content_by_lua_block {
          require("dynlog.ngx").receive(require("spec.support.ngx_app").empty_key_receiver) } }
        location = /rx-empty-basic { content_by_lua_block {
          require("dynlog.ngx").receive(require("spec.support.ngx_app").empty_basic_receiver) } }
        location = /rx-empty-password { content_by_lua_block {
          require("dynlog.ngx").receive(require("spec.support.ngx_app").empty_password_receiver) } }
        location = /report { content_by_lua_block { require("spec.support.ngx_app").report() } }
        location = /raw-target { content_by_lua_block { require("spec.support.ngx_app").raw_target() } }
        location = /raw-report { content_by_lua_block { require("spec.support.ngx_app").raw_report() } }
        location = /set-phase {
          set_by_lua_block $outcome {
            local ok, err = pcall(require("spec.support.ngx_app").list_tables, "http://127.0.0.1:1")
            return tostring(ok) .. " " .. tostring(err)
          }
          return 200 $outcome;
        }
        location = /kept-content { content_by_lua_block {
          local ok, res, err = pcall(require("spec.support.ngx_app").kept_client_list_tables)
          ngx.say(tostring(ok), " ", tostring(res), " ", ok and err and err.code or tostring(res)) } }
        location = /kept-set {
          set_by_lua_block $outcome {
            local ok, err = pcall(require("spec.support.ngx_app").kept_client_list_tables)
            return tostring(ok) .. " " .. tostring(err)
          }
          return 200 $outcome;
        }
        location = /script { content_by_lua_block { require("spec.support.ngx_app").script() } }
        location = /slowbus { content_by_lua_block {
          require("dynlog.ngx").bus(require("spec.support.ngx_app").slow_bus(ngx.var.server_port)) } }
        location = /slow { content_by_lua_block { require("spec.support.ngx_app").slow_target() } }
        location = /slow-report { content_by_lua_block { require("spec.support.ngx_app").slow_report() } }
      ]],
    })
  end)

  teardown(function() if srv then srv.stop() end end)

  local function report()
    local _, body = request("GET", srv.url .. "/report")
    return json.decode(body)
  end

  it("says clearly that no request can be made where nginx has no cosockets", function()
    local _, body = request("GET", srv.url .. "/set-phase")
    assert.matches("^false dynlog: no requests can be made in nginx's set phase", body)
    local _, startup = request("GET", srv.url .. "/start-up")
    local init, init_worker = startup:match("^([^\n]*)\n([^\n]*)")
    assert.matches("^false dynlog: no requests can be made in nginx's init phase", init)
    assert.matches("^false dynlog: no requests can be made in nginx's init_worker phase", init_worker)
    assert.matches("run the work from a timer", init_worker, 1, true)
  end)

  it("says so too for a client whose transport was made in a phase that had cosockets", function()
    local _, body = request("GET", srv.url .. "/kept-content")
    assert.are.equal("true nil connection\n", body)
    _, body = request("GET", srv.url .. "/kept-set")
    assert.matches("^false dynlog: no requests can be made in nginx's set phase", body)
  end)

  it("makes requests from server_rewrite_by_lua, where cosockets work", function()
    local status, body = request("GET", srv.url .. "/server-rewrite")
    assert.are.equal(200, status)
    assert.are.equal("true nil connection\n", body)
  end)

  it("answers 401 to missing or wrong credentials, and handles nothing", function()
    local before = report().calls
    assert.are.equal(401, (post(srv.url .. "/rx", EVENT)))
    assert.are.equal(401, (post(srv.url .. "/rx", EVENT, { ["x-api-key"] = "wrong" })))
    assert.are.equal(401, (post(srv.url .. "/rx", EVENT, { ["x-api-key"] = "test-key-and-more" })))
    assert.are.equal(before, report().calls)
    assert.are.equal(200, (post(srv.url .. "/rx", EVENT, { ["x-api-key"] = "test-key" })))
    assert.are.equal(before + 1, report().calls)
  end)

  it("never accepts a request when the configured key or password is empty: a configuration error", function()
    local b64 = require("dynlog.core").base64_encode
    local tries = {
      { "/rx-empty-key", { ["x-api-key"] = "" }, "auth.value must be a non-empty string" },
      { "/rx-empty-key", {}, "auth.value must be a non-empty string" },
      { "/rx-empty-basic", { authorization = "Basic " .. b64(":") },
        "auth.basic.user and auth.basic.password must be non-empty strings" },
      { "/rx-empty-password", { authorization = "Basic " .. b64("bus:") },
        "auth.basic.user and auth.basic.password must be non-empty strings" },
    }
    for _, try in ipairs(tries) do
      local status = post(srv.url .. try[1], EVENT, try[2])
      assert.are.equal(500, status, try[1])
      assert.matches("receive: " .. try[3], srv.error_log(), 1, true)
    end
    assert.are.equal(0, report().empty_handled, "a request was handled")
  end)

  it("checks basic auth as EventBridge connections send it, and handles nothing without it", function()
    local b64 = require("dynlog.core").base64_encode
    local refused = {
      "Basic " .. b64("bus:guess"), "Basic " .. b64("bus:s3cret "), "Basic " .. b64("bus:s3cre"),
      "Basic " .. b64("other:s3cret"), "Basic " .. b64("bus"), "Basic " .. b64(""), "Basic not-base64!",
      "Basic", "Bearer " .. b64("bus:s3cret"), b64("bus:s3cret"),
    }
    local before = report().handled
    assert.are.equal(401, (post(srv.url .. "/basic", EVENT)))
    for _, value in ipairs(refused) do
      assert.are.equal(401, (post(srv.url .. "/basic", EVENT, { authorization = value })), value)
    end
    assert.are.equal(before, report().handled, "a refused request was handled")
    assert.are.equal(200, (post(srv.url .. "/basic", EVENT, { authorization = "Basic " .. b64("bus:s3cret") })))
    assert.are.equal(200, (post(srv.url .. "/basic", EVENT, { authorization = "basic  " .. b64("bus:s3cret") })))
    assert.are.equal(before + 2, report().handled)
  end)

  it("answers 400 to malformed JSON and non-events, 413 to oversized bodies, 405 to GET", function()
    local key = { ["x-api-key"] = "test-key" }
    assert.are.equal(400, (post(srv.url .. "/rx", "{not json", { ["x-api-key"] = "test-key" })))
    assert.are.equal(400, (post(srv.url .. "/rx", '{"no":"detail"}', { ["x-api-key"] = "test-key" })))
    assert.are.equal(400, (post(srv.url .. "/rx", '{"detail":[]}', key)), "a detail that is an array")
    assert.are.equal(400, (post(srv.url .. "/rx", "[" .. EVENT .. "]", key)), "a list of events")
    assert.are.equal(413, (post(srv.url .. "/rx", string.rep("x", 5000), key)))
    assert.are.equal(405, (request("GET", srv.url .. "/rx", nil, { ["x-api-key"] = "test-key" })))
  end)

  it("answers 400 for input that will never succeed and 5xx for a failure worth retrying", function()
    local bad = json.decode(EVENT)
    bad.detail.bad = true
    assert.are.equal(400, (post(srv.url .. "/rx", json.encode(bad), { ["x-api-key"] = "test-key" })))
    request("GET", srv.url .. "/script?fail=1")
    assert.are.equal(500, (post(srv.url .. "/rx", EVENT, { ["x-api-key"] = "test-key" })))
    assert.are.equal(200, (post(srv.url .. "/rx", EVENT, { ["x-api-key"] = "test-key" })))
  end)

  it("tells EventBridge which handler errors to drop (400), slow down for (429) or retry (500)", function()
    local cases = {
      -- input that can never be handled: EventBridge drops it
      invalid_argument = 400, too_large = 400, schema_mismatch = 400, ValidationException = 400,
      SerializationException = 400,
      -- capacity: retried, more slowly
      ThrottlingException = 429, ProvisionedThroughputExceededException = 429, RequestLimitExceeded = 429,
      -- may pass later: retried
      gap = 500, conflict = 500, ResourceNotFoundException = 500, AccessDeniedException = 500,
      timeout = 500, connection = 500, InternalServerError = 500, publish_failed = 500,
      some_code_of_the_handler = 500, plain = 500,
    }
    local key = { ["x-api-key"] = "test-key" }
    local before = report().handled
    for code, expected in pairs(cases) do
      local event = json.decode(EVENT)
      event.detail.fail = code
      local status, body = post(srv.url .. "/rx", json.encode(event), key)
      assert.are.equal(expected, status, code .. " answered " .. tostring(status) .. " " .. tostring(body))
      if code ~= "plain" then assert.are.equal(code, json.decode(body).message) end
    end
    assert.are.equal(before, report().handled)
  end)

  local function put_events(entries)
    local status, body = post(srv.url .. "/bus", json.encode({ Entries = entries }),
      { ["x-amz-target"] = "AWSEvents.PutEvents", ["content-type"] = "application/x-amz-json-1.1" })
    return status, json.decode(body)
  end

  local function entry(log, extra)
    local e = { Source = "dynamodb-log", DetailType = "stream changes", EventBusName = "dynamodb-log",
                Detail = json.encode({ log = log, key = { pk = log .. "#1#stream", sk = "s" } }) }
    for k, v in pairs(extra or {}) do e[k] = v end
    return e
  end

  it("answers PutEvents in EventBridge's shape, refusing bad entries one by one", function()
    local status, resp = put_events({ entry("orders"), entry("orders", { Source = "" }),
      entry("orders", { Detail = "[1,2]" }), entry("orders", { EventBusName = "elsewhere" }) })
    assert.are.equal(200, status)
    assert.are.equal(3, resp.FailedEntryCount)
    assert.matches("^%x+%-%x+%-4%x+%-%x+%-%x+$", resp.Entries[1].EventId)
    assert.are.equal("InvalidArgument", resp.Entries[2].ErrorCode)
    assert.are.equal("MalformedDetail", resp.Entries[3].ErrorCode)
    assert.are.equal("ResourceNotFoundException", resp.Entries[4].ErrorCode)
  end)

  it("refuses requests EventBridge would refuse whole", function()
    local eleven = {}
    for i = 1, 11 do eleven[i] = entry("orders") end
    assert.are.equal(400, (put_events(eleven)))
    assert.are.equal(400, (put_events({})))
    local big = entry("orders", { Detail = json.encode({ blob = string.rep("x", 300 * 1024) }) })
    assert.are.equal(400, (put_events({ big })))
    assert.are.equal(400, (post(srv.url .. "/bus", "{}", { ["x-amz-target"] = "AWSEvents.ListRules" })))
  end)

  -- A PutEvents call with this raw body: status, decoded answer, content type.
  local function put_raw(body)
    local status, text, headers = post(srv.url .. "/bus", body,
      { ["x-amz-target"] = "AWSEvents.PutEvents", ["content-type"] = "application/x-amz-json-1.1" })
    return status, json.decode(text), headers["content-type"]
  end

  it("refuses whole, as a SerializationException, a request whose fields have the wrong JSON types", function()
    -- Each call also holds a good entry for the raw target: none may go out.
    local good = { Source = "raw-test", DetailType = "raw", Detail = '{"refused":true}' }
    local function with(field, value)
      local e = entry("orders")
      e[field] = value
      return json.encode({ Entries = { good, e } })
    end
    local cases = {
      { "a body that is not JSON", "{not json" },
      { "a body that is a JSON array", "[]" },
      { "Entries as an object", json.encode({ Entries = { a = good } }) },
      { "an entry that is not an object", json.encode({ Entries = { good, "entry" } }) },
      { "a numeric Source", with("Source", 5) },
      { "a Detail given as an object, not as text", with("Detail", { log = "orders" }) },
      { "a numeric EventBusName", with("EventBusName", 1) },
      { "Resources holding numbers", with("Resources", { 1, 2 }) },
      { "Resources as an object", with("Resources", { x = "y" }) },
      { "a Time that is not a number", with("Time", "yesterday") },
      { "a TraceHeader that is an array", with("TraceHeader", { "t" }) },
    }
    local before = json.decode(select(2, request("GET", srv.url .. "/raw-report"))).count
    for _, case in ipairs(cases) do
      local status, resp, content_type = put_raw(case[2])
      assert.are.equal(400, status, case[1])
      assert.are.equal("SerializationException", resp.__type, case[1])
      assert.are.equal("application/x-amz-json-1.1", content_type, case[1])
    end
    local status, resp, content_type = put_raw(json.encode({ NoEntries = true }))
    assert.are.equal(400, status)
    assert.are.equal("ValidationException", resp.__type)
    assert.matches("Member must not be null", resp.message, 1, true)
    assert.are.equal("application/x-amz-json-1.1", content_type)
    status, resp = put_raw(json.encode({ Entries = json.array() }))
    assert.are.equal(400, status)
    assert.are.equal("ValidationException", resp.__type)
    -- Nothing went out for the good entries of the refused calls: the one
    -- delivery to the raw target is the one of this accepted call.
    status = put_events({ { Source = "raw-test", DetailType = "raw", Detail = '{"accepted":true}' } })
    assert.are.equal(200, status)
    local got = wait_for(function()
      local r = json.decode(select(2, request("GET", srv.url .. "/raw-report")))
      return r.count > before and r
    end, 10)
    assert.is_truthy(got, "the accepted entry was delivered")
    socket.sleep(0.3)
    local r = json.decode(select(2, request("GET", srv.url .. "/raw-report")))
    assert.are.equal(before + 1, r.count)
    assert.matches('"accepted":true', r.last, 1, true)
  end)

  it("accepts the bus by name or by ARN, and refuses another region's, account's or bus's ARN", function()
    local arn = "arn:aws:events:us-east-1:000000000000:event-bus/"
    local status, resp = put_events({
      entry("orders", { EventBusName = arn .. "dynamodb-log" }),
      entry("orders", { EventBusName = arn .. "default" }),
      entry("orders", { EventBusName = "default" }),
      entry("orders", { EventBusName = "arn:aws:events:eu-west-1:000000000000:event-bus/dynamodb-log" }),
      entry("orders", { EventBusName = "arn:aws:events:us-east-1:123456789012:event-bus/dynamodb-log" }),
      entry("orders", { EventBusName = arn .. "elsewhere" }),
    })
    assert.are.equal(200, status)
    assert.are.equal(3, resp.FailedEntryCount)
    for i = 1, 3 do assert.is_string(resp.Entries[i].EventId, "entry " .. i) end
    for i = 4, 6 do assert.are.equal("ResourceNotFoundException", resp.Entries[i].ErrorCode, "entry " .. i) end
  end)

  it("counts EventBusName and TraceHeader in the request size, as EventBridge does", function()
    local limit = 256 * 1024
    -- Source, DetailType and Detail of one entry of `bytes` bytes in all
    local function sized(bytes, extra)
      local e = entry("orders", extra)
      local fixed = #e.Source + #e.DetailType + #'{"log":"orders","pad":""}'
      e.Detail = json.encode({ log = "orders", pad = string.rep("p", bytes - fixed) })
      assert(#e.Source + #e.DetailType + #e.Detail == bytes)
      return e
    end
    local bus = "dynamodb-log"
    local trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
    -- exactly at the limit: accepted
    local status, resp = put_events({ sized(limit - #bus - #trace, { EventBusName = bus, TraceHeader = trace }) })
    assert.are.equal(200, status)
    assert.are.equal(0, resp.FailedEntryCount)
    -- one byte more, from the bus name or the trace header: refused whole
    status, resp = put_events({ sized(limit - #bus - #trace + 1, { EventBusName = bus, TraceHeader = trace }) })
    assert.are.equal(400, status)
    assert.are.equal("ValidationException", resp.__type)
    status = put_events({ sized(limit - #bus + 1, { EventBusName = bus }) })
    assert.are.equal(400, status)
    status = put_events({ sized(limit - #trace + 1, { TraceHeader = trace, EventBusName = json.null }) })
    assert.are.equal(400, status)
  end)

  it("delivers an event of the largest size it accepts to a receiver on defaults", function()
    local limit = 256 * 1024
    local e = entry("orders", { Source = "big-test", EventBusName = json.null })
    local fixed = #e.Source + #e.DetailType + #'{"log":"orders","pad":""}'
    e.Detail = json.encode({ log = "orders", pad = string.rep("p", limit - fixed) })
    local status, resp = put_events({ e })
    assert.are.equal(200, status)
    assert.are.equal(0, resp.FailedEntryCount)
    -- With its envelope the event is over 256 KB: the receiver takes it all the same.
    assert.is_truthy(wait_for(function() return report().default_handled == 1 end, 10), "handled")
  end)

  it("refuses an entry whose Time is not a time of years 1970 to 9999", function()
    local status, resp = put_events({ entry("orders", { Time = 1e20 }), entry("orders", { Time = 1e12 }),
                                      entry("orders", { Time = -1 }), entry("orders", { Time = 253402300799 }) })
    assert.are.equal(200, status)
    assert.are.equal(3, resp.FailedEntryCount)
    for i = 1, 3 do assert.are.equal("InvalidArgument", resp.Entries[i].ErrorCode) end
    assert.is_string(resp.Entries[4].EventId)
  end)

  it("refuses a Detail with an integer beyond int64 or nested deeper than 1000 levels", function()
    local details = {
      { '{"n":123456789012345678901234567890}', "MalformedDetail" },
      { '{"n":9223372036854775808}', "MalformedDetail" },
      { '{"a":[1,{"n":-9223372036854775809}]}', "MalformedDetail" },
      { '{"n":9223372036854775807,"m":-9223372036854775808}', nil },
      { '{"s":"123456789012345678901234567890","q":"\\"99999999999999999999","f":1.5e300,'
        .. '"g":12345678901234567890.5,"e":1e30}', nil },
      { '{"d":' .. string.rep("[", 1000) .. string.rep("]", 1000) .. "}", "MalformedDetail" },
      { '{"d":' .. string.rep("[", 998) .. string.rep("]", 998) .. "}", nil },
    }
    local entries = {}
    for i, d in ipairs(details) do entries[i] = entry("orders", { Detail = d[1] }) end
    local status, resp = put_events(entries)
    assert.are.equal(200, status)
    for i, d in ipairs(details) do
      assert.are.equal(d[2], resp.Entries[i].ErrorCode, "detail " .. i .. ": " .. d[1]:sub(1, 60))
    end
  end)

  it("delivers the detail byte for byte, and the entry's Time and Resources, in the envelope", function()
    local before = json.decode(select(2, request("GET", srv.url .. "/raw-report"))).count
    local detail = '{"big": 9223372036854775807, "n": 1.0, "s": "\\u00e9"}'
    local status, resp = put_events({ { Source = "raw-test", DetailType = "raw", Detail = detail,
      Time = 1700000000, Resources = { "arn:aws:dynamodb:us-east-1:000000000000:table/t" } } })
    assert.are.equal(200, status)
    assert.are.equal(0, resp.FailedEntryCount)
    local got = wait_for(function()
      local r = json.decode(select(2, request("GET", srv.url .. "/raw-report")))
      return r.count > before and r
    end, 10)
    assert.is_truthy(got, "delivered")
    assert.is_truthy(got.last:find('"detail":' .. detail, 1, true), got.last)
    local envelope = json.decode(got.last)
    assert.are.equal(resp.Entries[1].EventId, envelope.id)
    assert.are.equal("2023-11-14T22:13:20Z", envelope.time)
    assert.are.same({ "arn:aws:dynamodb:us-east-1:000000000000:table/t" }, envelope.resources)
  end)

  it("delivers matching events in the EventBridge envelope, retrying a failing target until it succeeds", function()
    local before = report()
    request("GET", srv.url .. "/script?fail=2")
    local status, resp = put_events({ entry("users"), entry("orders") })
    assert.are.equal(200, status)
    assert.are.equal(0, resp.FailedEntryCount)
    local after = wait_for(function()
      local r = report()
      return r.handled > before.handled and r
    end, 10)
    assert.is_truthy(after, "delivered after the faults")
    assert.are.equal(before.calls + 3, after.calls, "two failed deliveries, then the success")
    assert.are.equal(before.handled + 1, after.handled, "orders matched no rule")
    local envelope = json.decode(after.last)
    assert.are.equal("0", envelope.version)
    assert.are.equal(resp.Entries[1].EventId, envelope.id)
    assert.are.equal("stream changes", envelope["detail-type"])
    assert.are.equal("dynamodb-log", envelope.source)
    assert.are.equal("000000000000", envelope.account)
    assert.are.equal("us-east-1", envelope.region)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", envelope.time)
    assert.are.same({}, envelope.resources)
    assert.are.equal("users", envelope.detail.log)
  end)

  it("has at most max_in_flight deliveries under way per target; the rest wait their turn", function()
    local entries = {}
    for i = 1, 10 do entries[i] = entry("users") end
    local status = post(srv.url .. "/slowbus", json.encode({ Entries = entries }),
      { ["x-amz-target"] = "AWSEvents.PutEvents", ["content-type"] = "application/x-amz-json-1.1" })
    assert.are.equal(200, status)
    local r = wait_for(function()
      local _, body = request("GET", srv.url .. "/slow-report")
      local got = json.decode(body)
      return got.done == 10 and got
    end, 10)
    assert.is_truthy(r, "all ten delivered")
    assert.are.equal(2, r.peak)
  end)
end)

describe("dynlog.ngx options", function()
  local ngx_dynlog = require "dynlog.ngx"
  local function handle() return true end

  -- The message of what f raises; it must blame this file (the caller's line).
  local function raised(f)
    local ok, err = pcall(f)
    assert.is_false(ok, "did not raise")
    err = tostring(err)
    assert.matches("^spec/nginx/ngx_spec%.lua:%d+: ", err)
    return (err:gsub("^spec/nginx/ngx_spec%.lua:%d+: ", ""))
  end

  it("receive raises on an unknown key of the spec, its auth or auth.basic, naming the nearest known one", function()
    assert.are.equal('receive: unknown option "handel" (did you mean "handle"?)',
      raised(function() ngx_dynlog.receive({ handel = handle }) end))
    assert.are.equal('receive: unknown option "max_bdy" (did you mean "max_body"?)',
      raised(function() ngx_dynlog.receive({ handle = handle, max_bdy = 10 }) end))
    assert.are.equal('receive: auth: unknown option "vale" (did you mean "value"?)',
      raised(function() ngx_dynlog.receive({ handle = handle, auth = { header = "x-api-key", vale = "k" } }) end))
    assert.are.equal('receive: auth.basic: unknown option "pasword" (did you mean "password"?)',
      raised(function() ngx_dynlog.receive({ handle = handle, auth = { basic = { user = "u", pasword = "p" } } }) end))
  end)

  it("bus and start_bus raise on an unknown key of the config, a rule or a target", function()
    local target = { url = "http://127.0.0.1:1/x" }
    local rule = { pattern = { source = { "s" } }, targets = { target } }
    assert.are.equal('bus: unknown option "rulez" (did you mean "rules"?)',
      raised(function() ngx_dynlog.bus({ rulez = {} }) end))
    assert.are.equal('start_bus: unknown option "max_inflight" (did you mean "max_in_flight"?)',
      raised(function() ngx_dynlog.start_bus({ max_inflight = 2 }) end))
    assert.are.equal('bus: rules[1]: unknown option "target" (did you mean "targets"?)',
      raised(function() ngx_dynlog.bus({ rules = { { pattern = rule.pattern, target = { target } } } }) end))
    assert.are.equal('bus: rules[1].targets[1]: unknown option "header" (did you mean "headers"?)',
      raised(function()
        ngx_dynlog.bus({ rules = { { pattern = rule.pattern, targets = { { url = target.url, header = {} } } } } })
      end))
    assert.are.equal('bus: auth: unknown option "headr" (did you mean "header"?)',
      raised(function() ngx_dynlog.bus({ auth = { headr = "x-api-key", value = "k" }, rules = { rule } }) end))
  end)

  it("raises when a key, user or password to check is empty: the receiver must never fail open", function()
    local cases = {
      { { header = "x-api-key", value = "" }, "auth.value must be a non-empty string" },
      { { header = "x-api-key" }, "auth.value must be a non-empty string" },
      { { header = "", value = "k" }, "auth.header must be a non-empty header name" },
      { { basic = { user = "", password = "" } }, "auth.basic.user and auth.basic.password must be non-empty" },
      { { basic = { user = "bus", password = "" } }, "auth.basic.user and auth.basic.password must be non-empty" },
      { { basic = { user = "", password = "p" } }, "auth.basic.user and auth.basic.password must be non-empty" },
      { { basic = { user = "u", password = "p" }, header = "x-api-key", value = "k" }, "not both" },
    }
    for _, case in ipairs(cases) do
      local message = raised(function() ngx_dynlog.receive({ handle = handle, auth = case[1] }) end)
      assert.matches("^receive: ", message)
      assert.matches(case[2], message, 1, true)
      message = raised(function() ngx_dynlog.bus({ auth = case[1] }) end)
      assert.matches("^bus: ", message)
      assert.matches(case[2], message, 1, true)
    end
  end)
end)

describe("dynlog.ngx.bus when a worker dies", function()
  local srv

  setup(function()
    srv = nginx.start({
      workers = 2,
      http = [[
        lua_shared_dict rx 1m;
        lua_shared_dict dynlog_bus 8m;
        lua_shared_dict tiny_bus 64k;
        init_worker_by_lua_block {
          require("dynlog.ngx").start_bus({})
          require("dynlog.ngx").start_bus({ shared_dict = "tiny_bus" })
        }
      ]],
      server = [[
        location = /bus { content_by_lua_block {
          ngx.shared.rx:set("bus_pid", ngx.worker.pid())
          require("dynlog.ngx").bus(require("spec.support.ngx_app").crash_bus(ngx.var.server_port)) } }
        location = /short-bus { content_by_lua_block {
          require("dynlog.ngx").bus(require("spec.support.ngx_app").short_bus(ngx.var.server_port)) } }
        location = /tiny-bus { content_by_lua_block {
          require("dynlog.ngx").bus(require("spec.support.ngx_app").tiny_bus(ngx.var.server_port)) } }
        location = /crash-target { content_by_lua_block { require("spec.support.ngx_app").crash_target() } }
        location = /crash-report { content_by_lua_block { require("spec.support.ngx_app").crash_report() } }
      ]],
    })
  end)

  teardown(function() if srv then srv.stop() end end)

  it("delivers every accepted event at least once after kill -9 of the worker that holds them", function()
    local events = 30
    local function crash_report()
      local _, body = request("GET", srv.url .. "/crash-report?n=" .. events)
      return json.decode(body)
    end
    -- The bus accepts every event, answering 200, and delivers them one at a time.
    for first = 1, events, 10 do
      local entries = {}
      for n = first, first + 9 do
        entries[#entries + 1] = { Source = "crash-test", DetailType = "t", Detail = json.encode({ n = n }) }
      end
      local status, body = post(srv.url .. "/bus", json.encode({ Entries = entries }),
        { ["x-amz-target"] = "AWSEvents.PutEvents", ["content-type"] = "application/x-amz-json-1.1" })
      assert.are.equal(200, status)
      assert.are.equal(0, json.decode(body).FailedEntryCount)
    end
    -- Mid-delivery, the worker that accepted them (and holds them) dies.
    local r = wait_for(function()
      local got = crash_report()
      return got.done >= 2 and got
    end, 10)
    assert.is_truthy(r, "deliveries began")
    assert.is_true(r.done < events / 2, "deliveries were still waiting when the worker was killed")
    local pid = assert(tonumber(r.bus_pid))
    os.execute("kill -9 " .. pid)
    assert.is_truthy(wait_for(function()
      return srv.error_log():find("process " .. pid .. " exited on signal 9", 1, true)
    end, 10), "the worker was killed")
    -- nginx starts another worker in its place, which takes its deliveries up.
    local all = wait_for(function()
      local got = crash_report()
      for n = 1, events do
        if got.got[n] < 1 then return nil end
      end
      return got
    end, 30)
    local missing = {}
    if not all then
      local got = crash_report()
      for n = 1, events do
        if got.got[n] < 1 then missing[#missing + 1] = n end
      end
    end
    assert.is_truthy(all, "events never delivered: " .. table.concat(missing, ", "))
  end)

  -- PutEvents of events from..to (detail.n) to a bus location: the answer.
  local function put_numbered(location, from, to, pad)
    local entries = {}
    for n = from, to do
      entries[#entries + 1] = { Source = "crash-test", DetailType = "t",
                                Detail = json.encode({ n = n, pad = pad and string.rep("p", pad) or nil }) }
    end
    local status, body = post(srv.url .. location, json.encode({ Entries = entries }),
      { ["x-amz-target"] = "AWSEvents.PutEvents", ["content-type"] = "application/x-amz-json-1.1" })
    assert.are.equal(200, status)
    return json.decode(body)
  end

  -- Every entry answered with an EventId is delivered, and no other.
  local function delivered_as_answered(answer, from, to)
    local want = {}
    for i = from, to do want[#want + 1] = answer.Entries[i - from + 1].EventId and 1 or 0 end
    local got = wait_for(function()
      local _, body = request("GET", ("%s/crash-report?from=%d&n=%d"):format(srv.url, from, to))
      local r = json.decode(body)
      for i = 1, #want do if (want[i] == 1) ~= (r.got[i] >= 1) then return nil end end
      return r
    end, 15)
    assert.is_truthy(got, "the accepted entries, and only they, delivered")
    socket.sleep(0.5)
    local _, body = request("GET", ("%s/crash-report?from=%d&n=%d"):format(srv.url, from, to))
    for i, g in ipairs(json.decode(body).got) do
      assert.are.equal(want[i], math.min(g, 1), "event " .. (from + i - 1))
    end
  end

  it("refuses, with ThrottlingException, entries beyond max_queue deliveries waiting for a target", function()
    local answer = put_numbered("/short-bus", 101, 105)
    assert.are.equal(3, answer.FailedEntryCount)
    for i = 3, 5 do
      assert.are.equal("ThrottlingException", answer.Entries[i].ErrorCode)
      assert.matches("2 deliveries to http://127.0.0.1:%d+/crash%-target already wait", answer.Entries[i].ErrorMessage)
    end
    delivered_as_answered(answer, 101, 105)
  end)

  it("refuses, with ThrottlingException, entries its shared dict has no room for, and evicts none", function()
    local answer = put_numbered("/tiny-bus", 201, 210, 6000)
    assert.is_true(answer.FailedEntryCount > 0 and answer.FailedEntryCount < 10, answer.FailedEntryCount .. " failed")
    for _, e in ipairs(answer.Entries) do
      if not e.EventId then
        assert.are.equal("ThrottlingException", e.ErrorCode)
        assert.matches("lua_shared_dict tiny_bus", e.ErrorMessage, 1, true)
      end
    end
    delivered_as_answered(answer, 201, 210)
  end)
end)

describe("core.constant_time_equal, the receiver's credential check", function()
  local equal = require("dynlog.core").constant_time_equal

  it("is true only for the same bytes", function()
    assert.is_true(equal("test-key", "test-key"))
    assert.is_true(equal("", ""))
    assert.is_true(equal("a\0b", "a\0b"))
    local secret = string.rep("k", 63) .. "\255"
    assert.is_true(equal(secret, secret:sub(1)))
    for _, other in ipairs({ "Test-key", "test-kez", "xest-key", "test-ke", "test-key ", "", "test-key\0",
                             "test\0key" }) do
      assert.is_false(equal("test-key", other), ("%q"):format(other))
      assert.is_false(equal(other, "test-key"), ("%q"):format(other))
    end
    assert.is_false(equal("a\0b", "a\0c"))
    assert.is_false(equal(secret, string.rep("k", 64)))
  end)

  it("raises on a value that is not a string", function()
    assert.has_error(function() equal(nil, "x") end)
    assert.has_error(function() equal("x", {}) end)
  end)

  it("takes as long whether a guess is wrong at its first byte or at its last", function()
    -- A comparison that stops at the first difference answers a guess wrong
    -- at byte 1 far sooner than one wrong at the last byte; this one does not.
    local n = 1024 * 1024
    local secret = string.rep("s", n)
    local early, late = "x" .. string.rep("s", n - 1), string.rep("s", n - 1) .. "x"
    local clock = os.clock
    local t_early, t_late = 0, 0
    for _ = 1, 30 do
      local t0 = clock()
      assert.is_false(equal(secret, early))
      local t1 = clock()
      assert.is_false(equal(secret, late))
      t_early, t_late = t_early + (t1 - t0), t_late + (clock() - t1)
    end
    local ratio = t_early / t_late
    assert.is_true(ratio > 0.5 and ratio < 2, ("early %.4f s, late %.4f s"):format(t_early, t_late))
  end)
end)

describe("examples/nginx.conf", function()
  local prefix, pid

  local function sh(cmd)
    assert(run.succeeded(cmd), cmd)
  end

  teardown(function()
    if pid then os.execute("kill -QUIT " .. pid .. " 2>/dev/null; sleep 1; kill -9 " .. pid .. " 2>/dev/null") end
    if prefix then os.execute("rm -rf " .. prefix) end
  end)

  it("runs the users pipeline: appends → consumer in nginx → local bus → receiver → core table, and counts it"
    .. " in /metrics", function()
    local c = ddb.ready_client()
    local port = run.free_port()
    prefix = os.tmpname()
    os.remove(prefix)
    local repo = select(2, run.run("pwd")):gsub("%s+$", "")
    sh(("mkdir -p %s/logs %s/tmp && chmod 755 %s"):format(prefix, prefix, prefix))
    for _, dir in ipairs({ "lua", "buildjit", "examples" }) do
      sh(("ln -s %s/%s %s/%s"):format(repo, dir, prefix, dir))
    end
    local f = assert(io.open("examples/nginx.conf"))
    local conf = f:read("*a"):gsub("listen 127%.0%.0%.1:8088;", "listen 127.0.0.1:" .. port .. ";")
    f:close()
    -- As root, nginx's workers would run as nobody; keep them able to read the repository.
    if select(2, run.run("id -u")):match("^0") then conf = "user root;\n" .. conf end
    f = assert(io.open(prefix .. "/nginx.conf", "w"))
    f:write(conf)
    f:close()
    local vars = {
      DYNLOG_TABLE = c.table, DYNLOG_NGINX_URL = "http://127.0.0.1:" .. port, DYNLOG_API_KEY = "e2e-key",
      AWS_REGION = "us-east-1", AWS_ACCESS_KEY_ID = "AKIDSPEC", AWS_SECRET_ACCESS_KEY = "spec-secret-key",
      AWS_ENDPOINT_URL_DYNAMODB = env.dynamodb_endpoint(),
    }
    local status, out = run.run(("nginx -p %s -c nginx.conf"):format(prefix), vars)
    assert.are.equal(0, status, out)
    pid = tonumber(assert(wait_for(function()
      local pf = io.open(prefix .. "/logs/nginx.pid")
      if not pf then return nil end
      local text = pf:read("*a")
      pf:close()
      return text:match("%d+")
    end, 10)))

    -- The bus takes events from this host only: from another address
    -- (127.0.0.2, loopback too) it answers 403 and publishes nothing.
    local function put_from(source)
      local conn = socket.tcp()
      conn:settimeout(5)
      assert(conn:bind(source, 0))
      assert(conn:connect("127.0.0.1", port))
      local body = json.encode({ Entries = { { Source = "dynamodb-log", DetailType = "stream changes",
        Detail = json.encode({ log = "users", key = { pk = "users#x#stream", sk = "s" } }) } } })
      conn:send("POST /bus HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: AWSEvents.PutEvents\r\n"
        .. "Content-Type: application/x-amz-json-1.1\r\nContent-Length: " .. #body .. "\r\nConnection: close\r\n\r\n"
        .. body)
      local line = conn:receive("*l")
      conn:close()
      return tonumber(line and line:match("^HTTP/1%.%d (%d+)"))
    end
    assert.are.equal(403, put_from("127.0.0.2"))

    local users = 20
    local last = {}
    for i = 1, users do
      local id = "u" .. i
      assert(c:append("users", id, "signup", { name = "User " .. i, email = id .. "@example.com" }))
      assert(c:append("users", id, "addPhoneNumber", { phoneNumber = "+1 555 " .. i }))
      assert(c:append("users", id, "verifyPhoneNumber", {}))
      last[id] = assert(c:append("users", id, "addLocation", { lat = i, long = -i })).sk
    end
    local core_table = c.table .. "-core"
    local done = wait_for(function()
      for i = 1, users do
        local id = "u" .. i
        local resp = c:call("GetItem", { TableName = core_table, ConsistentRead = true,
          Key = { pk = { S = "users#" .. id }, sk = { S = "users#" .. id } } })
        if not (resp and resp.Item and resp.Item.version and resp.Item.version.S == last[id]) then return nil end
      end
      return true
    end, 60)
    local log = io.open(prefix .. "/logs/error.log")
    local text = log and log:read("*a") or ""
    if log then log:close() end
    assert.is_true(done == true, "every user projected; nginx error log:\n" .. text:sub(-3000))
    local resp = assert(c:call("GetItem", { TableName = core_table, ConsistentRead = true,
      Key = { pk = { S = "users#u7" }, sk = { S = "users#u7" } } }))
    assert.are.same({ S = "User 7" }, resp.Item.name)
    assert.are.same({ BOOL = true }, resp.Item.verifiedPhoneNumber)
    assert.are.same({ M = { lat = { N = "7" }, long = { N = "-7" } } }, resp.Item.location)

    -- /metrics: every worker's metrics of that work, in a text promtool accepts.
    -- The read models are written before the receiver counts its delivery
    -- and before the consumer counts the batch (after its checkpoint): wait
    -- for the counters to catch up with the projections seen above.
    local events = users * 4
    local status_m, metrics_text
    local function sample(name, want)
      local total, found = 0, false
      for line in (metrics_text or ""):gmatch("[^\n]+") do
        local n, labels, v = line:match("^([%w_]+){?(.-)}? (%S+)$")
        if n == name then
          local all = true
          for k, wanted in pairs(want or {}) do
            if not labels:find(k .. '="' .. wanted .. '"', 1, true) then all = false end
          end
          if all then total, found = total + tonumber(v), true end
        end
      end
      return found and total or nil
    end
    local counted = socket.gettime() + 15
    repeat
      status_m, metrics_text = request("GET", "http://127.0.0.1:" .. port .. "/metrics")
      assert.are.equal(200, status_m, metrics_text)
      local done_counting = (sample("dynlog_receiver_deliveries_total", { status = "200" }) or 0) >= events
        and (sample("dynlog_consumer_records_total", { group = c.table }) or 0) >= events
      if not done_counting then socket.sleep(0.1) end
    until done_counting or socket.gettime() > counted
    local pstatus, pout = promtool.check(metrics_text)
    assert.are.equal(0, pstatus, pout .. "\n" .. metrics_text)
    assert.are.equal("", pout)
    assert.are.equal(events, sample("dynlog_projection_events_applied_total", { table = core_table }))
    assert.is_true(sample("dynlog_receiver_deliveries_total", { status = "200" }) >= events)
    assert.is_true(sample("dynlog_consumer_records_total", { group = c.table }) >= events)
    assert.is_true(sample("dynlog_consumer_batches_total", { group = c.table }) >= 1)
    assert.are.equal(0, sample("dynlog_consumer_lag_seconds", { group = c.table }))
    assert.is_true(sample("dynlog_publish_entries_total") >= events)
    for _, op in ipairs({ { "dynamodb", "GetItem" }, { "dynamodb", "Query" }, { "dynamodb", "PutItem" },
                          { "streams", "GetRecords" }, { "events", "PutEvents" } }) do
      local labels = { service = op[1], operation = op[2] }
      local n = sample("dynlog_requests_total", labels)
      assert.is_true((n or 0) > 0, op[2] .. " counted")
      assert.are.equal(n, sample("dynlog_request_duration_seconds_count", labels), op[2] .. ": histogram count")
      labels.le = "+Inf"
      assert.are.equal(n, sample("dynlog_request_duration_seconds_bucket", labels), op[2] .. ": +Inf bucket")
    end

    -- Workers that exit hand their leases back.
    os.execute("kill -QUIT " .. pid)
    assert.is_truthy(wait_for(function() return not run.succeeded("kill -0 " .. pid .. " 2>/dev/null") end, 40),
      "nginx exited after QUIT")
    pid = nil
    local leases = require "dynlog.pipeline.leases"
    local all = assert(leases.read_all(c, c.table .. "-checkpoints", c.table))
    local n = 0
    for _, lease in pairs(all) do
      n = n + 1
      assert.is_nil(lease.owner, "lease of " .. lease.sk .. " handed back")
    end
    assert.is_true(n > 0)
  end)
end)
