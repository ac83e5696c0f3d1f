-- The users example, end to end, for `make demo` (scripts/demo.sh runs
-- `dynlog up` on the description first). Appends signup, addPhoneNumber,
-- verifyPhoneNumber and addLocation for N users, waits for the trigger →
-- bus → handler chain inside nginx to project them, and prints a summary.
-- The tables are the description's (DYNLOG_DESCRIPTION): its log, and the
-- read model of its first rule's first target.
--
--   lua5.4 scripts/demo.lua [USERS]
local core = require "dynlog.core"
local description = require "dynlog.deploy.description"
local dynlog = require "dynlog"
local handler = require "dynlog.handler"

local users = tonumber(arg[1]) or 1000
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

print(("Appending 4 events for each of %d users to %s ..."):format(users, log_table))
local last_sk = {}
local started = core.monotonic()
local USERS_PER_BATCH, CONCURRENCY = 25, 16
for first = 1, users, USERS_PER_BATCH do
  local last = math.min(users, first + USERS_PER_BATCH - 1)
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
  for k, ev in ipairs(batch) do last_sk[ev.id] = results[k].sk end
  progress("appended", last, users)
end
local append_seconds = core.monotonic() - started
if tty then print() end
local appended = users * 4

-- Wait for the read model: scan the core table until every user is at the
-- version of its last event, noting when each one got there.
print("Waiting for the trigger → bus → handler chain to project them ...")
local projected_at, latencies = {}, {}
local deadline = core.monotonic() + math.max(60, users / 10)
local count = 0
while count < users and core.monotonic() < deadline do
  local start_key
  repeat
    local resp, serr = c:call("Scan", { TableName = core_table, ExclusiveStartKey = start_key })
    if not resp then fail("scan", serr) end
    for _, item in ipairs(resp.Items) do
      local id = item.id and item.id.S
      local version = item.version and item.version.S
      if id and last_sk[id] and not projected_at[id] and version == last_sk[id] then
        projected_at[id] = core.now()
        latencies[#latencies + 1] = core.now() * 1000 - dynlog.ulid_time(last_sk[id])
        count = count + 1
      end
    end
    start_key = resp.LastEvaluatedKey
  until not start_key
  local s = stats()
  progress("projected", count, users, ("(published %d)"):format(s.published - before.published))
  if count < users then core.sleep(0.2) end
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
print(("  append throughput   %.0f events/s (append_many, %d requests in flight)")
  :format(appended / append_seconds, CONCURRENCY))
print(("  append → projection p50 %.0f ms, p99 %.0f ms (read model polled every 200 ms)")
  :format(percentile(latencies, 0.5), percentile(latencies, 0.99)))
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
