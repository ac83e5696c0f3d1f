-- The nginx side of bench/nginx.sh: worker CPU per PutItem of an event item,
-- dynlog's append over cosockets beside the cheapest request a worker can
-- make, in the same worker. Loaded by bench/nginx.conf (one worker) as
-- `bench.nginx`; bench/nginx.sh calls its locations:
--
--   /setup                        creates the table (dynlog's create_table)
--   /run?mode=M&n=N&inflight=K    N PutItems with K light threads; JSON figures
--   /prepare?n=N                  builds the floor's requests for a /run with &prepared=1
--   /profile?mode=M&n=N&inflight=K  the same under LuaJIT's jit.profile: top lines
--   /count                        the items in the table (Scan, Select=COUNT)
--
-- Modes (every one writes N new event items, 1000 streams round robin):
--   floor       prebuilt PutItem request bytes (the event item dynlog would
--               write, a fixed Authorization: DynamoDB Local checks no
--               signature) sent on a pooled cosocket; the response is read
--               by its Content-Length and its status checked: nothing else
--   append      c:append(log, id, type, payload) on a client with
--               tombstones = false: one PutItem per append, as the floor
--   append_many c:append_many(events, {concurrency = K}), the same client
--   append_tomb c:append on a default client: a tombstone GetItem + the PutItem
--   request     dynlog's transport alone: t:request of the signed PutItems dynlog made
--   lua_only    c:append on a client whose transport answers at once: dynlog's
--               Lua without the network (writes nothing; one thread)
--
-- CPU is the worker process's: os.clock() (LuaJIT's clock(3), the process's
-- user + sys time) around the run, and utime + stime from /proc/self/stat
-- as a check. The worker does nothing else meanwhile.
local dynlog = require "dynlog"
local cosocket = require "dynlog.transport.cosocket"

local ngx = ngx -- luacheck: ignore
local str_find, str_format, str_match, str_sub = string.find, string.format, string.match, string.sub
local tonumber, tostring = tonumber, tostring

local _M = {}

local TABLE = "bench_nginx"
local STREAMS = 1000
local POOL = 64 -- idle connections kept: more than the most in flight (32)
local ACCESS_KEY, SECRET = "AKIDBENCH", "bench-secret"

local ddb_port -- set by init
local clients = {}

function _M.init(port)
  ddb_port = assert(tonumber(port), "DynamoDB Local's port")
end

local function client(tombstones)
  local key = tombstones and "tomb" or "plain"
  local c = clients[key]
  if not c then
    c = dynlog.new({ table = TABLE, endpoint = "http://127.0.0.1:" .. ddb_port, region = "us-east-1",
                     credentials = { access_key_id = ACCESS_KEY, secret_access_key = SECRET },
                     tombstones = tombstones, transport = cosocket.new({ pool_size = POOL }) })
    clients[key] = c
  end
  return c
end

local ids = {}
for i = 0, STREAMS - 1 do ids[i] = tostring(i) end
local serial = 0 -- events made by this worker: the payloads' n and the streams' round robin

local function next_event()
  serial = serial + 1
  return ids[serial % STREAMS], { n = serial, note = "some text" }
end

local function say(doc)
  ngx.header["Content-Type"] = "application/json"
  ngx.say(dynlog.json.encode(doc))
end

local function fail(status, message)
  ngx.status = status
  ngx.say(message)
  return ngx.exit(status)
end

---------------------------------------------------------------------------
-- The floor: prebuilt requests
---------------------------------------------------------------------------

-- The PutItem requests dynlog would send for n new events, as bytes: a
-- client whose transport only records them builds them.
local function prebuilt(n)
  local recorded
  local recorder = {
    request = function(_, req)
      recorded = req
      return { status = 200, headers = {}, body = "{}" }
    end,
  }
  local c = dynlog.new({ table = TABLE, endpoint = "http://127.0.0.1:" .. ddb_port, region = "us-east-1",
                         credentials = { access_key_id = ACCESS_KEY, secret_access_key = SECRET },
                         tombstones = false, transport = recorder })
  local auth = "AWS4-HMAC-SHA256 Credential=" .. ACCESS_KEY .. "/20260101/us-east-1/dynamodb/aws4_request, "
    .. "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=" .. string.rep("0", 64)
  local reqs, signed = {}, {}
  for i = 1, n do
    local id, payload = next_event()
    assert(c:append("bench", id, "tick", payload))
    local h = recorded.headers
    signed[i] = { method = "POST", url = recorded.url, headers = h, body = recorded.body }
    reqs[i] = "POST / HTTP/1.1\r\nHost: 127.0.0.1:" .. ddb_port
      .. "\r\nContent-Type: " .. h["Content-Type"]
      .. "\r\nX-Amz-Target: " .. h["X-Amz-Target"]
      .. "\r\nX-Amz-Date: " .. h["X-Amz-Date"]
      .. "\r\nAuthorization: " .. auth
      .. "\r\nContent-Length: " .. #recorded.body
      .. "\r\n\r\n" .. recorded.body
  end
  return reqs, signed
