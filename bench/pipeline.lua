-- The driver of bench/pipeline.sh: end-to-end latency of the users pipeline
-- (append in DynamoDB → DynamoDB Streams → trigger in nginx → local bus →
-- receiver → handler → read model), at fixed offered rates.
--
--   lua5.4 bench/pipeline.lua setup          creates the log and read-model tables
--   lua5.4 bench/pipeline.lua run            the measurement (bench/pipeline.sh runs both)
--
-- Environment: DYNLOG_TABLE, DYNLOG_NGINX_URL, AWS_ENDPOINT_URL_DYNAMODB,
-- AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (the same as nginx's: DynamoDB
-- Local in memory keeps tables per access key), and
--   RATES="100 200 300 400 500 600 700 800"  offered events/s, one phase each, in turn
--   STOP_AFTER=2        stop after this many rates in a row not sustained
--   MAX_P99_MS=1000     the p99 a sustained rate keeps
--   DURATION=15         seconds of appends per phase
--   WARMUP=3            seconds of appends at the first rate before, not measured
--   POLL_MS=50          read-model poll period
--   DRAIN=30            seconds to wait after a phase's last append for its projections
--   BENCH_COMMAND       the command line recorded in the results
--   BENCH_OUT=bench/pipeline-results.json
--
-- Open loop: event k of a phase is due at start + k/rate and is appended as
-- soon as it is due (the due events of a tick go out together with
-- c:append_many, 16 requests in flight). Users come in groups of 8: the 8
-- signups, then their 8 addPhoneNumber, 8 verifyPhoneNumber and 8
-- addLocation, so the events due together belong to different streams and
-- are written in parallel. An event's append time is its ULID's time (taken
-- when append_many builds the request; the request then takes `append_ms`).
-- Every POLL_MS the read-model items of the users whose last event is
-- appended and not yet seen
-- projected are read (BatchGetItem, ConsistentRead, 100 keys a request); an
-- event counts as projected at the end of the first read that shows the
-- item's version >= its sort key. A user's latency is that of its last
-- event (addLocation): append → its read-model item at that version.
local core = require "dynlog.core"
local dynlog = require "dynlog"
local handler = require "dynlog.handler"

local mode = arg[1] or "run"
local table_name = os.getenv("DYNLOG_TABLE") or "dynlog-bench"
local core_table = table_name .. "-core"
local endpoint = assert(os.getenv("AWS_ENDPOINT_URL_DYNAMODB"), "AWS_ENDPOINT_URL_DYNAMODB is required")
local nginx_url = os.getenv("DYNLOG_NGINX_URL") or "http://127.0.0.1:8088"

local function num_env(name, default)
  local v = os.getenv(name)
  return v and v ~= "" and assert(tonumber(v), name .. " must be a number") or default
end

