-- The users example, end to end, for `make demo` (scripts/demo.sh runs
-- `dynlog up` on the description first). Appends signup, addPhoneNumber,
-- verifyPhoneNumber and addLocation for N users at a steady rate (DEMO_RATE
-- events per second, 0: as fast as appends go), waits for the trigger → bus
-- → handler chain inside nginx to project them, and prints a summary with
-- the append → projection latency of each user's last event. The tables
-- are the description's (DYNLOG_DESCRIPTION): its log, and the read model of
-- its first rule's first target.
--
--   lua5.4 scripts/demo.lua [USERS]
local core = require "dynlog.core"
local description = require "dynlog.deploy.description"
local dynlog = require "dynlog"
local handler = require "dynlog.handler"

local users = tonumber(arg[1]) or 1000
local rate = tonumber(os.getenv("DEMO_RATE") or "") or 200
local pipeline = assert(description.load(os.getenv("DYNLOG_DESCRIPTION") or "examples/users/pipeline.lua"))
local log_table = pipeline.log.table
local core_table = pipeline.read_models[pipeline.rules[1].targets[1].read_model].table
local nginx_url = os.getenv("DYNLOG_NGINX_URL") or "http://127.0.0.1:8088"
local tty = os.execute("test -t 1") == true

local c = dynlog.new({ table = log_table })

local function fail(what, err)
  io.stderr:write("demo: ", what, ": ", tostring(err), "\n")
  os.exit(1)
end

local function progress(label, done, total, extra)
  if tty then
    local width = 30
    local filled = math.floor(width * done / total)
    io.write(("\r%-10s [%s%s] %d/%d %s"):format(label, ("#"):rep(filled), ("."):rep(width - filled), done, total,
      extra or ""))
    io.flush()
  elseif done == total or done % math.max(1, math.floor(total / 10)) == 0 then
    print(("%s %d/%d %s"):format(label, done, total, extra or ""))
  end
end

local function stats()
  local res = require("dynlog.transport.curl").new({ timeout = 2 }):request({ url = nginx_url .. "/stats" })
  return res and res.status == 200 and dynlog.json.decode(res.body) or { published = 0, deliveries = 0 }
end

-- Tables: the log (with its stream) and the read model.
assert(c:create_table()) -- idempotent: a second run keeps the first run's events
local ok, err = handler.create_table(c, core_table)
if not ok then fail("creating " .. core_table, err) end

-- A second run appends new users after the first run's.
local run_id = dynlog.ulid():sub(-6):lower()
local before = stats()

