-- dynlog.transport.cosocket, the cosocket transport, inside a private nginx with
-- lua-nginx-module (spec/support/nginx.lua). Its handlers call loopback
-- servers (spec/support/server.lua), the nginx itself, and DynamoDB Local,
-- and answer JSON that the specs read through LuaSocket.
--
-- Needs nginx with libnginx-mod-http-lua, `make luajit` (buildjit/, for
-- dynlog.core inside nginx), curl, and DYNLOG_TEST_ENDPOINT (`make test`).
-- DYNLOG_SPEC_VERBOSE=1 prints the latencies of the non-blocking measurement.
local cjson = require "cjson"
local env = require "spec.support.env"
local ltn12 = require "ltn12"
local nginx = require "spec.support.nginx"
local server = require "spec.support.server"
local socket = require "socket"
local http = require "socket.http"
local tls_server = require "spec.support.tls_server"

-- Prepended to every handler: the transport, and replies as JSON.
local PRELUDE = [[
local ngx_http = require "dynlog.transport.cosocket"
local cjson = require "cjson"
local function reply(v)
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(v))
end
local function outcome(res, err)
  if res then return { res = res } end
  return { err = { code = err.code, message = err.message, retryable = err.retryable, sent = err.sent } }
end
local function elapsed_since(t0)
  ngx.update_time()
  return ngx.now() - t0
end
local function start_clock()
  ngx.update_time()
  return ngx.now()
end
]]

local function location(path, code)
  return ("location = %s { content_by_lua_block {\n%s\n%s\n} }\n"):format(path, PRELUDE, code)
end

-- A location that writes raw bytes on the client connection, then closes it:
-- for responses nginx itself would never produce.
local function raw_location(path, bytes)
  return ("location = %s { content_by_lua_block {\n"
    .. "local sock = assert(ngx.req.socket(true))\nsock:send(%q)\n} }\n"):format(path, bytes)
end

-- Sends raw bytes, then holds the connection open for 1 s without reading
-- from it, then closes it.
local function linger_location(path, bytes)
  return ("location = %s { content_by_lua_block {\n"
    .. "local sock = assert(ngx.req.socket(true))\nsock:send(%q)\nngx.sleep(1)\n} }\n"):format(path, bytes)
end

