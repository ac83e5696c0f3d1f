--- A fault-injecting HTTP/1.1 proxy on loopback, for the chaos run (scripts/chaos.lua).
--
--   lua5.4 spec/support/chaos_proxy.lua --upstream 127.0.0.1:PORT --port-file FILE
--       [--stats FILE] [--seed N] [--rate 0.2] [--kinds reset_before,stall,...]
--       [--stall 1.6] [--trickle 0.4] [--max-seconds 900] [--name NAME]
--       [--sequence none,reset_after,...] [--log FILE] [--tag LUA_PATTERN]
--
-- Binds 127.0.0.1 on a port the kernel picks and writes it to --port-file
-- (written then renamed: its appearance is the "ready" signal). Every request
-- of every client connection (several at once, through one select() loop and
-- a coroutine per connection) is forwarded to the upstream on a keep-alive
-- connection of its own, unless a fault is drawn for it: with probability
-- --rate, one kind among --kinds (default: all), from a generator seeded with
-- --seed:
--
--   reset_before  the client connection is reset; nothing is forwarded
--   reset_after   forwarded (the upstream applies it), then the client
--                 connection is reset before any byte of the answer: the
--                 ambiguous case
--   stall         forwarded, the answer held for --stall seconds (past the
--                 client's timeout), then the connection closed
--   http500       HTTP 500 with an AWS InternalServerError body; not forwarded
--   http503       HTTP 503 with a body that is no AWS error; not forwarded
--   throttle      400 ProvisionedThroughputExceededException (AWS requests,
--                 those with X-Amz-Target) or 429 (others); not forwarded
--   throttle2     400 ThrottlingException, or 429; not forwarded
--   truncate      forwarded, the answer cut in the middle of its body
--                 (Content-Length says more), then the connection closed
--   bad_crc       forwarded, the answer's x-amz-crc32 header replaced by a
--                 wrong value (added when the upstream sent none)
--   trickle       forwarded, the answer sent a few bytes at a time, spread
--                 over about --trickle seconds (within the client's timeout)
--
-- --sequence gives the faults of the first requests in order ("none": no
-- fault), for reproductions; the random draws follow it.
--
-- --log FILE lists every request: time, connection, request number on that
-- connection, operation, fault, and with --tag the captures of that Lua
-- pattern in the request body (at most 12), to tell which request carried what.
--
-- Counts (requests, forwarded, faults by kind, requests and faults by
-- operation) are written as JSON to --stats every second when they changed,
-- on SIGTERM/SIGINT (when dynlog.core is on LUA_CPATH: its signal_catch)
-- and on exit; `GET /__stats` answers them (not counted). The proxy exits
-- after --max-seconds, so that a run that dies leaves nothing behind for long.
local socket = require "socket"
local cjson = require "cjson"

local co_create, co_resume, co_running, co_status, co_yield =
  coroutine.create, coroutine.resume, coroutine.running, coroutine.status, coroutine.yield
local str_format, str_lower, str_match, str_sub = string.format, string.lower, string.match, string.sub
local tbl_concat = table.concat
local gettime = socket.gettime

---------------------------------------------------------------------------
-- Arguments
---------------------------------------------------------------------------

local ALL_KINDS = { "reset_before", "reset_after", "stall", "http500", "http503", "throttle", "throttle2",
                    "truncate", "bad_crc", "trickle" }

local opts = { seed = 1, rate = 0.2, stall = 1.6, trickle = 0.4, ["max-seconds"] = 900, name = "proxy" }
do
  local i = 1
  while i <= #arg do
    local name = str_match(arg[i], "^%-%-(.+)$")
    if not name or arg[i + 1] == nil then
      io.stderr:write("chaos_proxy: bad argument " .. tostring(arg[i]) .. "\n")
      os.exit(2)
    end
    opts[name] = arg[i + 1]
    i = i + 2
  end
end
local up_host, up_port = str_match(opts.upstream or "", "^([%d%.]+):(%d+)$")
if not up_host or not opts["port-file"] then
  io.stderr:write("usage: chaos_proxy.lua --upstream 127.0.0.1:PORT --port-file FILE [--stats FILE] [--seed N]"
    .. " [--rate R] [--kinds k1,k2] [--stall S] [--trickle S] [--max-seconds S] [--name NAME]\n")
  os.exit(2)
end
up_port = tonumber(up_port)
local RATE, STALL, TRICKLE = tonumber(opts.rate), tonumber(opts.stall), tonumber(opts.trickle)
local MAX_SECONDS = tonumber(opts["max-seconds"])
local KINDS = {}
if opts.kinds and opts.kinds ~= "all" then
  for k in opts.kinds:gmatch("[^,%s]+") do KINDS[#KINDS + 1] = k end
else
  KINDS = ALL_KINDS
end
math.randomseed(tonumber(opts.seed))

---------------------------------------------------------------------------
-- Counts
---------------------------------------------------------------------------

local stats = { name = opts.name, seed = tonumber(opts.seed), rate = RATE, requests = 0, forwarded = 0,
                faults = {}, by_operation = {}, connections = 0, upstream_errors = 0, client_gone = 0 }
for _, k in ipairs(KINDS) do stats.faults[k] = 0 end
local dirty = true

local request_log = opts.log and assert(io.open(opts.log, "a"))
if request_log then request_log:setvbuf("line") end

local function tags_of(body)
  if not opts.tag then return "" end
  local found = {}
  for capture in body:gmatch(opts.tag) do
    found[#found + 1] = capture
    if #found == 12 then break end
  end
  return #found > 0 and (" " .. tbl_concat(found, ",")) or ""
end

local function count_request(op, fault, conn_id, n, body)
  if request_log then
    request_log:write(str_format("%.3f conn %d req %d %s %s%s\n", gettime(), conn_id, n, op, fault or "-",
      tags_of(body)))
  end
  stats.requests = stats.requests + 1
  local o = stats.by_operation[op]
  if not o then
    o = { requests = 0, faults = 0 }
    stats.by_operation[op] = o
  end
  o.requests = o.requests + 1
  if fault then
    o.faults = o.faults + 1
    stats.faults[fault] = (stats.faults[fault] or 0) + 1
  end
  dirty = true
end

local function write_stats()
  if not opts.stats then return end
  local tmp = opts.stats .. ".tmp"
  local f = io.open(tmp, "wb")
  if not f then return end
  f:write(cjson.encode(stats))
  f:close()
  os.rename(tmp, opts.stats)
  dirty = false
end

---------------------------------------------------------------------------
-- The scheduler: a coroutine per connection, one select() for all
---------------------------------------------------------------------------

local wait_readers, wait_writers = {}, {} -- socket -> coroutine
local sleepers = {}                        -- {at=, co=}
local runnable = {}

local function wait_read(sock)
  wait_readers[sock] = co_running()
  co_yield()
end

local function wait_write(sock)
  wait_writers[sock] = co_running()
  co_yield()
end

local function sleep(seconds)
  sleepers[#sleepers + 1] = { at = gettime() + seconds, co = co_running() }
  co_yield()
end

local function resume(co)
  if co_status(co) ~= "suspended" then return end
  local ok, err = co_resume(co)
  if not ok then io.stderr:write("chaos_proxy: ", tostring(err), "\n") end
end

local function spawn(f)
  runnable[#runnable + 1] = co_create(f)
end

---------------------------------------------------------------------------
-- Buffered, non-blocking connections
---------------------------------------------------------------------------

local Conn = {}
Conn.__index = Conn

local function wrap(sock)
  sock:settimeout(0)
  sock:setoption("tcp-nodelay", true)
  return setmetatable({ sock = sock, buf = "", eof = false }, Conn)
end

-- More bytes into the buffer; nil, "closed" at the end.
function Conn:fill()
  while true do
    if self.eof then return nil, "closed" end
    local data, err, partial = self.sock:receive(65536)
    local chunk = data or partial
    if err == "closed" then self.eof = true end
    if chunk and #chunk > 0 then
      self.buf = self.buf .. chunk
      return true
    end
    if err == "timeout" then
      wait_read(self.sock)
    elseif err and err ~= "closed" then
      self.eof = true
      return nil, err
    end
  end
end

function Conn:line()
  while true do
    local s, e = self.buf:find("\r?\n")
    if s then
      local line = str_sub(self.buf, 1, s - 1)
      self.buf = str_sub(self.buf, e + 1)
      return line
    end
    local ok, err = self:fill()
    if not ok then return nil, err end
  end
end

function Conn:bytes(n)
  while #self.buf < n do
    local ok, err = self:fill()
    if not ok then return nil, err end
  end
  local data = str_sub(self.buf, 1, n)
  self.buf = str_sub(self.buf, n + 1)
  return data
end

function Conn:rest()
  while self:fill() do end
  local data = self.buf
  self.buf = ""
  return data
end

function Conn:send(data)
  local i = 1
  while i <= #data do
    local last, err, partial_last = self.sock:send(data, i)
    if last then return true end
    if err == "timeout" then
      i = (partial_last or i - 1) + 1
      wait_write(self.sock)
    else
      return nil, err
    end
  end
  return true
end

function Conn:close()
  wait_readers[self.sock], wait_writers[self.sock] = nil, nil
  self.sock:close()
end

-- A reset rather than an orderly close: SO_LINGER with a zero timeout.
function Conn:reset()
  pcall(self.sock.setoption, self.sock, "linger", { on = true, timeout = 0 })
  self:close()
end

---------------------------------------------------------------------------
-- HTTP messages
---------------------------------------------------------------------------

-- Header lines up to the empty line: a list of {name, value} and a map of
-- lower-cased names to values.
local function read_headers(conn)
  local list, map = {}, {}
  while true do
    local line, err = conn:line()
    if not line then return nil, err end
    if line == "" then return list, map end
    local name, value = str_match(line, "^([^:]+):%s*(.-)%s*$")
    if name then
      list[#list + 1] = { name, value }
      map[str_lower(name)] = value
    end
  end
end

local function read_chunked(conn)
  local parts = {}
  while true do
    local line, err = conn:line()
    if not line then return nil, err end
    local size = tonumber(str_match(line, "^%s*(%x+)"), 16)
    if not size then return nil, "bad chunk size" end
    if size == 0 then
      repeat
        line, err = conn:line()
        if not line then return nil, err end
      until line == ""
      return tbl_concat(parts)
    end
    local data, derr = conn:bytes(size)
    if not data then return nil, derr end
    parts[#parts + 1] = data
    local crlf, cerr = conn:line()
    if not crlf then return nil, cerr end
  end
end

local function read_request(conn)
  local line, err
  repeat line, err = conn:line() until line ~= "" -- tolerate stray CRLFs between requests
  if not line then return nil, err end
  local method, target, version = str_match(line, "^(%S+) (%S+) HTTP/(%d%.%d)$")
  if not method then return nil, "bad request line" end
  local list, map = read_headers(conn)
  if not list then return nil, map end
  local req = { method = method, target = target, version = version, headers = list, map = map }
  if map["expect"] and str_lower(map["expect"]) == "100-continue" then
    conn:send("HTTP/1.1 100 Continue\r\n\r\n")
  end
  if map["transfer-encoding"] and str_lower(map["transfer-encoding"]):find("chunked") then
    local body, berr = read_chunked(conn)
    if not body then return nil, berr end
    req.body = body
  else
    local len = tonumber(map["content-length"] or "0") or 0
    local body, berr = conn:bytes(len)
    if not body then return nil, berr end
    req.body = body
  end
  return req
end

-- The request as the upstream gets it: a Content-Length body, no Expect.
local function serialize_request(req)
  local out = { str_format("%s %s HTTP/1.1\r\n", req.method, req.target) }
  for _, h in ipairs(req.headers) do
    local n = str_lower(h[1])
    if n ~= "expect" and n ~= "transfer-encoding" and n ~= "content-length" then
      out[#out + 1] = h[1] .. ": " .. h[2] .. "\r\n"
    end
  end
  if #req.body > 0 or req.method == "POST" or req.method == "PUT" then
    out[#out + 1] = "Content-Length: " .. #req.body .. "\r\n"
  end
  out[#out + 1] = "\r\n"
  out[#out + 1] = req.body
  return tbl_concat(out)
end

local function read_response(conn, method)
  local line, err, status, version
  repeat
    line, err = conn:line()
    if not line then return nil, err end
    version, status = str_match(line, "^HTTP/(%d%.%d) (%d%d%d)")
    status = tonumber(status)
    if not status then return nil, "bad status line" end
    local list, map = read_headers(conn)
    if not list then return nil, map end
    if status >= 200 or status == 101 then
      local res = { status_line = line, status = status, version = version, headers = list, map = map }
      local te = map["transfer-encoding"]
      local body, berr
      if method == "HEAD" or status == 204 or status == 304 then
        body = ""
      elseif te and str_lower(te):find("chunked") then
        body, berr = read_chunked(conn)
      elseif map["content-length"] then
        body, berr = conn:bytes(tonumber(map["content-length"]) or 0)
      else
        body = conn:rest()
        res.close = true
      end
      if not body then return nil, berr end
      res.body = body
      local connection = map["connection"] and str_lower(map["connection"]) or ""
      if connection:find("close") or (version == "1.0" and not connection:find("keep%-alive")) then
        res.close = true
      end
      return res
    end
  until false
end

-- The head of a response as the client gets it: always with Content-Length
-- (a chunked answer is sent whole); `replace` overrides headers by name.
local function response_head(res, replace, content_length)
  local out = { res.status_line .. "\r\n" }
  replace = replace or {}
  local seen = {}
  for _, h in ipairs(res.headers) do
    local n = str_lower(h[1])
    if n ~= "transfer-encoding" and n ~= "content-length" then
      if replace[n] ~= nil then
        if not seen[n] then out[#out + 1] = h[1] .. ": " .. replace[n] .. "\r\n" end
        seen[n] = true
      else
        out[#out + 1] = h[1] .. ": " .. h[2] .. "\r\n"
      end
    end
  end
  for n, v in pairs(replace) do
    if not seen[n] then out[#out + 1] = n .. ": " .. v .. "\r\n" end
  end
  out[#out + 1] = "Content-Length: " .. (content_length or #res.body) .. "\r\n\r\n"
  return tbl_concat(out)
end

local REASONS = { [400] = "Bad Request", [429] = "Too Many Requests", [500] = "Internal Server Error",
                  [503] = "Service Unavailable" }

local function canned(status, content_type, body)
  return str_format("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nx-amzn-RequestId: chaos-%d\r\nContent-Length: %d\r\n\r\n%s",
    status, REASONS[status], content_type, math.random(1, 1e9), #body, body)
end

local function aws_error(status, aws_type, message)
  return canned(status, "application/x-amz-json-1.0",
    cjson.encode({ __type = "com.amazonaws.dynamodb.v20120810#" .. aws_type, message = message }))
end

local function throttle_answer(req, aws_type)
  if req.map["x-amz-target"] then
    return aws_error(400, aws_type, "chaos proxy: " .. aws_type)
  end
  return canned(429, "application/json", '{"message":"chaos proxy: too many requests"}')
end

---------------------------------------------------------------------------
-- One client connection
---------------------------------------------------------------------------

local function operation_of(req)
  local target = req.map["x-amz-target"]
  if target then return (str_match(target, "%.([%w]+)$") or target) end
  return req.method .. " " .. (str_match(req.target, "^[^?]*") or req.target)
end

-- --sequence k1,k2,...: the faults of the first requests, in order ("none"
-- for none), for a reproduction; random draws after it.
local SEQUENCE = {}
for k in (opts.sequence or ""):gmatch("[^,%s]+") do SEQUENCE[#SEQUENCE + 1] = k end
local drawn = 0

local function draw_fault()
  drawn = drawn + 1
  if SEQUENCE[drawn] then
    return SEQUENCE[drawn] ~= "none" and SEQUENCE[drawn] or nil
  end
  if math.random() >= RATE then return nil end
  return KINDS[math.random(1, #KINDS)]
end

local function wrong_crc(res)
  local sent = tonumber(res.map["x-amz-crc32"] or "")
  if sent then return tostring((sent + 1 + math.random(0, 1000)) % 4294967296) end
  return tostring(math.random(0, 4294967295))
end

-- Loopback connects complete (or are refused) at once: a blocking connect
-- with a short timeout keeps this simple.
local function connect_upstream()
  local sock = socket.tcp()
  sock:settimeout(1)
  local ok, err = sock:connect(up_host, up_port)
  if not ok then
    sock:close()
    return nil, err
  end
  return wrap(sock)
end

local function stats_answer()
  local body = cjson.encode(stats)
  return str_format("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", #body, body)
end

local function serve(client)
  stats.connections = stats.connections + 1
  local conn_id, served = stats.connections, 0
  local upstream
  local function close_upstream()
    if upstream then upstream:close() upstream = nil end
  end
  -- Forwards the request; the answer, or nil when the upstream failed
  -- (the client then sees its connection closed).
  local function forward(req)
    local wire = serialize_request(req)
    for try = 1, 2 do
      if not upstream then
        local err
        upstream, err = connect_upstream()
        if not upstream then
          stats.upstream_errors = stats.upstream_errors + 1
          return nil, err
        end
      end
      local sent = upstream:send(wire)
      local res, err
      if sent then res, err = read_response(upstream, req.method) end
      if res then
        if res.close then close_upstream() end
        stats.forwarded = stats.forwarded + 1
        return res
      end
      close_upstream()
      -- A kept-alive upstream connection that the upstream closed meanwhile:
      -- once more on a fresh one (only when nothing came back).
      if try == 2 then
        stats.upstream_errors = stats.upstream_errors + 1
        return nil, err
      end
    end
  end

  while true do
    local req = read_request(client)
    if not req then break end
    if req.target == "/__stats" then
      client:send(stats_answer())
    else
      local fault = draw_fault()
      served = served + 1
      count_request(operation_of(req), fault, conn_id, served, req.body)
      local keep = not (req.map["connection"] and str_lower(req.map["connection"]):find("close"))
      if fault == "reset_before" then
        client:reset()
        break
      elseif fault == "http500" then
        if not client:send(aws_error(500, "InternalServerError", "chaos proxy: internal server error")) then break end
      elseif fault == "http503" then
        local page = "<html><body>503 Service Unavailable (chaos proxy)</body></html>"
        if not client:send(canned(503, "text/html", page)) then
          break
        end
      elseif fault == "throttle" then
        if not client:send(throttle_answer(req, "ProvisionedThroughputExceededException")) then break end
      elseif fault == "throttle2" then
        if not client:send(throttle_answer(req, "ThrottlingException")) then break end
      else
        local res = forward(req)
        if not res then
          client:close()
          return close_upstream()
        end
        if fault == "reset_after" then
          client:reset()
          break
        elseif fault == "stall" then
          sleep(STALL)
          client:reset()
          break
        elseif fault == "truncate" then
          local cut = math.floor(#res.body / 2)
          client:send(response_head(res) .. str_sub(res.body, 1, cut))
          client:reset()
          break
        elseif fault == "bad_crc" then
          if not client:send(response_head(res, { ["x-amz-crc32"] = wrong_crc(res) }) .. res.body) then break end
        elseif fault == "trickle" then
          local wire = response_head(res) .. res.body
          local pieces = 25
          local size = math.max(8, math.ceil(#wire / pieces))
          local ok = true
          for i = 1, #wire, size do
            ok = client:send(str_sub(wire, i, i + size - 1))
            if not ok then break end
            sleep(TRICKLE / pieces)
          end
          if not ok then break end
        else
          if not client:send(response_head(res) .. res.body) then
            stats.client_gone = stats.client_gone + 1
            break
          end
        end
        if res.close then keep = false end
      end
      if not keep then break end
    end
  end
  client:close()
  close_upstream()
end

---------------------------------------------------------------------------
-- Main loop
---------------------------------------------------------------------------

local server = assert(socket.bind("127.0.0.1", 0))
server:settimeout(0)
local _, port = server:getsockname()
do
  local tmp = opts["port-file"] .. ".tmp"
  local f = assert(io.open(tmp, "wb"))
  f:write(tostring(port))
  f:close()
  assert(os.rename(tmp, opts["port-file"]))
end

local core_ok, core = pcall(require, "dynlog.core")
if core_ok and core.signal_catch then core.signal_catch() else core = nil end

local started, last_write = gettime(), 0
while true do
  if core and core.signal_caught() then break end
  local now = gettime()
  if now - started > MAX_SECONDS then break end
  if dirty and now - last_write >= 1 then
    write_stats()
    last_write = now
  end
  -- Run what is runnable, then the sleepers that are due.
  local batch = runnable
  runnable = {}
  for _, co in ipairs(batch) do resume(co) end
  local timeout = 0.25
  local i = 1
  while i <= #sleepers do
    local s = sleepers[i]
    if s.at <= now then
      table.remove(sleepers, i)
      resume(s.co)
    else
      timeout = math.min(timeout, s.at - now)
      i = i + 1
    end
  end
  if #runnable > 0 then timeout = 0 end
  local readers, writers = { server }, {}
  for sock in pairs(wait_readers) do readers[#readers + 1] = sock end
  for sock in pairs(wait_writers) do writers[#writers + 1] = sock end
  local r, w = socket.select(readers, writers, math.max(0, timeout))
  for _, sock in ipairs(r or {}) do
    if sock == server then
      while true do
        local client = server:accept()
        if not client then break end
        local conn = wrap(client)
        spawn(function() serve(conn) end)
      end
    else
      local co = wait_readers[sock]
      wait_readers[sock] = nil
      if co then resume(co) end
    end
  end
  for _, sock in ipairs(w or {}) do
    local co = wait_writers[sock]
    wait_writers[sock] = nil
    if co then resume(co) end
  end
end
write_stats()
server:close()
