--- The feed: every event of a log table in one durable order, beyond the
-- 24 hours a DynamoDB Stream keeps. Its layout, its write path (commit) and
-- its read path (read_all, read_log) live here; dynlog.pipeline.indexer
-- fills it from the table's stream and backfill from the table itself.
--
-- The feed table ({pk S, sk N}, c.feed_table, default "<table>-feed")
-- holds four kinds of item:
--
--   entry      pk "p#<page>", sk <position>      a copy of the event item:
--              page = position // PAGE           its attributes, its own pk
--                                                and sk as event_pk/event_sk
--   guard      pk "e#<event pk>#<event sk>", sk 0  {position}: the event is
--                                                in the feed, there
--   head       pk "head", sk 0                   {position}: the last
--                                                position committed
--   others     pk "sub#<name>", "dead#<name>", …  subscriptions' checkpoints
--                                                and dead letters
--
-- Positions are whole numbers from 1, dense: 1, 2, 3, … with no hole.
-- One TransactWriteItems commits a run of events: for each, its entry
-- (attribute_not_exists) and its guard (attribute_not_exists), and the head
-- moved from p to p + n (on the condition that it is p). So a position is
-- given once and never changed, an event never gets two (its guard), a
-- crash leaves either all of a run or none of it, and several writers
-- (indexers on several hosts, a backfill beside them) take turns: the one
-- that lost re-reads the head and the guards and tries again.
--
-- Readers read the head first (a consistent GetItem) and entries up to it
-- only: whatever a reader sees is committed, in order, without a hole.
local core = require "dynlog.core"
local errors = require "dynlog.errors"
local options = require "dynlog.base.options"

local error, ipairs, pairs, tonumber, tostring, type = error, ipairs, pairs, tonumber, tostring, type
local math_floor, math_min = math.floor, math.min
local str_format = string.format
local array, json_encode, ulid = core.array, core.json_encode, core.ulid
local upcast_apply = require("dynlog.client.upcast").apply

local _M = {}

--- Positions per partition key of entries. Consecutive runs land in other
-- partitions, so that no one partition takes every write of the feed
-- (a partition serves 1,000 WCU/s), while a reader still reads up to
-- PAGE entries with one Query.
_M.PAGE = 100

--- Events per transaction: two actions each (entry and guard) and the
-- head, within TransactWriteItems' 100.
_M.MAX_RUN = 49

-- A transaction carries at most 4 MB; a run stops before this many bytes
-- of images.
local MAX_RUN_BYTES = 3500 * 1024

-- An entry whose image is larger is stored without payload and meta
-- (`ref` = true): readers fetch the event from the log table. An item holds
-- at most 400 KB, and the entry adds its own attributes to the event's.
local MAX_COPY_BYTES = 350 * 1024

-- Attributes of an entry that are the feed's, not the event's.
local OWN = { pk = true, sk = true, event_pk = true, event_sk = true, seq = true, indexed_at = true,
              ref = true }

-- Rounds of one commit lost to other writers before it gives up.
local MAX_ROUNDS = 50

local HEAD = "head"

--- The key of the entry at position pos.
function _M.entry_key(pos)
  return { pk = { S = "p#" .. str_format("%d", math_floor(pos / _M.PAGE)) }, sk = { N = str_format("%d", pos) } }
end

-- An event's sort key as text: the S or N of an AttributeValue, or a Lua
-- string or number.
local function sk_text(sk)
  if type(sk) == "table" then return sk.S or sk.N end
  if type(sk) == "number" then return str_format("%d", sk) end
  return tostring(sk)
end

--- The key of the guard of the event (pk, sk): sk as an AttributeValue
-- ({S=} / {N=}), a string or a whole number.
function _M.guard_key(event_pk, event_sk)
  return { pk = { S = "e#" .. event_pk .. "#" .. sk_text(event_sk) }, sk = { N = "0" } }
end

