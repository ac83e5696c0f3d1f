-- dynlog's side of bench/throughput.sh (see there for the workloads and
-- bench/throughput/driver.py for the protocol).
--   lua5.4 bench/throughput/dynlog.lua PORT
-- Creates the table, prints {"ready":true}, then runs one step per line read
-- from stdin ("append|query|preload IN_FLIGHT OPS"), answering each with one
-- JSON line; "quit" ends it. CPU time is os.clock(): clock(3), the CPU time
-- (user + sys) of this process.
local dynlog = require "dynlog"
local concurrent = require "dynlog.transport.concurrent"
local core = require "dynlog.core"

local port = assert(tonumber(arg[1]), "usage: dynlog.lua PORT")
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
-- BATCH, the ids of each batch spread over the streams round robin
-- (`rr` keeps each list's place from one step to the next).
local rr = { append = 0, preload = 0 }
local function append(n, in_flight, which, id_list, streams)
  local done = 0
  while done < n do
    local events = {}
    for i = 1, math.min(BATCH, n - done) do
      local id = id_list[rr[which] % streams]
      rr[which] = rr[which] + 1
      events[i] = { log = "bench", id = id, type = "tick", payload = { n = written + i, note = "some text" } }
    end
    local results, errs = c:append_many(events, { concurrency = in_flight })
    if errs then error("append_many: " .. tostring(errs)) end
    assert(#results == #events)
    done, written = done + #events, written + #events
  end
  return 0, 0
end

-- Runs n queries with `in_flight` in flight, streams round robin; returns
-- the events they returned and how many queries did not return QUERY_ITEMS.
local function query(n, in_flight)
  local started, items, bad = 0, 0, 0
  concurrent.run(c, in_flight, function(view)
    while started < n do
      local k = started
      started = started + 1
      local list, err = view:query("bench", qids[k % QUERY_STREAMS]):all()
      if not list then error("query: " .. tostring(err.code) .. ": " .. tostring(err.message)) end
      items = items + #list
      if #list ~= QUERY_ITEMS then bad = bad + 1 end
    end
  end)
  return items, bad
end

io.write('{"ready":true}\n')
io.stdout:flush()
for line in io.lines() do
  if line == "quit" then break end
  local workload, in_flight, ops = line:match("^(%a+) (%d+) (%d+)$")
  in_flight, ops = tonumber(in_flight), tonumber(ops)
  assert(workload, "dynlog.lua: bad command: " .. line)
  local t0, c0 = core.monotonic(), os.clock()
  local items, bad
  if workload == "append" then items, bad = append(ops, in_flight, "append", ids, APPEND_STREAMS)
  elseif workload == "preload" then items, bad = append(ops, in_flight, "preload", qids, QUERY_STREAMS)
  elseif workload == "query" then items, bad = query(ops, in_flight)
  else error("dynlog.lua: unknown workload " .. workload) end
  local wall, cpu = core.monotonic() - t0, os.clock() - c0
  io.write(string.format('{"client":"dynlog","workload":"%s","in_flight":%d,"ops":%d,"seconds":%.6f,'
    .. '"cpu_seconds":%.6f,"errors":0,"items":%d,"bad_pages":%d,"written":%d}\n',
    workload, in_flight, ops, wall, cpu, items, bad, written))
  io.stdout:flush()
end
io.stderr:write("dynlog: ", written, " items written\n")
