--- A scripted loopback HTTP/1.1 server for the specs.
--
--   lua5.4 spec/support/httpd.lua ROUTES.json LOG.jsonl PORTFILE [MAX_SECONDS]
--
-- Binds 127.0.0.1 on a port the kernel picks, writes that port to PORTFILE,
-- and serves until killed (or MAX_SECONDS, default 300, so a spec that dies
-- without stopping it leaves nothing behind for long).
--
-- ROUTES.json is an array of
--   { "method": "GET", "path": "/x", "responses": [ {status, headers, body, delay_ms}, ... ] }
-- The responses of a route are served in order and the last one repeats. A
-- route's path matches the request target with its query string, or without
-- it. `body` may be a JSON object, which is sent encoded. Unknown routes → 404.
-- A response with "together": N is held until N requests wait for it
-- (on as many connections), then all N are answered: a client that never
-- has N requests in flight at once never gets an answer.
-- A response {"putevents": true, "fail": [{"index": 2, "code": "...", "message": "..."}]}
-- answers an EventBridge PutEvents request as EventBridge does: one EventId
-- per entry of the request, except the listed (1-based) entries, which fail.
--
-- A response {"echo": "aws" | "reasons" | "string" | "text"} gives the
-- request's headers back: in an AWS error's message, in a transaction's
-- cancellation reason, as an HTTP 200 JSON string, or in a plain-text error
-- page (status 502 unless "status" says otherwise); {"echo": "connection"}
-- answers 200 with the serial number of the connection the request came on.
-- A response {"cloudformation": CONFIG} is answered by a simulation of
-- CloudFormation's query API (spec/support/cloudformation_server.lua), which
-- keeps its stacks in this process.
-- A response {"sts": {...}} answers as STS does (see spec/support/sts.lua).
-- A response {"raw": "bytes"} writes those bytes as they are, in place of an
-- HTTP response, then closes the connection.
--
-- Every request is appended to LOG.jsonl, before the response goes out, as
-- one line {"method", "path", "headers" (lower-cased names), "body",
-- "connection" (the serial number of its connection, from 1)}.
-- Keep-alive, Content-Length and chunked request bodies and
-- `Expect: 100-continue` are supported; several connections are served
-- alternately through select().
local socket = require("socket")
local cjson = require("cjson")

local ipairs, pairs, pcall, tonumber, tostring, type = ipairs, pairs, pcall, tonumber, tostring, type
local str_format, str_lower, str_match = string.format, string.lower, string.match

local cloudformation = dofile((arg[0]:match("^(.*/)") or "./") .. "cloudformation_server.lua")

local ROUTES_FILE, LOG_FILE, PORT_FILE, MAX_SECONDS = arg[1], arg[2], arg[3], arg[4]
-- {"sts": {...}} answers as the loopback STS (spec/support/sts.lua).
local STS = dofile((arg[0]:match("^(.*/)") or "./") .. "sts.lua")
if not (ROUTES_FILE and LOG_FILE and PORT_FILE) then
  io.stderr:write("usage: httpd.lua ROUTES.json LOG.jsonl PORTFILE [MAX_SECONDS]\n")
  os.exit(2)
end
MAX_SECONDS = tonumber(MAX_SECONDS) or 300

