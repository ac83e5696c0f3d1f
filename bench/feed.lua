-- The feed's figures against DynamoDB Local (bench/feed.sh runs it):
--
--   lua5.4 bench/feed.lua PORT TABLE fill N STREAMS      append N events over STREAMS streams
--   lua5.4 bench/feed.lua PORT TABLE index N             the indexer from the stream until N are indexed
--   lua5.4 bench/feed.lua PORT TABLE commit N            feed.commit alone (no stream), N events read back
--   lua5.4 bench/feed.lua PORT TABLE read N              read_all from 0 to the head, 1000 a page
--   lua5.4 bench/feed.lua PORT TABLE catchup N           a subscription from the start until it has N
--   lua5.4 bench/feed.lua PORT TABLE write RATE SECONDS  appends at RATE/s for SECONDS (steady load)
--   lua5.4 bench/feed.lua PORT TABLE follow FILE         the indexer, beside `write`, until the count that
--                                                        `write` leaves in FILE is indexed
--   lua5.4 bench/feed.lua PORT TABLE lag                 lag of every entry: indexed_at - appended_at
--
-- Each prints one JSON object. Every figure is checked against the work
-- done: the feed's head and the entries read must be the events appended.
local dynlog = require "dynlog"
local core = require "dynlog.core"
local curl = require "dynlog.transport.curl"
local feed = require "dynlog.client.feed"

local gettime = require("socket").gettime

local port, table_name, mode = arg[1], arg[2], arg[3]
local n1, n2 = tonumber(arg[4]), tonumber(arg[5])

-- Write units of the feed's transactions, by DynamoDB's documented rule
-- (DynamoDB Local reports 4 units for any TransactWriteItems, whatever it
-- holds): each item written costs ceil(size / 1 KB) units, twice within a
-- transaction; the size is DynamoDB's count, as the C core makes it for
-- appends (core.item_size, exact numbers kept).
local units = 0
local function item_units(item)
  return math.ceil(core.item_size(assert(core.unmarshal_item(item, "exact"))) / 1024)
end
local http = curl.new()
local transport = { request = function(_, req)
  local res, err = http:request(req)
  if res and res.status == 200 and req.headers["X-Amz-Target"] == "DynamoDB_20120810.TransactWriteItems" then
    for _, action in ipairs(core.json_decode(req.body).TransactItems) do
      -- the head's update writes an item of a few dozen bytes: 1 unit
      units = units + 2 * (action.Put and item_units(action.Put.Item) or 1)
    end
  end
  return res, err
end }

local c = dynlog.new{
  table = table_name, endpoint = "http://127.0.0.1:" .. port, region = "us-east-1", transport = transport,
  credentials = { access_key_id = "AKIDBENCH", secret_access_key = "bench-secret-key" },
  -- the writers of these streams never delete one: no tombstone read per append
  tombstones = false,
}

local function out(t) print(core.json_encode(t)) io.stdout:flush() end

local payload = { note = string.rep("x", 150), n = 0 }

local function head() return assert(c:feed_head()) end

if mode == "fill" then
  assert(c:create_table())
  assert(c:create_feed_table())
  local t0 = gettime()
  local i = 0
  while i < n1 do
    local batch = {}
    for _ = 1, math.min(25, n1 - i) do
      i = i + 1
      batch[#batch + 1] = { log = "bench", id = "s" .. (i % n2), type = "tick",
                            payload = { n = i, note = payload.note } }
    end
    assert(c:append_many(batch))
  end
  out({ mode = "fill", events = n1, streams = n2, seconds = gettime() - t0 })

elseif mode == "index" or mode == "follow" then
  local target_file = mode == "follow" and arg[4]
  local function target()
    if not target_file then return n1 end
    local f = io.open(target_file, "r")
    if not f then return math.huge end
    local text = f:read("a")
    f:close()
    local doc = text and text ~= "" and core.json_decode(text)
    return type(doc) == "table" and doc.events or math.huge
  end
  local indexer = require("dynlog.pipeline.indexer").new{
    client = c, checkpoint_table = table_name .. "-checkpoints", poll_interval = 0.05,
  }
  assert(indexer:create_tables())
  local t0, first = gettime(), nil
  while head() < target() do
    local n, err = indexer:poll_once()
    if not n then error(tostring(err)) end
    if n > 0 and not first then first = gettime() end
    if n == 0 then core.sleep(0.02) end
    if gettime() - t0 > 600 then error("the indexer did not reach " .. target() .. " in 600 s") end
  end
  local seconds = gettime() - (first or t0)
  indexer:release()
  n1 = target()
  out({ mode = mode, events = n1, head = head(), seconds = seconds, events_per_second = n1 / seconds,
        wcu_per_event = units / n1 })

