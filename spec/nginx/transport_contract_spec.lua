-- One contract, two transports: every case of spec/support/transport_contract.lua
-- runs against dynlog.transport.curl in this process and against
-- dynlog.transport.cosocket inside a private nginx (spec/support/nginx.lua),
-- whose one location runs the same case function and answers its outcome as
-- JSON. Both outcomes are held to the case's `expect` (and to the side's
-- own fields where the two legitimately differ).
--
-- Needs nginx with libnginx-mod-http-lua, `make luajit` (buildjit/, for
-- dynlog.core inside nginx), openssl, and DYNLOG_TEST_ENDPOINT (DynamoDB Local).
local cjson = require "cjson"
local contract = require "spec.support.transport_contract"
local curl = require "dynlog.transport.curl"
local env = require "spec.support.env"
local ltn12 = require "ltn12"
local nginx = require "spec.support.nginx"
local run = require "spec.support.run"
local server = require "spec.support.server"
local socket = require "socket"
local http = require "socket.http"
local tls_server = require "spec.support.tls_server"

local ABSENT = "<absent>"
local SIDES = { "curl", "cosocket" }

-- The case's expectations for one side: `expect` with the side's own fields
-- laid over it, the fields the side is known not to hold ({path = true}),
-- and those known bugs.
local function expectations(case, side)
  local expected, skip = {}, {}
  for k, v in pairs(case.expect or {}) do expected[k] = v end
  for k, v in pairs(case[side] or {}) do expected[k] = v end
  local bugs = (case.bugs or {})[side] or {}
  for _, bug in ipairs(bugs) do
    for _, path in ipairs(bug.fields) do skip[path] = true end
  end
  return expected, skip, bugs
end

-- Where `actual` differs from `expected` (see the rules in the contract's
-- header), as lines "path: expected …, got …"; paths in `skip` are not looked at.
local function mismatches(expected, actual, skip, path, found)
  found = found or {}
  for key, want in pairs(expected) do
    local p = path and (path .. "." .. tostring(key)) or tostring(key)
    local got
    if type(actual) == "table" then got = actual[key] end
    local problem
    if skip[p] then
      problem = nil
    elseif want == ABSENT then
      if got ~= nil then problem = "absent" end
    elseif type(want) == "table" and want.at_least then
      if type(got) ~= "number" or got < want.at_least or got >= want.below then
        problem = ("in [%s, %s)"):format(want.at_least, want.below)
      end
    elseif type(want) == "table" then
      if type(got) ~= "table" then
        problem = "a table"
      else
        mismatches(want, got, skip, p, found)
      end
    elseif type(want) == "string" then
      if type(got) ~= "string" or not got:find(want) then problem = ("matching %q"):format(want) end
    elseif got ~= want then
      problem = tostring(want)
    end
    if problem then
      found[#found + 1] = ("%s: expected %s, got %s"):format(p, problem,
        type(got) == "string" and ("%q"):format(got) or tostring(got))
    end
  end
  return found
end

