--- The handler: EventBridge events → read models, as the original examples'
-- handler does it.
--
--   local result, err = require("dynlog.pipeline.handler").project(c, event, {
--     table = "core",
--     key = function(detail) return pk, sk end,      -- optional
--     handlers = { signup = function(state, ev) return { name = ev.payload.name } end, ... },
--   })
--
-- For the stream the event names, the read-model item's `version` (the sort
-- key of the last event applied) is read with a consistent read; every
-- event after it is read from the log and given to its handler in order;
-- the new state is written once, with a condition on the version it
-- replaces (attribute_not_exists for the first). So a delivery applies
-- whatever the read model has not seen yet: duplicates and deliveries out of
-- order leave it identical, and a partial detail needs nothing more than its
-- key. A delivery whose event the read model has already seen costs one read.
--
-- Two shortcuts save requests without weakening either rule (the log is
-- the truth; every write is conditional on the version it replaces):
-- - Each process keeps the {version, state} of the read models it last
--   wrote (spec.cache entries, default 10000; false: none; none either with
--   spec.deleted, which may replace a read model by another state at the
--   same version). A delivery of
--   an event after the cached version starts from it: the Query of the log
--   after that version and the conditional write, no GetItem. If the read
--   model moved meanwhile (another process, a deletion), the condition
--   fails, the entry is dropped and the round is made again from a
--   consistent read. A delivery of an event at or before the cached version
--   (a duplicate, or one a previous round caught up with) is not answered
--   from the cache: it reads the read model, as before, so a read model
--   deleted by hand (to rebuild it) is projected again.
-- - Inside nginx, deliveries of one read model that arrive while a
--   projection of it runs in the same worker wait for it instead of making
--   their own rounds: when it ends at a version at or past theirs (it wrote
--   it, or read it, while they waited), they are done; otherwise one of
--   them makes the next round, and the others wait for that one.
--
-- Numbers are read exactly, whatever the client's `numbers` option: a Lua
-- number when one holds the N exactly, else a dynlog.number with its text.
-- So a number keeps its type and its digits on its way from the log, or
-- from the read model, back into the read model.
local core = require "dynlog.core"
local errors = require "dynlog.errors"
local eventkey = require "dynlog.client.eventkey"
local logger = require "dynlog.logger"
local metrics = require "dynlog.base.metrics"
local nginx = require "dynlog.base.nginx"
local options = require "dynlog.base.options"
local tables = require "dynlog.client.tables"

local error, getmetatable, pairs, pcall, require, setmetatable, tonumber, tostring, type =
  error, getmetatable, pairs, pcall, require, setmetatable, tonumber, tostring, type
local array, attribute_map = core.array, core.attribute_map

local _M = {}

-- Another projection of the same stream won a write: read and try again.
local MAX_ROUNDS = 5

local NUMBERS = "exact"


-- What a round returns when another projection wrote first: never given
-- to a caller.
local MOVED_ON = {}

local SPEC = options.known{ "table", "handlers", "key", "deleted", "cache" }

-- Read models cached per process, at most this many per client and table.
local DEFAULT_CACHE = 10000

-- How long a delivery waits for the projection of its read model that runs
-- before it (seconds); then it makes its own round.
local WAIT_SECONDS = 30

local function check_spec(spec)
  if type(spec) ~= "table" then error("project: spec must be a table", 3) end
  options.check(spec, SPEC, "project: spec", 3)
  if type(spec.table) ~= "string" then error("project: spec.table must be the read-model table name", 3) end
  if type(spec.handlers) ~= "table" then error("project: spec.handlers must map event types to functions", 3) end
  if spec.key ~= nil and type(spec.key) ~= "function" then error("project: spec.key must be a function", 3) end
  if spec.deleted ~= nil and type(spec.deleted) ~= "function" then
    error("project: spec.deleted must be a function", 3)
  end
  local cache = spec.cache
  if cache ~= nil and cache ~= false and not (type(cache) == "number" and cache >= 1 and cache % 1 == 0) then
    error("project: spec.cache must be a number of read models (>= 1) or false", 3)
  end
end

---------------------------------------------------------------------------
-- The cache of read models this process wrote, and projections in flight
---------------------------------------------------------------------------

-- client → table → {entries = {[key] = {version=, state=}}, count = n}
local caches = setmetatable({}, { __mode = "k" })

