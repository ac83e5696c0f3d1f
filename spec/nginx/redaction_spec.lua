-- Server text in errors never carries a secret: a server or proxy that echoes
-- the request's headers (an HTTP 400 listing them, a proxy's error page)
-- would otherwise put the session token and the signature into err.message.
-- A loopback server (spec/support/httpd.lua, "echo" responses) stands in for
-- such a server, for DynamoDB, DynamoDB Streams and EventBridge, through the
-- libcurl transport, the curl multi handle of dynlog.transport.concurrent and, inside
-- nginx, the cosocket transport.
local cjson = require "cjson"
local concurrent = require "dynlog.transport.concurrent"
local dynlog = require "dynlog"
local errors = require "dynlog.errors"
local leakwatch = require "spec.support.leakwatch"
local logger = require "dynlog.logger"
local server = require "spec.support.server"

local SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzSECRETKEY"
-- Real session tokens hold "/", "+" and "=": so that a JSON-escaped or
-- percent-encoded echo is tried too.
local TOKEN = "IQoJb3JpZ2luX2VjSESSIONTOKENzz" .. "/Zm9v+YmFy=="
local SIGNATURE = ("0123456789abcdef"):rep(4)

describe("errors.redact", function()
  local redact = errors.redact

  it("replaces each secret given, as sent, JSON-escaped and percent-encoded", function()
    local text = "a " .. TOKEN .. " b " .. TOKEN:gsub("/", "\\/")
      .. " c IQoJb3JpZ2luX2VjSESSIONTOKENzz%2FZm9v%2BYmFy%3D%3D d IQoJb3JpZ2luX2VjSESSIONTOKENzz%2fZm9v%2bYmFy%3d%3d"
      .. " e " .. SECRET .. " f " .. SECRET:gsub("/", "\\/")
    assert.are.equal("a [redacted] b [redacted] c [redacted] d [redacted] e [redacted] f [redacted]",
      redact(text, { SECRET, TOKEN }))
  end)

  it("replaces the value of every X-Amz-Security-Token and Signature it names, whoever's they are", function()
    assert.are.equal("X-Amz-Security-Token: [redacted]\nAuthorization: AWS4-HMAC-SHA256 Credential=AKID/20261202/"
      .. "us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date, Signature=[redacted]\nHost: x",
      redact("X-Amz-Security-Token: someone-elses\nAuthorization: AWS4-HMAC-SHA256 Credential=AKID/20261202/"
        .. "us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date, Signature=" .. SIGNATURE .. "\nHost: x"))
    assert.are.equal('{"x-amz-security-token":"[redacted]","n":1}',
      redact('{"x-amz-security-token":"abc/def","n":1}'))
    assert.are.equal("/?X-Amz-Security-Token=[redacted]&X-Amz-Signature=[redacted]&a=b",
      redact("/?X-Amz-Security-Token=abc%2F&X-Amz-Signature=ff00&a=b"))
    -- AWS's own words about signatures stay
    assert.are.equal("The request signature we calculated does not match the signature you provided.",
      redact("The request signature we calculated does not match the signature you provided."))
  end)

  it("keeps text without secrets, skips what is not a string, and passes non-strings through", function()
    assert.are.equal("nothing to hide", redact("nothing to hide", { SECRET, false, "", 7 }))
    assert.is_nil(redact(nil, { SECRET }))
    assert.are.equal(42, redact(42))
  end)
end)

