local env = require "spec.support.env"
local http = require "dynlog.http"
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

describe("dynlog.http against DynamoDB Local", function()
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
    local t = http.new()
    local big = string.rep("x", 200000)
    local res = assert(t:request(signed_dynamodb_request("DescribeTable", { TableName = big })))
    -- DynamoDB Local answers a validation error: the point is that the
    -- request went through at once, without the 100-continue handshake.
    assert.are.equal(400, res.status)
  end)
end)

describe("dynlog.http failures", function()
  it("reports a refused connection as a retryable connection error", function()
    -- Port 1 on loopback: nothing listens there.
    local res, err = http.new({ connect_timeout = 2 }):request({ url = "http://127.0.0.1:1/" })
    assert.is_nil(res)
    assert.are.equal("connection", err.code)
    assert.is_true(err.retryable)
    assert.matches("^connection: ", tostring(err))
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
    assert.has_error(function() t:request({ url = "http://127.0.0.1:1/" }) end, "dynlog.core: http client is closed")
  end)
end)