local HEAD_KEY = { pk = { S = HEAD }, sk = { N = "0" } }
_M.HEAD_KEY = HEAD_KEY

--- The key of a named item of the feed table other than entries, guards
-- and the head: kind ("sub", "dead", "backfill", …) and name, sk 0 unless
-- given.
function _M.named_key(kind, name, sk)
  return { pk = { S = kind .. "#" .. name }, sk = { N = str_format("%d", sk or 0) } }
end

--- table_of(c) -> the feed table of client c.
function _M.table_of(c)
  return c.feed_table or (c.table .. "-feed")
end

---------------------------------------------------------------------------
-- The table
---------------------------------------------------------------------------

--- c:create_feed_table() -> the description once ACTIVE, or nil, err:
-- {pk HASH S, sk RANGE N}, on demand, no stream. Idempotent.
function _M.create_feed_table(c)
  return require("dynlog.client.tables").create_side_table(c, _M.table_of(c), "N")
end

---------------------------------------------------------------------------
-- The head
---------------------------------------------------------------------------

--- head(c) -> the last position committed (0 for an empty feed), or nil, err.
-- A consistent read: every entry up to it is readable after it.
function _M.head(c)
  local resp, err = c:_request("dynamodb", "GetItem", {
    TableName = _M.table_of(c), Key = HEAD_KEY, ConsistentRead = true,
    ProjectionExpression = "#p", ExpressionAttributeNames = { ["#p"] = "position" },
  }, false)
  if not resp then return nil, err end
  local item = resp.Item
  if not item then return 0 end
  local n = item.position and tonumber(item.position.N)
  if not n then return nil, errors.new("bad_response", "the feed's head has no position") end
  return n
end

---------------------------------------------------------------------------
-- Writing
---------------------------------------------------------------------------

-- The event (pk, sk) of an image (AttributeValues), or nil.
local function identity(image)
  local pk, sk = image.pk, image.sk
  if type(pk) ~= "table" or type(pk.S) ~= "string" or type(sk) ~= "table" then return nil end
  if type(sk.S) ~= "string" and type(sk.N) ~= "string" then return nil end
  return pk.S, sk
end

-- The entry item of an event at position pos.
local function entry_item(ev, pos, now_ms)
  local item = _M.entry_key(pos)
  local image = ev.image
  local copy_all = ev.bytes <= MAX_COPY_BYTES
  for name, value in pairs(image) do
    if name ~= "pk" and name ~= "sk" and (copy_all or (name ~= "payload" and name ~= "meta")) then
      item[name] = value
    end
  end
  item.event_pk, item.event_sk = image.pk, image.sk
  if not copy_all then item.ref = { BOOL = true } end
  if ev.seq then item.seq = { S = ev.seq } end
  item.indexed_at = { N = str_format("%d", now_ms) }
  return item
end

