--- The stream consumer: the job of a Lambda event-source mapping, done by a
-- plain Lua process (or, later, nginx timers).
--
--   local consumer = require("dynlog.pipeline.consumer").new{
--     client = c, handler = function(batch, shard) ... end,
--     checkpoint_table = "dynlog-checkpoints",
--   }
--   assert(consumer:create_tables())
--   consumer:run()            -- until consumer:stop(), SIGINT, SIGTERM, SIGHUP or SIGPIPE
--
-- Records are handed over in shard order, as batches in the Lambda shape
-- ({Records = {...}}), so `dynlog.trigger.handle` plugs in as it is. After
-- the handler succeeds the batch's last sequence number is checkpointed; a
-- failing handler gets the same batch again, with backoff, and nothing after
-- it is handed over first. Shards are spread over every consumer that shares
-- the checkpoint table (see dynlog.pipeline.leases), and a child shard starts only
-- after its parent is read to its end.
local core = require "dynlog.core"
local errors = require "dynlog.errors"
local leases = require "dynlog.pipeline.leases"
local logger = require "dynlog.logger"
local metrics = require "dynlog.base.metrics"
local options = require "dynlog.base.options"
local retry = require "dynlog.aws.retry"
local shard_reader = require "dynlog.pipeline.shard_reader"

local error, ipairs, pairs, pcall, setmetatable, tostring, type =
  error, ipairs, pairs, pcall, setmetatable, tostring, type
local math_ceil, math_floor, math_max, math_min = math.ceil, math.floor, math.max, math.min
local str_format = string.format
local table_insert, table_remove = table.insert, table.remove

local _M = {}
local mt = { __index = _M }

local DEFAULTS = {
  batch_size = 100,
  start = "trim_horizon",
  poll_interval = 0.25,
  lease_duration = 10,
  discovery_interval = 10,
  bisect_on_error = false,
  retry_base_delay = 0.5,
  retry_max_delay = 30,
}

local STARTS = { trim_horizon = "TRIM_HORIZON", latest = "LATEST" }

local function default_worker_id()
  local f = io.open("/etc/hostname", "r")
  local host = f and f:read("*l") or "host"
  if f then f:close() end
  return str_format("%s:%d:%s", host, core.getpid(), core.ulid():sub(-6))
end

--- The options of new (and of dynlog.ngx.start_consumer, which passes them on).
_M.OPTIONS = options.known{
  "client", "handler", "checkpoint_table", "group", "worker_id", "batch_size", "start", "poll_interval",
  "lease_duration", "discovery_interval", "bisect_on_error", "retry_base_delay", "retry_max_delay",
  "max_retries", "on_failure", "now", "sleep",
}

-- Raises as error(msg, level) would here: `level` counts from check.
local function check(opts, where, level)
  if type(opts) ~= "table" then error(where .. ": expects a table of options", level) end
  options.check(opts, _M.OPTIONS, where, level)
  if type(opts.client) ~= "table" then error(where .. ": client is required (dynlog.new{...})", level) end
  if type(opts.handler) ~= "function" then error(where .. ": handler must be a function(batch, shard)", level) end
  if type(opts.checkpoint_table) ~= "string" then error(where .. ": checkpoint_table must be a table name", level) end
  -- Leases written into the log would be read as events, and the log's
  -- items overwritten as leases.
  if opts.checkpoint_table == opts.client.table then
    error(where .. ": checkpoint_table must not be the log table (" .. opts.checkpoint_table
      .. "): give the leases a table of their own", level)
  end
  if opts.start ~= nil and not STARTS[opts.start] then
    error(where .. ': start must be "trim_horizon" or "latest"', level)
  end
  for _, name in ipairs({ "batch_size", "poll_interval", "max_retries", "retry_base_delay", "retry_max_delay" }) do
    local v = opts[name]
    if v ~= nil and (type(v) ~= "number" or v < 0) then
      error(where .. ": " .. name .. " must be a number >= 0", level)
    end
  end
  -- A lease that expires at once would let every worker take every shard.
  for _, name in ipairs({ "lease_duration", "discovery_interval" }) do
    local v = opts[name]
    if v ~= nil and (type(v) ~= "number" or not (v > 0)) then
      error(where .. ": " .. name .. " must be a number of seconds > 0", level)
    end
  end
  if opts.batch_size and (opts.batch_size < 1 or opts.batch_size > 1000) then
    error(where .. ": batch_size must be 1..1000", level)
  end
  if opts.on_failure ~= nil and type(opts.on_failure) ~= "function" then
    error(where .. ": on_failure must be a function(batch, err, shard)", level)
  end
  for _, name in ipairs({ "now", "sleep" }) do
    if opts[name] ~= nil and type(opts[name]) ~= "function" then
      error(where .. ": " .. name .. " must be a function", level)
    end
  end
  if opts.worker_id ~= nil and (type(opts.worker_id) ~= "string" or opts.worker_id == "") then
    error(where .. ": worker_id must be a non-empty string", level)
  end
  if opts.group ~= nil and (type(opts.group) ~= "string" or opts.group == "") then
    error(where .. ": group must be a non-empty string", level)
  end
