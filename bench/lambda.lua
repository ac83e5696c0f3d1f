-- Figures of dynlog's Lambda runtime (bench/lambda.sh runs it): the bootstrap
-- of `make lambda` against the loopback Runtime API
-- (spec/support/lambda_runtime_api.lua), DynamoDB Local and a loopback
-- PutEvents answerer. Figures only: nothing here passes or fails.
--
--   lua5.4 bench/lambda.lua PORT BOOTSTRAP N COLD_RUNS   -> one JSON document on stdout
--
-- cold start: from just before the runtime is spawned (through sh, as
-- support.lambda starts it) to the Runtime API's reading of its first
-- `next`, the median of COLD_RUNS runs for each handler; the CPU time the
-- process has used by then (utime + stime, clock ticks of /proc).
-- per invocation: the process's CPU time once N invocations are answered
-- and it waits on the next `next`, less what the cold start used, over N;
-- and the wall time between the first and the last `next`, over N.
package.path = "spec/?.lua;" .. package.path
local dynlog = require "dynlog"
local handler = require "dynlog.pipeline.handler"
local json = require "dynlog.json"
local lambda = require "spec.support.lambda"
local server = require "spec.support.server"
local stream = require "spec.support.stream"
local socket = require "socket"

local port, bootstrap, N, COLD_RUNS = arg[1], arg[2], tonumber(arg[3] or "200"), tonumber(arg[4] or "10")
local endpoint = "http://127.0.0.1:" .. port
local KEY, SECRET = "AKIDBENCH", "bench-secret"
local BATCH = 10

local clk_tck = tonumber(io.popen("getconf CLK_TCK"):read("*l")) or 100

local function cpu_ms(pid)
  local f = assert(io.open("/proc/" .. pid .. "/stat"))
  local stat = f:read("*a")
  f:close()
  local rest = stat:match("^%d+ %b() (.*)$")
  local fields = {}
  for x in rest:gmatch("%S+") do fields[#fields + 1] = x end
  -- utime and stime are fields 14 and 15 of stat, 12 and 13 after pid and comm.
  return (tonumber(fields[12]) + tonumber(fields[13])) * 1000 / clk_tck
end

local function median(list)
  table.sort(list)
  local n = #list
  if n % 2 == 1 then return list[(n + 1) / 2] end
  return (list[n / 2] + list[n / 2 + 1]) / 2
end

local c = dynlog.new({ table = "bench-lambda-" .. dynlog.ulid():lower(), endpoint = endpoint, region = "us-east-1",
                       credentials = { access_key_id = KEY, secret_access_key = SECRET } })
assert(c:create_table())
local model = c.table .. "-model"
assert(handler.create_table(c, model))

local task = os.tmpname()
os.remove(task)
os.execute("mkdir -p " .. task)
do
  local f = assert(io.open(task .. "/bench_model.lua", "w"))
  f:write([[return { table = os.getenv("READ_MODEL_TABLE"), handlers = {
    signup = function(_, ev) return { name = ev.payload.name, email = ev.payload.email } end } }
]])
  f:close()
end

local bus = server.start({ { method = "POST", path = "/", responses = { { putevents = true } } } })

local function env_of(api, handler_name)
  return {
    AWS_LAMBDA_RUNTIME_API = api, _HANDLER = handler_name, LAMBDA_TASK_ROOT = task,
    AWS_REGION = "us-east-1", AWS_ACCESS_KEY_ID = KEY, AWS_SECRET_ACCESS_KEY = SECRET,
    AWS_ENDPOINT_URL_DYNAMODB = endpoint, AWS_ENDPOINT_URL_EVENTBRIDGE = bus.url,
    AWS_EC2_METADATA_DISABLED = "true", DYNLOG_TABLE = c.table, READ_MODEL_TABLE = model,
  }
end

local function first_next_time(api)
  for _ = 1, 1000 do
    for _, r in ipairs(api.requests()) do
      if r.method == "GET" then return r.t end
    end
    socket.sleep(0.002)
  end
  error("no next request")
end

local function cold(handler_name)
  local walls, cpus = {}, {}
  for i = 1, COLD_RUNS do
    local api = lambda.start_api({})
    local t0 = socket.gettime()
    local rt = lambda.start_runtime(bootstrap, env_of(api.api, handler_name))
    local t1 = first_next_time(api)
    walls[i] = (t1 - t0) * 1000
    cpus[i] = cpu_ms(rt.pid)
    rt.stop()
    api.stop()
  end
  return { wall_ms_median = median(walls), cpu_ms_median = median(cpus), runs = COLD_RUNS }
end

local function invocations(handler_name, list, n, cold_cpu)
  local api = lambda.start_api(list)
  local rt = lambda.start_runtime(bootstrap, env_of(api.api, handler_name))
  local outcomes = api.wait_outcomes(n, 600)
  -- The runtime waits on the next `next` once the last outcome is posted.
  local nexts
  for _ = 1, 500 do
    nexts = {}
    for _, r in ipairs(api.requests()) do if r.method == "GET" then nexts[#nexts + 1] = r.t end end
    if #nexts > n then break end
    socket.sleep(0.01)
  end
  socket.sleep(0.05)
  local cpu = cpu_ms(rt.pid)
  local errors_seen = 0
  for _, o in ipairs(outcomes) do
    if o.kind ~= "response" then errors_seen = errors_seen + 1 end
  end
  rt.stop()
  api.stop()
  return {
    invocations = n, errors = errors_seen,
    cpu_ms_per_invocation = (cpu - cold_cpu) / n,
    wall_ms_per_invocation = (nexts[#nexts] - nexts[1]) * 1000 / n,
  }
end

local result = { n = N, batch = BATCH, clk_tck = clk_tck }
result.cold_start = { trigger = cold("trigger"), project = cold("project:bench_model") }

-- The trigger: one batch of BATCH records from real appends, N times.
for i = 1, BATCH do
  assert(c:append("orders", "o" .. i, "placed", { total = i * 10, note = string.rep("x", 100) }))
end
local records = stream.all_records(c)
result.trigger = invocations("trigger", { { id = "t", event = { Records = records }, ["repeat"] = N } }, N,
  result.cold_start.trigger.cpu_ms_median)
result.trigger.records_per_invocation = #records

-- A projection: N events of N streams, each new to the read model
-- (GetItem, Query, PutItem).
local list = {}
for i = 1, N do
  local key = assert(c:append("users", "u" .. i, "signup", { name = "user " .. i, email = i .. "@example.com" }))
  list[i] = { id = "p" .. i, event = { version = "0", id = tostring(i), ["detail-type"] = "stream changes",
    source = "dynamodb-log", account = "000000000000", time = "2026-12-02T09:00:00Z", region = "us-east-1",
    resources = json.array(), detail = { log = "users", key = key, type = "signup" } } }
end
result.project = invocations("project:bench_model", list, N, result.cold_start.project.cpu_ms_median)

bus.stop()
os.execute("rm -rf " .. task)
io.write(json.encode(result), "\n")
