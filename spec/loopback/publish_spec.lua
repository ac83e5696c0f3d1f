-- c:publish against a loopback endpoint that answers PutEvents as
-- EventBridge does and records what it received.
local dynlog = require "dynlog"
local errors = require "dynlog.errors"
local json = require "dynlog.json"
local server = require "spec.support.server"
local sigv4 = require "dynlog.sigv4"

local KEY = { access_key_id = "AKIDPUBLISH", secret_access_key = "publish-secret-key" }

local function client_for(srv, opts)
  local o = { table = "events", region = "eu-west-1", endpoint = "http://127.0.0.1:1",
              events_endpoint = srv.url, credentials = KEY, sleep = function() end }
  for k, v in pairs(opts or {}) do o[k] = v end
  return dynlog.new(o)
end

local function entry(n, detail)
  return { source = "dynamodb-log", detail_type = "stream changes", bus = "dynamodb-log",
           detail = detail or { log = "users", n = n } }
end

local function entries_of(request)
  return json.decode(request.body).Entries
end

describe("publish", function()
  local srv
  after_each(function() if srv then srv.stop() end srv = nil end)

  it("sends a signed PutEvents request that EventBridge would accept", function()
    srv = server.start({ { method = "POST", path = "/", responses = { { putevents = true } } } })
    local c = client_for(srv)
    local results = assert(c:publish({ entry(1), { source = "s", detail_type = "d", detail = '{"a":1}',
      resources = { "arn:aws:dynamodb:eu-west-1:1:table/t" }, time = 1700000000, trace_header = "Root=1" } }))
    assert.are.equal(2, #results)
    assert.matches("^00000000%-", results[1].event_id)

    local req = srv.requests()[1]
    assert.are.equal("POST", req.method)
    assert.are.equal("AWSEvents.PutEvents", req.headers["x-amz-target"])
    assert.are.equal("application/x-amz-json-1.1", req.headers["content-type"])
    -- The signature, recomputed from what arrived, for service "events".
    local amz_date = req.headers["x-amz-date"]
    local y, mo, d, h, mi, s = amz_date:match("^(%d%d%d%d)(%d%d)(%d%d)T(%d%d)(%d%d)(%d%d)Z$")
    local time = require("dynlog.base.timeutil").days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400
      + h * 3600 + mi * 60 + s
    local expected = sigv4.sign({ method = "POST", url = srv.url .. "/", body = req.body, region = "eu-west-1",
      service = "events", credentials = KEY, time = time,
      headers = { ["Content-Type"] = req.headers["content-type"], ["X-Amz-Target"] = req.headers["x-amz-target"] } })
    assert.are.equal(expected.Authorization, req.headers.authorization)
    assert.matches("/eu%-west%-1/events/aws4_request", req.headers.authorization)

    local sent = entries_of(req)
    assert.are.same({ log = "users", n = 1 }, json.decode(sent[1].Detail))
    assert.are.equal("dynamodb-log", sent[1].EventBusName)
    assert.are.equal("stream changes", sent[1].DetailType)
    assert.are.equal('{"a":1}', sent[2].Detail)
    assert.are.equal(1700000000, sent[2].Time)
    assert.are.same({ "arn:aws:dynamodb:eu-west-1:1:table/t" }, sent[2].Resources)
    assert.are.equal("Root=1", sent[2].TraceHeader)
  end)

  it("splits at 10 entries per call", function()
    srv = server.start({ { method = "POST", path = "/", responses = { { putevents = true } } } })
    local list = {}
    for i = 1, 25 do list[i] = entry(i) end
    local results = assert(client_for(srv):publish(list))
    assert.are.equal(25, #results)
    local sizes = {}
    for _, req in ipairs(srv.requests()) do sizes[#sizes + 1] = #entries_of(req) end
    assert.are.same({ 10, 10, 5 }, sizes)
    local order = {}
    for _, req in ipairs(srv.requests()) do
      for _, e in ipairs(entries_of(req)) do order[#order + 1] = json.decode(e.Detail).n end
    end
    for i = 1, 25 do assert.are.equal(i, order[i]) end
  end)

  it("splits at 256 KB per call, counting entry sizes as EventBridge does", function()
    srv = server.start({ { method = "POST", path = "/", responses = { { putevents = true } } } })
    local blob = string.rep("x", 100 * 1024)
    local list = {}
    for i = 1, 5 do list[i] = entry(i, { blob = blob }) end
    assert(client_for(srv):publish(list))
    local sizes = {}
    for _, req in ipairs(srv.requests()) do sizes[#sizes + 1] = #entries_of(req) end
    assert.are.same({ 2, 2, 1 }, sizes)
    -- A larger limit, as AWS allows since 2026, packs more per call.
    srv.stop()
    srv = server.start({ { method = "POST", path = "/", responses = { { putevents = true } } } })
    assert(client_for(srv):publish(list, { max_request_bytes = 1024 * 1024 }))
    assert.are.equal(1, #srv.requests())
  end)

  it("counts every field EventBridge counts, in bytes, at the exact limit", function()
    srv = server.start({ { method = "POST", path = "/", responses = { { putevents = true } } } })
    -- 1 (source) + 1 (detail type) + 8 (detail: the é is two bytes) + 1 (bus)
    -- + 14 (Time) + 1 (resource) + 1 (trace header) = 27 bytes each.
    local function small()
      return { source = "s", detail_type = "d", detail = '{"\u{e9}":1}', bus = "b", time = 1700000000,
               resources = { "r" }, trace_header = "t" }
    end
    assert.are.equal(8, #small().detail)
    assert(client_for(srv):publish({ small(), small() }, { max_request_bytes = 54 }))
    assert.are.equal(1, #srv.requests(), "54 bytes fit in one call of 54")
    srv.stop()
    srv = server.start({ { method = "POST", path = "/", responses = { { putevents = true } } } })
    assert(client_for(srv):publish({ small(), small() }, { max_request_bytes = 53 }))
    assert.are.equal(2, #srv.requests(), "but not in one call of 53")
  end)

  it("retries a whole call that failed for a passing reason, and not one that never will pass", function()
    local throttled = { status = 400, body = { __type = "ThrottlingException", message = "slow down" } }
    for _, first in ipairs({ { status = 503, body = "busy" }, { status = 500, body = "oops" }, throttled }) do
      srv = server.start({ { method = "POST", path = "/", responses = { first, { putevents = true } } } })
      local results = assert(client_for(srv):publish({ entry(1) }))
      assert.is_string(results[1].event_id)
      assert.are.equal(2, #srv.requests())
      srv.stop()
    end
    srv = server.start({ { method = "POST", path = "/", responses = {
      { status = 400, body = { __type = "ValidationException", message = "no" } }, { putevents = true } } } })
    local results, err, all = client_for(srv):publish({ entry(1) })
    assert.is_nil(results)
    assert.are.equal("publish_failed", err.code)
    assert.are.equal("ValidationException", err[1].code)
    assert.is_nil(all[1])
    assert.are.equal(1, #srv.requests())
  end)

  it("with ordered, finishes each call before the next, and stops at a call that failed", function()
    srv = server.start({ { method = "POST", path = "/", responses = {
      { putevents = true, fail = { { index = 3, code = "ThrottlingException" } } }, { putevents = true } } } })
    local list = {}
    for i = 1, 12 do list[i] = entry(i) end
    assert(client_for(srv):publish(list, { ordered = true }))
    local order = {}
    for _, req in ipairs(srv.requests()) do
      for _, e in ipairs(entries_of(req)) do order[#order + 1] = json.decode(e.Detail).n end
    end
    assert.are.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 3, 11, 12 }, order)
    srv.stop()

    srv = server.start({ { method = "POST", path = "/", responses = {
      { putevents = true, fail = { { index = 2, code = "MalformedDetail" } } }, { putevents = true } } } })
    local results, err, all = client_for(srv):publish(list, { ordered = true })
    assert.is_nil(results)
    assert.are.equal("publish_failed", err.code)
    assert.are.equal(1, #srv.requests(), "nothing after the failed call is sent")
    assert.are.equal("MalformedDetail", err[2].code)
    assert.is_string(all[3].event_id)
    assert.are.equal("aborted", err[11].code)
    assert.are.equal("entries[11]: not sent, because entries[2] was not published", err[11].message)
    assert.are.equal(err[2], err[11].cause)
    assert.are.equal(11, err[11].index)
  end)

  it("sends again only the entries that failed for a passing reason", function()
    srv = server.start({ { method = "POST", path = "/", responses = {
      { putevents = true, fail = { { index = 2, code = "ThrottlingException" },
                                   { index = 4, code = "InternalFailure" } } },
      { putevents = true },
    } } })
    local results = assert(client_for(srv):publish({ entry(1), entry(2), entry(3), entry(4) }))
    for i = 1, 4 do assert.is_string(results[i].event_id) end
    local reqs = srv.requests()
    assert.are.equal(2, #reqs)
    local resent = {}
    for _, e in ipairs(entries_of(reqs[2])) do resent[#resent + 1] = json.decode(e.Detail).n end
    assert.are.same({ 2, 4 }, resent)
  end)

  it("reports entries that failed for good, with the results of all", function()
    srv = server.start({ { method = "POST", path = "/", responses = {
      { putevents = true, fail = { { index = 1, code = "MalformedDetail", message = "bad detail" } } },
    } } })
    local results, err, all = client_for(srv):publish({ entry(1), entry(2) })
    assert.is_nil(results)
    assert.are.equal("publish_failed", err.code)
    assert.matches("1 of 2", err.message)
    assert.are.equal(all, err.results)
    assert.is_true(errors.is(err[1]))
    assert.are.equal("MalformedDetail", err[1].code)
    assert.are.equal("entries[1]: bad detail", err[1].message)
    assert.are.equal(1, err[1].index)
    assert.is_false(err[1].retryable)
    assert.is_nil(all[1])
    assert.is_nil(err[2])
    assert.is_string(all[2].event_id)
    assert.are.equal(1, #srv.requests(), "a final error is not retried")
  end)

  it("passes no token or signature a per-entry message names on", function()
    srv = server.start({ { method = "POST", path = "/", responses = {
      { putevents = true, fail = { { index = 1, code = "AccessDeniedException",
        message = "denied for X-Amz-Security-Token: FQoGZXIvYXdzEXAMPLE, Signature=abc123def" } } },
    } } })
    local _, err = client_for(srv):publish({ entry(1) })
    assert.are.equal("AccessDeniedException", err[1].code)
    assert.are.equal("entries[1]: denied for X-Amz-Security-Token: [redacted], Signature=[redacted]", err[1].message)
  end)

  it("gives up on entries still throttled after max_attempts", function()
    srv = server.start({ { method = "POST", path = "/", responses = {
      { putevents = true, fail = { { index = 1, code = "ThrottlingException" } } },
    } } })
    local results, err, all = client_for(srv, { max_attempts = 3 }):publish({ entry(1) })
    assert.is_nil(results)
    assert.are.equal("publish_failed", err.code)
    assert.are.equal("ThrottlingException", err[1].code)
    assert.is_true(err[1].retryable)
    assert.are.same({}, all)
    assert.are.equal(3, #srv.requests())
  end)

  it("checks entries before sending anything", function()
    srv = server.start({ { method = "POST", path = "/", responses = { { putevents = true } } } })
    local c = client_for(srv)
    local cases = {
      { { detail_type = "d", detail = {} }, "source" },
      { { source = "s", detail = {} }, "detail_type" },
      { { source = "s", detail_type = "d", detail = { 1, 2 } }, "JSON object" },
      { { source = "s", detail_type = "d", detail = "[1,2]" }, "JSON object" },
      { { source = "s", detail_type = "d", detail = "{oops" }, "JSON object" },
      { { source = "s", detail_type = "d", detail = 42 }, "detail must be" },
      { { source = "s", detail_type = "d", detail = {}, resources = { 1 } }, "resources" },
    }
    for _, case in ipairs(cases) do
      local results, err = c:publish({ entry(1), case[1] })
      assert.is_nil(results)
      assert.are.equal("invalid_argument", err.code)
      assert.matches("entries%[2%]", err.message)
      assert.matches(case[2], err.message, 1, true)
      assert.are.equal(2, err.index)
    end
    local _, err = c:publish({ entry(1, { blob = string.rep("x", 300 * 1024) }) })
    assert.are.equal("too_large", err.code)
    assert.are.equal(1, err.index)
    assert.are.equal(0, #srv.requests())
  end)

  it("raises at the caller's line on an unknown option or entry field, naming the nearest known one", function()
    srv = server.start({ { method = "POST", path = "/", responses = { { putevents = true } } } })
    local c = client_for(srv)
    local function raised(f)
      local ok, msg = pcall(f)
      assert.is_false(ok)
      return tostring(msg)
    end
    local line = debug.getinfo(1, "l").currentline + 1
    local msg = raised(function() c:publish({ entry(1) }, { orderd = true }) end)
    assert.matches('publish_spec.lua:' .. line .. ': publish: unknown option "orderd" (did you mean "ordered"?)',
      msg, 1, true)
    local misspelt = entry(2)
    misspelt.trace_heder = "Root=1"
    line = debug.getinfo(1, "l").currentline + 1
    msg = raised(function() c:publish({ entry(1), misspelt }) end)
    assert.matches('publish_spec.lua:' .. line .. ': publish: entries[2]: unknown option "trace_heder"'
      .. ' (did you mean "trace_header"?)', msg, 1, true)
    assert.are.equal(0, #srv.requests())
  end)
end)