end

-- new, raising as `where` at `level` (as error() counts it from check).
local function new_consumer(opts, where, level)
  check(opts, where, level)
  local self = {
    client = opts.client,
    handler = opts.handler,
    table = opts.checkpoint_table,
    group = opts.group or opts.client.table,
    worker = opts.worker_id or default_worker_id(),
    token = core.ulid(), -- this instance: another process under the same worker_id has another
    on_failure = opts.on_failure,
    max_retries = opts.max_retries,
    now = opts.now or opts.client.now,
    sleep = opts.sleep or opts.client.sleep,
    owned = {},       -- shard id -> the state of a shard we hold
    held = {},        -- shard ids this instance has worked
    conflicts_seen = {}, -- "<shard id> <token>" of instances found using our worker_id
    worker_conflicts = 0,
    stream_arn = nil,   -- the table's stream, as last looked up
    first_arn = nil,    -- the first one found: the stream of leases that do not name theirs
    stream_changes = 0,
    stream_created = {}, -- stream ARN -> when it was made (DescribeStream)
    known = {},       -- shard ids whose lease item exists
    shard_stats = {},
    next_sync = 0,
    next_discovery = 0,
    stopping = false,
  }
  for name, default in pairs(DEFAULTS) do
    local v = opts[name]
    if v == nil then v = default end
    self[name] = v
  end
  self.me = { worker = self.worker, token = self.token }
  self.watcher = leases.watcher(self.lease_duration)
  return setmetatable(self, mt)
end

--- Creates a consumer. Raises on invalid options (an unknown key too); does no I/O.
-- opts: client, handler, checkpoint_table, group (default: the client's
-- table), worker_id, batch_size (100), start ("trim_horizon" | "latest"),
-- poll_interval (0.25 s), lease_duration (10 s: longer than any batch
-- takes), bisect_on_error, max_retries (nil: retry for ever), on_failure.
function _M.new(opts)
  local consumer = new_consumer(opts, "stream.new", 4) -- not a tail call: error levels count this frame
  return consumer
end

-- For dynlog.ngx.start_consumer: the same, raising at its caller's line;
-- `extra` frames further out for callers that wrap it (the indexer).
function _M._new(opts, where, extra)
  local consumer = new_consumer(opts, where, 5 + (extra or 0))
  return consumer
end

--- create_tables() -> true, or nil, err: the checkpoint table, idempotently.
function _M:create_tables()
  local desc, err = leases.create_table(self.client, self.table)
  if not desc then return nil, err end
  return true
end

-- The checkpoint table lives beside the log table: the same client (every
-- lease request names its table).
function _M:_leases_client()
  return self.client
end

local function stats_of(self, shard_id)
  local s = self.shard_stats[shard_id]
  if not s then
    s = { records = 0, batches = 0, retries = 0, last_sequence = nil, lag_ms = nil, owned = false }
    self.shard_stats[shard_id] = s
  end
  return s
end

---------------------------------------------------------------------------
-- Leases
---------------------------------------------------------------------------

-- The stream a lease's shard belongs to (leases made before leases named
-- their stream: the stream this consumer found first).
function _M:_stream_of(lease)
  return lease.stream or self.first_arn or self.stream_arn
end

