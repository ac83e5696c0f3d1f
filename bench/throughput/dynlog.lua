-- dynlog's side of bench/throughput.sh (see there for the workloads).
--   lua5.4 bench/throughput/dynlog.lua PORT COUNT WARMUP
-- Prints one JSON object per measurement. CPU time is os.clock(): clock(3),
-- the CPU time (user + sys) of this process.
local dynlog = require "dynlog"
local concurrent = require "dynlog.transport.concurrent"
local core = require "dynlog.core"

local port, count, warmup = assert(tonumber(arg[1])), assert(tonumber(arg[2])), assert(tonumber(arg[3]))
local LEVELS = { 1, 8, 32 }
local APPEND_STREAMS, QUERY_STREAMS, QUERY_ITEMS, BATCH = 1000, 100, 10, 500

local c = dynlog.new{ table = "bench_events", endpoint = "http://127.0.0.1:" .. port, region = "us-east-1",
  credentials = { access_key_id = "AKIDBENCH", secret_access_key = "bench-secret" } }
assert(c:create_table())

local written = 0 -- items this process wrote
local ids = {}
for i = 0, APPEND_STREAMS - 1 do ids[i] = tostring(i) end
local qids = {}
for i = 0, QUERY_STREAMS - 1 do qids[i] = "q" .. i end

-- Appends n events with `in_flight` requests in flight, in batches of
-- BATCH, the ids of each batch spread over the streams round robin.
local next_id = 0
local function append(n, in_flight, id_list, streams)
  local done = 0
  while done < n do
    local events = {}
    for i = 1, math.min(BATCH, n - done) do
      local id = id_list[next_id % streams]
      next_id = next_id + 1
      events[i] = { log = "bench", id = id, type = "tick", payload = { n = written + i, note = "some text" } }
    end
    local results, errs = c:append_many(events, { concurrency = in_flight })
    if errs then error("append_many: " .. tostring(errs)) end
    assert(#results == #events)
    done, written = done + #events, written + #events
  end
  return done, 0
end

-- Runs n queries with `in_flight` in flight, streams round robin; returns
-- the number run and the events they returned.
local function query(n, in_flight)
  local started, items = 0, 0
  concurrent.run(c, in_flight, function(view)
    while started < n do
      local k = started
      started = started + 1
      local list, err = view:query("bench", qids[k % QUERY_STREAMS]):all()
      if not list then error("query: " .. tostring(err.code) .. ": " .. tostring(err.message)) end
      items = items + #list
    end
  end)
  return n, items
end

local function measure(workload, in_flight)
  local work = workload == "append" and function(n) return append(n, in_flight, ids, APPEND_STREAMS) end
    or function(n) return query(n, in_flight) end
  work(warmup)
  local t0, c0 = core.monotonic(), os.clock()
  local ops, items = work(count)
  local wall, cpu = core.monotonic() - t0, os.clock() - c0
  local extra = workload == "query" and string.format(',"items":%d', items) or ""
  io.write(string.format('{"client":"dynlog","workload":"%s","in_flight":%d,"ops":%d,"seconds":%.4f,'
    .. '"ops_per_s":%.1f,"cpu_us_per_op":%.2f,"errors":0,"warmup_ops":%d%s}\n',
    workload, in_flight, ops, wall, ops / wall, cpu / ops * 1e6, warmup, extra))
  io.stdout:flush()
end

-- Preload: QUERY_ITEMS events in each query stream (not measured).
next_id = 0
append(QUERY_STREAMS * QUERY_ITEMS, 8, qids, QUERY_STREAMS)
next_id = 0
for _, n in ipairs(LEVELS) do measure("append", n) end
for _, n in ipairs(LEVELS) do measure("query", n) end
io.stderr:write("dynlog: ", written, " items written\n")