local function cache_of(c, spec)
  local limit = spec.cache
  -- spec.deleted may replace a read model by a state at the same version:
  -- a write conditional on the version alone could not tell it from the
  -- cached one.
  if limit == false or spec.deleted then return nil end
  local by_table = caches[c]
  if not by_table then
    by_table = {}
    caches[c] = by_table
  end
  local cache = by_table[spec.table]
  if not cache then
    cache = { entries = {}, count = 0 }
    by_table[spec.table] = cache
  end
  cache.limit = limit or DEFAULT_CACHE
  return cache
end

-- Takes the entry out: a round puts it back only once it has succeeded,
-- so an error or a handler that raises leaves nothing cached.
local function cache_take(cache, key)
  if not cache then return nil end
  local entry = cache.entries[key]
  if entry then
    cache.entries[key] = nil
    cache.count = cache.count - 1
  end
  return entry
end

-- A copy of the state that no handler shares: handlers get a shallow copy
-- of the state and may change its nested tables in place.
local function deep_copy(t)
  if type(t) ~= "table" then return t end
  local out = {}
  for k, v in pairs(t) do out[k] = deep_copy(v) end
  return setmetatable(out, getmetatable(t))
end

local function cache_put(cache, key, version, state)
  if not cache or version == nil or state == nil then return end
  local entries = cache.entries
  if not entries[key] then
    if cache.count >= cache.limit then
      -- Full: start again (the entries are only a head start).
      entries = {}
      cache.entries, cache.count = entries, 0
    end
    cache.count = cache.count + 1
  end
  entries[key] = { version = version, state = deep_copy(state) }
end

-- Projections in flight in this nginx worker: client → key → flight.
local flights = setmetatable({}, { __mode = "k" })
local semaphore -- ngx.semaphore, inside nginx (false elsewhere)
-- The phases where a request may wait on a semaphore.
local WAIT_PHASES = { rewrite = true, server_rewrite = true, access = true, content = true, timer = true }
local function can_wait()
  if semaphore == nil then
    semaphore = false
    if nginx.in_nginx() then
      local ok, sema = pcall(require, "ngx.semaphore")
      if ok then semaphore = sema end
    end
  end
  return semaphore and WAIT_PHASES[nginx.in_nginx().get_phase()] and semaphore
end

-- The detail of an EventBridge event (its `detail`, decoded if it is text).
local function detail_of(event)
  local detail = type(event) == "table" and event.detail
  if type(detail) == "string" then
    local decoded, _, message = core.json_decode(detail)
    if decoded == nil then
      return nil, errors.new("invalid_argument", "event.detail is not JSON: " .. tostring(message))
    end
    detail = decoded
  end
  if type(detail) ~= "table" or type(detail.key) ~= "table" or type(detail.key.pk) ~= "string" then
    return nil, errors.new("invalid_argument", "event has no detail with a key.pk")
  end
  return detail
end

local function read_state(c, table_name, pk, sk)
  local resp, err = c:_request("dynamodb", "GetItem", { TableName = table_name,
    Key = attribute_map({ pk = pk, sk = sk }), ConsistentRead = true }, true, NUMBERS)
  if not resp then return nil, err end
  return resp.Item or false
end

local function write_state(c, table_name, state, previous_version)
  local params = { TableName = table_name, Item = attribute_map(state) }
  if previous_version == nil then
    params.ConditionExpression = "attribute_not_exists(pk)"
  else
    params.ConditionExpression = "#version = :previous"
    params.ExpressionAttributeNames = { ["#version"] = "version" }
    params.ExpressionAttributeValues = attribute_map({ [":previous"] = previous_version })
  end
  local _, err = c:_request("dynamodb", "PutItem", params)
  if err then return nil, err end
  return true
end

local rounds -- below

local function copy(t)
  if not t then return nil end
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  return out
end

-- Has the read model (at `version`) already seen the delivered event?
local function seen(c, version, delivered_sk)
  if version == nil or delivered_sk == nil then return false end
  if c.sort_key == "version" then
    local v, d = tonumber(version), tonumber(delivered_sk)
    return v ~= nil and d ~= nil and d <= v
  end
  return type(version) == "string" and type(delivered_sk) == "string" and delivered_sk <= version
end

