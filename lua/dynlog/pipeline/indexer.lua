--- The indexer: fills the feed (dynlog.client.feed) from the log table's
-- DynamoDB Stream, and backfill fills it from the table itself.
--
--   local indexer = require("dynlog.pipeline.indexer").new{
--     client = c, checkpoint_table = "dynlog-checkpoints",
--   }
--   assert(indexer:create_tables())   -- the checkpoint table and the feed table
--   indexer:run()                     -- until indexer:stop(), SIGINT, SIGTERM, SIGHUP or SIGPIPE
--
--   assert(require("dynlog.pipeline.indexer").backfill{ client = c })
--
-- It runs a dynlog.pipeline.consumer whose handler commits the batch's new
-- events to the feed: INSERT records of events (items whose pk ends in
-- "#stream"), those of one stream put in sort-key order within the batch
-- (the items of one TransactWriteItems may arrive out of order), each
-- stream keeping the places its records held. A batch handed over again
-- (a crash before the checkpoint, a lease taken over) adds nothing: the
-- feed's guards give an event one position only. REMOVE records of events
-- (delete_stream, truncate, TTL) erase the entry's payload and meta and
-- mark it `erased`; its position stays.
--
-- In version mode a key can hold a second event after the first was
-- deleted: a stream opened again after delete_stream{reopen = true}, or
-- whose events all expired under max_age, starts again at version 1. The
-- guard of the erased event would pass the new one for it. So an event of a
-- numeric sort key that commit found in the feed already is checked against
-- its entry: an erased entry of another event (another sequence number and
-- another appended_at) gives up its guard, and the new event gets a
-- position of its own. An erasure likewise leaves alone an entry of another
-- event than the one its record removed.
--
-- Its leases are those of group "<table>#feed" (unless `group` says
-- otherwise), so that it shares a checkpoint table with a trigger's
-- consumer without taking its shards.
local consumer = require "dynlog.pipeline.consumer"
local core = require "dynlog.core"
local errors = require "dynlog.errors"
local eventkey = require "dynlog.client.eventkey"
local feed = require "dynlog.client.feed"
local logger = require "dynlog.logger"
local metrics = require "dynlog.base.metrics"
local options = require "dynlog.base.options"
local retry = require "dynlog.aws.retry"

local error, ipairs, pairs, setmetatable, tonumber, type = error, ipairs, pairs, setmetatable, tonumber, type
local math_floor, math_max, math_min = math.floor, math.max, math.min
local str_format = string.format
local table_sort = table.sort

local _M = {}
local mt = { __index = _M }

--- The options of new (and of dynlog.ngx.start_indexer): those of the
-- consumer that make sense for an indexer. No max_retries, bisect_on_error
-- or on_failure: a batch given up on would leave its events out of the feed.
_M.OPTIONS = options.known{
  "client", "checkpoint_table", "group", "worker_id", "batch_size", "start", "poll_interval",
  "lease_duration", "discovery_interval", "retry_base_delay", "retry_max_delay", "now", "sleep",
}

---------------------------------------------------------------------------
-- From records to commits
---------------------------------------------------------------------------

-- The text or number of a sort key (an AttributeValue {S=} or {N=}).
local function sk_value(sk)
  if sk.N then return tonumber(sk.N) end
  return sk.S
end

-- a < b for two sort keys of one stream (both S or both N).
local function sk_less(a, b)
  local x, y = sk_value(a), sk_value(b)
  if type(x) ~= type(y) then return type(x) == "number" end
  return x < y
end