-- The users whose last event is appended and not yet seen projected, polled
-- every POLL seconds with consistent reads of their items alone (a Scan of
-- the whole read model would take DynamoDB Local's CPU from the pipeline).
local POLL = 0.1
local pending, pending_count, projected_at, latencies, count = {}, 0, {}, {}, 0
local last_sk = {}
local function poll()
  local ids = {}
  for id in pairs(pending) do ids[#ids + 1] = id end
  for first = 1, #ids, 100 do
    local keys = {}
    for k = first, math.min(#ids, first + 99) do
      keys[#keys + 1] = { pk = { S = "users#" .. ids[k] }, sk = { S = "users#" .. ids[k] } }
    end
    local request = { RequestItems = { [core_table] = { Keys = keys, ConsistentRead = true,
                                                         ProjectionExpression = "id, version" } } }
    while request do
      local resp, perr = c:call("BatchGetItem", request)
      if not resp then fail("BatchGetItem", perr) end
      local seen_ms = core.now() * 1000
      for _, item in ipairs(resp.Responses[core_table] or {}) do
        local id = item.id and item.id.S
        if id and pending[id] and item.version and item.version.S == last_sk[id] then
          pending[id], pending_count = nil, pending_count - 1
          projected_at[id] = seen_ms
          latencies[#latencies + 1] = seen_ms - dynlog.ulid_time(last_sk[id])
          count = count + 1
        end
      end
      local rest = resp.UnprocessedKeys and resp.UnprocessedKeys[core_table]
      request = rest and { RequestItems = { [core_table] = rest } } or nil
    end
  end
end

print(("Appending 4 events for each of %d users to %s%s ..."):format(users, log_table,
  rate > 0 and (" at %d events/s"):format(rate) or ""))
local started = core.monotonic()
local next_poll = started
local USERS_PER_BATCH, CONCURRENCY = 4, 16
for first = 1, users, USERS_PER_BATCH do
  local last = math.min(users, first + USERS_PER_BATCH - 1)
  -- Paced: the batch goes out when its events are due.
  if rate > 0 then
    local due = started + (first - 1) * 4 / rate
    while core.monotonic() < due do
      if core.monotonic() >= next_poll and pending_count > 0 then
        poll()
        next_poll = core.monotonic() + POLL
      end
      core.sleep(math.max(0, math.min(due, next_poll) - core.monotonic()))
    end
  end
  if core.monotonic() >= next_poll and pending_count > 0 then -- appends behind schedule: poll between them
    poll()
    next_poll = core.monotonic() + POLL
  end
  local batch = {}
  for i = first, last do
    local id = ("%s-%d"):format(run_id, i)
    local function add(event_type, payload)
      batch[#batch + 1] = { log = "users", id = id, type = event_type, payload = payload }
    end
    add("signup", { name = "User " .. i, email = id .. "@example.com" })
    add("addPhoneNumber", { phoneNumber = ("+1 555 %04d"):format(i % 10000) })
    add("verifyPhoneNumber", {})
    add("addLocation", { lat = 51.5 + i / 10000, long = -0.12 })
  end
  -- each user's four events are written in order; the users go in parallel
  local results, errs = c:append_many(batch, { concurrency = CONCURRENCY })
  if errs then fail("append", errs) end
  for k, ev in ipairs(batch) do
    if ev.type == "addLocation" then
      last_sk[ev.id] = results[k].sk
      pending[ev.id], pending_count = true, pending_count + 1
    end
  end
  if last % 100 == 0 or last == users then progress("appended", last, users) end
end
local append_seconds = core.monotonic() - started
if tty then print() end
local appended = users * 4

-- Wait for the read model: every user at the version of its last event.
print("Waiting for the trigger → bus → handler chain to project them ...")
local deadline = core.monotonic() + math.max(60, users / 10)
while count < users and core.monotonic() < deadline do
  poll()
  local s = stats()
  progress("projected", count, users, ("(published %d)"):format(s.published - before.published))
  if count < users then core.sleep(POLL) end
end
if tty then print() end

local function percentile(list, p)
  if #list == 0 then return 0 end
  table.sort(list)
  return list[math.max(1, math.ceil(#list * p))]
end

local s = stats()
print()
print("Summary")
print(("  events appended     %d"):format(appended))
print(("  events published    %d"):format(s.published - before.published))
print(("  events projected    %d (%d users at their latest version)"):format(count * 4, count))
print(("  append throughput   %.0f events/s (%s, append_many, %d requests in flight)")
  :format(appended / append_seconds, rate > 0 and ("offered %d/s"):format(rate) or "unpaced", CONCURRENCY))
print(("  append → projection p50 %.0f ms, p90 %.0f ms, p99 %.0f ms (each user's last event; read model"
  .. " polled every %.0f ms)"):format(percentile(latencies, 0.5), percentile(latencies, 0.9),
  percentile(latencies, 0.99), POLL * 1000))
print()
print("Three users in the read model (" .. core_table .. "):")
local shown = 0
for i = 1, users do
  local id = ("%s-%d"):format(run_id, i)
  if projected_at[id] and (i == 1 or i == math.ceil(users / 2) or i == users) and shown < 3 then
    local resp = c:call("GetItem", { TableName = core_table, Key = { pk = { S = "users#" .. id },
                                                                       sk = { S = "users#" .. id } } })
    local item = resp and resp.Item and dynlog.unmarshal({ M = resp.Item })
    if item then
      print("  " .. dynlog.json.encode(item))
      shown = shown + 1
    end
  end
end
if count < users then
  fail("timeout", ("only %d of %d users were projected; see .demo/nginx/logs/error.log"):format(count, users))
end
