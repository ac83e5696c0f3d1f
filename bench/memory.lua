--- The client's memory: resident size after loading, after appending, and
-- while iterating one long stream, which must stay flat (the iterator holds
-- one page at a time, whatever the stream's length).
--
--   lua5.4 bench/memory.lua ENDPOINT [EVENTS]      (bench/memory.sh runs it)
--
-- Prints a table and one JSON line (the last line) with the figures.
local dynlog = require "dynlog"
local core = require "dynlog.core"

local endpoint = assert(arg[1], "usage: memory.lua ENDPOINT [EVENTS]")
local events = tonumber(arg[2]) or 100000
local PAYLOAD_NOTE = string.rep("memory ", 20) -- ~140 B, so that 100k events are ~25 MB of items

-- Resident set size in KiB, from /proc (Linux).
local function rss_kib()
  local f = assert(io.open("/proc/self/statm"))
  local _, resident = f:read("*n", "*n")
  f:close()
  return resident * 4 -- pages of 4 KiB
end

local function heap_kib()
  return math.floor(collectgarbage("count"))
end

local figures = { events = events }
figures.rss_loaded_kib = rss_kib()

local c = dynlog.new{
  table = "memory-" .. dynlog.ulid():lower(), endpoint = endpoint, region = "us-east-1",
  credentials = { access_key_id = "AKIDBENCH", secret_access_key = "bench-secret" },
}
assert(c:create_table{ stream = false })

-- A first thousand through append_many (the client's usual path), then the
-- rest 25 at a time through BatchWriteItem, which fills the stream faster.
local started = core.monotonic()
local first = {}
for n = 1, math.min(1000, events) do
  first[n] = { log = "memory", id = "one", type = "tick", payload = { n = n, note = PAYLOAD_NOTE } }
end
local _, errs = c:append_many(first)
if errs then error("append failed: " .. tostring(errs)) end
figures.rss_after_first_batch_kib = rss_kib()
local attribute_map = core.attribute_map
local next_n = 1001
require("dynlog.transport.concurrent").run(c, 8, function(view)
  while next_n <= events do
    local from = next_n
    next_n = next_n + 25
    local puts = {}
    for n = from, math.min(events, from + 24) do
      puts[#puts + 1] = { PutRequest = { Item = attribute_map({
        pk = "memory#one#stream", sk = dynlog.ulid(), type = "tick", log = "memory",
        payload = { id = "one", n = n, note = PAYLOAD_NOTE } }) } }
    end
    local request = { RequestItems = { [c.table] = puts } }
    repeat
      local resp = assert(view:call("BatchWriteItem", request))
      local left = resp.UnprocessedItems and resp.UnprocessedItems[c.table]
      request = left and { RequestItems = { [c.table] = left } }
    until not request
  end
end)
figures.fill_seconds = core.monotonic() - started
collectgarbage()
figures.rss_after_appends_kib = rss_kib()

-- Iterate the whole stream, sampling the resident size every 10k events.
local samples, seen, peak = {}, 0, 0
started = core.monotonic()
local it = c:query("memory", "one")
for event in it do
  seen = seen + 1
  assert(event.payload.n == seen, "events in order")
  if seen % 10000 == 0 then
    local rss = rss_kib()
    samples[#samples + 1] = { events = seen, rss_kib = rss, heap_kib = heap_kib() }
    if rss > peak then peak = rss end
  end
end
assert(not it.err, it.err)
assert(seen == events, ("iterated %d of %d events"):format(seen, events))
figures.query_seconds = core.monotonic() - started
figures.samples = samples
figures.rss_peak_iterating_kib = peak
local first_sample = samples[1] and samples[1].rss_kib or figures.rss_after_appends_kib
figures.rss_growth_while_iterating_kib = peak - first_sample

print(("%-44s %10s"):format("client (Lua 5.4)", "KiB"))
print(("%-44s %10d"):format("resident after require and new()", figures.rss_loaded_kib))
print(("%-44s %10d"):format("resident after the first 1000 appends", figures.rss_after_first_batch_kib))
print(("%-44s %10d"):format(("resident after writing %d events"):format(events), figures.rss_after_appends_kib))
for _, s in ipairs(samples) do
  print(("%-44s %10d   (Lua heap %d KiB)"):format(("  iterating: after %d events"):format(s.events), s.rss_kib,
    s.heap_kib))
end
print(("%-44s %10d"):format("growth from the first sample to the peak", figures.rss_growth_while_iterating_kib))
print(("wrote %d events in %.1f s; iterated them in %.1f s (%.0f/s)"):format(events,
  figures.fill_seconds, figures.query_seconds, events / figures.query_seconds))
print(dynlog.json.encode(figures))