-- Creates the leases of new shards of the stream `arn`, each with where it
-- starts, decided from the shard tree as the Kinesis Client Library does,
-- so that workers that start together decide alike:
-- - a shard whose parent has a lease that was read is a child born after
--   the group started: it starts at its oldest record, or what was written
--   to it before a worker looked would be lost;
-- - so does every shard of a stream that replaced one the group read
--   before (a lease of another stream exists);
-- - any other shard starts at `start`; with "latest", a shard that is
--   already closed has nothing to come: its lease is finished at once
--   ("skipped"), and its children start at "latest" too.
function _M:_create_leases(lc, shards, existing, arn)
  local latest = STARTS[self.start] == "LATEST"
  local newer_stream = false
  for _, lease in pairs(existing) do
    if self:_stream_of(lease) ~= arn then newer_stream = true break end
  end
  for _, shard in ipairs(shards) do
    local parent = shard.ParentShardId and existing[shard.ParentShardId]
    local start = ((parent and not parent.skipped) or newer_stream) and "TRIM_HORIZON" or STARTS[self.start]
    local closed = shard_reader.is_closed(shard)
    local skipped = latest and start == "LATEST" and closed
    local ok, err = leases.ensure(lc, self.table, self.group, shard, start, skipped, arn)
    if not ok then return nil, err end
    -- For the children that follow in this pass (another worker may have
    -- made the lease first: it decided the same from the same tree).
    existing[shard.ShardId] = existing[shard.ShardId] or { sk = shard.ShardId, skipped = skipped or nil, stream = arn }
    self.known[shard.ShardId] = true
  end
  return true
end

-- Makes the leases of the shards of stream `arn` that have none yet.
function _M:_discover_stream(arn)
  local new_shards, desc = shard_reader.new_shards(self.client, arn, self.known)
  if not new_shards then return nil, desc end
  self.stream_created[arn] = desc.CreationRequestDateTime
  local lc = self:_leases_client()
  if #new_shards > 0 then
    local existing, rerr = leases.read_all(lc, self.table, self.group)
    if not existing then return nil, rerr end
    local ok, eerr = self:_create_leases(lc, new_shards, existing, arn)
    if not ok then return nil, eerr end
  end
  return true
end

-- Looks up the table's stream (its ARN changes when the stream is disabled
-- and enabled again, or the table deleted and made again) and the shards
-- without a lease.
function _M:_discover(now)
  local arn, err = self.client:latest_stream_arn()
  if not arn then return nil, err end
  local previous = self.stream_arn
  if previous and arn ~= previous then
    -- The shards the old stream grew since we last looked get leases too:
    -- its records are read to their end (the stream is readable for 24
    -- hours after it was replaced), before the new stream's.
    local ok, perr = self:_discover_stream(previous)
    if not ok and perr.code ~= "ResourceNotFoundException" then return nil, perr end
    self.stream_changes = self.stream_changes + 1
    logger.log("warn", str_format("stream: the stream of table %s changed from %s to %s (its stream was "
      .. "disabled and enabled again, or the table made again); the old stream is read to its end, then "
      .. "the new one from its oldest record. Records written while the table had no stream are in neither",
      tostring(self.client.table), previous, arn))
  end
  self.stream_arn = arn
  self.first_arn = self.first_arn or arn
  local ok, derr = self:_discover_stream(arn)
  if not ok then return nil, derr end
  self.next_discovery = now + self.discovery_interval
  return true
end

function _M:_drop(shard_id, why)
  if self.owned[shard_id] then
    logger.log("info", str_format("stream: %s no longer works shard %s (%s)", self.worker, shard_id, why))
  end
  self.owned[shard_id] = nil
  stats_of(self, shard_id).owned = false
end

function _M:_adopt(lease)
  -- renewed_at: when our last write to the lease (take, renew, checkpoint)
  -- was sent; it bumped the counter then, at the latest.
  local shard_id = lease.sk
  local st = { lease = lease, arn = self:_stream_of(lease), pending = {}, failures = 0, retry_at = 0,
               renewed_at = self.now() }
  -- The shard is read from the lease's position; what a trim passed over
  -- is judged before its records are handed over.
  st.reader = shard_reader.new(self.client, st.arn, shard_id, {
    position = function() return self:_position(st) end,
    on_trimmed = function(records, trimmed) return self:_judge_trim(shard_id, st, records, trimmed) end,
  })
  self.owned[shard_id] = st
  self.held[lease.sk] = true
  stats_of(self, lease.sk).owned = true
  logger.log("info", str_format("stream: %s works shard %s", self.worker, lease.sk))
end

-- A lease in our worker name holds another instance's token although this
-- instance worked the shard: a second consumer runs under our worker_id.
-- Said loudly, once per shard and instance; from then on this instance
-- takes such leases only once they have expired.
function _M:_conflict(shard_id, lease)
  local key = shard_id .. " " .. tostring(lease.token)
  if self.conflicts_seen[key] then return end
  self.conflicts_seen[key] = true
  self.worker_conflicts = self.worker_conflicts + 1
  logger.log("error", str_format("stream: worker_id %s is used by two consumers at once: shard %s was taken "
    .. "by instance %s while this instance (%s) worked it; give every consumer a worker_id of its own",
    self.worker, shard_id, tostring(lease.token), self.token))