end

-- One light thread of the floor: the next prebuilt request, sent on a
-- pooled connection, the response read by its Content-Length.
local function floor_thread(state)
  local reqs, tcp = state.reqs, ngx.socket.tcp
  while state.next <= state.n do
    local i = state.next
    state.next = i + 1
    local sock = tcp()
    sock:settimeout(10000)
    assert(sock:connect("127.0.0.1", ddb_port, state.pool_opts))
    assert(sock:send(reqs[i]))
    local head = assert(sock:receiveuntil("\r\n\r\n")())
    if str_sub(head, 1, 12) ~= "HTTP/1.1 200" then
      error("floor: " .. str_match(head, "^[^\r]*") .. ": " .. tostring(sock:receive("*l")))
    end
    local len = tonumber(str_match(head, "\n[Cc]ontent%-[Ll]ength:%s*(%d+)"))
    if len > 0 then assert(sock:receive(len)) end
    sock:setkeepalive(60000, POOL)
    state.done = state.done + 1
  end
end

---------------------------------------------------------------------------
-- dynlog
---------------------------------------------------------------------------

-- dynlog's transport alone: the signed requests dynlog made, sent with
-- transport:request.
local function request_thread(state)
  local t, reqs = state.transport, state.signed
  while state.next <= state.n do
    local i = state.next
    state.next = i + 1
    local res, err = t:request(reqs[i])
    if not res then error("request: " .. tostring(err.code) .. ": " .. tostring(err.message)) end
    if res.status ~= 200 then error("request: HTTP " .. res.status .. ": " .. res.body) end
    state.done = state.done + 1
  end
end

-- A client whose transport answers every request at once with DynamoDB
-- Local's answer to a PutItem: dynlog's Lua without the network.
local canned
local function canned_client()
  if not canned then
    local body = "{}"
    local answer = { request = function()
      return { status = 200, body = body, new_connections = 0,
               headers = { ["x-amzn-requestid"] = "00000000-0000-0000-0000-000000000000",
                           ["x-amz-crc32"] = tostring(require("dynlog.core").crc32(body)),
                           ["content-type"] = "application/x-amz-json-1.0", ["content-length"] = "2",
                           date = "Wed, 02 Dec 2026 12:00:00 GMT", server = "Jetty(12.0.14)" } }
    end }
    canned = dynlog.new({ table = TABLE, endpoint = "http://127.0.0.1:" .. ddb_port, region = "us-east-1",
                          credentials = { access_key_id = ACCESS_KEY, secret_access_key = SECRET },
                          tombstones = false, transport = answer })
  end
  return canned
end

local function append_thread(state)
  local c = state.client
  while state.next <= state.n do
    state.next = state.next + 1
    local id, payload = next_event()
    local key, err = c:append("bench", id, "tick", payload)
    if not key then error("append: " .. tostring(err.code) .. ": " .. tostring(err.message)) end
    state.done = state.done + 1
  end
end