-- Consistent BatchGetItem of the guards of evs: sets ev.position of those
-- in the feed already. Returns true, or nil, err.
local function read_guards(c, feed_table, evs)
  local i = 1
  while i <= #evs do
    local keys, by_key = array(), {}
    for j = i, math_min(i + 99, #evs) do
      local key = _M.guard_key(evs[j].pk, evs[j].sk)
      keys[#keys + 1] = key
      by_key[key.pk.S] = evs[j]
    end
    i = i + #keys
    local request = { [feed_table] = { Keys = keys, ConsistentRead = true } }
    local rounds = 0
    while request do
      local resp, err = c:_request("dynamodb", "BatchGetItem", { RequestItems = request }, false)
      if not resp then return nil, err end
      for _, item in ipairs((resp.Responses or {})[feed_table] or {}) do
        local ev = by_key[item.pk and item.pk.S]
        if ev then ev.position = tonumber(item.position and item.position.N) or true end
      end
      request = resp.UnprocessedKeys
      if request and not request[feed_table] then request = nil end
      if request then
        rounds = rounds + 1
        if rounds > 20 then return nil, errors.new("throttled", "BatchGetItem left keys unprocessed 20 times") end
        c.sleep(require("dynlog.aws.retry").delay(rounds, 0.05, 2))
      end
    end
  end
  return true
end

-- Commits one run (evs without a position yet) at the head p. Returns the
-- new head, or nil, err (err.lost: another writer moved the head, or one of
-- the events is in the feed already: read again).
local function commit_run(c, feed_table, evs, p)
  local actions = array()
  local now_ms = math_floor(c.now() * 1000)
  for i, ev in ipairs(evs) do
    actions[#actions + 1] = { Put = { TableName = feed_table, Item = entry_item(ev, p + i, now_ms),
                                      ConditionExpression = "attribute_not_exists(pk)" } }
    local guard = _M.guard_key(ev.pk, ev.sk)
    guard.position = { N = str_format("%d", p + i) }
    actions[#actions + 1] = { Put = { TableName = feed_table, Item = guard,
                                      ConditionExpression = "attribute_not_exists(pk)" } }
  end
  local new_head = p + #evs
  actions[#actions + 1] = { Update = {
    TableName = feed_table, Key = HEAD_KEY,
    UpdateExpression = "SET #p = :new, updated_at = :now",
    ConditionExpression = p == 0 and "attribute_not_exists(pk) OR #p = :old" or "#p = :old",
    ExpressionAttributeNames = { ["#p"] = "position" },
    ExpressionAttributeValues = { [":new"] = { N = str_format("%d", new_head) },
                                  [":old"] = { N = str_format("%d", p) },
                                  [":now"] = { N = str_format("%d", now_ms) } },
  } }
  local _, err = c:_request("dynamodb", "TransactWriteItems",
    { TransactItems = actions, ClientRequestToken = ulid() }, false)
  if not err then return new_head end
  if err.code == "TransactionCanceledException" and not err.retryable then
    err.lost = true
  elseif err.ambiguous then
    -- It may have committed: the guards will say.
    err.lost = true
  end
  return nil, err
end