end

-- Takes up a lease already in our worker name that we do not work yet:
-- handed over to us (no token), or left by an earlier instance under the
-- same worker_id (restarted at once: no waiting for the lease to expire).
-- A lease another instance took from us, or any in our name once we know
-- of such an instance, waits until it has expired. Returns true, or nil, err.
function _M:_take_up(lc, lease, now)
  if leases.foreign_token(lease, self.me) then
    if self.held[lease.sk] then self:_conflict(lease.sk, lease) end
    if self.worker_conflicts > 0 and not self.watcher.expired(lease, now) then return true end
    logger.log("warn", str_format("stream: %s takes up shard %s from instance %s of the same worker_id (a "
      .. "restart?); if that instance still runs, two consumers share this worker_id", self.worker, lease.sk,
      tostring(lease.token)))
  end
  local taken, err = leases.take(lc, self.table, self.group, lease, self.me)
  if taken then self:_adopt(taken) elseif taken == nil then return nil, err end
  return true
end

-- Between batches: heartbeat our leases, hand over those asked for, drop
-- those lost, then take or ask for our share.
function _M:_sync(now)
  local lc = self:_leases_client()
  if now >= self.next_discovery then
    local ok, err = self:_discover(now)
    if not ok then
      -- Before any stream is known there is nothing to work. After, the
      -- shards in hand go on (the table may be gone, its stream still
      -- readable), and the look is tried again later.
      if not self.stream_arn then return nil, err end
      logger.log("error", "stream: looking for the table's stream and shards: " .. tostring(err))
      self.next_discovery = now + self.discovery_interval
    end
  end
  local all, err = leases.read_all(lc, self.table, self.group)
  if not all then return nil, err end
  self.watcher.observe(all, now)
  for shard_id, st in pairs(self.owned) do
    local current = all[shard_id]
    if not current or current.owner ~= self.worker then
      self:_drop(shard_id, "lease taken")
    elseif leases.foreign_token(current, self.me) then
      self:_conflict(shard_id, current)
      self:_drop(shard_id, "lease taken by another instance under the same worker_id")
    elseif current.wanted_by then
      leases.release(lc, self.table, self.group, current, self.me, current.wanted_by)
      self:_drop(shard_id, "handed to " .. tostring(current.wanted_by))
    else
      local renewed, rerr = leases.renew(lc, self.table, self.group, current, self.me)
      if renewed then
        st.lease, all[shard_id], st.renewed_at = renewed, renewed, now
      elseif renewed == false then
        self:_drop(shard_id, "lease lost")
      else
        return nil, rerr
      end
    end
  end
  -- Leases already in our name that we do not work yet: handed over to us
  -- by a busier worker, or ours before a restart under the same worker_id.
  for shard_id, lease in pairs(all) do
    if lease.owner == self.worker and not self.owned[shard_id] and lease.checkpoint ~= leases.SHARD_END then
      local ok, terr = self:_take_up(lc, lease, now)
      if not ok then return nil, terr end
      if self.owned[shard_id] then all[shard_id] = self.owned[shard_id].lease end
    end
  end
  local plan = leases.plan(all, function(lease) return self.watcher.expired(lease, now) end, self.worker)
  for _, lease in ipairs(plan.take) do
    local taken, terr = leases.take(lc, self.table, self.group, lease, self.me)
    if taken then self:_adopt(taken) elseif taken == nil then return nil, terr end
  end
  if plan.request then leases.request(lc, self.table, self.group, plan.request, self.worker) end
  self.next_sync = now + self.lease_duration / 3
  return true
end

---------------------------------------------------------------------------
-- Working a shard
---------------------------------------------------------------------------

-- Where a shard's reading goes on: after its checkpoint, else at its pinned
-- start, else at the lease's start.
function _M:_position(st)
  local cp = st.lease.checkpoint
  if cp == nil then
    local at = st.lease.start_at
    if at then return "AT_SEQUENCE_NUMBER", at end
    -- Leases made before they carried their start fall back on the option.
    return st.lease.start or STARTS[self.start]
  end
  return "AFTER_SEQUENCE_NUMBER", cp
end

