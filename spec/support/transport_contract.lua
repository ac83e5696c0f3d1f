--- The contract of dynlog's two HTTP transports (docs/api.md,
-- `transport:request(req)`), as one table of cases that runs against both:
-- dynlog.transport.curl in the busted process, dynlog.transport.cosocket
-- inside nginx (spec/nginx/transport_contract_spec.lua runs each case on both
-- sides and compares the outcome with `expect`).
--
-- A case:
--   name    what the contract says
--   server, requests  the loopback server of the spec the case talks to,
--           and how many requests that server must receive during the case
--           (0 for a case that raises or answers sent = false)
--   run     function(new, ctx, now) -> outcome; `new(opts)` makes a transport
--           of the side under test, `ctx` holds the servers' addresses
--           (plain data, so that it crosses into nginx as JSON), `now()` is a
--           clock in seconds
--   expect  what the outcome must hold, field by field (fields it does not
--           name are free): a string is a Lua pattern the value must match,
--           "<absent>" says the field is nil, {at_least =, below =} a range,
--           another table the same rules one level down, anything else
--           equality. res = {…} is the response, err = {…} the error,
--           raised = the message of a raise, and some cases add summaries
--   curl, cosocket  what that side expects in place of `expect`'s fields, only
--           where the two legitimately differ (each says why)
--   bugs    {curl = {{fields = {"err.sent", …}, why = "…"}, …}}: fields of
--           `expect` that a side does not hold today; the spec does not look
--           at them on that side and shows each entry as pending
--
-- Outcomes are plain data: {res = {status, headers, body, new_connections,
-- local_port, resent}}, {err = {code, message, retryable, sent}},
-- {raised = message, at_caller = bool}, or a table of such per request.
-- This file runs in Lua 5.4, in LuaJIT and inside nginx: only what all have.
local assert, ipairs, pcall, require, tostring, type = assert, ipairs, pcall, require, tostring, type
local str_find = string.find

local _M = {}

-- The public fields of a result, as plain data that crosses JSON.
local function outcome(res, err)
  if res then
    return { res = { status = res.status, headers = res.headers, body = res.body,
      new_connections = res.new_connections, local_port = res.local_port, resent = res.resent } }
  end
  return { err = { code = err.code, message = err.message, retryable = err.retryable, sent = err.sent } }
end

-- One request that is expected to raise: the message, and whether it
-- blames this file (the caller of request) as the project's rule asks.
local function raising(t, req)
  local ok, res, err = pcall(function()
    local r, e = t:request(req) -- not a tail call: this line is the caller's
    return r, e
  end)
  if ok then
    local out = outcome(res, err)
    out.did_not_raise = true
    return out
  end
  local message = tostring(res)
  return { raised = message, at_caller = str_find(message, "transport_contract%.lua:%d+: ") ~= nil }
end

local function timed(now, f)
  local t0 = now()
  local out = f()
  out.elapsed = now() - t0
  return out
end

-- A signed DynamoDB call, as dynlog's client makes it.
local function dynamodb(ctx, operation, body)
  local url = ctx.dynamodb .. "/"
  local headers = assert(require("dynlog.sigv4").sign{
    method = "POST", url = url, body = body, region = "us-east-1", service = "dynamodb",
    headers = { ["Content-Type"] = "application/x-amz-json-1.0",
                ["X-Amz-Target"] = "DynamoDB_20120810." .. operation },
    credentials = { access_key_id = "AKIDCONTRACT", secret_access_key = "contract-secret-key" },
  })
  return { method = "POST", url = url, headers = headers, body = body }
end