--- commit(c, events [, state]) -> positions, or nil, err.
-- events: a list of {image = <the event item as AttributeValues>, seq =
-- <a DynamoDB Streams sequence number, kept in the entry>}, in the order
-- they take in the feed. Events in the feed already (a record delivered
-- twice, a backfill over indexed events) keep their position and get no
-- second one. positions[i] is the position of events[i]; positions.added
-- counts those this call gave one. state (a table the caller keeps between
-- calls, optional) remembers the head, saving a read per call while this
-- writer is the only one. Images that are not events (no string pk, no sk)
-- raise.
function _M.commit(c, events, state)
  if type(events) ~= "table" then error("feed.commit: events must be a list", 2) end
  state = state or {}
  local feed_table = _M.table_of(c)
  local evs, positions, seen = {}, { added = 0 }, {}
  for i, e in ipairs(events) do
    local image = type(e) == "table" and e.image
    local pk, sk = identity(type(image) == "table" and image or {})
    if not pk then error("feed.commit: events[" .. i .. "].image is not an event item (pk S and sk)", 2) end
    local key = pk .. "#" .. sk_text(sk)
    local first = seen[key]
    if first then
      first.also[#first.also + 1] = i
    else
      local encoded = json_encode(image)
      local ev = { index = i, also = {}, image = image, pk = pk, sk = sk, seq = e.seq, bytes = #encoded }
      seen[key] = ev
      evs[#evs + 1] = ev
    end
  end
  local pending, at, rounds = evs, 1, 0
  while at <= #pending do
    -- The next run: as many events as a transaction takes.
    local run, bytes = {}, 0
    while at <= #pending and #run < _M.MAX_RUN do
      local ev = pending[at]
      local size = ev.bytes <= MAX_COPY_BYTES and ev.bytes or 1024
      if #run > 0 and bytes + size > MAX_RUN_BYTES then break end
      run[#run + 1], bytes, at = ev, bytes + size, at + 1
    end
    local p = state.head
    if not p then
      local herr
      p, herr = _M.head(c)
      if not p then return nil, herr end
    end
    local new_head, err = commit_run(c, feed_table, run, p)
    if new_head then
      for i, ev in ipairs(run) do ev.position = p + i end
      positions.added = positions.added + #run
      state.head = new_head
    elseif err.lost then
      rounds = rounds + 1
      if rounds > MAX_ROUNDS then
        return nil, errors.new("conflict", "the feed's head moved under " .. MAX_ROUNDS
          .. " commits in a row: " .. tostring(err), { retryable = true })
      end
      -- Another writer moved the head or indexed some of these: read both
      -- and send what is left (the runs before this one are committed).
      state.head = nil
      local ok, gerr = read_guards(c, feed_table, run)
      if not ok then return nil, gerr end
      local left = {}
      for _, ev in ipairs(run) do
        if not ev.position then left[#left + 1] = ev end
      end
      for i = at, #pending do left[#left + 1] = pending[i] end
      pending, at = left, 1
    else
      state.head = nil
      return nil, err
    end
  end
  for _, ev in ipairs(evs) do
    positions[ev.index] = ev.position
    for _, j in ipairs(ev.also) do positions[j] = ev.position end
  end
  return positions
end

---------------------------------------------------------------------------
-- Reading
---------------------------------------------------------------------------

local READ_ALL = options.known{ "after", "limit", "logs", "types", "numbers" }
local READ_LOG = options.known{ "after", "limit", "types", "numbers" }

-- A list of names → a set; raises (level counts from the public function's
-- caller) when it is not a non-empty list of strings.
local function name_set(list, what, where)
  if list == nil then return nil end
  if type(list) ~= "table" or list[1] == nil then
    error(where .. ": " .. what .. " must be a non-empty list of strings", 4)
  end
  local set = {}
  for _, v in ipairs(list) do
    if type(v) ~= "string" then error(where .. ": " .. what .. " must be a list of strings", 4) end
    set[v] = true
  end
  return set
end

local function check_position(v, what, where)
  if v ~= nil and (type(v) ~= "number" or v < 0 or v ~= math_floor(v)) then
    error(where .. ": " .. what .. " must be a position (a whole number >= 0), got " .. tostring(v), 4)
  end
end

-- An entry (unmarshalled) → the event as query returns it, with its
-- position. ref entries get their payload from the log table.
local function event_of(c, item, numbers)
  local ev = {}
  for name, value in pairs(item) do
    if not OWN[name] then ev[name] = value end
  end
  -- A position is a whole number below 2^53, a Lua number whatever
  -- `numbers` says.
  ev.pk, ev.sk, ev.position = item.event_pk, item.event_sk, tonumber(item.sk)
  if item.ref then
    local stored, err = c:_get_item(ev.pk, ev.sk, false, numbers)
    if err then return nil, err end
    if stored then
      ev.payload, ev.meta = stored.payload, stored.meta
    else
      ev.erased = true -- deleted from the log (delete_stream, truncate, TTL) since
    end
  end
  if c.upcasters then return upcast_apply(c.upcasters, ev, numbers) end
  return ev
end

-- Reads entries (after, upto] in order; calls keep(item) for each until it
-- returns false. wanted() (optional) bounds the entries a Query asks for.
-- Returns the last position read, or nil, err.
local function scan(c, numbers, after, upto, wanted, keep)
  local feed_table = _M.table_of(c)
  local pos = after
  while pos < upto do
    local page = math_floor((pos + 1) / _M.PAGE)
    local last = math_min(upto, (page + 1) * _M.PAGE - 1)
    local limit = wanted and math_min(wanted(), last - pos) or nil
    -- Entries up to the head are committed: a Query that returns none of
    -- them (a page beyond 1 MB returns some) means the feed lost one.
    local resp, err = c:_request("dynamodb", "Query", {
      TableName = feed_table, ConsistentRead = true, Limit = limit,
      KeyConditionExpression = "pk = :pk AND sk BETWEEN :a AND :b",
      ExpressionAttributeValues = { [":pk"] = { S = "p#" .. str_format("%d", page) },
                                    [":a"] = { N = str_format("%d", pos + 1) },
                                    [":b"] = { N = str_format("%d", last) } },
    }, true, numbers)
    if not resp then return nil, err end
    local items = resp.Items or {}
    if items[1] == nil then
      return nil, errors.new("bad_state", "the feed has no entry at position " .. (pos + 1)
        .. " below its head " .. upto)
    end
    for _, item in ipairs(items) do
      local sk = tonumber(item.sk)
      if sk ~= pos + 1 then
        return nil, errors.new("bad_state", "the feed has no entry at position " .. (pos + 1)
          .. " below its head " .. upto)
      end
      pos = sk
      if keep(item) == false then return pos end
    end
  end
  return pos
end

local function read(c, opts, logs, types, where)
  opts = opts or {}
  local after = opts.after or 0
  local limit = opts.limit or 100
  if type(limit) ~= "number" or limit < 1 or limit ~= math_floor(limit) then
    error(where .. ": limit must be a positive integer", 3)
  end
  local numbers = opts.numbers or c.numbers
  local head, herr = _M.head(c)
  if not head then return nil, herr end
  local events = array()
  if after >= head then return events, after, head end
  local filtered = logs or types
  local failure
  local last, err = scan(c, numbers, after, head,
    not filtered and function() return limit - #events end or nil,
    function(item)
      if (logs and not logs[item.log]) or (types and not types[item.type]) then return true end
      local ev, eerr = event_of(c, item, numbers)
      if not ev then failure = eerr return false end
      events[#events + 1] = ev
      return #events < limit
    end)
  if failure then return nil, failure end
  if not last then return nil, err end
  return events, last, head
end

--- c:read_all{after =, limit =, logs =, types =, numbers =} -> events, last,
-- head, or nil, err. The events after position `after` (default 0: from
-- the first) in feed order, at most `limit` (default 100), of the given
-- logs and types only (lists of names; default all). Each event is as query
-- returns it plus its `position`. `last` is the position to pass as `after`
-- for the next page: the last position read, which may be beyond the last
-- event returned when filters skipped some. `head` is the feed's last
-- position; last == head when the feed is read to its end. Filters are
-- applied as the entries are read: a filtered read costs the reads of every
-- entry it passes over.
function _M.read_all(c, opts)
  options.check(opts, READ_ALL, "read_all")
  opts = opts or {}
  check_position(opts.after, "after", "read_all")
  local logs = name_set(opts.logs, "logs", "read_all")
  local types = name_set(opts.types, "types", "read_all")
  return read(c, opts, logs, types, "read_all")
end

--- c:read_log(log [, {after =, limit =, types =, numbers =}]) -> as
-- read_all, of one log's events (a category read).
function _M.read_log(c, log, opts)
  if type(log) ~= "string" or log == "" then error("read_log: log must be a log name", 2) end
  options.check(opts, READ_LOG, "read_log")
  opts = opts or {}
  check_position(opts.after, "after", "read_log")
  local types = name_set(opts.types, "types", "read_log")
  return read(c, opts, { [log] = true }, types, "read_log")
end

--- c:feed_position(pk, sk) -> the position of the event (pk, sk) in the
-- feed, false when it has none (yet), or nil, err.
function _M.position_of(c, event_pk, event_sk)
  local resp, err = c:_request("dynamodb", "GetItem", {
    TableName = _M.table_of(c), Key = _M.guard_key(event_pk, event_sk), ConsistentRead = true,
  }, false)
  if not resp then return nil, err end
  local item = resp.Item
  if not item then return false end
  return tonumber(item.position and item.position.N) or false
end

return _M