-- One write to a lease we hold (leases.checkpoint or leases.pin_start):
-- true; false when the lease was lost (the shard is dropped); or nil, err.
function _M:_write_lease(shard_id, st, write, sequence, lost)
  local sent_at = self.now()
  local updated, err = write(self:_leases_client(), self.table, self.group, st.lease, self.me, sequence)
  if updated then
    st.lease, st.renewed_at = updated, sent_at
    return true
  end
  if updated == false then
    self:_drop(shard_id, lost)
    return false
  end
  return nil, err
end

-- Stores a checkpoint while we still own the lease. False when it was lost.
function _M:_checkpoint(shard_id, st, sequence)
  return self:_write_lease(shard_id, st, leases.checkpoint, sequence, "lease lost before its checkpoint")
end

local function remove_first(list, n)
  local rest = {}
  for i = n + 1, #list do rest[#rest + 1] = list[i] end
  return rest
end

local function count_gap(self, shard_id)
  local s = stats_of(self, shard_id)
  s.gaps = (s.gaps or 0) + 1
  metrics.inc("dynlog_consumer_gaps_total", 1, self.group)
end

-- How long DynamoDB Streams keeps a record, and the part of it a stream
-- must be younger than for a TrimmedDataAccessException to prove false:
-- an hour less, for clocks that disagree.
local RETENTION, CLOCK_MARGIN = 24 * 3600, 3600

-- Sequence numbers are decimal strings of up to 40 digits: compare them
-- as numbers, without converting.
local function sequence_le(a, b)
  if #a ~= #b then return #a < #b end
  return a <= b
end

-- When the stream was made (seconds), as DescribeStream says; nil, err.
function _M:_stream_created(arn)
  local created = self.stream_created[arn]
  if created then return created end
  local desc, err = self.client:describe_stream(arn)
  if not desc then return nil, err end
  self.stream_created[arn] = desc.CreationRequestDateTime
  return desc.CreationRequestDateTime
end