_M.cases = {
  {
    name = "a 200 comes back with its status, lower-cased headers and body",
    server = "http", requests = 1,
    run = function(new, ctx)
      local t = new{ timeout = 5 }
      local out = outcome(t:request{ url = ctx.http .. "/hello", headers = { ["X-Probe"] = "yes" } })
      t:close()
      return out
    end,
    expect = { res = { status = 200, body = "^hello$",
      headers = { ["x-reply"] = "^Mixed%-Case$", ["content-length"] = "^5$", ["X-Reply"] = "<absent>" } } },
  },
  {
    name = "a POST sends its body and reads the answer",
    server = "http", requests = 1,
    run = function(new, ctx)
      local t = new{ timeout = 5 }
      local out = outcome(t:request{ method = "POST", url = ctx.http .. "/items?kind=a",
        headers = { ["Content-Type"] = "application/json" }, body = '{"name":"x"}' })
      t:close()
      return out
    end,
    expect = { res = { status = 201, body = '^{"created":true}$' } },
  },
  {
    name = "a 4xx and a 5xx are responses, not errors",
    server = "http", requests = 2,
    run = function(new, ctx)
      local t = new{ timeout = 5 }
      local out = { not_found = outcome(t:request{ url = ctx.http .. "/nowhere" }),
                    unavailable = outcome(t:request{ url = ctx.http .. "/unavailable" }) }
      t:close()
      return out
    end,
    expect = {
      not_found = { res = { status = 404, body = "^no route for GET /nowhere$" } },
      unavailable = { res = { status = 503, body = '^{"message":"try later"}$' } },
    },
  },
  {
    name = "DynamoDB Local: a signed call gets 200, a failed one its 400 as a response",
    run = function(new, ctx)
      local t = new{ timeout = 10 }
      local out = {
        tables = outcome(t:request(dynamodb(ctx, "ListTables", "{}"))),
        missing = outcome(t:request(dynamodb(ctx, "DescribeTable", '{"TableName":"no-such-contract-table"}'))),
      }
      t:close()
      return out
    end,
    expect = {
      tables = { res = { status = 200, body = "^{\"TableNames\":%[",
        headers = { ["content-type"] = "application/x%-amz%-json%-1%.0" } } },
      missing = { res = { status = 400, body = "ResourceNotFoundException" } },
    },
  },
  {
    name = "keep-alive: consecutive requests of one transport share one connection",
    server = "keepalive", requests = 3,
    run = function(new, ctx)
      local t = new{ timeout = 5 }
      local requests = {}
      for i = 1, 3 do requests[i] = outcome(t:request{ url = ctx.keepalive .. "/whoami" }) end
      t:close()
      -- Each body is the server's serial number of the connection.
      local function same(field)
        local first = requests[1].res and requests[1].res[field]
        for i = 2, 3 do
          if first == nil or not requests[i].res or requests[i].res[field] ~= first then return false end
        end
        return true
      end
      return { requests = requests, same_server_connection = same("body"), same_local_port = same("local_port") }
    end,
    -- Its own server: no earlier case left a connection to it in nginx's pool.
    expect = {
      requests = {
        { res = { status = 200, new_connections = 1 } },
        { res = { status = 200, new_connections = 0 } },
        { res = { status = 200, new_connections = 0 } },
      },
      same_server_connection = true,
    },
    -- Only the libcurl transport gives local_port (cosockets do not expose it).
    curl = { same_local_port = true },
    cosocket = { same_local_port = false },
  },
  {
    name = "a refused connection is a retryable connection error, never sent",
    run = function(new, ctx)
      return outcome(new{ connect_timeout = 2 }:request{ url = "http://127.0.0.1:" .. ctx.closed_port .. "/" })
    end,
    expect = { err = { code = "connection", retryable = true, sent = false } },
  },
  {
    name = "a connect that times out (full listen queue) is a timeout, never sent",
    run = function(new, ctx, now)
      return timed(now, function()
        return outcome(new{ connect_timeout = 0.3, timeout = 5 }:request{
          method = "POST", url = "http://127.0.0.1:" .. ctx.full_port .. "/", body = "{}" })
      end)
    end,
    expect = { err = { code = "timeout", retryable = true, sent = false }, elapsed = { at_least = 0.25, below = 2 } },
  },
  {
    name = "a server that accepts and never answers: a timeout after the request went out",
    run = function(new, ctx, now)
      return timed(now, function()
        return outcome(new{ timeout = 30 }:request{ url = "http://127.0.0.1:" .. ctx.silent_port .. "/",
          timeout = 0.3 })
      end)
    end,
    expect = { err = { code = "timeout", retryable = true, sent = "<absent>" },
      elapsed = { at_least = 0.25, below = 2 } },
  },
  {
    name = "an answer that is not HTTP is a connection error",
    server = "http", requests = 1,
    run = function(new, ctx)
      return outcome(new{ timeout = 5 }:request{ url = ctx.http .. "/not-http" })
    end,
    expect = { err = { code = "connection", retryable = true, sent = "<absent>" } },
  },
  {
    name = "a body cut short of its Content-Length is a connection error",
    server = "http", requests = 1,
    run = function(new, ctx)
      return outcome(new{ timeout = 5 }:request{ url = ctx.http .. "/truncated" })
    end,
    expect = { err = { code = "connection", retryable = true, sent = "<absent>" } },
  },
  {
    name = "a response over max_response_bytes is too_large, by Content-Length or chunked",
    server = "http", requests = 2,
    run = function(new, ctx)
      local t = new{ max_response_bytes = 1024, timeout = 5 }
      local out = { length = outcome(t:request{ url = ctx.http .. "/big" }),
                    chunked = outcome(t:request{ url = ctx.http .. "/big-chunked" }) }
      t:close()
      return out
    end,
    expect = {
      length = { err = { code = "too_large", retryable = false } },
      chunked = { err = { code = "too_large", retryable = false } },
    },
  },
  {
    name = "a chunked body is decoded, extensions dropped, repeated headers joined",
    server = "http", requests = 1,
    run = function(new, ctx)
      return outcome(new{ timeout = 5 }:request{ url = ctx.http .. "/chunked" })
    end,
    expect = { res = { status = 200, body = "^hello, world$", resent = "<absent>",
      headers = { ["transfer-encoding"] = "chunked", ["x-rep"] = "^a, b$" } } },
  },
  {
    name = "a CR/LF in a header value raises at the caller's line, sending nothing",
    server = "http", requests = 0,
    run = function(new, ctx)
      return raising(new(), { url = ctx.http .. "/hello", headers = { ["X-A"] = "v\r\nX-Injected: 1" } })
    end,
    expect = { raised = "header 'X%-A' has a CR, LF or NUL in its value", at_caller = true },
  },
  {
    name = "a header name that is not a token raises at the caller's line, sending nothing",
    server = "http", requests = 0,
    run = function(new, ctx)
      return raising(new(), { url = ctx.http .. "/hello", headers = { ["X A"] = "v" } })
    end,
    expect = { raised = "invalid character in header name 'X A'", at_caller = true },
  },
  {
    name = "a method that is not an HTTP token raises at the caller's line, sending nothing",
    server = "http", requests = 0,
    run = function(new, ctx)
      return raising(new(), { method = "GET / HTTP/1.1\r\nX-Evil: 1\r\n\r\nGET", url = ctx.http .. "/hello" })
    end,
    expect = { at_caller = true },
    -- The messages differ: "…the method is not an HTTP token" and "…invalid method".
    curl = { raised = "the method is not an HTTP token" },
    cosocket = { raised = "invalid method" },
  },
  {
    name = "a URL with a space is invalid_argument, not retryable, and nothing is sent",
    server = "http", requests = 0,
    run = function(new, ctx)
      return outcome(new():request{ url = ctx.http .. "/a b" })
    end,
    expect = { err = { code = "invalid_argument", retryable = false, sent = false } },
  },
  {
    name = "an unknown field of req raises at the caller's line, naming the nearest known one",
    server = "http", requests = 0,
    run = function(new, ctx)
      return raising(new(), { url = ctx.http .. "/hello", header = { ["X-A"] = "v" } })
    end,
    expect = { raised = 'unknown option "header" %(did you mean "headers"%?%)', at_caller = true },
  },
  {
    name = "TLS to a self-signed server with verification on is a tls error, never sent",
    run = function(new, ctx)
      return outcome(new{ timeout = 5 }:request{ url = ctx.tls })
    end,
    expect = { res = "<absent>", err = { code = "tls", retryable = false, sent = false } },
  },
}

--- The case of that name, or nil.
function _M.case(name)
  for _, c in ipairs(_M.cases) do
    if c.name == name then return c end
  end
  return nil
end

--- Runs one case by name: its outcome, or {run_error = message} when the
-- case itself raised.
function _M.run(name, ctx, new, now)
  local c = _M.case(name)
  if not c then return { run_error = "no case named " .. tostring(name) } end
  local ok, out = pcall(c.run, new, ctx, now)
  if not ok then return { run_error = tostring(out) } end
  if type(out) ~= "table" then return { run_error = "the case returned " .. type(out) } end
  return out
end

return _M