local LOCATIONS = {
  -- (a) a GET and a POST to the loopback server
  location("/get", [[
    local t = ngx_http.new{ timeout = 5 }
    reply(outcome(t:request{ url = ngx.var.up .. "/hello", headers = { ["X-Probe"] = "get" } }))
  ]]),
  location("/post", [[
    local t = ngx_http.new{ timeout = 5 }
    reply(outcome(t:request{ method = "POST", url = ngx.var.up .. "/items?kind=a",
      headers = { ["Content-Type"] = "application/json" }, body = '{"name":"x"}' }))
  ]]),

  -- (b) keep-alive, seen from both ends: new_connections here, and the
  -- server's connection serial number ($connection) at /whoami
  location("/keepalive", [[
    local t = ngx_http.new{ timeout = 5 }
    local out = {}
    for i = 1, 5 do
      local res, err = t:request{ url = "http://127.0.0.1:" .. ngx.var.server_port .. "/whoami" }
      if not res then return reply({ err = tostring(err) }) end
      out[i] = { new_connections = res.new_connections, server_connection = res.body }
    end
    reply(out)
  ]]),
  location("/whoami", [[ngx.print(ngx.var.connection)]]),
  location("/closing", [[
    local t = ngx_http.new{ timeout = 5 }
    local base = "http://127.0.0.1:" .. ngx.var.server_port
    local first = outcome(t:request{ url = base .. "/raw-close-linger" })
    local t0 = start_clock()
    local second = outcome(t:request{ url = base .. "/raw-close-linger" })
    second.elapsed = elapsed_since(t0)
    reply({ first = first, second = second, to_close = outcome(t:request{ url = base .. "/raw-close" }) })
  ]]),
  linger_location("/raw-close-linger", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye"),
  location("/stale", [[
    local t = ngx_http.new{ timeout = 5 }
    local base = "http://127.0.0.1:" .. ngx.var.server_port
    local first = outcome(t:request{ url = base .. "/raw-keep-linger" })
    local t0 = start_clock()
    local second = outcome(t:request{ url = base .. "/whoami" })
    second.elapsed = elapsed_since(t0)
    reply({ first = first, second = second })
  ]]),
  linger_location("/raw-keep-linger", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nkept"),
  raw_location("/raw-close", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody until the connection closes"),

  -- (c) chunked responses: exact bytes with an extension, a trailer and a
  -- repeated header; and nginx's own chunking of a flushed 300 KB body
  location("/chunked", [[
    local t = ngx_http.new{ timeout = 5 }
    local base = "http://127.0.0.1:" .. ngx.var.server_port
    reply({
      raw = outcome(t:request{ url = base .. "/raw-chunked" }),
      native1 = outcome(t:request{ url = base .. "/native-chunked" }),
      native2 = outcome(t:request{ url = base .. "/native-chunked" }),
    })
  ]]),
  raw_location("/raw-chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Rep: a\r\nX-Rep: b\r\n\r\n"
    .. "5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"),
  location("/native-chunked", [[
    for i = 1, 300 do
      ngx.print(string.rep(string.char(64 + i % 26), 1024))
      if i % 50 == 0 then ngx.flush(true) end
    end
  ]]),

  -- (d) failures
  location("/timeout", [[
    local t = ngx_http.new{ timeout = 30 }
    local t0 = start_clock()
    local result = outcome(t:request{ url = "http://127.0.0.1:" .. ngx.var.arg_port .. "/", timeout = 0.3 })
    result.elapsed = elapsed_since(t0)
    reply(result)
  ]]),
  location("/refused", [[
    reply(outcome(ngx_http.new{ connect_timeout = 2 }:request{ url = "http://127.0.0.1:1/" }))
  ]]),
  location("/no-resolver", [[
    reply(outcome(ngx_http.new():request{ url = "http://localhost:" .. ngx.var.server_port .. "/whoami" }))
  ]]),
  location("/not-tls", [[
    local port = ngx.var.up:match(":(%d+)$")
    reply(outcome(ngx_http.new():request{ url = "https://127.0.0.1:" .. port .. "/hello" }))
  ]]),
  location("/tls", [[
    local url = ngx.var.arg_url
    reply({
      verified = outcome(ngx_http.new():request{ url = url }),
      unverified = outcome(ngx_http.new{ verify = false }:request{ url = ngx.var.arg_other }),
      refused = outcome(ngx_http.new():request{ url = ngx.var.arg_other }),
    })
  ]]),
  -- (b') keep-alive over TLS: three requests to nginx's own TLS server
  -- (port in ?port=), then one with verify = false, which has a pool of its own
  location("/tls-keepalive", [[
    local url = "https://127.0.0.1:" .. ngx.var.arg_port .. "/whoami"
    local function three(t)
      local out = {}
      for i = 1, 3 do
        local res, err = t:request{ url = url }
        if not res then return { err = tostring(err) } end
        out[i] = { status = res.status, new_connections = res.new_connections, server_connection = res.body }
      end
      return out
    end
    reply({ verified = three(ngx_http.new{ timeout = 5 }), again = three(ngx_http.new{ timeout = 5 }),
            unverified = three(ngx_http.new{ timeout = 5, verify = false }) })
  ]]),
  location("/too-large", [[
    local t = ngx_http.new{ max_response_bytes = 1024 }
    local base = "http://127.0.0.1:" .. ngx.var.server_port
    reply({
      length = outcome(t:request{ url = ngx.var.up .. "/big" }),
      chunked = outcome(t:request{ url = base .. "/native-chunked" }),
      to_close = outcome(t:request{ url = base .. "/raw-close-big" }),
      fits = outcome(t:request{ url = base .. "/raw-close" }),
    })
  ]]),
  raw_location("/raw-close-big", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" .. string.rep("x", 2000)),
  location("/bad-url", [[
    reply(outcome(ngx_http.new():request{ url = "nota://url" }))
  ]]),
  location("/inject", [[
    local t = ngx_http.new()
    local url = ngx.var.up .. "/hello"
    local ok1, e1 = pcall(t.request, t, { url = url, headers = { ["X-A"] = "v\r\nX-Injected: 1" } })
    local ok2, e2 = pcall(t.request, t, { url = url, headers = { ["X A"] = "v" } })
    local ok3, e3 = pcall(t.request, t, { url = url, headers = { ["X-A"] = "v\0w" } })
    reply({ { ok1, tostring(e1) }, { ok2, tostring(e2) }, { ok3, tostring(e3) } })
  ]]),

  -- (e) a slow upstream, through the cosocket transport and, for contrast,
  -- through the blocking libcurl one
  location("/slow", [[
    reply(outcome(ngx_http.new{ timeout = 10 }:request{ url = ngx.var.slow .. "/slow" }))
  ]]),
  location("/slow-blocking", [[
    local res, err = require("dynlog.transport.curl").new{ timeout = 10 }:request{ url = ngx.var.slow .. "/slow" }
    reply(outcome(res, err))
  ]]),
  -- The same wait inside dynlog's own calls: a client made by dynlog.new{}
  -- (which picks the cosocket transport by itself) and a stream consumer's
  -- round, both against the slow upstream standing in for DynamoDB.
  location("/slow-client", [[
    local c = require("dynlog").new{ table = "events", endpoint = ngx.var.slow .. "/tables", region = "us-east-1",
      max_attempts = 1, timeout = 10,
      credentials = { access_key_id = "AKIDNGX", secret_access_key = "ngx-secret-key" } }
    local resp, err = c:call("ListTables", {})
    reply({ tables = resp and resp.TableNames, err = err and tostring(err),
            cosockets = getmetatable(c.transport).__index == ngx_http })
  ]]),
  location("/slow-poll", [[
    local c = require("dynlog").new{ table = "events", endpoint = ngx.var.slow .. "/missing", region = "us-east-1",
      max_attempts = 1, timeout = 10,
      credentials = { access_key_id = "AKIDNGX", secret_access_key = "ngx-secret-key" } }
    local consumer = require("dynlog.consumer").new{ client = c, checkpoint_table = "events-checkpoints",
      handler = function() return true end }
    local ok, n, err = pcall(consumer.poll_once, consumer)
    reply({ raised = not ok and tostring(n) or nil, n = ok and n or nil, err = err and tostring(err),
            cosockets = getmetatable(c.transport).__index == ngx_http })
  ]]),
  -- Lua as well, so the handler waiting above shares the worker's Lua VM with it
  "location = /fast { content_by_lua_block { ngx.say('fast') } }\n",

  -- (f) DynamoDB Local, signed with dynlog.sigv4
  location("/dynamodb", [[
    local sigv4 = require "dynlog.sigv4"
    local endpoint = os.getenv("DYNLOG_TEST_ENDPOINT")
    if not endpoint then return reply({ missing = "DYNLOG_TEST_ENDPOINT" }) end
    -- no resolver in this nginx: DynamoDB Local by address
    local url = endpoint:gsub("//localhost([:/])", "//127.0.0.1%1"):gsub("/*$", "/")
    local body = "{}"
    local plain = { ["Content-Type"] = "application/x-amz-json-1.0",
                    ["X-Amz-Target"] = "DynamoDB_20120810.ListTables" }
    local t = ngx_http.new{ timeout = 10 }
    local signed = {}
    for i = 1, 3 do
      local headers = assert(sigv4.sign{ method = "POST", url = url, body = body, region = "us-east-1",
        service = "dynamodb", headers = plain,
        credentials = { access_key_id = "AKIDNGX", secret_access_key = "ngx-secret-key" } })
      signed[i] = outcome(t:request{ method = "POST", url = url, headers = headers, body = body })
    end
    plain.Host = url:match("^https?://([^/]+)")
    local unsigned = outcome(t:request{ method = "POST", url = url, headers = plain, body = body })
    reply({ signed = signed, unsigned = unsigned })
  ]]),

  -- (g) append_many on light threads: against a server that answers only
  -- when 4 requests wait at once, then against DynamoDB Local
  location("/append-many", [[
    local dynlog = require "dynlog"
    local function client(endpoint, table_name, tombstones)
      return dynlog.new{ table = table_name, endpoint = endpoint, region = "us-east-1", max_attempts = 1,
        timeout = 5, tombstones = tombstones,
        credentials = { access_key_id = "AKIDNGX", secret_access_key = "ngx-secret-key" } }
    end
    local events = {}
    for n = 1, 40 do events[n] = { log = "users", id = "u" .. (n % 4), type = "counted", payload = { n = n } } end
    local function summary(results, err, partial)
      local written, failed = 0, {}
      for _ in pairs(results or partial) do written = written + 1 end
      for i = 1, #events do
        if err and err[i] then failed[#failed + 1] = i .. " " .. tostring(err[i]) end
      end
      return { written = written, failed = failed }
    end
    -- Without tombstones: their read is one BatchGetItem for all the streams,
    -- which this server would hold until three more requests came.
    local together = summary(client(ngx.var.up .. "/together", "events", false)
      :append_many(events, { concurrency = 4 }))
    local endpoint = os.getenv("DYNLOG_TEST_ENDPOINT"):gsub("//localhost([:/])", "//127.0.0.1%1")
    local c = client(endpoint, "ngx-many-" .. dynlog.ulid():lower())
    assert(c:create_table())
    local ddb = summary(c:append_many(events, { concurrency = 4 }))
    local order = {}
    for _, e in ipairs(assert(c:query("users", "u1"):all())) do order[#order + 1] = e.payload.n end
    reply({ together = together, ddb = ddb, order = order })
  ]]),
}

local read_file = require("spec.support.run").read_file

describe("dynlog.transport.cosocket inside nginx", function()
  local srv, up, slow, tls_ok, tls_self, tls_port

  setup(function()
    assert(read_file("buildjit/dynlog/core.so"), "buildjit/dynlog/core.so is missing: run `make luajit`")
    up = server.start({
      { method = "GET", path = "/hello",
        responses = { { status = 200, headers = { ["X-Reply"] = "Mixed-Case" }, body = "hello" } } },
      { method = "POST", path = "/items", responses = { { status = 201, body = { created = true } } } },
      { method = "GET", path = "/big", responses = { { status = 200, body = string.rep("x", 2000) } } },
      { method = "POST", path = "/together", responses = { { together = 4, body = {} } } },
    })
    slow = server.start({
      { method = "GET", path = "/slow", responses = { { status = 200, body = "slow", delay_ms = 2000 } } },
      -- AWS JSON calls, answered 2 s later: a ListTables answer, or a missing table
      { method = "POST", path = "/tables", responses = { { status = 200, body = { TableNames = { "slow" } },
                                                          delay_ms = 2000 } } },
      { method = "POST", path = "/missing", responses = { { status = 400, delay_ms = 2000, body = {
        __type = "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException",
        message = "Requested resource not found" } } } },
    })
    -- nginx checks host names with X509_check_host only, never IP SANs: the
    -- address is a DNS name of this certificate as well.
    tls_ok = tls_server.start({ san = "DNS:127.0.0.1,IP:127.0.0.1" })
    tls_self = tls_server.start({ san = "IP:127.0.0.1" })
    -- A TLS server of nginx's own, with keep-alive (openssl s_server closes
    -- every connection), and the certificate lua_ssl_trusted_certificate trusts.
    tls_port = require("spec.support.run").free_port()
    srv = nginx.start({
      workers = 1,
      env = { "DYNLOG_TEST_ENDPOINT" },
      http = "lua_ssl_trusted_certificate " .. tls_ok.cafile .. ";\nlua_ssl_verify_depth 2;\n"
        .. ("server { listen 127.0.0.1:%d ssl; ssl_certificate %s; ssl_certificate_key %s;\n"
          .. "  location = /whoami { return 200 $connection; } }\n"):format(tls_port, tls_ok.cert, tls_ok.key),
      server = ('set $up "%s";\nset $slow "%s";\n'):format(up.url, slow.url) .. table.concat(LOCATIONS),
    })
  end)

  teardown(function()
    if srv then srv.stop() end
    for _, s in ipairs({ up, slow, tls_ok, tls_self }) do
      if s then s.stop() end
    end
  end)

  local function fetch(path, timeout)
    local parts = {}
    http.TIMEOUT = timeout or 15
    local ok, code = http.request({ url = srv.url .. path, sink = ltn12.sink.table(parts) })
    if not ok then error("GET " .. path .. ": " .. tostring(code)) end
    return code, table.concat(parts)
  end

  -- A handler's JSON reply; a failure shows the end of nginx's error log.
  local function call(path)
    local code, body = fetch(path)
    if code ~= 200 then
      error(("GET %s: HTTP %s %s\nerror log:\n%s"):format(path, tostring(code), body,
        srv.error_log():sub(-2000)), 2)
    end
    return cjson.decode(body)
  end

  local function result(path)
    local r = call(path)
    assert.is_nil(r.err, "unexpected error: " .. cjson.encode(r.err or {}))
    return r.res
  end

  describe("requests", function()
    it("returns the status, lower-cased headers and body of a GET", function()
      local res = result("/get")
      assert.are.equal(200, res.status)
      assert.are.equal("hello", res.body)
      assert.are.equal("Mixed-Case", res.headers["x-reply"])
      assert.are.equal("5", res.headers["content-length"])
      assert.is_nil(res.headers["X-Reply"])
      local seen = up.requests()
      local last = seen[#seen]
      assert.are.equal("GET", last.method)
      assert.are.equal("/hello", last.path)
      assert.are.equal("get", last.headers["x-probe"])
      assert.are.equal(up.url:match("//(.*)$"), last.headers["host"])
    end)

    it("sends a POST body with its length and returns the answer", function()
      local res = result("/post")
      assert.are.equal(201, res.status)
      assert.are.same({ created = true }, cjson.decode(res.body))
      local seen = up.requests()
      local last = seen[#seen]
      assert.are.equal("POST", last.method)
      assert.are.equal("/items?kind=a", last.path)
      assert.are.equal('{"name":"x"}', last.body)
      assert.are.equal("12", last.headers["content-length"])
      assert.are.equal("application/json", last.headers["content-type"])
      assert.are.equal("keep-alive", last.headers["connection"])
    end)
  end)

  describe("keep-alive", function()
    it("reuses one pooled connection for consecutive requests", function()
      local first = call("/keepalive")
      assert.are.equal(5, #first, cjson.encode(first))
      local id = first[1].server_connection
      assert.is_true(first[1].new_connections <= 1)
      for i = 2, 5 do
        assert.are.equal(0, first[i].new_connections, "request " .. i .. " opened a connection")
        assert.are.equal(id, first[i].server_connection, "request " .. i .. " came on another connection")
      end
      -- The pool belongs to the worker: the next handler gets the same connection.
      local second = call("/keepalive")
      for i = 1, 5 do
        assert.are.equal(0, second[i].new_connections)
        assert.are.equal(id, second[i].server_connection)
      end
    end)

    it("reuses a pooled TLS connection for the next requests, and keeps verify = false apart", function()
      local r = call("/tls-keepalive?port=" .. tls_port)
      for _, name in ipairs({ "verified", "again", "unverified" }) do
        assert.is_nil(r[name].err, name .. ": " .. tostring(r[name].err))
        for i = 1, 3 do assert.are.equal(200, r[name][i].status, name .. " " .. i) end
      end
      local v = r.verified
      local id = v[1].server_connection
      assert.are.equal(1, v[1].new_connections, "the first request opened the connection")
      for i = 2, 3 do
        assert.are.equal(0, v[i].new_connections, "request " .. i .. " opened a connection")
        assert.are.equal(id, v[i].server_connection, "request " .. i .. " came on another connection")
      end
      -- another transport of the same worker, same pool: the same connection
      for i = 1, 3 do
        assert.are.equal(0, r.again[i].new_connections)
        assert.are.equal(id, r.again[i].server_connection)
      end
      -- verify = false never takes a connection checked with verify = true, nor gives one to it
      local u = r.unverified
      assert.are.equal(1, u[1].new_connections)
      assert.are_not.equal(id, u[1].server_connection)
      for i = 2, 3 do
        assert.are.equal(0, u[i].new_connections)
        assert.are.equal(u[1].server_connection, u[i].server_connection)
      end
    end)

    it("does not pool a connection the response closes, and reads a body delimited by the close", function()
      local out = call("/closing")
      for _, name in ipairs({ "first", "second" }) do
        local res = assert(out[name].res, cjson.encode(out[name]))
        assert.are.equal(200, res.status)
        assert.are.equal("bye", res.body)
      end
      -- The first may come from the pool. The server holds it open for 1 s
      -- without reading: had it been pooled, the second request would have
      -- waited on it (and then been retried on a fresh one).
      assert.are.equal(1, out.second.res.new_connections)
      assert.is_true(out.second.elapsed < 0.5, "the second request took " .. out.second.elapsed .. " s")
      local res = assert(out.to_close.res, cjson.encode(out.to_close))
      assert.are.equal("body until the connection closes", res.body)
      assert.are.equal(1, res.new_connections)
    end)

    it("replaces a pooled connection that the server drops without answering", function()
      -- /raw-keep-linger answers keep-alive, so its connection is pooled, but
      -- never reads the next request and closes after 1 s: the next request
      -- reuses it, gets nothing, and goes again on a fresh connection.
      local out = call("/stale")
      assert.are.equal("kept", assert(out.first.res, cjson.encode(out.first)).body)
      local res = assert(out.second.res, cjson.encode(out.second))
      assert.are.equal(200, res.status)
      assert.are.equal(1, res.new_connections)
      assert.is_true(res.resent, "marked: the first sending may have reached the server")
      assert.is_nil(out.first.res.resent)
      assert.is_true(out.second.elapsed >= 0.5, "the pooled connection was not reused: "
        .. out.second.elapsed .. " s")
    end)
  end)

  describe("chunked responses", function()
    it("decodes chunks, ignores extensions, keeps trailers and joins repeated headers", function()
      local raw = assert(call("/chunked").raw.res)
      assert.are.equal(200, raw.status)
      assert.are.equal("hello, world", raw.body)
      assert.are.equal("a, b", raw.headers["x-rep"])
      assert.are.equal("t", raw.headers["x-trailer"])
    end)

    it("reads nginx's own chunked 300 KB body exactly, and the connection stays reusable", function()
      local r = call("/chunked")
      local expected = {}
      for i = 1, 300 do expected[i] = string.rep(string.char(64 + i % 26), 1024) end
      expected = table.concat(expected)
      for _, name in ipairs({ "native1", "native2" }) do
        local res = assert(r[name].res, cjson.encode(r[name]))
        assert.are.equal("chunked", res.headers["transfer-encoding"])
        assert.are.equal(#expected, #res.body)
        assert.is_true(expected == res.body, name .. ": body differs")
      end
      assert.are.equal(0, r.native2.res.new_connections)
    end)
  end)

  describe("failures", function()
    it("times out on a server that accepts but never answers, within the request's timeout", function()
      -- The kernel completes the handshake on a listening socket that never
      -- calls accept: the request goes out and no answer comes.
      local listener = assert(socket.bind("127.0.0.1", 0))
      local _, port = listener:getsockname()
      local r = call("/timeout?port=" .. port)
      listener:close()
      assert.is_nil(r.res)
      assert.are.equal("timeout", r.err.code)
      assert.is_true(r.err.retryable)
      assert.is_nil(r.err.sent, "the request went out: it may have been applied")
      assert.is_true(r.elapsed >= 0.25 and r.elapsed < 1.5, "took " .. r.elapsed .. " s")
    end)

    it("reports a refused connection as a retryable connection error", function()
      local r = call("/refused")
      assert.is_nil(r.res)
      assert.are.equal("connection", r.err.code)
      assert.is_true(r.err.retryable)
      assert.matches("refused", r.err.message)
      assert.is_false(r.err.sent, "a refused connection sent nothing")
    end)

    it("names the missing resolver directive for a host name, and does not retry", function()
      local r = call("/no-resolver")
      assert.are.equal("connection", r.err.code)
      assert.matches("`resolver`", r.err.message)
      assert.is_false(r.err.retryable)
      assert.is_false(r.err.sent)
    end)

    it("reports a failed TLS handshake as a tls error", function()
      local r = call("/not-tls")
      assert.is_nil(r.res)
      assert.are.equal("tls", r.err.code)
      assert.is_false(r.err.retryable)
      assert.is_false(r.err.sent)
    end)

    it("verifies certificates against lua_ssl_trusted_certificate unless verify is false", function()
      local r = call("/tls?url=" .. tls_ok.url .. "&other=" .. tls_self.url)
      assert.is_nil(r.verified.err, cjson.encode(r.verified.err or {}))
      assert.are.equal(200, r.verified.res.status)
      assert.is_nil(r.unverified.err, cjson.encode(r.unverified.err or {}))
      assert.are.equal(200, r.unverified.res.status)
      assert.are.equal("tls", r.refused.err.code)
      assert.is_false(r.refused.err.retryable)
      -- lua-nginx-module 0.10.23 now and then reports the refused handshake as
      -- done, with the connection closed: the transport says so.
      local message = r.refused.err.message
      assert.is_truthy(message:find("self-signed", 1, true)
        or message:find("closed right after the handshake", 1, true), message)
    end)

    it("refuses a response body over max_response_bytes, however it is delimited", function()
      local r = call("/too-large")
      for _, name in ipairs({ "length", "chunked", "to_close" }) do
        assert.is_nil(r[name].res, name)
        assert.are.equal("too_large", r[name].err.code, name)
        assert.is_false(r[name].err.retryable, name)
      end
      assert.are.equal("body until the connection closes", assert(r.fits.res).body)
    end)

    it("reports a malformed URL as invalid_argument", function()
      local r = call("/bad-url")
      assert.are.equal("invalid_argument", r.err.code)
      assert.is_false(r.err.retryable)
    end)

    it("raises on header names and values that would inject headers, sending nothing", function()
      local before = #up.requests()
      local r = call("/inject")
      for i = 1, 3 do
        assert.is_false(r[i][1], "case " .. i .. " did not raise")
      end
      assert.matches("CR, LF or NUL", r[1][2])
      assert.matches("invalid character in header name", r[2][2])
      assert.matches("CR, LF or NUL", r[3][2])
      assert.are.equal(before, #up.requests())
    end)
  end)

  describe("one worker, a slow upstream", function()
    -- Starts `path` in the background (curl), waits until the slow upstream
    -- has the request (so its handler is now waiting), then times 20
    -- requests to /fast. Returns the latencies, whether the slow request was
    -- still unanswered after them, and its status, total time and body.
    local function fast_while_slow(path)
      local before = #slow.requests()
      local out, meta = os.tmpname(), os.tmpname()
      os.execute(("curl -s -m 30 -o %s -w '%%{http_code} %%{time_total}' %s >%s 2>/dev/null &")
        :format(out, srv.url .. path, meta))
      local deadline = socket.gettime() + 5
      while #slow.requests() == before do
        assert(socket.gettime() < deadline, "the slow request never reached the upstream")
        socket.sleep(0.005)
      end
      local latencies = {}
      for i = 1, 20 do
        local t0 = socket.gettime()
        local code, body = fetch("/fast", 10)
        latencies[i] = socket.gettime() - t0
        assert.are.equal(200, code)
        assert.are.equal("fast\n", body)
      end
      local still_waiting = (read_file(meta) or "") == ""
      deadline = socket.gettime() + 15
      while (read_file(meta) or "") == "" and socket.gettime() < deadline do socket.sleep(0.05) end
      local status, total = (read_file(meta) or ""):match("^(%d+) ([%d.]+)")
      local body = read_file(out)
      os.remove(out)
      os.remove(meta)
      if os.getenv("DYNLOG_SPEC_VERBOSE") then
        local ms = {}
        for i, l in ipairs(latencies) do ms[i] = ("%.1f"):format(l * 1000) end
        io.stderr:write(("\n%s: /fast latencies (ms): %s; slow request %s in %s s\n")
          :format(path, table.concat(ms, " "), tostring(status), tostring(total)))
      end
      return latencies, still_waiting, tonumber(status), tonumber(total), body
    end

    it("keeps answering another location promptly while a handler waits on the upstream", function()
      local latencies, still_waiting, status, total, body = fast_while_slow("/slow")
      for i, l in ipairs(latencies) do
        assert.is_true(l < 0.5, ("fast request %d took %.3f s"):format(i, l))
      end
      assert.is_true(still_waiting, "the slow request had finished before the fast ones")
      assert.are.equal(200, status)
      assert.is_true(total >= 1.9, "the slow request took only " .. tostring(total) .. " s")
      local reply = cjson.decode(body)
      assert.are.equal(200, reply.res.status)
      assert.are.equal("slow", reply.res.body)
    end)

    -- The slow request went out from this handler, signed by the C core.
    local function last_slow_request(before)
      local seen = slow.requests()
      assert.is_true(#seen > before, "the slow upstream got no request")
      local req = seen[before + 1]
      assert.are.equal("POST", req.method)
      assert.matches("^AWS4%-HMAC%-SHA256 Credential=AKIDNGX/", req.headers["authorization"])
      return req
    end

    it("keeps answering promptly while a client of dynlog.new{} waits on a slow DynamoDB", function()
      local before = #slow.requests()
      local latencies, still_waiting, status, total, body = fast_while_slow("/slow-client")
      for i, l in ipairs(latencies) do
        assert.is_true(l < 0.5, ("fast request %d took %.3f s"):format(i, l))
      end
      assert.is_true(still_waiting, "the call had finished before the fast requests")
      assert.are.equal(200, status)
      assert.is_true(total >= 1.9, "the call took only " .. tostring(total) .. " s")
      local reply = cjson.decode(body)
      assert.is_true(reply.cosockets, "dynlog.new{} picked the cosocket transport")
      assert.are.same({ "slow" }, reply.tables, tostring(reply.err))
      assert.are.equal("DynamoDB_20120810.ListTables", last_slow_request(before).headers["x-amz-target"])
    end)

    it("keeps answering promptly while a stream consumer's round waits on a slow DynamoDB", function()
      local before = #slow.requests()
      local latencies, still_waiting, status, total, body = fast_while_slow("/slow-poll")
      for i, l in ipairs(latencies) do
        assert.is_true(l < 0.5, ("fast request %d took %.3f s"):format(i, l))
      end
      assert.is_true(still_waiting, "the round had finished before the fast requests")
      assert.are.equal(200, status)
      assert.is_true(total >= 1.9, "the round took only " .. tostring(total) .. " s")
      local reply = cjson.decode(body)
      assert.is_nil(reply.raised)
      assert.is_true(reply.cosockets, "the consumer's client went over cosockets")
      -- the table is missing: the round ends with DynamoDB's error, after the wait
      assert.is_nil(reply.n)
      assert.matches("^ResourceNotFoundException: ", reply.err or body)
      assert.matches("^DynamoDB_20120810%.", last_slow_request(before).headers["x-amz-target"])
    end)

    it("tells a blocked worker apart: the blocking libcurl transport stalls the fast location", function()
      -- The control for the measurement above: were the transport blocking,
      -- the same measurement would see this.
      local latencies, still_waiting, status = fast_while_slow("/slow-blocking")
      local worst = 0
      for _, l in ipairs(latencies) do worst = math.max(worst, l) end
      assert.is_true(worst > 1, ("worst fast request took only %.3f s"):format(worst))
      assert.is_false(still_waiting)
      assert.are.equal(200, status)
    end)
  end)

  describe("against DynamoDB Local", function()
    it("gets HTTP 200 for a signed ListTables, over one kept-alive connection", function()
      env.dynamodb_endpoint() -- raises when the spec runs without DynamoDB Local
      local r = call("/dynamodb")
      assert.is_nil(r.missing, "nginx did not see DYNLOG_TEST_ENDPOINT")
      for i = 1, 3 do
        local res = assert(r.signed[i].res, cjson.encode(r.signed[i]))
        assert.are.equal(200, res.status)
        assert.is_table(cjson.decode(res.body).TableNames)
        assert.matches("application/x%-amz%-json%-1%.0", res.headers["content-type"])
        if i > 1 then assert.are.equal(0, res.new_connections) end
      end
      -- the signature is what made it pass: unsigned, the same call is refused
      local unsigned = assert(r.unsigned.res, cjson.encode(r.unsigned))
      assert.are.equal(400, unsigned.status)
      assert.matches("MissingAuthenticationToken", unsigned.body)
    end)
  end)

  describe("append_many", function()
    it("has its requests in flight at once on light threads, each stream in order", function()
      env.dynamodb_endpoint()
      local r = call("/append-many")
      assert.are.same({ written = 40, failed = {} }, r.together)
      assert.are.same({ written = 40, failed = {} }, r.ddb)
      local expected = {}
      for n = 1, 37, 4 do expected[#expected + 1] = n end
      assert.are.same(expected, r.order)
    end)
  end)

  it("logs no Lua runtime error, alert or crit in nginx's error log", function()
    local log = srv.error_log()
    assert.is_nil(log:match("[^\n]*runtime error[^\n]*"))
    assert.is_nil(log:match("[^\n]*%[alert%][^\n]*"))
    assert.is_nil(log:match("[^\n]*%[crit%][^\n]*"))
  end)
end)