-- TrimmedDataAccessException (from GetShardIterator or GetRecords): the
-- stream says our position is older than the records it keeps (24 hours).
-- The shard reader goes on from the oldest record kept and hands the first
-- page read there, with the position it passed over (`trimmed`: after the
-- checkpoint, or at the pinned start), to _judge_trim, which skips what the
-- checkpoint covers and judges whether anything was lost.
--
-- The first page from the oldest record kept, after a trim. Nothing can have
-- been lost when
-- - the stream is younger than its retention (less CLOCK_MARGIN): none of
--   its records can have been trimmed for age (DynamoDB Local answers
--   TrimmedDataAccessException on brand-new streams), or
-- - the oldest record kept is at or before our position (the checkpoint,
--   or the pinned start): the trim did not reach past it.
-- Otherwise records between our position and the oldest kept may have been
-- trimmed unread: a gap, logged at error and counted. Records the
-- checkpoint covers are dropped from the page either way. Returns true and
-- the records to hand over, or nil, err.
function _M:_judge_trim(shard_id, st, records, trimmed)
  local bound = trimmed.after or trimmed.at
  local first = records[1] and records[1].dynamodb.SequenceNumber
  local created, err = self:_stream_created(st.arn)
  if not created then return nil, err end
  local young = type(created) == "number" and self.now() - created < RETENTION - CLOCK_MARGIN
  local covered = bound ~= nil and first ~= nil and sequence_le(first, bound)
  if young or covered then
    logger.log("info", str_format("stream: shard %s: TrimmedDataAccessException, but nothing after %s was "
      .. "trimmed (%s); reading goes on after it", shard_id, tostring(bound or "the shard's start"),
      young and "the stream is younger than 24 hours" or "the oldest record kept is not after it"))
  else
    logger.log("error", str_format("stream: shard %s: records after %s were trimmed (older than 24 hours); "
      .. "resuming at the oldest record kept (%s): the events between are lost to this consumer",
      shard_id, tostring(bound or "the shard's start"), tostring(first or "none yet")))
    count_gap(self, shard_id)
  end
  if not bound then return records end
  local kept = {}
  for _, r in ipairs(records) do
    local sequence = r.dynamodb.SequenceNumber
    -- After the checkpoint; from the pinned start on.
    local wanted
    if trimmed.after then wanted = not sequence_le(sequence, bound) else wanted = sequence_le(bound, sequence) end
    if wanted then kept[#kept + 1] = r end
  end
  return kept
end

-- GetShardIterator says the shard does not exist. If the stream no longer
-- lists it, it was trimmed away whole (closed over 24 hours ago): finish
-- it as read to its end, so that its children can start, and report the
-- gap. So too when its stream, a former stream of the table, is gone.
-- Otherwise (the table's current stream is gone, say) the error stands.
function _M:_shard_gone(shard_id, st, err)
  local desc, derr = self.client:describe_stream(st.arn)
  if not desc then
    if derr.code ~= "ResourceNotFoundException" or st.arn == self.stream_arn then return nil, derr end
    logger.log("error", str_format("stream: shard %s is gone with its stream %s (replaced more than 24 hours "
      .. "ago); records after checkpoint %s are lost to this consumer", shard_id, st.arn,
      tostring(st.lease.checkpoint)))
    count_gap(self, shard_id)
    st.pending, st.closed = {}, true
    return true
  end
  for _, shard in ipairs(desc.Shards) do
    if shard.ShardId == shard_id then return nil, err end
  end
  logger.log("error", str_format("stream: shard %s is gone from the stream (trimmed after 24 hours); records "
    .. "after checkpoint %s are lost to this consumer", shard_id, tostring(st.lease.checkpoint)))
  count_gap(self, shard_id)
  st.pending, st.closed = {}, true
  return true
end

-- Fetches the next page of a shard into st.pending. Returns true, or nil, err.
function _M:_fetch(shard_id, st)
  local reader = st.reader
  if not reader.iterator then
    local ok, how = reader:open()
    if not ok then
      if how.code == "ResourceNotFoundException" then return self:_shard_gone(shard_id, st, how) end
      return nil, how
    end
    -- A checkpoint older than the stream keeps: the reader resumed at the
    -- oldest record kept, read from the next round on.
    if how == "trimmed" then return true end
  end
  local records, err = reader:read(self.batch_size)
  if not records then return nil, err end
  for _, r in ipairs(records) do r.eventSourceARN = r.eventSourceARN or st.arn end
  st.pending = records
  st.closed = reader.closed
  return self:_pin_start(shard_id, st)
end

-- A lease read from "latest" has no position of its own until its first
-- checkpoint: if its first records failed, or it changed hands, the next
-- "latest" would pass them by. Their position is stored before they are
-- handed over. Returns true, or nil, err.
function _M:_pin_start(shard_id, st)
  local lease, first = st.lease, st.pending[1]
  if not first or lease.checkpoint ~= nil or lease.start_at ~= nil
      or (lease.start or STARTS[self.start]) ~= "LATEST" then
    return true
  end
  local pinned, err = self:_write_lease(shard_id, st, leases.pin_start, first.dynamodb.SequenceNumber,
    "lease lost before its start was pinned")
  if pinned == nil then return nil, err end
  if not pinned then st.pending = {} end -- not ours to hand over
  return true
end

-- The position in batch of the first record the handler reported failed.
local function first_failure(batch, result)
  local failures = type(result) == "table" and result.batchItemFailures
  if type(failures) ~= "table" or #failures == 0 then return nil end
  local failed = {}
  for _, f in ipairs(failures) do
    -- An entry without an itemIdentifier names nothing: as Lambda does,
    -- take the whole batch as failed.
    if type(f) ~= "table" or f.itemIdentifier == nil then return 1 end
    failed[tostring(f.itemIdentifier)] = true
  end
  for i, record in ipairs(batch) do
    if failed[tostring(record.dynamodb and record.dynamodb.SequenceNumber)] then return i end
  end
  return 1 -- names no record of ours: retry all of it
end

local function handler_outcome(ok, result, err)
  if not ok then return false, errors.new("handler_error", tostring(result)) end
  if result == false or (result == nil and err ~= nil) then
    return false, errors.is(err) and err or errors.new("handler_error", tostring(err))
  end
  return true
end

function _M:_succeeded(shard_id, st, batch, count)
  local last = batch[count]
  local ok, err = self:_checkpoint(shard_id, st, last.dynamodb.SequenceNumber)
  if not ok then return ok, err end
  st.pending = remove_first(st.pending, count)
  local s = stats_of(self, shard_id)
  s.records, s.batches = s.records + count, s.batches + 1
  metrics.inc("dynlog_consumer_records_total", count, self.group)
  metrics.inc("dynlog_consumer_batches_total", 1, self.group)
  s.last_sequence = last.dynamodb.SequenceNumber
  return true
end

-- The batch at the front of a split plan is done with (handled, or given
-- up on): the next planned size comes up; none left, batches are full again.
local function plan_done(st)
  if not st.plan then return end
  table_remove(st.plan, 1)
  if #st.plan == 0 then st.plan = nil end
end

-- How far behind this shard is: the age of the oldest record not handled
-- yet, 0 once it is caught up. Kept current while a batch keeps failing.
function _M:_update_lag(shard_id, st)
  local s = stats_of(self, shard_id)
  local head = st.pending[1]
  if not head then
    s.lag_ms = 0
    metrics.set("dynlog_consumer_lag_seconds", 0, self.group)
    return
  end
  local created = head.dynamodb and head.dynamodb.ApproximateCreationDateTime
  if type(created) == "number" then
    s.lag_ms = math_max(0, math_floor((self.now() - created) * 1000))
    metrics.set("dynlog_consumer_lag_seconds", s.lag_ms / 1000, self.group)
  end
end

function _M:_failed(shard_id, st, batch, err)
  local s = stats_of(self, shard_id)
  s.retries = s.retries + 1
  metrics.inc("dynlog_consumer_handler_errors_total", 1, self.group)
  -- As Lambda does it: a failing batch is split in two and each half tried
  -- on its own, the first half first, down to single records; a split does
  -- not count against max_retries, so that one poison record never takes
  -- good ones with it. st.plan holds the sizes of the batches to come.
  if self.bisect_on_error and #batch > 1 then
    local first = math_ceil(#batch / 2)
    local plan = st.plan or {}
    if st.plan then table_remove(plan, 1) end
    table_insert(plan, 1, #batch - first)
    table_insert(plan, 1, first)
    st.plan = plan
    logger.log("warn", str_format("stream: shard %s: batch of %d failed, trying it in halves: %s", shard_id,
      #batch, tostring(err)))
    st.retry_at = self.now() + retry.delay(1, self.retry_base_delay, self.retry_max_delay)
    return true
  end
  st.failures = st.failures + 1
  logger.log("warn", str_format("stream: shard %s: batch of %d failed (attempt %d): %s", shard_id, #batch,
    st.failures, tostring(err)))
  if self.max_retries and st.failures > self.max_retries then
    if self.on_failure then pcall(self.on_failure, { Records = batch }, err, shard_id) end
    logger.log("error", str_format("stream: shard %s: gave up on %d record(s) after %d attempts", shard_id,
      #batch, st.failures))
    local ok, cerr = self:_checkpoint(shard_id, st, batch[#batch].dynamodb.SequenceNumber)
    if not ok then return ok, cerr end
    st.pending = remove_first(st.pending, #batch)
    st.failures = 0
    plan_done(st)
    return true
  end
  st.retry_at = self.now() + retry.delay(st.failures, self.retry_base_delay, self.retry_max_delay)
  return true
end

-- One batch of one shard. Returns the number of records handed over, or
-- nil, err.
function _M:_work(shard_id, st)
  if #st.pending == 0 then
    if st.closed then
      local ok, err = self:_checkpoint(shard_id, st, leases.SHARD_END)
      if ok == nil then return nil, err end
      if not ok then return 0 end
      leases.release(self:_leases_client(), self.table, self.group, st.lease, self.me)
      self:_drop(shard_id, "shard read to its end")
      self.next_discovery, self.next_sync = 0, 0 -- its children may start now
      return 0
    end
    local ok, err = self:_fetch(shard_id, st)
    if not ok then return nil, err end
    if #st.pending == 0 then
      if not st.closed then self:_update_lag(shard_id, st) end -- caught up
      return 0
    end
  end
  self:_update_lag(shard_id, st)
  local size = math_min(st.plan and st.plan[1] or #st.pending, #st.pending)
  local batch = {}
  for i = 1, size do batch[i] = st.pending[i] end
  -- Still ours? Another worker takes a lease only after seeing its counter
  -- unchanged for a whole lease_duration, so a lease we wrote less than a
  -- third of that ago cannot have moved: a busy shard, checkpointed after
  -- every batch, needs no renewal of its own. Otherwise renew right before
  -- the handler, so that a lease taken meanwhile never has two workers in it.
  local sent_at = self.now()
  if sent_at - st.renewed_at >= self.lease_duration / 3 then
    local renewed, rerr = leases.renew(self:_leases_client(), self.table, self.group, st.lease, self.me)
    if renewed == false then self:_drop(shard_id, "lease lost") return 0 end
    if not renewed then return nil, rerr end
    st.lease, st.renewed_at = renewed, sent_at
  end
  logger.log("debug", str_format("stream: shard %s: %d record(s) from %s", shard_id, size,
    tostring(batch[1].dynamodb.SequenceNumber)))
  local ok, result, herr = pcall(self.handler, { Records = batch }, shard_id)
  local succeeded, err = handler_outcome(ok, result, herr)
  if not succeeded then
    local recorded, ferr = self:_failed(shard_id, st, batch, err)
    if recorded == nil then return nil, ferr end
    return 0
  end
  local failed_at = first_failure(batch, result)
  if not failed_at then
    local done, cerr = self:_succeeded(shard_id, st, batch, size)
    if done == nil then return nil, cerr end
    if done then
      st.failures = 0
      plan_done(st)
    end
    return size
  end
  if failed_at > 1 then
    local done, cerr = self:_succeeded(shard_id, st, batch, failed_at - 1)
    if done == nil then return nil, cerr end
    if not done then return 0 end
    st.failures = 0
    -- What is left of the planned batch starts at the failed record.
    if st.plan then st.plan[1] = size - failed_at + 1 end
  end
  local rest = {}
  for i = failed_at, size do rest[#rest + 1] = batch[i] end
  local recorded, ferr = self:_failed(shard_id, st, rest, errors.new("batch_item_failures",
    "handler reported record " .. tostring(rest[1].dynamodb.SequenceNumber) .. " failed"))
  if recorded == nil then return nil, ferr end
  return failed_at - 1
end

---------------------------------------------------------------------------
-- The loop
---------------------------------------------------------------------------

--- poll_once() -> the number of records handed over this round, or nil, err.
-- One round: leases when due, then one batch from every shard we hold whose
-- retry time has come. For hosts that schedule their own loop.
function _M:poll_once()
  local now = self.now()
  if now >= self.next_sync then
    local ok, err = self:_sync(now)
    if not ok then return nil, err end
  end
  -- A failure on one shard (a throttled GetRecords, say) must not hold the
  -- other shards back: they are worked, and the error is reported after.
  local handed, first_err = 0, nil
  for shard_id, st in pairs(self.owned) do
    if self.now() >= st.retry_at then
      local n, err = self:_work(shard_id, st)
      if n then
        handed = handed + n
      elseif not first_err then
        -- The same error, saying which shard it came from.
        first_err = errors.is(err)
          and errors.new(err.code, "shard " .. shard_id .. ": " .. tostring(err.message), { retryable = err.retryable })
          or errors.new("stream", "shard " .. shard_id .. ": " .. tostring(err))
      end
    end
  end
  if first_err and handed == 0 then return nil, first_err end
  if first_err then logger.log("error", "stream: " .. tostring(first_err)) end
  return handed
end

--- run() -> true once stopped (by stop(), SIGINT, SIGTERM, SIGHUP or SIGPIPE); leases are
-- handed back on the way out. Errors of a round are logged and retried
-- after a pause.
function _M:run()
  core.signal_catch()
  local pause = 0
  while not self.stopping and not core.signal_caught() do
    local n, err = self:poll_once()
    if not n then
      pause = pause + 1
      logger.log("error", "stream: " .. tostring(err))
      self.sleep(retry.delay(pause, self.poll_interval, 10))
    else
      pause = 0
      if n == 0 then self.sleep(self.poll_interval) end
    end
  end
  self:release()
  core.signal_restore()
  return true
end

--- stop(): run() returns after the current round.
function _M:stop()
  self.stopping = true
end

--- release(): hands back every lease this consumer holds, so that other
-- workers take them at once instead of waiting for them to expire.
function _M:release()
  local lc = self:_leases_client()
  for shard_id, st in pairs(self.owned) do
    leases.release(lc, self.table, self.group, st.lease, self.me)
    self:_drop(shard_id, "released")
  end
end

--- stats() -> {worker=, token=, worker_conflicts=, stream_arn=, stream_changes=, shards = {<shard id> =
-- {records=, batches=, last_sequence=, lag_ms=, retries=, owned=, gaps=}}}
function _M:stats()
  local shards = {}
  for id, s in pairs(self.shard_stats) do
    shards[id] = { records = s.records, batches = s.batches, last_sequence = s.last_sequence, lag_ms = s.lag_ms,
                   retries = s.retries, owned = s.owned, gaps = s.gaps }
  end
  return { worker = self.worker, token = self.token, worker_conflicts = self.worker_conflicts,
           stream_arn = self.stream_arn, stream_changes = self.stream_changes, shards = shards }
end

return _M