--- ordered(records) -> the events to commit, {image =, seq =, created =},
-- in the order they take: the INSERT records of events of the batch, in
-- batch order, except that the records of one stream are sorted by sort
-- key among the places they held.
function _M.ordered(records)
  local events, places = {}, {}
  for _, r in ipairs(records) do
    local d = r.dynamodb
    if r.eventName == "INSERT" and type(d) == "table" and eventkey.is_event(r) and type(d.NewImage.sk) == "table" then
      local ev = { image = d.NewImage, seq = d.SequenceNumber, created = d.ApproximateCreationDateTime }
      events[#events + 1] = ev
      local pk = d.NewImage.pk.S
      local list = places[pk]
      if not list then list = {} places[pk] = list end
      list[#list + 1] = #events
    end
  end
  for _, list in pairs(places) do
    if #list > 1 then
      local evs = {}
      for i, at in ipairs(list) do evs[i] = events[at] end
      -- Stable: equal keys (one event delivered twice) keep their order.
      for i, ev in ipairs(evs) do ev.order = i end
      table_sort(evs, function(a, b)
        local ka, kb = a.image.sk, b.image.sk
        if sk_less(ka, kb) then return true end
        if sk_less(kb, ka) then return false end
        return a.order < b.order
      end)
      for i, at in ipairs(list) do events[at] = evs[i] end
    end
  end
  return events
end

-- The keys of a REMOVE record of an event, or nil.
local function removed_keys(r)
  local d = r.dynamodb
  local k = type(d) == "table" and d.Keys
  if r.eventName == "REMOVE" and type(k) == "table" and type(k.pk) == "table" and type(k.sk) == "table"
      and eventkey.is_event({ pk = k.pk.S }) then
    return k, d.OldImage
  end
  return nil
end

-- Whether an entry (AttributeValues) is of the event of this image and
-- sequence number (nil for an event read from the table): the same
-- sequence number, or the same appended_at; unknown counts as the same.
local function same_event(entry, image, seq)
  if seq and entry.seq then return entry.seq.S == seq end
  local a, b = entry.appended_at, image and image.appended_at
  if a and b then return a.N == b.N end
  return true
end

-- Consistent BatchGetItem of the entries at the given positions: {[pos] =
-- entry (AttributeValues)}, or nil, err.
local function read_entries(c, list)
  local found, feed_table = {}, feed.table_of(c)
  local i = 1
  while i <= #list do
    local keys, wanted = core.array(), {}
    for j = i, math_min(i + 99, #list) do
      if not wanted[list[j]] then
        wanted[list[j]] = true
        keys[#keys + 1] = feed.entry_key(list[j])
      end
    end
    i = i + 100
    local request = { [feed_table] = { Keys = keys, ConsistentRead = true,
                                       ProjectionExpression = "sk, seq, appended_at, erased" } }
    local rounds = 0
    while request do
      local resp, err = c:_request("dynamodb", "BatchGetItem", { RequestItems = request }, false)
      if not resp then return nil, err end
      for _, item in ipairs((resp.Responses or {})[feed_table] or {}) do
        found[tonumber(item.sk.N)] = item
      end
      request = resp.UnprocessedKeys
      if request and not request[feed_table] then request = nil end
      if request then
        rounds = rounds + 1
        if rounds > 20 then return nil, errors.new("throttled", "BatchGetItem left keys unprocessed 20 times") end
        c.sleep(retry.delay(rounds, 0.05, 2))
      end
    end
  end
  return found
end

--- commit(c, events, state) -> positions (as feed.commit), or nil, err:
-- feed.commit, and then, for the events of numeric sort keys that did not
-- all get a new position, the check against their entries: an event whose
-- key is held by the erased entry of another event (its key used again
-- after a deletion) gets a position of its own; positions.again counts them.
function _M.commit(c, events, state)
  local positions, err = feed.commit(c, events, state)
  if not positions then return nil, err end
  positions.again = 0
  if positions.added >= #events then return positions end
  local suspects, at = {}, {}
  for i, ev in ipairs(events) do
    if ev.image.sk.N then
      suspects[#suspects + 1] = i
      at[#at + 1] = positions[i]
    end
  end
  if #suspects == 0 then return positions end
  local entries, rerr = read_entries(c, at)
  if not entries then return nil, rerr end
  local again, seen = {}, {}
  for _, i in ipairs(suspects) do
    local ev, pos = events[i], positions[i]
    local entry = entries[pos]
    if entry and entry.erased and not same_event(entry, ev.image, ev.seq) and not seen[pos] then
      seen[pos] = true
      local guard = feed.guard_key(ev.image.pk.S, ev.image.sk)
      local _, derr = c:_request("dynamodb", "DeleteItem", {
        TableName = feed.table_of(c), Key = guard, ConditionExpression = "#p = :p",
        ExpressionAttributeNames = { ["#p"] = "position" },
        ExpressionAttributeValues = { [":p"] = { N = str_format("%d", pos) } },
      }, false)
      if derr and derr.code ~= "ConditionalCheckFailedException" then return nil, derr end
      logger.log("info", str_format("feed: %s %s is another event than the erased one at position %d: it "
        .. "gets a position of its own", ev.image.pk.S, ev.image.sk.N, pos))
      again[#again + 1] = i
    end
  end
  if #again == 0 then return positions end
  local evs = {}
  for k, i in ipairs(again) do evs[k] = events[i] end
  local more, merr = feed.commit(c, evs, state)
  if not more then return nil, merr end
  for k, i in ipairs(again) do positions[i] = more[k] end
  positions.added, positions.again = positions.added + more.added, more.added
  return positions
end

--- erase(c, pk, sk [, old_image]) -> the position erased, false when the
-- event has none (or its key holds another event's entry now), or nil, err:
-- the entry of the event (pk, sk as an AttributeValue) loses its payload
-- and meta and is marked erased; its position stays. Again on an erased
-- entry, nothing changes. old_image (the REMOVE record's) tells the event
-- from a later one at the same key.
function _M.erase(c, pk, sk, old_image)
  local pos, err = feed.position_of(c, pk, sk)
  if not pos then return pos, err end
  local entries, rerr = read_entries(c, { pos })
  if not entries then return nil, rerr end
  local entry = entries[pos]
  if not entry then
    return nil, errors.new("bad_state", str_format("the feed's guard of %s puts it at position %d, "
      .. "which has no entry", pk, pos))
  end
  if entry.erased then return pos end
  if not same_event(entry, old_image) then return false end
  local _, uerr = c:_request("dynamodb", "UpdateItem", {
    TableName = feed.table_of(c), Key = feed.entry_key(pos),
    UpdateExpression = "REMOVE payload, meta SET erased = :t",
    ConditionExpression = "attribute_exists(pk)",
    ExpressionAttributeValues = { [":t"] = { BOOL = true } },
  }, false)
  if uerr then return nil, uerr end
  return pos
end

---------------------------------------------------------------------------
-- The indexer
---------------------------------------------------------------------------

local function check(opts, where, level)
  if type(opts) ~= "table" then error(where .. ": expects a table of options", level) end
  options.check(opts, _M.OPTIONS, where, level)
  if type(opts.client) ~= "table" then error(where .. ": client is required (dynlog.new{...})", level) end
  if opts.checkpoint_table ~= nil and opts.checkpoint_table == feed.table_of(opts.client) then
    error(where .. ": checkpoint_table must not be the feed table (" .. opts.checkpoint_table .. ")", level)
  end
end

-- Commits the new events of records (a part of a batch without REMOVE
-- records of events). Returns true, or nil, err.
local function index_records(self, records)
  local events = _M.ordered(records)
  if #events == 0 then return true end
  local positions, err = _M.commit(self.client, events, self.state)
  if not positions then return nil, err end
  self.indexed = self.indexed + positions.added
  self.seen = self.seen + #events
  self.again = self.again + positions.again
  self.last_commit_at = self.now()
  local created
  for _, ev in ipairs(events) do
    if type(ev.created) == "number" and (created == nil or ev.created > created) then created = ev.created end
  end
  if created then self.lag_ms = math_max(0, math_floor((self.last_commit_at - created) * 1000)) end
  local name = feed.table_of(self.client)
  metrics.inc("dynlog_feed_events_indexed_total", positions.added, name)
  if type(self.state.head) == "number" then metrics.set("dynlog_feed_head", self.state.head, name) end
  if self.lag_ms then metrics.set("dynlog_feed_lag_seconds", self.lag_ms / 1000, name) end
  return true
end

-- The handler of the consumer: one batch into the feed, in record order:
-- the new events up to a REMOVE record of an event committed before it is
-- applied, so that a key deleted and written again within one batch gives
-- each event its own position.
local function handle(self, batch)
  local records = batch.Records
  local part = {}
  for _, r in ipairs(records) do
    local key, old_image = removed_keys(r)
    if key then
      local ok, err = index_records(self, part)
      if not ok then return nil, err end
      part = {}
      local pos, eerr = _M.erase(self.client, key.pk.S, key.sk, old_image)
      if pos == nil then return nil, eerr end
      if pos then self.erased = self.erased + 1 end
    else
      part[#part + 1] = r
    end
  end
  local ok, err = index_records(self, part)
  if not ok then return nil, err end
  return true
end

-- new, raising as `where` at `level` (as error() counts it from check:
-- 4 blames the caller of the public function that calls new_indexer).
local function new_indexer(opts, where, level)
  check(opts, where, level)
  local self = {
    client = opts.client,
    now = opts.now or opts.client.now,
    state = {},        -- feed.commit's cache of the head
    indexed = 0,       -- events this indexer added to the feed
    seen = 0,          -- events of INSERT records handed to it (repeats included)
    erased = 0,
    again = 0,         -- events given a position at a key an erased event held
    last_commit_at = nil,
    lag_ms = nil,
  }
  local copts = {}
  for name in pairs(opts) do copts[name] = opts[name] end
  copts.group = opts.group or (opts.client.table .. "#feed")
  copts.handler = function(batch) return handle(self, batch) end
  -- The consumer's checks count three frames more: its own, the
  -- consumer's _new and new_consumer against check, new_indexer.
  self.consumer = consumer._new(copts, where, level - 3)
  self.poll_interval = self.consumer.poll_interval
  return setmetatable(self, mt)
end

--- new(opts) -> an indexer. Raises on invalid options (an unknown key too,
-- at the caller's line); does no I/O. opts: client, checkpoint_table, and
-- as for dynlog.pipeline.consumer: group (default "<table>#feed"),
-- worker_id, batch_size, start, poll_interval, lease_duration,
-- discovery_interval, retry_base_delay, retry_max_delay, now, sleep.
function _M.new(opts)
  local indexer = new_indexer(opts, "indexer.new", 4) -- not a tail call: levels count this frame
  return indexer
end

-- For dynlog.ngx.start_indexer: the same, raising at its caller's line.
function _M._new(opts, where)
  local indexer = new_indexer(opts, where, 5)
  return indexer
end

--- create_tables() -> true, or nil, err: the checkpoint table and the feed
-- table, idempotently.
function _M:create_tables()
  local ok, err = self.consumer:create_tables()
  if not ok then return nil, err end
  local desc, ferr = feed.create_feed_table(self.client)
  if not desc then return nil, ferr end
  return true
end

--- poll_once() -> the number of records handed over this round, or nil, err.
function _M:poll_once()
  return self.consumer:poll_once()
end

--- run() -> true once stopped (stop(), SIGINT, SIGTERM, SIGHUP or SIGPIPE);
-- leases are handed back on the way out.
function _M:run()
  return self.consumer:run()
end

--- stop(): run() returns after the current round.
function _M:stop()
  self.consumer:stop()
end

--- release(): hands back every lease this indexer holds.
function _M:release()
  self.consumer:release()
end

--- stats() -> the consumer's stats (worker, shards, …) and indexed (events
-- this indexer added to the feed), seen (events handed to it, repeats
-- included), erased, again (events given a position at a key that an
-- erased event held), head (the feed's head as it last committed, nil
-- before), last_commit_at (seconds) and lag_ms (from the DynamoDB Stream's
-- ApproximateCreationDateTime of the newest event of the last batch to its
-- commit).
function _M:stats()
  local s = self.consumer:stats()
  s.indexed, s.seen, s.erased, s.again = self.indexed, self.seen, self.erased, self.again
  s.head, s.last_commit_at, s.lag_ms = self.state.head, self.last_commit_at, self.lag_ms
  return s
end

---------------------------------------------------------------------------
-- Backfill
---------------------------------------------------------------------------

local BACKFILL = options.known{ "client", "page_size", "restart", "on_progress" }

-- The backfill's saved place: {scan_key = <LastEvaluatedKey>|nil, …}, or nil, err.
local function read_place(c, key)
  local resp, err = c:_request("dynamodb", "GetItem", {
    TableName = feed.table_of(c), Key = key, ConsistentRead = true,
  }, false)
  if not resp then return nil, err end
  local item = resp.Item or {}
  return { scan_key = item.scan_key and item.scan_key.M, runs = tonumber(item.runs and item.runs.N) }
end

local function save_place(c, key, scan_key, counts)
  local item = { pk = key.pk, sk = key.sk, updated_at = { N = str_format("%d", math_floor(c.now() * 1000)) } }
  if scan_key then item.scan_key = { M = scan_key } end
  for name, n in pairs(counts) do item[name] = { N = str_format("%d", n) } end
  local _, err = c:_request("dynamodb", "PutItem", { TableName = feed.table_of(c), Item = item }, false)
  return err == nil, err
end

-- Commits every event of the stream pk, in sort-key order. Returns the
-- number read, the number added and whether the stream's positions follow
-- its order, or nil, err.
local function backfill_stream(c, pk, state)
  local params = {
    TableName = c.table, ConsistentRead = true, KeyConditionExpression = "pk = :pk",
    ExpressionAttributeValues = { [":pk"] = { S = pk } },
  }
  local read, added, in_order, last = 0, 0, true, 0
  repeat
    local resp, err = c:_request("dynamodb", "Query", params, false)
    if not resp then return nil, err end
    local events = {}
    for _, item in ipairs(resp.Items or {}) do events[#events + 1] = { image = item } end
    if #events > 0 then
      local positions, cerr = _M.commit(c, events, state)
      if not positions then return nil, cerr end
      read, added = read + #events, added + positions.added
      for i = 1, #events do
        if positions[i] < last then in_order = false end
        last = positions[i]
      end
    end
    params.ExclusiveStartKey = resp.LastEvaluatedKey
  until params.ExclusiveStartKey == nil
  return read, added, in_order
end

--- backfill{client =, page_size =, restart =, on_progress =} -> counts, or
-- nil, err (counts so far in err.counts). Adds to the feed the events of the
-- table it lacks: those written before an indexer ran, or while the table
-- had no stream. Scans the table page by page (page_size items, default
-- DynamoDB's 1 MB); for each stream seen that this run has not done yet,
-- Queries its events in sort-key order and commits them (those in the
-- feed already keep their position). After each page the scan's place is
-- kept in the feed table (item "backfill#<table>"): a run that stopped
-- (killed, failed) goes on from there when run again, unless restart. A run
-- that ends clears the place; the next run scans the whole table again.
-- counts: {pages, scanned, streams, events, added, out_of_order, resumed}:
-- out_of_order counts the streams some of whose events got positions
-- after events of theirs that sort later (they were in the feed already).
-- on_progress(counts) is called after each page. The feed table is made
-- first if it does not exist.
function _M.backfill(opts)
  if type(opts) ~= "table" then error("backfill: expects a table of options", 2) end
  options.check(opts, BACKFILL, "backfill")
  local c = opts.client
  if type(c) ~= "table" then error("backfill: client is required (dynlog.new{...})", 2) end
  local page_size = opts.page_size
  if page_size ~= nil and (type(page_size) ~= "number" or page_size < 1 or page_size ~= math_floor(page_size)) then
    error("backfill: page_size must be a positive integer", 2)
  end
  if opts.on_progress ~= nil and type(opts.on_progress) ~= "function" then
    error("backfill: on_progress must be a function(counts)", 2)
  end
  local desc, ferr = feed.create_feed_table(c)
  if not desc then return nil, ferr end
  local key = feed.named_key("backfill", c.table)
  local place, err = read_place(c, key)
  if not place then return nil, err end
  local counts = { pages = 0, scanned = 0, streams = 0, events = 0, added = 0, out_of_order = 0,
                   resumed = (not opts.restart and place.scan_key ~= nil) }
  local function failed(e)
    e.counts = counts
    return nil, e
  end
  local params = { TableName = c.table, ProjectionExpression = "pk", Limit = page_size,
                   ExclusiveStartKey = not opts.restart and place.scan_key or nil }
  local done, state = {}, {}
  repeat
    local resp, serr = c:_request("dynamodb", "Scan", params, false)
    if not resp then return failed(serr) end
    counts.pages = counts.pages + 1
    for _, item in ipairs(resp.Items or {}) do
      counts.scanned = counts.scanned + 1
      local pk = item.pk and item.pk.S
      if pk and not done[pk] and eventkey.is_event({ pk = pk }) then
        done[pk] = true
        local read, added, in_order = backfill_stream(c, pk, state)
        if not read then return failed(added) end
        counts.streams, counts.events, counts.added = counts.streams + 1, counts.events + read, counts.added + added
        if not in_order then
          counts.out_of_order = counts.out_of_order + 1
          logger.log("warn", str_format("feed backfill: stream %s had events in the feed already that sort after "
            .. "some it lacked: those it lacked follow them in the feed", pk))
        end
      end
    end
    params.ExclusiveStartKey = resp.LastEvaluatedKey
    local saved, perr = save_place(c, key, params.ExclusiveStartKey,
      { pages = counts.pages, events = counts.events, added = counts.added })
    if not saved then return failed(perr) end
    if opts.on_progress then opts.on_progress(counts) end
  until params.ExclusiveStartKey == nil
  return counts
end

return _M