-- append_many: lists of 500 events, `inflight` requests in flight.
local function append_many(state, inflight)
  local c = state.client
  while state.done < state.n do
    local events = {}
    for i = 1, math.min(500, state.n - state.done) do
      local id, payload = next_event()
      events[i] = { log = "bench", id = id, type = "tick", payload = payload }
    end
    local keys, err = c:append_many(events, { concurrency = inflight })
    if not keys then error("append_many: " .. tostring(err)) end
    assert(#keys == #events)
    state.done = state.done + #events
  end
end

---------------------------------------------------------------------------
-- A run
---------------------------------------------------------------------------

local function proc_cpu()
  local f = io.open("/proc/self/stat")
  local line = f:read("*l")
  f:close()
  -- the fields after the command's closing parenthesis: utime is the 12th, stime the 13th
  local rest = str_sub(line, str_find(line, ")", 1, true) + 2)
  local fields = {}
  for v in rest:gmatch("%S+") do fields[#fields + 1] = v end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100 -- USER_HZ is 100 on Linux
end

local MODES = { floor = true, request = true, append = true, append_many = true, append_tomb = true,
                lua_only = true }

local function params()
  local args = ngx.req.get_uri_args()
  local mode, n, inflight = args.mode, tonumber(args.n), tonumber(args.inflight)
  if not MODES[mode] or not n or not inflight then
    return fail(400, "mode=floor|request|append|append_many|append_tomb|lua_only, n= and inflight= please")
  end
  return mode, n, inflight
end

-- Runs `mode` and returns what it did: the state (done, n).
local function work(mode, n, inflight, pre)
  local state = { next = 1, n = n, done = 0 }
  local body
  if mode == "floor" then
    state.reqs, state.pool_opts = pre.prebuilt, { pool_size = POOL }
    body = floor_thread
  elseif mode == "request" then
    state.signed, state.transport = pre.signed, client(false).transport
    body = request_thread
  else
    state.client = mode == "lua_only" and canned_client() or client(mode == "append_tomb")
    if mode == "lua_only" then -- nothing is written: inflight is ignored
      append_thread(state)
      state.written = 0
      return state
    end
    if mode == "append_many" then
      append_many(state, inflight)
      return state
    end
    body = append_thread
  end
  local threads = {}
  for i = 1, inflight do threads[i] = assert(ngx.thread.spawn(body, state)) end
  for i = 1, inflight do
    local ok, err = ngx.thread.wait(threads[i])
    if not ok then error(err) end
  end
  return state
end

local prepared -- the requests /prepare built, for the next floor run with prepared=1

local function prepare(mode, n)
  local state = {}
  if mode == "floor" or mode == "request" then
    if ngx.var.arg_prepared == "1" then
      state.prebuilt, state.signed, prepared = prepared[1], prepared[2], nil
      assert(#state.prebuilt == n, "/prepare?n= first")
    else
      state.prebuilt, state.signed = prebuilt(n)
    end
  end
  return state
end

-- Builds the floor's requests ahead of a run with prepared=1 (so that a
-- profiler started meanwhile sees only the run).
function _M.prepare()
  prepared = { prebuilt(assert(tonumber(ngx.var.arg_n), "n=")) }
  collectgarbage()
  say({ prepared = #prepared[1] })
end

function _M.run()
  local mode, n, inflight = params()
  local pre = prepare(mode, n)
  collectgarbage()
  ngx.update_time()
  local proc0, cpu0, wall0 = proc_cpu(), os.clock(), ngx.now()
  local work_state = work(mode, n, inflight, pre)
  ngx.update_time()
  local cpu, wall, proc = os.clock() - cpu0, ngx.now() - wall0, proc_cpu() - proc0
  if work_state.done ~= n then return fail(500, "did " .. work_state.done .. " of " .. n) end
  local alloc
  if mode == "lua_only" then -- and the Lua heap it allocates per append, with the collector stopped
    collectgarbage()
    collectgarbage("stop")
    local k0 = collectgarbage("count")
    work(mode, n, inflight, pre)
    alloc = (collectgarbage("count") - k0) * 1024 / n
    collectgarbage("restart")
  end
  say({ mode = mode, n = n, inflight = inflight, cpu_us = cpu / n * 1e6, proc_cpu_us = proc / n * 1e6,
        wall_s = wall, ops_per_s = n / wall, written = work_state.written or n, alloc_bytes = alloc })
end

-- The same under jit.profile: samples every `interval` ms of the worker's
-- time, counted by function (with its line) and by VM state.
function _M.profile()
  local mode, n, inflight = params()
  local profile = require "jit.profile"
  local pre = prepare(mode, n)
  local by_fn, by_state, by_stack, total = {}, {}, {}, 0
  collectgarbage()
  profile.start("li1", function(thread, samples, vmstate)
    total = total + samples
    by_state[vmstate] = (by_state[vmstate] or 0) + samples
    local fn = profile.dumpstack(thread, "pl", 1)
    by_fn[fn] = (by_fn[fn] or 0) + samples
    local stack = profile.dumpstack(thread, "pl;", -6)
    by_stack[stack] = (by_stack[stack] or 0) + samples
  end)
  local state = work(mode, n, inflight, pre)
  profile.stop()
  local function top(counts, k)
    local list = {}
    for name, count in pairs(counts) do list[#list + 1] = { name = name, count = count } end
    table.sort(list, function(a, b) return a.count > b.count end)
    local lines = {}
    for i = 1, math.min(k, #list) do
      lines[i] = str_format("%5.1f%%  %s", 100 * list[i].count / total, list[i].name)
    end
    return lines
  end
  say({ mode = mode, n = n, inflight = inflight, samples = total, done = state.done,
        -- N compiled code, I interpreted, C C functions, G garbage collector, J the JIT compiler
        vmstate = top(by_state, 5), functions = top(by_fn, 25), stacks = top(by_stack, 15) })
end

function _M.setup()
  local c = client(false)
  local ok, err = c:create_table()
  if not ok then return fail(500, "create_table: " .. tostring(err.code) .. ": " .. tostring(err.message)) end
  say({ ok = true })
end

function _M.count()
  local c = client(false)
  local count, start = 0, nil
  repeat
    local resp, err = c:call("Scan", { TableName = TABLE, Select = "COUNT", ExclusiveStartKey = start })
    if not resp then return fail(500, "Scan: " .. tostring(err.code) .. ": " .. tostring(err.message)) end
    count = count + resp.Count
    start = resp.LastEvaluatedKey
  until start == nil
  say({ items = count })
end

return _M