elseif mode == "commit" then
  -- The commit path alone: events read back from the log, committed to a
  -- second feed table in runs of 100 (as a consumer batch brings them).
  c.feed_table = table_name .. "-feed2"
  assert(c:create_feed_table())
  local list = {}
  local resp = assert(c:call("Scan", { TableName = table_name }))
  local items = resp.Items
  while resp.LastEvaluatedKey do
    resp = assert(c:call("Scan", { TableName = table_name, ExclusiveStartKey = resp.LastEvaluatedKey }))
    for _, it in ipairs(resp.Items) do items[#items + 1] = it end
  end
  for _, it in ipairs(items) do
    if it.pk.S:sub(-7) == "#stream" then list[#list + 1] = { image = it } end
  end
  assert(#list == n1, "the table holds " .. #list .. " events, not " .. n1)
  units = 0
  local state = {}
  local t0 = gettime()
  for i = 1, #list, 100 do
    local run = {}
    for j = i, math.min(i + 99, #list) do run[#run + 1] = list[j] end
    assert(feed.commit(c, run, state))
  end
  local seconds = gettime() - t0
  assert(head() == n1)
  out({ mode = "commit", events = n1, seconds = seconds, events_per_second = n1 / seconds,
        wcu_per_event = units / n1 })

elseif mode == "read" then
  local t0, after, count = gettime(), 0, 0
  while true do
    local events, last, h = assert(c:read_all{ after = after, limit = 1000 })
    for _, ev in ipairs(events) do
      count = count + 1
      assert(ev.position == count)
    end
    after = last
    if last == h then break end
  end
  local seconds = gettime() - t0
  assert(count == n1, "read " .. count .. " events, not " .. n1)
  out({ mode = "read", events = count, seconds = seconds, events_per_second = count / seconds })

elseif mode == "catchup" then
  local got = 0
  local sub
  sub = dynlog.subscribe{ client = c, name = "bench-" .. core.ulid(), from = "start", batch_size = 1000,
    handler = function(events)
      got = got + #events
      if got >= n1 then sub:stop() end
      return true
    end }
  local t0 = gettime()
  while got < n1 do
    local n, err = sub:poll_once()
    if not n then error(tostring(err)) end
    if gettime() - t0 > 600 then error("caught up " .. got .. " of " .. n1 .. " in 600 s") end
  end
  local seconds = gettime() - t0
  sub:release()
  assert(got == n1, "delivered " .. got .. " events, not " .. n1)
  out({ mode = "catchup", events = got, seconds = seconds, events_per_second = got / seconds })

elseif mode == "write" then
  local rate, seconds = n1, n2
  local t0, i = gettime(), 0
  while true do
    local now = gettime()
    if now - t0 >= seconds then break end
    local due = math.floor((now - t0) * rate)
    if i < due then
      -- catch up in batches of up to 25 (one BatchWriteItem)
      local batch = {}
      for _ = 1, math.min(25, due - i) do
        i = i + 1
        batch[#batch + 1] = { log = "steady", id = "s" .. (i % 97), type = "tick", payload = { n = i } }
      end
      assert(c:append_many(batch, { concurrency = 8 }))
    else
      core.sleep(0.005)
    end
  end
  out({ mode = "write", events = i, seconds = gettime() - t0, rate = i / (gettime() - t0) })

elseif mode == "lag" then
  -- indexed_at is the entry's own (read_all leaves it out): read the
  -- entries, page by page, and check that every position is there.
  local h, values = head(), {}
  for page = 0, math.floor(h / feed.PAGE) do
    local params = { TableName = c.feed_table, KeyConditionExpression = "pk = :p",
                     ExpressionAttributeValues = { [":p"] = { S = "p#" .. page } } }
    repeat
      local resp = assert(c:call("Query", params))
      for _, it in ipairs(resp.Items) do
        values[#values + 1] = tonumber(it.indexed_at.N) - tonumber(it.appended_at.N)
      end
      params.ExclusiveStartKey = resp.LastEvaluatedKey
    until not params.ExclusiveStartKey
  end
  assert(#values == h and h == n1, "entries " .. #values .. ", head " .. h .. ", appended " .. tostring(n1))
  table.sort(values)
  local function pct(p) return values[math.max(1, math.ceil(#values * p))] end
  out({ mode = "lag", events = #values, p50_ms = pct(0.5), p99_ms = pct(0.99), max_ms = values[#values] })
else
  error("unknown mode " .. tostring(mode))
end
