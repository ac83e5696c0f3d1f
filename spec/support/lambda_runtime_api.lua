--- A loopback stand-in for the AWS Lambda Runtime API, for specs and benchmarks.
--
--   lua5.4 spec/support/lambda_runtime_api.lua INVOCATIONS.json LOG.jsonl PORTFILE [MAX_SECONDS]
--
-- It stands for the HTTP API that Lambda serves to a custom runtime inside
-- an execution environment (AWS_LAMBDA_RUNTIME_API), as documented at
-- https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html, version
-- 2018-06-01, and only that: no Lambda service behind it, no freezing, no
-- killing at the timeout (a runtime that overruns its deadline is left to
-- answer, so that what the runtime itself does about it can be seen).
--
--   GET  /2018-06-01/runtime/invocation/next          the next invocation: 200, the event as
--        body, headers Lambda-Runtime-Aws-Request-Id, -Deadline-Ms, -Invoked-Function-Arn,
--        -Trace-Id, -Client-Context, -Cognito-Identity; with none left, the request is held
--        (never answered, as Lambda holds it until an invocation comes)
--   POST /2018-06-01/runtime/invocation/<id>/response  202 {"status":"OK"}; an unknown id 400,
--        an id answered already 400
--   POST /2018-06-01/runtime/invocation/<id>/error     likewise
--   POST /2018-06-01/runtime/init/error                202 before the first `next`, else 403
--
-- INVOCATIONS.json is an array of {"id", "event" (any JSON value, sent encoded; or "raw": the
-- body's text as it is), "deadline_in_ms" (the deadline, from when it is handed out; default
-- 3000), "trace_id", "function_arn", "client_context", "identity" (texts)}; "repeat": N hands
-- an invocation out N times, with ids <id>-1 … <id>-N.
-- Every request is appended to LOG.jsonl as {"method", "path", "headers" (lower-cased names),
-- "body", "t" (epoch seconds)} when it has been read.
local socket = require("socket")
local cjson = require("cjson")

local INVOCATIONS_FILE, LOG_FILE, PORT_FILE, MAX_SECONDS = arg[1], arg[2], arg[3], arg[4]
if not (INVOCATIONS_FILE and LOG_FILE and PORT_FILE) then
  io.stderr:write("usage: lambda_runtime_api.lua INVOCATIONS.json LOG.jsonl PORTFILE [MAX_SECONDS]\n")
  os.exit(2)
end
MAX_SECONDS = tonumber(MAX_SECONDS) or 300

local PREFIX = "/2018-06-01"

local function read_all(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

local queue = {}
for _, inv in ipairs(cjson.decode(read_all(INVOCATIONS_FILE))) do
  local times = inv["repeat"] or 1
  for i = 1, times do
    local copy = {}
    for k, v in pairs(inv) do copy[k] = v end
    if times > 1 then copy.id = inv.id .. "-" .. i end
    queue[#queue + 1] = copy
  end
end
local handed, answered, started = 0, {}, false
local known = {}

local log = assert(io.open(LOG_FILE, "ab"))
local function log_request(req)
  log:write(cjson.encode({ method = req.method, path = req.target, headers = req.headers, body = req.body,
                           t = socket.gettime() }), "\n")
  log:flush()
end

local function read_request(client)
  local line = client:receive("*l")
  if not line or line == "" then return nil end
  local method, target = line:match("^(%u+) (%S+) HTTP/%d%.%d$")
  if not method then return nil end
  local headers = {}
  while true do
    local h = client:receive("*l")
    if not h then return nil end
    if h == "" then break end
    local name, value = h:match("^([^:]+):%s*(.-)%s*$")
    if name then headers[name:lower()] = value end
  end
  if (headers.expect or ""):lower() == "100-continue" then client:send("HTTP/1.1 100 Continue\r\n\r\n") end
  local body = ""
  local length = tonumber(headers["content-length"] or "0")
  if length > 0 then
    body = client:receive(length)
    if not body then return nil end
  end
  return { method = method, target = target, headers = headers, body = body }
end

local REASONS = { [200] = "OK", [202] = "Accepted", [400] = "Bad Request", [403] = "Forbidden",
                  [404] = "Not Found" }

local function send(client, status, body, headers)
  local lines = { ("HTTP/1.1 %d %s"):format(status, REASONS[status] or "Status"),
                  "Content-Type: application/json", "Content-Length: " .. #body }
  for name, value in pairs(headers or {}) do lines[#lines + 1] = name .. ": " .. value end
  return client:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. body)
end

local function api_error(client, status, error_type, message)
  return send(client, status, cjson.encode({ errorType = error_type, errorMessage = message }))
end

-- Answers one request; false: hold the connection without an answer.
local function serve(client, req)
  local path = req.target
  if req.method == "GET" and path == PREFIX .. "/runtime/invocation/next" then
    started = true
    if handed >= #queue then return false end
    handed = handed + 1
    local inv = queue[handed]
    known[inv.id] = true
    local now_ms = math.floor(socket.gettime() * 1000)
    local headers = {
      ["Lambda-Runtime-Aws-Request-Id"] = inv.id,
      ["Lambda-Runtime-Deadline-Ms"] = tostring(now_ms + (inv.deadline_in_ms or 3000)),
      ["Lambda-Runtime-Invoked-Function-Arn"] = inv.function_arn
        or "arn:aws:lambda:us-east-1:000000000000:function:dynlog-spec",
    }
    if inv.trace_id then headers["Lambda-Runtime-Trace-Id"] = inv.trace_id end
    if inv.client_context then headers["Lambda-Runtime-Client-Context"] = inv.client_context end
    if inv.identity then headers["Lambda-Runtime-Cognito-Identity"] = inv.identity end
    local body = inv.raw or cjson.encode(inv.event == nil and cjson.null or inv.event)
    send(client, 200, body, headers)
    return true
  end
  if req.method == "POST" and path == PREFIX .. "/runtime/init/error" then
    if started then return api_error(client, 403, "InvalidStateTransition", "init error after next") end
    return send(client, 202, '{"status":"OK"}')
  end
  local id, what = path:match("^" .. PREFIX:gsub("%-", "%%-") .. "/runtime/invocation/([^/]+)/(%a+)$")
  if req.method == "POST" and (what == "response" or what == "error") then
    if not known[id] then return api_error(client, 400, "InvalidRequestID", "unknown request id " .. id) end
    if answered[id] then return api_error(client, 400, "InvalidStateTransition", id .. " was answered already") end
    answered[id] = what
    return send(client, 202, '{"status":"OK"}')
  end
  return api_error(client, 404, "NotFound", "no route " .. req.method .. " " .. path)
end

local server = assert(socket.bind("127.0.0.1", 0))
do
  local _, port = server:getsockname()
  local tmp = PORT_FILE .. ".tmp"
  local f = assert(io.open(tmp, "w"))
  f:write(tostring(port))
  f:close()
  assert(os.rename(tmp, PORT_FILE))
end

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
        client:settimeout(5)
        clients[#clients + 1] = client
      end
    else
      local req = read_request(sock)
      if req then
        log_request(req)
        serve(sock, req)
      else
        sock:close()
        for i, c in ipairs(clients) do
          if c == sock then table.remove(clients, i) break end
        end
      end
    end
  end
end