describe("the transport contract", function()
  local srv, servers, tls, close_full, silent
  local ctx = {}

  setup(function()
    assert(io.open("buildjit/dynlog/core.so"), "buildjit/dynlog/core.so is missing: run `make luajit`")
    servers = {
      http = server.start({
        { method = "GET", path = "/hello",
          responses = { { status = 200, headers = { ["X-Reply"] = "Mixed-Case" }, body = "hello" } } },
        { method = "POST", path = "/items", responses = { { status = 201, body = { created = true } } } },
        { method = "GET", path = "/unavailable", responses = { { status = 503, body = { message = "try later" } } } },
        { method = "GET", path = "/big", responses = { { status = 200, body = string.rep("x", 2000) } } },
        { method = "GET", path = "/big-chunked", responses = { { raw = "HTTP/1.1 200 OK\r\n"
          .. "Transfer-Encoding: chunked\r\n\r\n" .. ("400\r\n" .. string.rep("y", 1024) .. "\r\n"):rep(2)
          .. "0\r\n\r\n" } } },
        { method = "GET", path = "/not-http", responses = { { raw = "SSH-2.0-OpenSSH_9.6\r\n" } } },
        { method = "GET", path = "/truncated", responses = { { raw = "HTTP/1.1 200 OK\r\n"
          .. "Content-Length: 100\r\n\r\nonly a part" } } },
        { method = "GET", path = "/chunked", responses = { { raw = "HTTP/1.1 200 OK\r\n"
          .. "Transfer-Encoding: chunked\r\nX-Rep: a\r\nX-Rep: b\r\n\r\n"
          .. "5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n" } } },
      }),
      keepalive = server.start({
        { method = "GET", path = "/whoami", responses = { { echo = "connection" } } },
      }),
    }
    tls = tls_server.start({ san = "IP:127.0.0.1" })
    -- A listener that never accepts: the kernel completes the handshake, the
    -- request goes out, and no answer comes.
    silent = assert(socket.bind("127.0.0.1", 0))
    local full_port
    full_port, close_full = run.full_listener()
    ctx = {
      http = servers.http.url,
      keepalive = servers.keepalive.url,
      tls = tls.url,
      silent_port = select(2, silent:getsockname()),
      full_port = full_port,
      closed_port = run.free_port(),
      -- nginx has no resolver: DynamoDB Local by address
      dynamodb = (env.dynamodb_endpoint():gsub("//localhost([:/])", "//127.0.0.1%1"):gsub("/+$", "")),
    }
    srv = nginx.start({
      workers = 1,
      -- as docs/deploying.md configures it: the system's CAs (which do not hold the test's)
      http = "client_body_buffer_size 64k;\n"
        .. "lua_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;\nlua_ssl_verify_depth 5;",
      server = [[
        location = /contract { content_by_lua_block {
          local cjson = require "cjson"
          ngx.req.read_body()
          local input = cjson.decode(ngx.req.get_body_data())
          local now = function() ngx.update_time() return ngx.now() end
          local out = require("spec.support.transport_contract").run(input.case, input.ctx,
            require("dynlog.transport.cosocket").new, now)
          ngx.header["Content-Type"] = "application/json"
          ngx.say(cjson.encode(out))
        } }
      ]],
    })
  end)

  teardown(function()
    if srv then srv.stop() end
    if tls then tls.stop() end
    if silent then silent:close() end
    if close_full then close_full() end
    for _, s in pairs(servers or {}) do s.stop() end
  end)

  -- The outcome of a case on one side.
  local function outcome(side, name)
    if side == "curl" then return contract.run(name, ctx, curl.new, socket.gettime) end
    local body, parts = cjson.encode({ case = name, ctx = ctx }), {}
    http.TIMEOUT = 30
    local ok, code = http.request({
      url = srv.url .. "/contract", method = "POST", source = ltn12.source.string(body),
      headers = { ["content-type"] = "application/json", ["content-length"] = tostring(#body) },
      sink = ltn12.sink.table(parts),
    })
    if not ok or code ~= 200 then
      error(("nginx answered %s %s\nerror log:\n%s"):format(tostring(code), table.concat(parts),
        srv.error_log():sub(-2000)))
    end
    return cjson.decode(table.concat(parts))
  end

  for _, case in ipairs(contract.cases) do
    for _, side in ipairs(SIDES) do
      local expected, skip, bugs = expectations(case, side)
      it(side .. ": " .. case.name, function()
        local watched = case.server and servers[case.server]
        local before = watched and #watched.requests()
        local out = outcome(side, case.name)
        assert(out.run_error == nil, out.run_error)
        local problems = mismatches(expected, out, skip)
        assert(#problems == 0, table.concat(problems, "\n") .. "\noutcome: " .. cjson.encode(out))
        if watched and case.requests then
          assert.are.equal(case.requests, #watched.requests() - before, "requests the server received")
        end
      end)
      for _, bug in ipairs(bugs) do
        pending(("%s: %s: %s: %s"):format(side, case.name, table.concat(bug.fields, ", "), bug.why))
      end
    end
  end

  it("left no Lua runtime error, alert or crit in nginx's error log", function()
    local log = srv.error_log()
    assert.is_nil(log:match("[^\n]*runtime error[^\n]*"))
    assert.is_nil(log:match("[^\n]*%[alert%][^\n]*"))
    assert.is_nil(log:match("[^\n]*%[crit%][^\n]*"))
  end)
end)