local RATES = {}
for r in (os.getenv("RATES") or "100 200 300 400 500 600 700 800"):gmatch("%S+") do
  RATES[#RATES + 1] = assert(tonumber(r))
end
local DURATION = num_env("DURATION", 15)
local WARMUP = num_env("WARMUP", 3)
local POLL = num_env("POLL_MS", 50) / 1000
local DRAIN = num_env("DRAIN", 30)
local MAX_P99 = num_env("MAX_P99_MS", 1000)
local STOP_AFTER = num_env("STOP_AFTER", 2)
local GROUP, CONCURRENCY, MAX_BATCH = 8, 16, 256
local TYPES = { "signup", "addPhoneNumber", "verifyPhoneNumber", "addLocation" }

local c = dynlog.new({
  table = table_name, endpoint = endpoint, region = "us-east-1",
  credentials = { access_key_id = os.getenv("AWS_ACCESS_KEY_ID") or "AKIDBENCH",
                  secret_access_key = os.getenv("AWS_SECRET_ACCESS_KEY") or "bench-secret" },
})

local function fail(what, err)
  io.stderr:write("bench/pipeline.lua: ", what, ": ", tostring(err), "\n")
  os.exit(1)
end

if mode == "setup" then
  local ok, err = c:create_table()
  if not ok then fail("creating " .. table_name, err) end
  ok, err = handler.create_table(c, core_table)
  if not ok then fail("creating " .. core_table, err) end
  return
end

local mono, now, sleep = core.monotonic, core.now, core.sleep
local http = require("dynlog.transport.curl").new({ timeout = 2 })

local function stats()
  local res = http:request({ url = nginx_url .. "/stats" })
  return res and res.status == 200 and dynlog.json.decode(res.body) or { published = 0, deliveries = 0 }
end

-- nginx's own counters (/metrics, Prometheus text): the requests the
-- pipeline made to DynamoDB, DynamoDB Streams and the bus, by operation,
-- and the consumer's, the receiver's and the handler's counters.
local function scrape()
  local res = http:request({ url = nginx_url .. "/metrics" })
  local out = {}
  if not (res and res.status == 200) then return out end
  for line in res.body:gmatch("[^\n]+") do
    local name, labels, value = line:match("^(dynlog_[%w_]+){?(.-)}?%s+(%S+)$")
    value = tonumber(value)
    if name and value and not name:match("_bucket$") then
      local key = name
      if name == "dynlog_requests_total" then
        key = labels:match('service="([^"]*)"') .. " " .. labels:match('operation="([^"]*)"')
      elseif name:match("^dynlog_request_duration_seconds_sum") then
        key = "seconds " .. labels:match('service="([^"]*)"') .. " " .. labels:match('operation="([^"]*)"')
      end
      out[key] = (out[key] or 0) + value
    end
  end
  return out
end

local function counted(before, after)
  local diff = {}
  for k, v in pairs(after) do
    local d = v - (before[k] or 0)
    if d > 0 then diff[k] = d end
  end
  return diff
end

local function payload(type_, i, id)
  if type_ == "signup" then return { name = "User " .. i, email = id .. "@example.com" } end
  if type_ == "addPhoneNumber" then return { phoneNumber = ("+1 555 %04d"):format(i % 10000) } end
  if type_ == "verifyPhoneNumber" then return {} end
  return { lat = 51.5 + i / 10000, long = -0.12 }
end

local function command_number(command, default)
  local f = io.popen(command)
  local n = tonumber(f:read("*l")) or default
  f:close()
  return n
end
local NPROC = command_number("nproc", 1)
local CLK_TCK = command_number("getconf CLK_TCK", 100)

-- CPU use per phase: DynamoDB Local, nginx (master and workers), this
-- driver, and the whole machine (others' processes included), from /proc.
local function read_first_line(path)
  local f = io.open(path)
  if not f then return nil end
  local line = f:read("*l")
  f:close()
  return line
end

local function proc_cpu(pid) -- utime + stime, in clock ticks
  local line = read_first_line("/proc/" .. pid .. "/stat")
  if not line then return 0 end
  local rest = line:match("%) (.*)$")
  local fields = {}
  for x in rest:gmatch("%S+") do fields[#fields + 1] = x end
  return (tonumber(fields[12]) or 0) + (tonumber(fields[13]) or 0)
end

local function nginx_pids()
  local master = os.getenv("BENCH_NGINX_PID")
  if not master then return {} end
  local pids = { master }
  local children = read_first_line("/proc/" .. master .. "/task/" .. master .. "/children") or ""
  for p in children:gmatch("%d+") do pids[#pids + 1] = p end
  return pids
end

local function cpu_sample()
  local fields = {}
  for x in (read_first_line("/proc/stat") or ""):gmatch("%d+") do fields[#fields + 1] = tonumber(x) end
  local total, idle = 0, (fields[4] or 0) + (fields[5] or 0)
  for i = 1, math.min(8, #fields) do total = total + fields[i] end
  local ng = 0
  for _, p in ipairs(nginx_pids()) do ng = ng + proc_cpu(p) end
  return { t = core.monotonic(), total = total, busy = total - idle,
           ddb = os.getenv("BENCH_DDB_PID") and proc_cpu(os.getenv("BENCH_DDB_PID")) or 0,
           nginx = ng, driver = proc_cpu("self"),
           load = tonumber((read_first_line("/proc/loadavg") or "0"):match("^(%S+)")) }
end

-- Percent of one core over the interval (100 = one core busy), from ticks.
local function cpu_use(a, b)
  local ticks = (b.total - a.total) / NPROC -- ticks per core over the interval
  local function pct(x) return ticks > 0 and 100 * x / ticks or 0 end
  return {
    dynamodb_local = pct(b.ddb - a.ddb), nginx = pct(b.nginx - a.nginx), driver = pct(b.driver - a.driver),
    machine = pct(b.busy - a.busy), -- over all cores: up to 100 * nproc
    loadavg = b.load,
  }
end


-- One phase: `seconds` of appends at `rate`, then waiting (up to DRAIN s)
-- for the projections.
local function phase(label, rate, seconds)
  local run_id = dynlog.ulid():sub(-6):lower()
  local total = math.floor(rate * seconds / (4 * GROUP) + 0.5) * 4 * GROUP
  if total == 0 then total = 4 * GROUP end
  local events = {}   -- in the order they are due
  local users = {}    -- id → {events = {...}, last = <event>, pending = true}
  local user_list = {}
  for g = 0, total / (4 * GROUP) - 1 do
    for t = 1, 4 do
      for j = 1, GROUP do
        local n = g * GROUP + j
        local id = ("%s-%s-%d"):format(label, run_id, n)
        local u = users[id]
        if not u then
          u = { id = id, events = {}, key = { pk = { S = "users#" .. id }, sk = { S = "users#" .. id } } }
          users[id] = u
          user_list[#user_list + 1] = u
        end
        local ev = { log = "users", id = id, type = TYPES[t], payload = payload(TYPES[t], n, id), user = u }
        u.events[t] = ev
        events[#events + 1] = ev
      end
    end
  end

  local pending = {}    -- users with an appended event not yet seen projected
  local polls, poll_time, first_poll, last_poll = 0, 0, nil, nil
  local append_calls, append_time = 0, 0
  local appended, first_append, last_ack = 0, nil, nil
  local projected = 0

  local function poll()
    local ids = {}
    for id in pairs(pending) do ids[#ids + 1] = id end
    local started = mono()
    first_poll = first_poll or started
    last_poll = started
    polls = polls + 1
    for first = 1, #ids, 100 do
      local keys = {}
      for k = first, math.min(#ids, first + 99) do keys[#keys + 1] = users[ids[k]].key end
      local request = { RequestItems = { [core_table] = { Keys = keys, ConsistentRead = true,
                                                           ProjectionExpression = "pk, version" } } }
      while request do
        local resp, err = c:call("BatchGetItem", request)
        if not resp then fail("BatchGetItem", err) end
        local seen = now() * 1000
        for _, item in ipairs(resp.Responses[core_table] or {}) do
          local u = users[(item.pk.S:gsub("^users#", ""))]
          local version = item.version and item.version.S
          if u and version then
            local all = true
            for _, ev in ipairs(u.events) do
              if ev.sk and not ev.projected_ms and ev.sk <= version then
                ev.projected_ms = seen
                projected = projected + 1
              end
              if not ev.projected_ms then all = false end
            end
            if all then pending[u.id] = nil end
          end
        end
        local rest = resp.UnprocessedKeys and resp.UnprocessedKeys[core_table]
        request = rest and { RequestItems = { [core_table] = rest } } or nil
      end
    end
    poll_time = poll_time + (mono() - started)
  end

  local before = stats()
  local metrics_before = scrape()
  local cpu_before = cpu_sample()
  local start = mono()
  local next_event, next_poll = 1, start
  local drain_deadline
  while true do
    local t = mono()
    if next_event <= #events and start + (next_event - 1) / rate <= t then
      local batch, appends = {}, {}
      while next_event <= #events and #batch < MAX_BATCH and start + (next_event - 1) / rate <= t do
        local ev = events[next_event]
        batch[#batch + 1] = ev
        appends[#appends + 1] = { log = ev.log, id = ev.id, type = ev.type, payload = ev.payload }
        next_event = next_event + 1
      end
      local call_start = mono()
      local results, errs = c:append_many(appends, { concurrency = CONCURRENCY })
      if errs then fail("append", errs) end
      local ack = now() * 1000
      append_calls, append_time = append_calls + 1, append_time + (mono() - call_start)
      first_append = first_append or call_start
      for k, ev in ipairs(batch) do
        ev.sk = results[k].sk
        ev.appended_ms = dynlog.ulid_time(ev.sk)
        ev.ack_ms = ack
        -- Polled once its last event is in: the polls read DynamoDB Local
        -- too, and must not take the CPU the pipeline needs.
        if ev.type == TYPES[#TYPES] then pending[ev.id] = true end
      end
      appended = appended + #batch
      last_ack = mono()
      if next_event > #events then drain_deadline = mono() + DRAIN end
    end
    if mono() >= next_poll then
      poll()
      next_poll = math.max(next_poll + POLL, mono())
    end
    if next_event > #events and (next(pending) == nil or mono() >= drain_deadline) then break end
    local wake = next_poll
    if next_event <= #events then wake = math.min(wake, start + (next_event - 1) / rate) end
    local d = wake - mono()
    if d > 0 then sleep(d) end
  end
  local after = stats()
  local cpu_after = cpu_sample()
  local cpu = cpu_use(cpu_before, cpu_after)
  local work = counted(metrics_before, scrape())

  -- Latencies: of each user's last event.
  local user_lat, missing_users = {}, 0
  for _, u in ipairs(user_list) do
    local last = u.events[4]
    if last.projected_ms then
      user_lat[#user_lat + 1] = last.projected_ms - last.appended_ms
    else
      missing_users = missing_users + 1
    end
  end
  table.sort(user_lat)
  -- Users never seen projected count as slower than any seen: a percentile
  -- that falls among them is unknown (nil).
  local function pct(p)
    local rank = math.max(1, math.ceil(#user_list * p))
    return user_lat[rank]
  end
  local span = last_ack - first_append

  -- The work done: every user's read-model item at the sort key of its
  -- last event in the log, exactly, with what its four events set.
  local wrong = 0
  for first = 1, #user_list, 100 do
    local keys = {}
    for k = first, math.min(#user_list, first + 99) do keys[#keys + 1] = user_list[k].key end
    local request = { RequestItems = { [core_table] = { Keys = keys, ConsistentRead = true } } }
    local found = {}
    while request do
      local resp, err = c:call("BatchGetItem", request)
      if not resp then fail("BatchGetItem", err) end
      for _, item in ipairs(resp.Responses[core_table] or {}) do found[item.pk.S] = item end
      local rest = resp.UnprocessedKeys and resp.UnprocessedKeys[core_table]
      request = rest and { RequestItems = { [core_table] = rest } } or nil
    end
    for k = first, math.min(#user_list, first + 99) do
      local u = user_list[k]
      local item = found[u.key.pk.S]
      if not (item and item.version and item.version.S == u.events[4].sk and item.phoneNumber
              and item.verifiedPhoneNumber and item.location) then
        wrong = wrong + 1
      end
    end
  end

  -- A backlog that grows shows as later users waiting longer: the median
  -- latency of the last quarter of the users beside the first quarter's,
  -- and the time from the last append to the last projection seen.
  local function quarter_p50(from, to)
    local lat = {}
    for k = from, to do
      local last = user_list[k].events[4]
      lat[#lat + 1] = last.projected_ms and (last.projected_ms - last.appended_ms) or math.huge
    end
    table.sort(lat)
    return lat[math.max(1, math.ceil(#lat / 2))]
  end
  local quarter = math.max(1, #user_list // 4)
  local first_q, last_q = quarter_p50(1, quarter), quarter_p50(#user_list - quarter + 1, #user_list)
  local last_projected, last_ack_ms = 0, 0
  for _, ev in ipairs(events) do
    if ev.projected_ms and ev.projected_ms > last_projected then last_projected = ev.projected_ms end
    if ev.ack_ms and ev.ack_ms > last_ack_ms then last_ack_ms = ev.ack_ms end
  end

  local requests, cpu_ms, request_ms = {}, {}, {}
  for k, v in pairs(work) do
    if k:match("^%l+ %u") then
      requests[k] = v / appended
      request_ms[k] = (work["seconds " .. k] or 0) * 1000 / v
    end
  end
  local tick_ms = 1000 / CLK_TCK
  cpu_ms.dynamodb_local = (cpu_after.ddb - cpu_before.ddb) * tick_ms / appended
  cpu_ms.nginx = (cpu_after.nginx - cpu_before.nginx) * tick_ms / appended
  cpu_ms.driver = (cpu_after.driver - cpu_before.driver) * tick_ms / appended
  return {
    wrong = wrong,
    first_quarter_p50_ms = first_q, last_quarter_p50_ms = last_q,
    drain_ms = last_projected - last_ack_ms,
    requests_per_event = requests, request_ms = request_ms,
    cpu_ms_per_event = cpu_ms,
    conflicts = work.dynlog_projection_conflicts_total or 0,
    receiver_deliveries = work.dynlog_receiver_deliveries_total or 0,
    consumer_batches = work.dynlog_consumer_batches_total or 0,
    publish_calls = work.dynlog_publish_calls_total or 0,
    offered_per_s = rate,
    achieved_per_s = appended / span,
    seconds = span,
    events = appended,
    projected = projected,
    users = #user_list,
    users_projected = #user_list - missing_users,
    p50_ms = pct(0.50), p90_ms = pct(0.90), p99_ms = pct(0.99),
    max_ms = missing_users == 0 and user_lat[#user_lat] or nil,
    min_ms = user_lat[1],
    append_ms = append_time / append_calls * 1000,
    poll_ms = (polls > 1) and (last_poll - first_poll) / (polls - 1) * 1000 or POLL * 1000,
    poll_nominal_ms = POLL * 1000,
    poll_request_ms = poll_time / polls * 1000,
    published = after.published - before.published,
    deliveries = after.deliveries - before.deliveries,
    cpu = cpu,
  }
end

-- Ordered JSON, for a results file one can read: an object is {fields = {{key, value}, ...}}.
local function encode(v, indent)
  indent = indent or ""
  local t = type(v)
  if t == "table" and v.fields then
    local parts = {}
    for _, kv in ipairs(v.fields) do
      parts[#parts + 1] = indent .. "  " .. dynlog.json.encode(kv[1]) .. ": " .. encode(kv[2], indent .. "  ")
    end
    return "{\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "}"
  elseif t == "table" then
    local parts = {}
    for _, x in ipairs(v) do parts[#parts + 1] = indent .. "  " .. encode(x, indent .. "  ") end
    return "[\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "]"
  elseif t == "number" then
    if v ~= v or v == math.huge then return "null" end
    if v == math.floor(v) and math.abs(v) < 2^53 then
      return ("%d"):format(v)
    end
    return ("%.1f"):format(v)
  elseif v == nil then
    return "null"
  end
  return dynlog.json.encode(v)
end

local function round1(x) return x and math.floor(x * 10 + 0.5) / 10 or nil end

local function machine()
  local nproc = NPROC
  local model = "unknown"
  local info = io.open("/proc/cpuinfo")
  if info then
    for line in info:lines() do
      local m = line:match("^model name%s*:%s*(.-)%s*$")
      if m then model = m break end
    end
    info:close()
  end
  return nproc, model
end

-- Warm-up: leases taken, connections open, the receiver's table check done.
print(("Warm-up: %d s at %d events/s (not measured) ..."):format(WARMUP, RATES[1]))
local w = phase("warm", RATES[1], WARMUP)
if w.users_projected < w.users then
  fail("warm-up", ("only %d of %d users projected in %d s; is the consumer in nginx running?")
    :format(w.users_projected, w.users, DRAIN))
end

-- Sustained: the writers got their rate (achieved >= 98 % of offered), every
-- user's read model ended at its last event, p99 <= 1 s, and no backlog
-- grew (the last quarter's median within 250 ms of the first quarter's,
-- and the last projection within 1 s of the last append).
local function sustained(r)
  local why = {}
  if r.achieved_per_s < 0.98 * r.offered_per_s then why[#why + 1] = "appends fell behind" end
  if r.wrong > 0 then why[#why + 1] = r.wrong .. " read models not at their last event" end
  if not r.p99_ms or r.p99_ms > MAX_P99 then why[#why + 1] = "p99 over " .. MAX_P99 .. " ms" end
  if r.last_quarter_p50_ms > r.first_quarter_p50_ms + 250 then why[#why + 1] = "backlog grew" end
  if r.drain_ms > 1000 then why[#why + 1] = "drained in " .. math.floor(r.drain_ms) .. " ms" end
  return #why == 0, table.concat(why, ", ")
end

-- The ramp: each rate in turn, up to STOP_AFTER rates in a row that are not sustained.
local results, max_sustained, misses = {}, nil, 0
for _, rate in ipairs(RATES) do
  io.write(("Phase: %d events/s for %d s ... "):format(rate, DURATION))
  io.flush()
  local r = phase("r" .. rate, rate, DURATION)
  r.sustained, r.why_not = sustained(r)
  results[#results + 1] = r
  print(("%d appended, %d projected, p99 %s ms: %s"):format(r.events, r.projected,
    r.p99_ms and ("%.0f"):format(r.p99_ms) or "n/a",
    r.sustained and "sustained" or "not sustained (" .. r.why_not .. ")"))
  if r.sustained then
    max_sustained, misses = rate, 0
  else
    misses = misses + 1
    if misses >= STOP_AFTER then break end
  end
  sleep(1)
end

local function ms(x) return x and x ~= math.huge and ("%.0f"):format(x) or "n/a" end
print()
print(("Append → projection latency of each user's last event (read model polled every %.0f ms)"):format(POLL * 1000))
print(("%8s %9s %7s %9s %7s %7s %7s %7s %8s %9s %7s %5s"):format("offered", "achieved", "events", "projected",
  "p50 ms", "p90 ms", "p99 ms", "max ms", "drain ms", "append ms", "poll ms", "ok"))
for _, r in ipairs(results) do
  print(("%8d %9.1f %7d %9d %7s %7s %7s %7s %8s %9.1f %7.1f %5s"):format(r.offered_per_s, r.achieved_per_s, r.events,
    r.projected, ms(r.p50_ms), ms(r.p90_ms), ms(r.p99_ms), ms(r.max_ms), ms(r.drain_ms), r.append_ms,
    r.poll_ms, r.sustained and "yes" or "no"))
end
print("  drain ms: last projection seen after the last append; append ms: mean append_many call;")
print("  poll ms: measured period of the read-model polls; n/a: the percentile falls among unprojected users")
print(("  ok: sustained (achieved >= 98 %% of offered, p99 <= %d ms, no growing backlog, every read model at"
  .. " its user's last event)"):format(MAX_P99))
print()
-- A ramp whose last rate was sustained found no limit: say it is at least that.
local top_sustained = results[#results] and results[#results].sustained
print(("Maximum sustained rate: %s"):format(max_sustained and ((top_sustained and "at least " or "")
  .. max_sustained .. " events/s" .. (top_sustained and " (the highest rate offered; offer more in RATES)" or ""))
  or "none of the rates offered"))
print()
print("The pipeline's requests per event (nginx's /metrics; the driver's appends and polls not counted)")
local ops = {}
for _, r in ipairs(results) do
  for k in pairs(r.requests_per_event) do ops[k] = true end
end
local op_list = {}
for k in pairs(ops) do op_list[#op_list + 1] = k end
table.sort(op_list)
io.write(("%8s"):format("offered"))
for _, k in ipairs(op_list) do io.write((" %s"):format(k:gsub("^%l+ ", ""))) end
print(("  %s"):format("conflicts/event"))
for _, r in ipairs(results) do
  io.write(("%8d"):format(r.offered_per_s))
  for _, k in ipairs(op_list) do
    io.write((" %" .. #(k:gsub("^%l+ ", "")) .. ".3f"):format(r.requests_per_event[k] or 0))
  end
  print(("  %.3f"):format(r.conflicts / r.events))
end
print("Mean time of one such request, ms")
for _, r in ipairs(results) do
  io.write(("%8d"):format(r.offered_per_s))
  for _, k in ipairs(op_list) do
    io.write((" %" .. #(k:gsub("^%l+ ", "")) .. ".1f"):format(r.request_ms[k] or 0))
  end
  print()
end
print()
print(("CPU during each phase, %% of one core and ms per event (appends and drain; the machine has %d cores)")
  :format(NPROC))
print(("%8s %14s %7s %7s %13s %8s %10s %10s"):format("offered", "DynamoDB Local", "nginx", "driver",
  "whole machine", "loadavg", "DDB ms/ev", "nginx ms/ev"))
for _, r in ipairs(results) do
  print(("%8d %14.0f %7.0f %7.0f %13.0f %8.2f %10.2f %10.2f"):format(r.offered_per_s, r.cpu.dynamodb_local,
    r.cpu.nginx, r.cpu.driver, r.cpu.machine, r.cpu.loadavg, r.cpu_ms_per_event.dynamodb_local,
    r.cpu_ms_per_event.nginx))
end

local nproc, model = machine()
local out_results = {}
for _, r in ipairs(results) do
  local req = {}
  for _, k in ipairs(op_list) do
    req[#req + 1] = { k, math.floor((r.requests_per_event[k] or 0) * 1000 + 0.5) / 1000 }
  end
  out_results[#out_results + 1] = { fields = {
    { "offered_per_s", r.offered_per_s }, { "achieved_per_s", round1(r.achieved_per_s) },
    { "sustained", r.sustained }, { "why_not_sustained", r.why_not ~= "" and r.why_not or nil },
    { "events", r.events }, { "projected", r.projected }, { "read_models_wrong", r.wrong },
    { "p50_ms", r.p50_ms }, { "p90_ms", r.p90_ms }, { "p99_ms", r.p99_ms }, { "max_ms", r.max_ms },
    { "drain_ms", r.drain_ms }, { "first_quarter_p50_ms", r.first_quarter_p50_ms },
    { "last_quarter_p50_ms", r.last_quarter_p50_ms ~= math.huge and r.last_quarter_p50_ms or nil },
    { "poll_ms", round1(r.poll_ms) },
    { "min_ms", r.min_ms }, { "users", r.users }, { "users_projected", r.users_projected },
    { "append_ms", round1(r.append_ms) }, { "poll_nominal_ms", r.poll_nominal_ms },
    { "poll_request_ms", round1(r.poll_request_ms) },
    { "published", r.published }, { "deliveries", r.deliveries },
    { "requests_per_event", { fields = req } },
    { "request_ms", { fields = (function()
      local t = {}
      for _, k in ipairs(op_list) do t[#t + 1] = { k, round1(r.request_ms[k]) } end
      return t
    end)() } },
    { "projection_conflicts", r.conflicts }, { "consumer_batches", r.consumer_batches },
    { "publish_calls", r.publish_calls },
    { "duration_s", round1(r.seconds) },
    { "cpu_percent_of_one_core", { fields = {
      { "dynamodb_local", round1(r.cpu.dynamodb_local) }, { "nginx", round1(r.cpu.nginx) },
      { "driver", round1(r.cpu.driver) }, { "whole_machine", round1(r.cpu.machine) },
    } } },
    { "cpu_ms_per_event", { fields = {
      { "dynamodb_local", math.floor(r.cpu_ms_per_event.dynamodb_local * 100 + 0.5) / 100 },
      { "nginx", math.floor(r.cpu_ms_per_event.nginx * 100 + 0.5) / 100 },
      { "driver", math.floor(r.cpu_ms_per_event.driver * 100 + 0.5) / 100 },
    } } },
    { "loadavg_1min_at_end", r.cpu.loadavg },
  } }
end
local doc = { fields = {
  { "command", os.getenv("BENCH_COMMAND") or "bench/pipeline.sh" },
  { "date", os.date("!%Y-%m-%dT%H:%M:%SZ") },
  { "machine", { fields = { { "nproc", nproc }, { "cpu_model", model } } } },
  { "setup", "DynamoDB Local (in memory) and nginx (examples/nginx.conf) on this machine; latency = "
    .. "read-model item at the version of the user's last event (first consistent BatchGetItem showing it) "
    .. "minus that event's ULID time; percentiles over users (4 events each); a rate is sustained when "
    .. "achieved >= 98 % of offered, p99 <= " .. MAX_P99 .. " ms, no growing backlog, and every read model "
    .. "ends at its user's last event" },
  { "max_sustained_per_s", max_sustained },
  { "max_is_ramp_top", top_sustained == true },
  { "results", out_results },
} }
local path = os.getenv("BENCH_OUT") or "bench/pipeline-results.json"
local f = assert(io.open(path, "w"))
f:write(encode(doc), "\n")
f:close()
print("Wrote " .. path)