local REASONS = {
  [100] = "Continue", [200] = "OK", [201] = "Created", [204] = "No Content",
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden",
  [404] = "Not Found", [405] = "Method Not Allowed", [429] = "Too Many Requests",
  [500] = "Internal Server Error", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

local function read_all(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

local function load_routes(path)
  local routes = {}
  for _, route in ipairs(cjson.decode(read_all(path))) do
    route.next = 1
    routes[route.method .. " " .. route.path] = route
  end
  return routes
end

-- Written then renamed, so the waiting spec never reads a half-written port.
local function write_port(path, port)
  local tmp = path .. ".tmp"
  local f = assert(io.open(tmp, "wb"))
  f:write(tostring(port))
  f:close()
  assert(os.rename(tmp, path))
end

-- Opened and closed per request so the spec reading the log sees every line.
local function log_request(req)
  local f = assert(io.open(LOG_FILE, "ab"))
  f:write(cjson.encode({
    method = req.method, path = req.target, headers = req.headers, body = req.body,
    connection = req.connection,
  }), "\n")
  f:close()
end

local event_ids = 0

local function putevents_response(response, req)
  local ok, request = pcall(cjson.decode, req.body or "")
  if not ok or type(request) ~= "table" or type(request.Entries) ~= "table" then
    return { status = 400, body = { __type = "ValidationException", message = "no Entries" } }
  end
  local failing = {}
  for _, f in ipairs(response.fail or {}) do failing[f.index] = f end
  local entries, failed = {}, 0
  for i = 1, #request.Entries do
    local f = failing[i]
    if f then
      failed = failed + 1
      entries[i] = { ErrorCode = f.code, ErrorMessage = f.message or f.code }
    else
      event_ids = event_ids + 1
      entries[i] = { EventId = str_format("00000000-0000-4000-8000-%012d", event_ids) }
    end
  end
  return { status = 200, headers = { ["Content-Type"] = "application/x-amz-json-1.1" },
           body = { FailedEntryCount = failed, Entries = entries } }
end

-- The request's headers as "name: value" lines, the session token and the
-- Authorization header first: what a proxy's error page or a server that
-- echoes a bad request shows.
local FIRST = { "x-amz-security-token", "authorization" }

local function header_lines(req)
  local lines, seen = {}, {}
  for _, name in ipairs(FIRST) do
    if req.headers[name] then
      lines[#lines + 1] = name .. ": " .. req.headers[name]
      seen[name] = true
    end
  end
  local rest = {}
  for name in pairs(req.headers) do
    if not seen[name] then rest[#rest + 1] = name end
  end
  table.sort(rest)
  for _, name in ipairs(rest) do lines[#lines + 1] = name .. ": " .. req.headers[name] end
  return table.concat(lines, "\n")
end

local function echo_response(response, req)
  local kind = response.echo
  if kind == "connection" then
    return { status = 200, headers = { ["Content-Type"] = "text/plain" }, body = tostring(req.connection) }
  end
  local echoed = header_lines(req)
  if kind == "aws" then -- an AWS error whose message holds the request's headers
    return { status = response.status or 400,
             body = { __type = "ValidationException", message = "bad request:\n" .. echoed } }
  elseif kind == "reasons" then -- a cancelled transaction whose reason does
    return { status = 400, body = { __type = "TransactionCanceledException", message = "cancelled",
      CancellationReasons = { { Code = "ValidationError", Message = echoed } } } }
  elseif kind == "string" then -- HTTP 200 with a JSON string that is not an object
    return { status = 200, body = cjson.encode(echoed) }
  end
  -- "text": a proxy's error page
  return { status = response.status or 502, headers = { ["Content-Type"] = "text/plain" },
           body = "Bad Gateway\n" .. echoed }
end

local function next_response(routes, req)
  local path_only = str_match(req.target, "^[^?]*")
  local route = routes[req.method .. " " .. req.target]
    or routes[req.method .. " " .. path_only]
  if not route then
    return { status = 404, body = "no route for " .. req.method .. " " .. req.target }
  end
  local responses = route.responses
  local response = responses[route.next] or responses[#responses]
  if route.next <= #responses then route.next = route.next + 1 end
  if response.putevents then return putevents_response(response, req) end
  if response.sts then return STS.answer(response.sts, req) end
  if response.echo then return echo_response(response, req) end
  if response.cloudformation then return cloudformation.handle(response.cloudformation, req) end
  return response
end

local function read_chunked(client)
  local parts = {}
  while true do
    local size_line, err = client:receive("*l")
    if not size_line then return nil, err end
    local size = tonumber(str_match(size_line, "^%x+"), 16)
    if not size then return nil, "bad chunk size" end
    if size == 0 then
      repeat -- trailers, up to the empty line
        local line = client:receive("*l")
      until not line or line == ""
      return table.concat(parts)
    end
    local data, derr = client:receive(size)
    if not data then return nil, derr end
    parts[#parts + 1] = data
    client:receive("*l") -- the CRLF after each chunk
  end
end

-- Reads one request; nil when the client closed or sent garbage.
local function read_request(client)
  local line = client:receive("*l")
  if not line or line == "" then return nil end
  local method, target, version = str_match(line, "^(%u+) (%S+) HTTP/(%d%.%d)$")
  if not method then return nil end
  local headers = {}
  while true do
    local h = client:receive("*l")
    if not h then return nil end
    if h == "" then break end
    local name, value = str_match(h, "^([^:]+):%s*(.-)%s*$")
    if name then headers[str_lower(name)] = value end
  end
  if headers["expect"] and str_lower(headers["expect"]) == "100-continue" then
    client:send("HTTP/1.1 100 Continue\r\n\r\n")
  end
  local body = ""
  if headers["transfer-encoding"] and str_lower(headers["transfer-encoding"]):find("chunked") then
    body = read_chunked(client)
    if not body then return nil end
  elseif tonumber(headers["content-length"] or "0") > 0 then
    body = client:receive(tonumber(headers["content-length"]))
    if not body then return nil end
  end
  local connection = str_lower(headers["connection"] or "")
  local keep_alive = connection ~= "close" and (version == "1.1" or connection == "keep-alive")
  return { method = method, target = target, headers = headers, body = body,
           keep_alive = keep_alive }
end

local function send_response(client, response, keep_alive)
  local body = response.body or ""
  if type(body) == "table" then body = cjson.encode(body) end
  local status = response.status or 200
  local lines = { str_format("HTTP/1.1 %d %s", status, REASONS[status] or "Status") }
  local has_type = false
  for name, value in pairs(response.headers or {}) do
    lines[#lines + 1] = name .. ": " .. value
    if str_lower(name) == "content-type" then has_type = true end
  end
  if not has_type then lines[#lines + 1] = "Content-Type: application/json" end
  lines[#lines + 1] = "Content-Length: " .. #body
  lines[#lines + 1] = "Connection: " .. (keep_alive and "keep-alive" or "close")
  return client:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. body)
end

-- Responses held until `together` requests wait for one: {client, response, keep_alive}.
local held = {}

-- The serial number of each client connection, from 1, in accept order.
local serials, accepted = setmetatable({}, { __mode = "k" }), 0

-- Serves one request of a readable client; false when it should be closed.
local function serve_one(routes, client)
  local req = read_request(client)
  if not req then return false end
  req.connection = serials[client]
  log_request(req)
  local response = next_response(routes, req)
  if response.raw then
    client:send(response.raw)
    return false
  end
  if response.together then
    held[#held + 1] = { client = client, response = response, keep_alive = req.keep_alive }
    if #held < response.together then return true end
    for _, h in ipairs(held) do send_response(h.client, h.response, true) end
    held = {}
    return true
  end
  if response.delay_ms then socket.sleep(response.delay_ms / 1000) end
  -- The client may have given up during the delay; that is its business.
  local sent = send_response(client, response, req.keep_alive)
  return sent ~= nil and req.keep_alive
end

local function main()
  local routes = load_routes(ROUTES_FILE)
  local server = assert(socket.bind("127.0.0.1", 0))
  local _, port = server:getsockname()
  write_port(PORT_FILE, port)

  local clients = {}
  local deadline = socket.gettime() + MAX_SECONDS
  while socket.gettime() < deadline do
    local watched = { server }
    for _, c in ipairs(clients) do watched[#watched + 1] = c end
    local readable = socket.select(watched, nil, 0.5)
    for _, sock in ipairs(readable) do
      if sock == server then
        local client = server:accept()
        if client then
          client:settimeout(5) -- a stalled client must not wedge the server
          accepted = accepted + 1
          serials[client] = accepted
          clients[#clients + 1] = client
        end
      elseif not serve_one(routes, sock) then
        sock:close()
        for i, c in ipairs(clients) do
          if c == sock then table.remove(clients, i) break end
        end
      end
    end
  end
end

main()
