--- Reading a DynamoDB Stream, without leases: the shards of a stream,
-- parents before their children, and one shard read page by page from a
-- position, over expired iterators and trimmed data.
--
--   local shard_reader = require "dynlog.pipeline.shard_reader"
--   local r = shard_reader.new(c, arn, shard_id, { start = "TRIM_HORIZON" })
--   local records, err = r:read(1000)   -- r.closed once read to its end
--
--   local f = shard_reader.follow(c, arn, true)   -- every shard of a stream
--   assert(f:discover()) assert(f:open())
--   local n = assert(f:poll(function(record) ... end))
--
-- The consumer (dynlog.pipeline.consumer) puts leases and checkpoints on
-- top of new: it gives each shard's position (its checkpoint) and judges
-- what a trim passed over. `dynlog tail` follows a whole stream with follow.
local options = require "dynlog.base.options"

local error, ipairs, setmetatable, type = error, ipairs, setmetatable, type

local _M = {}

local NEW = options.known{ "start", "position", "on_trimmed" }
local STARTS = { TRIM_HORIZON = true, LATEST = true }

---------------------------------------------------------------------------
-- Shards
---------------------------------------------------------------------------

--- parents_first(shards) -> the shards with every parent before its
-- children, whatever the order DescribeStream listed them in.
function _M.parents_first(shards)
  local by_id, ordered, placed = {}, {}, {}
  for _, shard in ipairs(shards) do by_id[shard.ShardId] = shard end
  local function place(shard)
    if placed[shard.ShardId] then return end
    placed[shard.ShardId] = true
    local parent = shard.ParentShardId and by_id[shard.ParentShardId]
    if parent then place(parent) end
    ordered[#ordered + 1] = shard
  end
  for _, shard in ipairs(shards) do place(shard) end
  return ordered
end

--- new_shards(client, arn, known) -> the shards of stream `arn` whose id is
-- not a key of `known`, parents first, and the stream's description; or
-- nil, err.
function _M.new_shards(client, arn, known)
  local desc, err = client:describe_stream(arn)
  if not desc then return nil, err end
  local found = {}
  for _, shard in ipairs(desc.Shards or {}) do
    if not known[shard.ShardId] then found[#found + 1] = shard end
  end
  return _M.parents_first(found), desc
end

--- is_closed(shard) -> true for a shard (of DescribeStream) that has its
-- last record: it takes no more.
function _M.is_closed(shard)
  local range = shard.SequenceNumberRange
  return range ~= nil and range.EndingSequenceNumber ~= nil
end

---------------------------------------------------------------------------
-- One shard
---------------------------------------------------------------------------

local Reader = {}
Reader.__index = Reader

--- new(client, arn, shard_id [, opts]) -> a reader of one shard. Raises on
-- invalid options. opts:
-- - start: "TRIM_HORIZON" (default) or "LATEST", where reading begins;
--   later iterators open after the last record read;
-- - position: a function() -> "AFTER_SEQUENCE_NUMBER", seq |
--   "AT_SEQUENCE_NUMBER", seq | "TRIM_HORIZON" | "LATEST", asked whenever
--   an iterator is needed (instead of start and the last record read);
-- - on_trimmed: a function(records, trimmed) -> records, or nil, err, given
--   the first page read after a TrimmedDataAccessException, and what it
--   returns is read instead (nil, err: read fails, the page stays unread).
--   trimmed = {after = seq} or {at = seq}: the position the trim passed
--   over ({} for a start). Without it, the page is read as it is.
function _M.new(client, arn, shard_id, opts)
  options.check(opts, NEW, "shard_reader.new")
  opts = opts or {}
  local start = opts.start or "TRIM_HORIZON"
  if not STARTS[start] then error('shard_reader.new: start must be "TRIM_HORIZON" or "LATEST"', 2) end
  for _, name in ipairs({ "position", "on_trimmed" }) do
    if opts[name] ~= nil and type(opts[name]) ~= "function" then
      error("shard_reader.new: " .. name .. " must be a function", 2)
    end
  end
  return setmetatable({
    client = client, arn = arn, shard_id = shard_id, start = start, position = opts.position,
    on_trimmed = opts.on_trimmed,
    iterator = nil, -- the shard iterator of the next page
    last = nil,     -- the sequence number of the last record read
    trimmed = nil,  -- after a trim: the position it passed over, until the next page
    closed = false, -- read to its end
  }, Reader)
end

-- Where an iterator opens now.
local function position_of(self)
  if self.position then return self.position() end
  if self.last then return "AFTER_SEQUENCE_NUMBER", self.last end
  return self.start
end

-- TrimmedDataAccessException (from GetShardIterator or GetRecords): our
-- position is older than the records the stream keeps (24 hours). Reading
-- goes on from the oldest record kept.
function Reader:_resume_at_horizon()
  local it, err = self.client:get_shard_iterator(self.arn, self.shard_id, "TRIM_HORIZON")
  if not it then return nil, err end
  local kind, seq = position_of(self)
  self.iterator = it
  self.trimmed = { after = kind == "AFTER_SEQUENCE_NUMBER" and seq or nil,
                   at = kind == "AT_SEQUENCE_NUMBER" and seq or nil }
  -- Without a position of the caller's, later iterators open from there too.
  if not self.position then self.last, self.start = nil, "TRIM_HORIZON" end
  return true
end

--- open() -> true, or nil, err: opens an iterator at the position unless
-- one is open (so that "LATEST" means now, not at the first read). true,
-- "trimmed" when the position was trimmed and reading resumes at the
-- oldest record kept.
function Reader:open()
  if self.iterator then return true end
  local it, err = self.client:get_shard_iterator(self.arn, self.shard_id, position_of(self))
  if not it then
    if err.code ~= "TrimmedDataAccessException" then return nil, err end
    local ok, rerr = self:_resume_at_horizon()
    if not ok then return nil, rerr end
    return true, "trimmed"
  end
  self.iterator = it
  return true
end

--- read(limit) -> the next records (at most `limit`; maybe none), or nil,
-- err. An expired iterator is opened again from the position at the next
-- read; a trimmed one resumes at the oldest record kept; both read nothing
-- this time. r.closed is true once the shard is read to its end.
function Reader:read(limit)
  local ok, err = self:open()
  if not ok then return nil, err end
  local page
  page, err = self.client:get_records(self.iterator, limit)
  if not page then
    if err.code == "ExpiredIteratorException" then
      self.iterator, self.trimmed = nil, nil
      return {}
    end
    if err.code ~= "TrimmedDataAccessException" then return nil, err end
    local rok, rerr = self:_resume_at_horizon()
    if not rok then return nil, rerr end
    return {}
  end
  local records = page.records
  if self.trimmed then
    if self.on_trimmed then
      local kept, terr = self.on_trimmed(records, self.trimmed)
      if not kept then return nil, terr end
      records = kept
    end
    self.trimmed = nil
  end
  local last = page.records[#page.records]
  self.last = last and last.dynamodb and last.dynamodb.SequenceNumber or self.last
  self.iterator = page.next_iterator
  self.closed = page.next_iterator == nil
  return records
end

---------------------------------------------------------------------------
-- A whole stream
---------------------------------------------------------------------------

local Follower = {}
Follower.__index = Follower

--- follow(client, arn, from_start) -> a follower of every shard of stream
-- `arn`: shards seen at the first discover are read from LATEST (from
-- TRIM_HORIZON with from_start; a closed shard has nothing to come, then),
-- shards born later (the children of a split) from TRIM_HORIZON; a child
-- once its parent (if followed) is read to its end.
function _M.follow(client, arn, from_start)
  return setmetatable({ client = client, arn = arn, from_start = from_start, shards = {}, order = {}, first = true },
    Follower)
end

--- discover() -> true, or nil, err: finds the shards not yet followed.
function Follower:discover()
  local found, err = _M.new_shards(self.client, self.arn, self.shards)
  if not found then return nil, err end
  for _, shard in ipairs(found) do
    local id = shard.ShardId
    local st = { id = id, parent = shard.ParentShardId }
    local start = "TRIM_HORIZON"
    if self.first and not self.from_start then
      start = "LATEST"
      st.done = _M.is_closed(shard)
    end
    st.reader = _M.new(self.client, self.arn, id, { start = start })
    self.shards[id] = st
    self.order[#self.order + 1] = id
  end
  self.first = false
  return true
end

-- A child shard is read once its parent (if we read it) is finished.
function Follower:_ready(st)
  if st.done then return false end
  local parent = st.parent and self.shards[st.parent]
  return parent == nil or parent.done == true
end

--- open() -> true, or nil, err: opens an iterator on every shard that can
-- be read now (before the first poll, so that LATEST means "from now").
function Follower:open()
  for _, id in ipairs(self.order) do
    local st = self.shards[id]
    if self:_ready(st) then
      local ok, err = st.reader:open()
      if not ok then return nil, err end
    end
  end
  return true
end

--- poll(on_record) -> the number of records read, or nil, err: one page
-- of every shard that can be read, on_record(record) called for each
-- record; on_record returning false ends the round there.
function Follower:poll(on_record)
  local n = 0
  for _, id in ipairs(self.order) do
    local st = self.shards[id]
    if self:_ready(st) then
      local records, err = st.reader:read(1000)
      if not records then return nil, err end
      for _, record in ipairs(records) do
        n = n + 1
        if on_record(record) == false then return n end
      end
      if st.reader.closed then st.done = true end
    end
  end
  return n
end

return _M