-- One round: read the state, apply what follows it, write the new state
-- once. Returns the result, or nil, err; err is MOVED_ON when another
-- writer moved the version.
local function round(c, spec, log, id, pk, sk, delivered_sk, result, cache, key)
  local entry = cache_take(cache, key)
  local state, version
  if entry and delivered_sk ~= nil and not seen(c, entry.version, delivered_sk) then
    -- The read model as this process last wrote it: the write below is
    -- conditional on that version, which proves it still current.
    state, version = deep_copy(entry.state), entry.version
    result.version, result.state = version, state
  else
    local item, err = read_state(c, spec.table, pk, sk)
    if item == nil then return nil, err end
    state = item or nil
    version = state and state.version
    result.version, result.state = version, state
    -- A delivery that an earlier one caught up with (deliveries run apart,
    -- and each applies all it finds) has nothing left to do: skip the query.
    if seen(c, version, delivered_sk) then
      cache_put(cache, key, version, state)
      return result
    end
  end
  local events, qerr = c:query(log, id, { after = version, consistent = true, numbers = NUMBERS })
  if not events then return nil, qerr end
  local previous, applied_version = version, version
  -- One write for all the events applied, on the condition that the read
  -- model is still at the version they were applied to.
  local function flush()
    if applied_version == version then return true end
    local ok, werr = write_state(c, spec.table, state, version)
    if ok then return true end
    if werr.code == "ConditionalCheckFailedException" then
      return nil, MOVED_ON
    end
    return nil, werr
  end
  for ev in events do
    if c.sort_key == "version" and ev.sk ~= (previous or 0) + 1 then
      local flushed, ferr = flush() -- keep what came before the gap
      if not flushed then return nil, ferr end
      return nil, errors.new("gap", ("%s: version %s follows %s; the events between are missing")
        :format(ev.pk, tostring(ev.sk), tostring(previous or 0)))
    end
    previous = ev.sk
    local apply = spec.handlers[ev.type]
    if not apply then
      logger.log("warn", ("handler: no handler for event type %q (%s %s); skipped")
        :format(tostring(ev.type), ev.pk, tostring(ev.sk)))
      result.skipped[#result.skipped + 1] = ev.sk
    else
      local ok, new_state = pcall(apply, copy(state), ev)
      if not ok or type(new_state) ~= "table" then
        -- Keep the events applied before this one, as a write per event
        -- would have, then let the caller see the handler's fault.
        local flushed, ferr = flush()
        if not flushed then
          logger.log("error", ("handler: %s: the events applied before %s %s were not written: %s")
            :format(pk, tostring(ev.type), tostring(ev.sk), tostring(ferr)))
        end
        if not ok then error(new_state, 0) end
        error(("project: the handler of %q must return the new state (a table)"):format(ev.type), 0)
      end
      new_state.pk, new_state.sk, new_state.version = pk, sk, ev.sk
      state, applied_version = new_state, ev.sk
      result.applied = result.applied + 1
    end
  end
  if events.err then return nil, events.err end
  local flushed, ferr = flush()
  if not flushed then return nil, ferr end
  result.version, result.state = applied_version, state
  cache_put(cache, key, applied_version, state)
  return result
end

-- The deletion of a stream (detail.deleted, from its tombstone): the read
-- model is deleted, or replaced by what spec.deleted(state, detail)
-- returns (nil: deleted). Only a read model that reflects no event after
-- the stream's last one (detail.key.sk) is touched: one of a stream opened
-- again and projected further stays. Conditional on the version read, as
-- every write of a read model.
local function deletion_round(c, spec, pk, sk, detail, result)
  local item, err = read_state(c, spec.table, pk, sk)
  if item == nil then return nil, err end
  if not item then return result end
  local version, last = item.version, detail.key.sk
  if version ~= nil and (last == nil or (seen(c, version, last) and version ~= last)) then
    -- The read model has seen events the deleted stream did not have.
    result.version, result.state = version, item
    return result
  end
  local state
  if spec.deleted then
    state = spec.deleted(copy(item), detail)
    if state ~= nil and type(state) ~= "table" then
      error("project: spec.deleted must return the new state (a table) or nil", 0)
    end
  end
  local params = { TableName = spec.table, Key = attribute_map({ pk = pk, sk = sk }) }
  if version == nil then
    params.ConditionExpression = "attribute_not_exists(#version)"
    params.ExpressionAttributeNames = { ["#version"] = "version" }
  else
    params.ConditionExpression = "#version = :previous"
    params.ExpressionAttributeNames = { ["#version"] = "version" }
    params.ExpressionAttributeValues = attribute_map({ [":previous"] = version })
  end
  local operation = "DeleteItem"
  if state then
    state.pk, state.sk, state.version = pk, sk, version
    params.Key, params.Item, operation = nil, attribute_map(state), "PutItem"
  end
  local _, werr = c:_request("dynamodb", operation, params)
  if werr then
    if werr.code == "ConditionalCheckFailedException" then return nil, MOVED_ON end
    return nil, werr
  end
  result.deleted, result.state = state == nil, state
  result.version = state and version or nil
  return result
end

-- Rounds until one succeeds, another writer moving the read model in
-- between making another.
function rounds(c, spec, log, id, pk, sk, detail, cache, key)
  local err
  for _ = 1, MAX_ROUNDS do
    local result
    if detail.deleted == true then
      result, err = deletion_round(c, spec, pk, sk, detail, { applied = 0, skipped = array(), deleted = false })
    else
      result, err = round(c, spec, log, id, pk, sk, detail.key.sk, { applied = 0, skipped = array() }, cache,
        key)
    end
    if result then
      metrics.inc("dynlog_projection_events_applied_total", result.applied, spec.table)
      return result
    end
    if err ~= MOVED_ON then
      metrics.inc("dynlog_projection_errors_total", 1, spec.table)
      return nil, err
    end
    metrics.inc("dynlog_projection_conflicts_total", 1, spec.table)
  end
  metrics.inc("dynlog_projection_errors_total", 1, spec.table)
  return nil, errors.new("conflict", "read model " .. pk .. " kept moving under concurrent projections")
end

--- project(c, event, spec) -> {applied=, version=, state=, skipped=}, or nil, err.
-- c: the client of the log table. spec.key(detail) -> pk, sk of the
-- read-model item (default "<log>#<id>" for both). err.code is "gap" when a
-- version is missing from a version-mode log. For a stream's deletion
-- (detail.deleted), the read model is deleted (result.deleted = true), or
-- spec.deleted(state, detail) gives the state to keep (nil: delete).
function _M.project(c, event, spec)
  check_spec(spec)
  local detail, derr = detail_of(event)
  if not detail then
    metrics.inc("dynlog_projection_errors_total", 1, spec.table)
    return nil, derr
  end
  local log, id = eventkey.parse(detail.key.pk)
  if not log then
    metrics.inc("dynlog_projection_errors_total", 1, spec.table)
    return nil, errors.new("invalid_argument", "detail.key.pk is not <log>#<id>#stream")
  end
  local pk, sk
  if spec.key then pk, sk = spec.key(detail) else pk = log .. "#" .. id end
  sk = sk or pk
  local cache = cache_of(c, spec)
  local key = spec.table .. "\0" .. pk .. "\0" .. sk
  local delivered_sk = detail.key.sk
  if detail.deleted == true then
    -- Whatever the outcome, nothing of the deleted stream stays cached.
    cache_take(cache, key)
    return rounds(c, spec, log, id, pk, sk, detail, nil, nil)
  end
  local sema = can_wait()
  if not sema then return rounds(c, spec, log, id, pk, sk, detail, cache, key) end
  local in_flight = flights[c]
  if not in_flight then
    in_flight = {}
    flights[c] = in_flight
  end
  -- Wait for the projection of this read model that runs, if any; it may
  -- well reach this delivery's version.
  local flight = in_flight[key]
  while flight do
    flight.waiting = flight.waiting + 1
    flight.sema:wait(WAIT_SECONDS)
    local done = flight.result
    if done and delivered_sk ~= nil and seen(c, done.version, delivered_sk) then
      return { applied = 0, skipped = array(), version = done.version, state = done.state }
    end
    if in_flight[key] == flight then break end -- timed out: a round of its own
    flight = in_flight[key]
  end
  flight = { sema = sema.new(), waiting = 0 }
  in_flight[key] = flight
  local ok, result, err = pcall(rounds, c, spec, log, id, pk, sk, detail, cache, key)
  if in_flight[key] == flight then in_flight[key] = nil end
  flight.result = ok and result or nil
  if flight.waiting > 0 then flight.sema:post(flight.waiting) end
  if not ok then error(result, 0) end
  return result, err
end

--- create_table(c, name) -> the table description, or nil, err: a read-model
-- table {pk HASH S, sk RANGE S}, on demand, without a stream. Idempotent.
function _M.create_table(c, name)
  -- Not a tail call: a bad name is blamed on the caller of this function.
  local desc, err = tables.create_string_keyed_table(c, name)
  return desc, err
end

return _M
