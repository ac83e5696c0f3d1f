-- The indexer (the feed filled from the DynamoDB Stream) and backfill (from
-- the table) against DynamoDB Local.
local ddb = require "spec.support.ddb"
local indexer = require "dynlog.indexer"
local logger = require "dynlog.logger"
local run = require "spec.support.run"
local socket = require "socket"

-- Every event item of the tables of the clients, unmarshalled: { "<pk>/<sk>" = item }.
local function table_events(...)
  local all, n = {}, 0
  for _, c in ipairs({ ... }) do
    local params = { TableName = c.table }
    repeat
      local resp = assert(c:call("Scan", params))
      for _, raw in ipairs(resp.Items or {}) do
        local pk = raw.pk.S
        if pk:sub(-7) == "#stream" then
          all[pk .. "/" .. (raw.sk.S or raw.sk.N)] = raw
          n = n + 1
        end
      end
      params.ExclusiveStartKey = resp.LastEvaluatedKey
    until params.ExclusiveStartKey == nil
  end
  return all, n
end

-- The whole feed, in order.
local function feed_of(c)
  local events, after = {}, 0
  while true do
    local page, last, head = assert(c:read_all{ after = after, limit = 100 })
    for _, ev in ipairs(page) do events[#events + 1] = ev end
    after = last
    if last == head then break end
  end
  return events
end

local function sk_less(a, b)
  if type(a) == "number" then return a < b end
  return a < b
end

-- Checks the feed of c against the event items of the tables of `tables`
-- (default: c's): positions 1..N dense, every event exactly once, each
-- stream in sort-key order. Returns the feed.
local function assert_feed_is_table(c, tables)
  local expected, n = table_events(table.unpack(tables or { c }))
  local events = feed_of(c)
  assert.are.equal(n, #events, "as many entries as events in the table")
  assert.are.equal(n, assert(c:feed_head()))
  local seen, last_of = {}, {}
  for i, ev in ipairs(events) do
    assert.are.equal(i, ev.position)
    local key = ev.pk .. "/" .. tostring(ev.sk)
    assert.is_nil(seen[key], key .. " is in the feed twice")
    seen[key] = true
    assert.is_not_nil(expected[key], key .. " is not an event of the table")
    local prev = last_of[ev.pk]
    if prev ~= nil then
      assert.is_true(sk_less(prev, ev.sk), ("%s: %s after %s"):format(ev.pk, tostring(ev.sk), tostring(prev)))
    end
    last_of[ev.pk] = ev.sk
    assert.are.equal(i, assert(c:feed_position(ev.pk, ev.sk)))
  end
  return events
end

local function indexer_for(c, opts)
  local o = { client = c, checkpoint_table = ddb.table_name("cp"), batch_size = 25,
              retry_base_delay = 0.001, retry_max_delay = 0.002, discovery_interval = 0.05 }
  for k, v in pairs(opts or {}) do o[k] = v end
  local ix = indexer.new(o)
  assert(ix:create_tables())
  return ix
end

-- Polls until the feed holds `want` events (or rounds run out).
local function index_until(c, want, ...)
  local indexers = { ... }
  for _ = 1, 400 do
    local handed = 0
    for _, ix in ipairs(indexers) do handed = handed + assert(ix:poll_once()) end
    if assert(c:feed_head()) >= want and handed == 0 then return true end
    if handed == 0 then socket.sleep(0.01) end
  end
  return false
end

-- Appends: single events and batches over `streams` streams.
local function append_burst(c, count, streams, tag)
  local written = 0
  local i = 0
  while written < count do
    i = i + 1
    local id = (tag or "s") .. (i % streams)
    if i % 4 == 0 then
      local batch = {}
      for j = 1, math.min(3, count - written) do batch[j] = { type = "b", payload = { n = written + j } } end
      assert(c:append_batch("l", id, batch))
      written = written + #batch
    else
      written = written + 1
      assert(c:append("l", id, "e", { n = written }))
    end
  end
end

describe("dynlog.indexer", function()
  before_each(function() logger.set_handler(function() end) end)
  after_each(function() logger.set_handler(nil) end)

  it("raises at the caller's line on an unknown option, naming the nearest known one", function()
    local c = ddb.client()
    local msg = run.raised(function() indexer.new{ client = c, checkpoint_table = "cp-x", batch_sise = 10 } end)
    assert.matches("indexer.new: unknown option \"batch_sise\" (did you mean \"batch_size\"?)", msg, 1, true)
    local here
    local ok, err = pcall(function()
      here = run.here() indexer.new{ client = c, checkpoint_table = "cp-x", handler = function() end }
    end)
    assert.is_false(ok)
    assert.matches(here .. "indexer.new: unknown option \"handler\"", tostring(err), 1, true)
    ok, err = pcall(function()
      here = run.here() indexer.new{ client = c, checkpoint_table = "cp-x", batch_size = 0 }
    end)
    assert.is_false(ok)
    assert.matches(here .. "indexer.new: batch_size must be 1..1000", tostring(err), 1, true)
    ok, err = pcall(function() here = run.here() indexer.new{ client = c } end)
    assert.is_false(ok)
    assert.matches(here .. "indexer.new: checkpoint_table must be a table name", tostring(err), 1, true)
    msg = run.raised(function() indexer.new{ client = c, checkpoint_table = c.feed_table } end)
    assert.matches("checkpoint_table must not be the feed table", msg, 1, true)
    ok, err = pcall(function() here = run.here() indexer.backfill{ client = c, page = 3 } end)
    assert.is_false(ok)
    assert.matches(here .. "backfill: unknown option \"page\"", tostring(err), 1, true)
  end)

  it("orders the records of one stream by sort key within a batch, each stream keeping its places", function()
    local function rec(pk, sk, seq, name)
      local key = { pk = { S = pk }, sk = sk }
      return { eventName = name or "INSERT", dynamodb = { Keys = key, NewImage = name ~= "REMOVE" and key or nil,
                                                         SequenceNumber = seq } }
    end
    local events = require("dynlog.pipeline.indexer").ordered({
      rec("a#1#stream", { S = "03" }, "1"), rec("b#1#stream", { N = "10" }, "2"), rec("a#1#stream", { S = "01" }, "3"),
      rec("a#1#guard", { S = "x" }, "4"), rec("b#1#stream", { N = "9" }, "5"), rec("a#1#stream", { S = "02" }, "6"),
      rec("a#1#stream", { S = "00" }, "7", "REMOVE"), rec("c#1#stream", { S = "z" }, "8", "MODIFY"),
    })
    local got = {}
    for i, ev in ipairs(events) do
      got[i] = ev.image.pk.S .. " " .. (ev.image.sk.S or ev.image.sk.N) .. " " .. ev.seq
    end
    assert.are.same({ "a#1#stream 01 3", "b#1#stream 9 5", "a#1#stream 02 6", "b#1#stream 10 2", "a#1#stream 03 1" },
      got)
  end)

  it("indexes every event once, each stream in sort-key order, and makes both tables", function()
    local c = ddb.ready_client()
    append_burst(c, 120, 5)
    local ix = indexer_for(c)
    assert.is_true(index_until(c, 120, ix))
    assert_feed_is_table(c)
    local s = ix:stats()
    assert.are.equal(120, s.indexed)
    assert.are.equal(120, s.head)
    assert.is_number(s.lag_ms)
    assert.is_number(s.last_commit_at)
    assert.is_table(s.shards)
    -- Only events: an event id's guard is not one.
    assert(c:append("l", "g", "e", { n = 1 }, { event_id = "once" }))
    assert.is_true(index_until(c, 121, ix))
    assert.are.equal(121, #assert_feed_is_table(c))
    assert.are.equal(121, ix:stats().indexed)
  end)

  it("erases the entries of deleted events (delete_stream, truncate): payload and meta gone, position kept",
    function()
    local c = ddb.ready_client()
    for i = 1, 3 do assert(c:append("l", "gone", "e", { n = i }, { meta = { trace_id = "t" .. i } })) end
    assert(c:append("l", "kept", "e", { n = 4 }))
    local ix = indexer_for(c)
    assert.is_true(index_until(c, 4, ix))
    assert(c:delete_stream("l", "gone"))
    for _ = 1, 20 do assert(ix:poll_once()) if ix:stats().erased == 3 then break end socket.sleep(0.02) end
    assert.are.equal(3, ix:stats().erased)
    local events = feed_of(c)
    assert.are.equal(4, #events)
    for i, ev in ipairs(events) do
      assert.are.equal(i, ev.position)
      if ev.pk == "l#gone#stream" then
        assert.is_true(ev.erased)
        assert.is_nil(ev.payload)
        assert.is_nil(ev.meta)
        assert.are.equal("e", ev.type)
      else
        assert.is_nil(ev.erased)
        assert.are.equal(4, ev.payload.n)
      end
    end
    -- Again (a REMOVE handed over twice): nothing changes.
    local first = events[1]
    assert.are.equal(first.position, assert(require("dynlog.pipeline.indexer").erase(c, first.pk,
      { S = first.sk })))
    assert.are.same(events, feed_of(c))
    -- truncate: the events before the sort key given.
    local fifth = assert(c:append("l", "kept", "e", { n = 5 }))
    assert(c:append("l", "kept", "e", { n = 6 }))
    assert.is_true(index_until(c, 6, ix))
    assert(c:truncate("l", "kept", { before = fifth.sk }))
    for _ = 1, 20 do assert(ix:poll_once()) if ix:stats().erased == 4 then break end socket.sleep(0.02) end
    assert.are.equal(4, ix:stats().erased)
    local shapes = {}
    for i, ev in ipairs(feed_of(c)) do shapes[i] = ev.erased and "erased" or ev.payload.n end
    assert.are.same({ "erased", "erased", "erased", "erased", 5, 6 }, shapes)
  end)

  for _, when in ipairs({ "before the deletion", "only after it (one batch)" }) do
    it("gives the events of a version-mode stream opened again their own positions, once, with an indexer run "
      .. when, function()
      local c = ddb.ready_client({ sort_key = "version" })
      for i = 1, 3 do assert(c:append("l", "v", "old", { n = i })) end
      assert(c:append("l", "w", "other", { n = 0 }))
      local ix = indexer_for(c)
      if when == "before the deletion" then assert.is_true(index_until(c, 4, ix)) end
      assert(c:delete_stream("l", "v", { reopen = true }))
      for i = 1, 2 do assert(c:append("l", "v", "new", { n = i })) end
      assert.is_true(index_until(c, 6, ix))
      for _ = 1, 10 do assert(ix:poll_once()) end
      local function check()
        local events = feed_of(c)
        assert.are.equal(6, #events)
        local shapes = {}
        for i, ev in ipairs(events) do
          assert.are.equal(i, ev.position)
          shapes[i] = ("%s %s %s %s"):format(ev.pk, tostring(ev.sk), ev.type, ev.erased and "erased"
            or tostring(ev.payload.n))
        end
        assert.are.same({ "l#v#stream 1 old erased", "l#v#stream 2 old erased", "l#v#stream 3 old erased",
                          "l#w#stream 1 other 0", "l#v#stream 1 new 1", "l#v#stream 2 new 2" }, shapes)
        assert.are.equal(5, assert(c:feed_position("l#v#stream", 1)))
      end
      check()
      assert.are.equal(2, ix:stats().again)
      assert.are.equal(3, ix:stats().erased)
      -- Read again by another group (a lost checkpoint): nothing added, nothing else erased.
      local again = indexer_for(c, { group = c.table .. "#again" })
      for _ = 1, 20 do assert(again:poll_once()) end
      assert.are.equal(6, again:stats().seen)
      assert.are.equal(0, again:stats().indexed)
      check()
      -- Backfill: the same.
      assert.are.equal(0, assert(indexer.backfill{ client = c }).added)
      check()
    end)
  end

  it("adds nothing for a batch handed over again (a checkpoint reset, a crash before the checkpoint)", function()
    local c = ddb.ready_client()
    append_burst(c, 60, 3)
    local cp = ddb.table_name("cp")
    local first = indexer_for(c, { checkpoint_table = cp, worker_id = "one" })
    assert.is_true(index_until(c, 60, first))
    local before = assert_feed_is_table(c)
    -- The checkpoints lost: another group reads the whole stream again.
    local again = indexer_for(c, { checkpoint_table = cp, group = c.table .. "#again" })
    for _ = 1, 30 do assert(again:poll_once()) end
    assert.are.equal(60, again:stats().seen)
    assert.are.equal(0, again:stats().indexed)
    assert.are.same(before, assert_feed_is_table(c))
    -- A crash after the commit, before the checkpoint: the next indexer of
    -- the group gets the same batch.
    append_burst(c, 20, 3, "t")
    local crashing = indexer_for(c, { checkpoint_table = cp, worker_id = "crash", group = c.table .. "#crash",
                                      batch_size = 1000 })
    crashing.consumer._checkpoint = function() error("killed before the checkpoint") end
    pcall(crashing.poll_once, crashing)
    pcall(crashing.poll_once, crashing)
    assert.are.equal(80, assert(c:feed_head()))
    local next_one = indexer_for(c, { checkpoint_table = cp, worker_id = "crash", group = c.table .. "#crash" })
    for _ = 1, 30 do assert(next_one:poll_once()) end
    assert.are.equal(80, next_one:stats().seen)
    assert.are.equal(0, next_one:stats().indexed)
    assert_feed_is_table(c)
  end)

  it("gives no double entries with two indexers at once, sharing the checkpoint table or not", function()
    local c = ddb.ready_client()
    local cp = ddb.table_name("cp")
    local a = indexer_for(c, { checkpoint_table = cp, worker_id = "a", batch_size = 7 })
    local b = indexer_for(c, { checkpoint_table = cp, worker_id = "b", batch_size = 7 })
    -- Two groups: each reads every record and commits it, side by side.
    local x = indexer_for(c, { group = c.table .. "#x", batch_size = 5 })
    local y = indexer_for(c, { group = c.table .. "#y", batch_size = 3 })
    for round = 1, 4 do
      append_burst(c, 30, 4, "r" .. round)
      for _ = 1, 5 do
        assert(a:poll_once()) assert(x:poll_once()) assert(b:poll_once()) assert(y:poll_once())
      end
    end
    assert.is_true(index_until(c, 120, a, b, x, y))
    assert_feed_is_table(c)
    assert.are.equal(120, a:stats().indexed + b:stats().indexed + x:stats().indexed + y:stats().indexed)
    assert.are.equal(120, x:stats().seen)
    assert.are.equal(120, y:stats().seen)
  end)

  it("commits a parent shard's events before its child's", function()
    local parent, child = ddb.ready_client(), ddb.ready_client()
    local split = require("spec.support.split_stream").new(parent, child)
    local fc = ddb.client({ table = parent.table, transport = split.transport })
    for i = 1, 12 do assert(parent:append("l", tostring(i % 3), "e", { n = i })) end
    split.split()
    -- The child takes writes while the parent still has records unread.
    for i = 13, 20 do assert(child:append("l", tostring(i % 3), "e", { n = i })) end
    split.close_parent()
    local ix = indexer_for(fc, { batch_size = 4 })
    assert.is_true(index_until(fc, 20, ix))
    local events = assert_feed_is_table(fc, { parent, child })
    for i, ev in ipairs(events) do assert.are.equal(i, ev.payload.n) end
  end)

  it("follows a stream disabled and enabled again; backfill adds what was written while it was off", function()
    local c = ddb.ready_client()
    append_burst(c, 20, 2, "a")
    local ix = indexer_for(c)
    assert.is_true(index_until(c, 20, ix))
    assert(c:call("UpdateTable", { TableName = c.table, StreamSpecification = { StreamEnabled = false } }))
    append_burst(c, 15, 3, "off") -- in no stream
    assert(c:call("UpdateTable", { TableName = c.table,
      StreamSpecification = { StreamEnabled = true, StreamViewType = "NEW_AND_OLD_IMAGES" } }))
    append_burst(c, 10, 2, "a")
    assert.is_true(index_until(c, 30, ix))
    for _ = 1, 10 do assert(ix:poll_once()) end
    assert.are.equal(30, assert(c:feed_head()), "the events written while the stream was off are in no stream")
    local before = feed_of(c)
    local counts = assert(indexer.backfill{ client = c })
    assert.are.equal(15, counts.added)
    assert.are.equal(45, counts.events)
    assert.are.equal(0, counts.out_of_order)
    local events = assert_feed_is_table(c)
    for i = 1, 30 do assert.are.same(before[i], events[i], "what was indexed before stays") end
    for i = 31, 45 do assert.matches("^l#off", events[i].pk) end
    -- Run again: nothing to add.
    counts = assert(indexer.backfill{ client = c })
    assert.are.equal(0, counts.added)
    assert.is_false(counts.resumed)
    -- A subscription started now, when the first stream's records are no
    -- longer reachable from the table's stream, receives every event, in
    -- feed order, once.
    local got = {}
    local sub = require("dynlog").subscribe{ client = c, name = "after-the-switch", from = "start", batch_size = 7,
      handler = function(batch)
        for _, ev in ipairs(batch) do got[#got + 1] = ev end
        return true
      end }
    for _ = 1, 50 do
      if #got >= 45 then break end
      assert(sub:poll_once())
    end
    sub:release()
    assert.are.equal(45, #got)
    for i = 1, 45 do
      assert.are.equal(i, got[i].position)
      assert.are.equal(events[i].pk, got[i].pk)
      assert.are.equal(events[i].sk, got[i].sk)
    end
  end)
end)

describe("dynlog.indexer.backfill", function()
  before_each(function() logger.set_handler(function() end) end)
  after_each(function() logger.set_handler(nil) end)

  it("adds events written before any indexer, each stream in order, page by page", function()
    local c = ddb.ready_client()
    append_burst(c, 90, 7)
    assert(c:append("l", "g", "e", { n = 1 }, { event_id = "once" })) -- and its guard, not an event
    local progress = {}
    local counts = assert(indexer.backfill{ client = c, page_size = 10, on_progress = function(k)
      progress[#progress + 1] = k.pages
    end })
    assert.are.equal(91, counts.added)
    assert.are.equal(8, counts.streams)
    assert.is_true(counts.pages >= 9)
    assert.are.equal(counts.pages, #progress)
    assert_feed_is_table(c)
    -- The indexer afterwards, over the same events: nothing twice.
    local ix = indexer_for(c)
    for _ = 1, 30 do assert(ix:poll_once()) end
    assert.are.equal(91, ix:stats().seen)
    assert.are.equal(0, ix:stats().indexed)
    assert_feed_is_table(c)
  end)

  it("goes on where an interrupted run stopped, and ends with each event exactly once", function()
    local c = ddb.ready_client()
    append_burst(c, 80, 9)
    -- A fault at the fourth page's commit.
    local commits, real = 0, c._request
    c._request = function(self, service, op, params, ...)
      if op == "TransactWriteItems" then
        commits = commits + 1
        if commits == 4 then
          return nil, require("dynlog.errors").new("connection", "injected: connection reset")
        end
      end
      return real(self, service, op, params, ...)
    end
    local counts, err = indexer.backfill{ client = c, page_size = 8 }
    assert.is_nil(counts)
    assert.are.equal("connection", err.code)
    assert.is_true(err.counts.added > 0 and err.counts.added < 80)
    local head = assert(c:feed_head())
    assert.is_true(head > 0 and head < 80)
    c._request = real
    counts = assert(indexer.backfill{ client = c, page_size = 8 })
    assert.is_true(counts.resumed)
    assert.are.equal(80 - head, counts.added)
    assert_feed_is_table(c)
    -- The run ended: the next one starts from the top again.
    counts = assert(indexer.backfill{ client = c, page_size = 8 })
    assert.is_false(counts.resumed)
    assert.are.equal(80, counts.events)
    assert.are.equal(0, counts.added)
  end)
end)