-- The secrets a request to server `s` carried: the secret key, the token
-- (and the part leakwatch knows), and every signature `s` has seen.
local function secrets_sent(s)
  local list = { SECRET, TOKEN, "IQoJb3JpZ2luX2VjSESSIONTOKENzz" }
  for _, req in ipairs(s.requests()) do
    assert.are.equal(TOKEN, req.headers["x-amz-security-token"])
    list[#list + 1] = assert(req.headers.authorization:match("Signature=(%x+)"))
  end
  return list
end

local function assert_no_secret(text, secrets, what)
  assert.is_string(text, what)
  for _, secret in ipairs(secrets) do
    assert(not text:find(secret, 1, true), what .. ": a secret in " .. text)
  end
  assert.is_nil(leakwatch.find(text))
end

-- Neither an error's message nor its tostring hold a secret.
local function assert_clean(err, secrets, what)
  assert(errors.is(err), what .. ": expected an error value, got " .. tostring(err))
  assert_no_secret(err.message, secrets, what)
  assert_no_secret(tostring(err), secrets, what)
end

local ROUTES = {
  { method = "POST", path = "/aws", responses = { { echo = "aws" } } },
  { method = "POST", path = "/text", responses = { { echo = "text" } } },
  { method = "POST", path = "/reasons", responses = { { echo = "reasons" } } },
  { method = "POST", path = "/string", responses = { { echo = "string" } } },
  -- a server that knows the secret key, raw and JSON-escaped
  { method = "POST", path = "/key", responses = { { status = 400, body = {
    __type = "com.amazonaws.dynamodb.v20120810#UnrecognizedClientException", message = "key " .. SECRET } } } },
  { method = "POST", path = "/key-text", responses = { { status = 403,
    body = '{"oops": "' .. SECRET:gsub("/", "\\/") .. '"}' } } },
}

describe("errors made of server text", function()
  local s

  setup(function() s = server.start(ROUTES) end)
  teardown(function() if s then s.stop() end end)

  local function client(path, extra)
    local opts = { table = "events", region = "us-east-1", max_attempts = 1,
      endpoint = s.url .. path, events_endpoint = s.url .. path,
      credentials = { access_key_id = "AKIDREDACT", secret_access_key = SECRET, session_token = TOKEN } }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return dynlog.new(opts)
  end

  local function last_request() return secrets_sent(s) end -- every request so far

  it("redact the echoed token and signature from an AWS error's message, for DynamoDB", function()
    local resp, err = client("/aws"):call("ListTables", {})
    assert.is_nil(resp)
    assert_clean(err, last_request(), "ListTables")
    assert.are.equal("ValidationException", err.code)
    -- the rest of the echo is still there to read
    assert.matches("x-amz-security-token: [redacted]", err.message, 1, true)
    assert.matches("Signature=[redacted]", err.message, 1, true)
    assert.matches("x-amz-target: DynamoDB_20120810.ListTables", err.message, 1, true)
  end)

  it("and for DynamoDB Streams and EventBridge", function()
    local c = client("/aws")
    local streams, err = c:list_streams()
    assert.is_nil(streams)
    assert_clean(err, last_request(), "ListStreams")
    assert.matches("DynamoDBStreams_20120810.ListStreams", err.message, 1, true)
    local results, perr, partial = c:publish({ { source = "s", detail_type = "d", detail = {} } })
    assert.is_nil(results)
    local secrets = last_request()
    assert_clean(perr, secrets, "PutEvents")
    assert.is_nil(partial[1])
    assert.are.equal("ValidationException", perr[1].code)
    assert_clean(perr[1], secrets, "PutEvents entry")
    assert.matches("AWSEvents.PutEvents", perr.message, 1, true)
  end)

  it("redact a proxy's error page", function()
    local _, err = client("/text"):call("ListTables", {})
    assert_clean(err, last_request(), "text")
    assert.are.equal("bad_response", err.code)
    assert.matches("x-amz-security-token: [redacted]", err.message, 1, true)
  end)

  it("redact the message of a cancellation reason", function()
    local _, err = client("/reasons"):call("TransactWriteItems", { TransactItems = {} })
    assert_clean(err, last_request(), "reasons")
    assert.are.equal("TransactionCanceledException", err.code)
    local reason = err.reasons[1].Message
    assert_no_secret(reason, last_request(), "reason")
    assert.matches("Signature=[redacted]", reason, 1, true)
  end)

  it("redact an HTTP 200 body that is not a JSON object", function()
    local _, err = client("/string"):call("ListTables", {})
    assert_clean(err, last_request(), "string")
    assert.matches("response is not a JSON object", err.message, 1, true)
  end)

  it("redact the secret key from a server that sends it back, raw or JSON-escaped", function()
    local _, err = client("/key"):call("ListTables", {})
    assert_clean(err, last_request(), "key")
    assert.are.equal("key [redacted]", err.message)
    _, err = client("/key-text"):call("ListTables", {})
    assert_clean(err, last_request(), "key-text")
    assert.matches('{"oops": "[redacted]"}', err.message, 1, true)
  end)

  it("redact the errors of requests made through dynlog.transport.concurrent's curl multi handle", function()
    local c = client("/aws")
    local errs = {}
    concurrent.run(c, 2, function(view)
      local _, err = view:call("ListTables", {})
      errs[#errs + 1] = err
    end)
    assert.are.equal(2, #errs)
    local secrets = last_request()
    for i = 1, 2 do assert_clean(errs[i], secrets, "concurrent " .. i) end
  end)

  it("keep the consumer's log lines clean", function()
    local lines = {}
    logger.set_handler(function(level, message) lines[#lines + 1] = level .. " " .. message end)
    finally(function() logger.set_handler(nil) end)
    local consumer
    local c = client("/aws", { sleep = function() consumer:stop() end })
    consumer = require("dynlog.consumer").new{ client = c, checkpoint_table = "events-checkpoints",
      handler = function() return true end }
    consumer:run()
    assert.is_true(#lines > 0)
    local secrets = last_request()
    for _, line in ipairs(lines) do
      assert.matches("[redacted]", line, 1, true)
      assert_no_secret(line, secrets, "a log line")
    end
  end)
end)

describe("errors made of server text, inside nginx", function()
  local nginx = require "spec.support.nginx"
  local http = require "socket.http"
  local s, srv

  local HANDLER = [[
    local dynlog = require "dynlog"
    local c = dynlog.new{ table = "events", region = "us-east-1", max_attempts = 1,
      endpoint = ngx.var.up .. ngx.var.arg_path, events_endpoint = ngx.var.up .. ngx.var.arg_path,
      credentials = { access_key_id = "AKIDREDACT", secret_access_key = %q, session_token = %q } }
    local out = { cosockets = getmetatable(c:_transport()).__index == require("dynlog.transport.cosocket") }
    local function keep(name, err)
      ngx.log(ngx.ERR, name, ": ", tostring(err))
      out[name] = { message = err.message, text = tostring(err), code = err.code }
    end
    keep("dynamodb", select(2, c:call("ListTables", {})))
    keep("streams", select(2, c:list_streams()))
    keep("events", select(2, c:publish({ { source = "s", detail_type = "d", detail = {} } })))
    ngx.header["Content-Type"] = "application/json"
    ngx.say(require("cjson").encode(out))
  ]]

  setup(function()
    s = server.start(ROUTES)
    srv = nginx.start({
      workers = 1,
      server = ('set $up "%s";\nlocation = /echo { content_by_lua_block {\n%s\n} }\n'):format(
        s.url, HANDLER:format(SECRET, TOKEN)),
    })
  end)
  teardown(function()
    if srv then srv.stop() end
    if s then s.stop() end
  end)

  for _, path in ipairs({ "/aws", "/text", "/key" }) do
    it("redact the secrets from the errors of the cosocket transport (" .. path .. ")", function()
      local body, code = http.request(srv.url .. "/echo?path=" .. path)
      assert.are.equal(200, code, tostring(body) .. "\n" .. srv.error_log():sub(-2000))
      local out = cjson.decode(body)
      assert.is_true(out.cosockets)
      local secrets = secrets_sent(s)
      for _, name in ipairs({ "dynamodb", "streams", "events" }) do
        assert_no_secret(out[name].message, secrets, name)
        assert_no_secret(out[name].text, secrets, name)
        assert.matches("[redacted]", out[name].message, 1, true)
      end
      local log = srv.error_log()
      assert.matches("dynamodb: ", log, 1, true)
      assert_no_secret(log, secrets, "nginx's error log")
    end)
  end
end)
