local env = require "spec.support.env"
local http = require "dynlog.transport.curl"
local json = require "dynlog.json"
local sigv4 = require "dynlog.sigv4"

local credentials = { access_key_id = "AKIDLOCAL", secret_access_key = "local-secret-key" }

-- A DynamoDB call as dynlog's client makes it: JSON 1.0, signed, POST /.
local function signed_dynamodb_request(operation, params)
  local url = env.dynamodb_endpoint() .. "/"
  local body = json.encode(params)
  local headers = sigv4.sign({
    method = "POST", url = url, body = body, region = "us-east-1", service = "dynamodb",
    credentials = credentials,
    headers = {
      ["Content-Type"] = "application/x-amz-json-1.0",
      ["X-Amz-Target"] = "DynamoDB_20120810." .. operation,
    },
  })
  return { method = "POST", url = url, headers = headers, body = body }
end

describe("dynlog.transport.curl against DynamoDB Local", function()
  it("gets HTTP 200 for a signed ListTables", function()
    local t = http.new({ timeout = 10 })
    local res = assert(t:request(signed_dynamodb_request("ListTables", {})))
    assert.are.equal(200, res.status)
    assert.is_table(assert(json.decode(res.body)).TableNames)
    assert.matches("application/x%-amz%-json%-1%.0", res.headers["content-type"])
    t:close()
  end)

  it("reuses one connection for 100 consecutive requests", function()
    local t = http.new()
    local opened, ports = 0, {}
    for i = 1, 100 do
      local res = assert(t:request(signed_dynamodb_request("ListTables", {})))
      assert.are.equal(200, res.status)
      opened = opened + res.new_connections
      ports[res.local_port] = true
      if i == 1 then assert.are.equal(1, res.new_connections) end
    end
    local distinct = 0
    for _ in pairs(ports) do distinct = distinct + 1 end
    assert.are.equal(1, opened, "connections opened over 100 requests")
    assert.are.equal(1, distinct, "distinct local ports over 100 requests")
    t:close()
  end)

  it("returns AWS error responses as responses, not transport errors", function()
    local t = http.new()
    local res = assert(t:request(signed_dynamodb_request("DescribeTable", { TableName = "no-such-table" })))
    assert.are.equal(400, res.status)
    assert.matches("ResourceNotFoundException", assert(json.decode(res.body)).__type)
  end)

  it("sends no Expect: 100-continue, even for a large body", function()
    -- libcurl adds the header on its own to bodies over 1 MiB: look at what
    -- arrives for one of 2 MiB.
    local server = require "spec.support.server"
    local srv = server.start({ { method = "POST", path = "/big", responses = { { status = 200, body = "{}" } } } })
    local body = string.rep("x", 2 * 1024 * 1024)
    local ok, res = pcall(function()
      return http.new():request({ method = "POST", url = srv.url .. "/big", body = body })
    end)
    local req = srv.requests()[1]
    srv.stop()
    assert(ok, res)
    assert.are.equal(200, assert(res).status)
    assert.are.equal(#body, #req.body)
    assert.is_nil(req.headers.expect)
  end)
end)

describe("dynlog.transport.curl refuses what would change the request line", function()
  it("raises on a method that is not an HTTP token; refuses a URL with a line break, a space or a NUL", function()
    local t = http.new({ connect_timeout = 1 })
    assert.error_matches(function()
      t:request({ method = "GET / HTTP/1.1\r\nX-Evil: 1\r\n\r\nGET", url = "http://127.0.0.1:1/" })
    end, "not an HTTP token")
    assert.error_matches(function() t:request({ method = "", url = "http://127.0.0.1:1/" }) end, "method is empty")
    -- A URL that cannot be sent is an error value, as from dynlog.transport.cosocket;
    -- the C core itself raises, whoever calls it.
    for _, url in ipairs({ "http://127.0.0.1:1/\0x", "http://127.0.0.1:1/a\r\nX: 1", "http://127.0.0.1:1/a b" }) do
      local res, err = t:request({ url = url })
      assert.is_nil(res)
      assert.are.equal("invalid_argument", err.code)
      assert.error_matches(function() t.handle:request("GET", url) end, "space, a control character or a NUL")
    end
  end)
end)

describe("dynlog.transport.curl failures", function()
  it("reports a refused connection as a retryable connection error", function()
    -- Port 1 on loopback: nothing listens there.
    local res, err = http.new({ connect_timeout = 2 }):request({ url = "http://127.0.0.1:1/" })
    assert.is_nil(res)
    assert.are.equal("connection", err.code)
    assert.is_true(err.retryable)
    assert.matches("^connection: ", tostring(err))
    assert.is_false(err.sent, "a refused connection sent nothing")
  end)

  it("says a request whose connect timed out was never sent", function()
    local port, close = require("spec.support.run").full_listener()
    local res, err = http.new({ connect_timeout = 0.2, timeout = 5 }):request({
      method = "POST", url = "http://127.0.0.1:" .. port .. "/", body = "{}" })
    close()
    assert.is_nil(res)
    assert.are.equal("timeout", err.code)
    assert.is_false(err.sent)
  end)

  it("times out on a server that accepts but never answers", function()
    -- The kernel completes the handshake for a listening socket that never
    -- calls accept, so the request is sent and no answer ever comes.
    local socket = require "socket"
    local listener = assert(socket.bind("127.0.0.1", 0))
    local _, port = listener:getsockname()
    local started = socket.gettime()
    local res, err = http.new({ timeout = 0.3 }):request({ url = "http://127.0.0.1:" .. port .. "/" })
    local elapsed = socket.gettime() - started
    listener:close()
    assert.is_nil(res)
    assert.are.equal("timeout", err.code)
    assert.is_true(err.retryable)
    assert.is_nil(err.sent, "the request went out: it may have been applied")
    assert.is_true(elapsed >= 0.25 and elapsed < 5, "took " .. elapsed .. " s")
  end)

  it("takes a per-request timeout over the transport's", function()
    local socket = require "socket"
    local listener = assert(socket.bind("127.0.0.1", 0))
    local _, port = listener:getsockname()
    local started = socket.gettime()
    local _, err = http.new({ timeout = 30 }):request({ url = "http://127.0.0.1:" .. port .. "/", timeout = 0.2 })
    listener:close()
    assert.are.equal("timeout", err.code)
    assert.is_true(socket.gettime() - started < 5)
  end)

  it("reports a malformed URL as invalid_argument", function()
    local res, err = http.new():request({ url = "nota://url" })
    assert.is_nil(res)
    assert.are.equal("invalid_argument", err.code)
    assert.is_false(err.retryable)
  end)

  it("refuses header names and values that would inject headers", function()
    local t = http.new()
    assert.has_error(function()
      t:request({ url = "http://127.0.0.1:1/", headers = { ["X-A"] = "v\r\nX-Injected: 1" } })
    end)
    assert.has_error(function()
      t:request({ url = "http://127.0.0.1:1/", headers = { ["X A"] = "v" } })
    end)
  end)

  it("raises on invalid options", function()
    assert.has_error(function() http.new({ timeout = -1 }) end)
    assert.has_error(function() http.new({ cafile = 42 }) end)
  end)

  it("raises when used after close", function()
    local t = http.new()
    t:close()
    assert.has_error(function() t:request({ url = "http://127.0.0.1:1/" }) end, "dynlog.curl: http client is closed")
  end)
end)

describe("a request sent again by curl", function()
  local server = require "spec.support.server"
  local core = require "dynlog.core"
  local upstream, proxy_pid, port_file

  -- The fault proxy of `make chaos`, scripted: forward the first request,
  -- then forward the second and reset the client's connection before the
  -- answer, as a kept-alive connection that dies at the wrong moment does.
  setup(function()
    upstream = server.start({ { method = "POST", path = "/", responses = { { status = 200, body = {} } } } })
    port_file = os.tmpname()
    os.remove(port_file)
    local pipe = assert(io.popen(("lua5.4 spec/support/chaos_proxy.lua --upstream 127.0.0.1:%d --port-file %s"
      .. " --rate 0 --sequence none,reset_after --max-seconds 60 >/dev/null 2>&1 & echo $!")
      :format(upstream.port, port_file)))
    proxy_pid = pipe:read("*l")
    pipe:close()
  end)

  teardown(function()
    if proxy_pid then os.execute("kill " .. proxy_pid .. " 2>/dev/null") end
    if upstream then upstream.stop() end
    os.remove(port_file)
  end)

  local function proxy_url()
    for _ = 1, 200 do
      local f = io.open(port_file)
      if f then
        local port = f:read("*l")
        f:close()
        if port then return "http://127.0.0.1:" .. port .. "/" end
      end
      core.sleep(0.025)
    end
    error("the fault proxy did not start")
  end

  it("is marked resent, because the first sending may have been applied", function()
    local t = http.new({ timeout = 5 })
    local url = proxy_url()
    local first = assert(t:request({ method = "POST", url = url, body = '{"n":1}' }))
    assert.is_nil(first.resent)
    local second = assert(t:request({ method = "POST", url = url, body = '{"n":2}' }))
    assert.are.equal(200, second.status)
    assert.is_true(second.resent)
    local bodies = {}
    for i, r in ipairs(upstream.requests()) do bodies[i] = r.body end
    assert.are.same({ '{"n":1}', '{"n":2}', '{"n":2}' }, bodies, "the upstream got the second one twice")
  end)
end)
