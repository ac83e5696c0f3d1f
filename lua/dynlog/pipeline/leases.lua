--- Shard leases and checkpoints of the stream consumer, kept in a DynamoDB
-- table: one item per (group, shard), {pk = group, sk = shard id, stream,
-- owner, token, counter, checkpoint, parent, start, start_at, skipped,
-- wanted_by}.
--
-- The rules, after the Kinesis Client Library's:
-- - a shard is worked only by the owner of its lease: a worker name, and the
--   token of the consumer instance that took it, so that two processes
--   started with the same worker_id never both pass for its owner;
-- - the owner heartbeats by incrementing the counter (conditional on still
--   owning it); a lease whose counter has not moved for lease_duration, as
--   observed by the reader's own clock, is expired and may be taken: no
--   two hosts need agreeing clocks;
-- - to balance, a worker with fewer leases than its share asks a busier one
--   for a lease (wanted_by); the owner hands it over at a batch boundary, so
--   no shard is ever worked by two workers at once;
-- - the checkpoint is written only by the owner, after the work is done;
--   "SHARD_END" marks a closed shard read to its end, which frees its
--   children to start;
-- - `stream` is the ARN of the shard's stream: when a table's stream is
--   replaced (disabled and enabled again, or the table recreated), the new
--   stream's first shards start only once every shard of the older streams
--   is read to its end.
local core = require "dynlog.core"
local tables = require "dynlog.client.tables"

local ipairs, math_ceil, pairs, tostring = ipairs, math.ceil, pairs, tostring
local table_sort = table.sort
local attribute_map = core.attribute_map

local _M = {}

_M.SHARD_END = "SHARD_END"

---------------------------------------------------------------------------
-- The table
---------------------------------------------------------------------------

--- create_table(c, name) -> description, or nil, err. Idempotent.
function _M.create_table(c, name)
  -- Not a tail call: a bad name is blamed on the caller of this function.
  local desc, err = tables.create_string_keyed_table(c, name)
  return desc, err
end

local function conditional(c, operation, params)
  local resp, err = c:_request("dynamodb", operation, params, true)
  if resp then return resp end
  if err.code == "ConditionalCheckFailedException" then return false end
  return nil, err
end

--- All leases of a group: {shard id = lease}, or nil, err.
function _M.read_all(c, table_name, group)
  local leases, start = {}, nil
  repeat
    local resp, err = c:_request("dynamodb", "Query", {
      TableName = table_name, KeyConditionExpression = "pk = :g",
      ExpressionAttributeValues = attribute_map({ [":g"] = group }),
      ConsistentRead = true, ExclusiveStartKey = start and attribute_map(start) or nil,
    }, true)
    if not resp then return nil, err end
    for _, item in ipairs(resp.Items) do leases[item.sk] = item end
    start = resp.LastEvaluatedKey
  until not start
  return leases
end

--- Creates the lease of a shard of the stream `stream` (its ARN) if it has
-- none, with `start`, the iterator type to read it from before any
-- checkpoint ("TRIM_HORIZON" or "LATEST"). `skipped`: a closed shard a
-- "latest" group has nothing to read from, finished at once. Returns true,
-- or nil, err.
function _M.ensure(c, table_name, group, shard, start, skipped, stream)
  local ok, err = conditional(c, "PutItem", {
    TableName = table_name,
    Item = attribute_map({ pk = group, sk = shard.ShardId, stream = stream, counter = 0,
                           parent = shard.ParentShardId, start = start, skipped = skipped or nil,
                           checkpoint = skipped and _M.SHARD_END or nil }),
    ConditionExpression = "attribute_not_exists(pk)",
  })
  if ok == nil then return nil, err end
  return true
end

local function update(c, table_name, group, shard_id, set, condition, values, remove)
  local expr = "SET " .. set
  if remove then expr = expr .. " REMOVE " .. remove end
  return conditional(c, "UpdateItem", {
    TableName = table_name, Key = attribute_map({ pk = group, sk = shard_id }),
    UpdateExpression = expr, ConditionExpression = condition,
    ExpressionAttributeNames = { ["#o"] = "owner", ["#c"] = "counter", ["#t"] = "token" },
    ExpressionAttributeValues = attribute_map(values), ReturnValues = "ALL_NEW",
  })
end

-- `me` in what follows: {worker = <worker id>, token = <this instance's token>}.
-- A write to a lease we own holds only while both are still on it.
local OWNED = "#o = :me AND #t = :token AND #c = :seen"

--- Takes a lease last seen with `counter` (free, expired, or handed over).
-- Returns the new lease, false when someone else moved it first, or nil, err.
function _M.take(c, table_name, group, lease, me)
  local resp, err = update(c, table_name, group, lease.sk, "#o = :me, #t = :token, #c = #c + :one",
    "#c = :seen", { [":me"] = me.worker, [":token"] = me.token, [":one"] = 1, [":seen"] = lease.counter },
    "wanted_by")
  if not resp then return resp, err end
  return resp.Attributes
end

--- Heartbeat: counter + 1 while we still own the lease. Returns the new
-- lease, false when it is no longer ours, or nil, err.
function _M.renew(c, table_name, group, lease, me)
  local resp, err = update(c, table_name, group, lease.sk, "#c = #c + :one", OWNED,
    { [":me"] = me.worker, [":token"] = me.token, [":one"] = 1, [":seen"] = lease.counter })
  if not resp then return resp, err end
  return resp.Attributes
end

-- Sets one attribute of a lease we own (and bumps its counter). Returns
-- the new lease, false when it is no longer ours, or nil, err.
local function set_owned(c, table_name, group, lease, me, attribute, value)
  local resp, err = update(c, table_name, group, lease.sk, attribute .. " = :v, #c = #c + :one", OWNED,
    { [":v"] = value, [":me"] = me.worker, [":token"] = me.token, [":one"] = 1, [":seen"] = lease.counter })
  if not resp then return resp, err end
  return resp.Attributes
end

--- Stores the checkpoint (a sequence number or SHARD_END) of a lease we own.
function _M.checkpoint(c, table_name, group, lease, me, sequence)
  return set_owned(c, table_name, group, lease, me, "checkpoint", sequence)
end

--- Pins where a lease read from "latest" starts: the sequence number of the
-- first record read, so that whoever works it next, before a checkpoint,
-- starts there and not at a later "latest". Like checkpoint.
function _M.pin_start(c, table_name, group, lease, me, sequence)
  return set_owned(c, table_name, group, lease, me, "start_at", sequence)
end

--- Is this lease held by another instance under our own worker name? Its
-- token is not ours. A lease without a token (handed over to us by name,
-- or written before leases carried tokens) is not.
function _M.foreign_token(lease, me)
  return lease.owner == me.worker and lease.token ~= nil and lease.token ~= me.token
end

--- Asks the owner of a lease to hand it over to `worker` at its next batch
-- boundary. Returns true, false when the lease moved meanwhile, or nil, err.
function _M.request(c, table_name, group, lease, worker)
  local resp, err = conditional(c, "UpdateItem", {
    TableName = table_name, Key = attribute_map({ pk = group, sk = lease.sk }),
    UpdateExpression = "SET wanted_by = :me", ConditionExpression = "#c = :seen AND attribute_not_exists(wanted_by)",
    ExpressionAttributeNames = { ["#c"] = "counter" },
    ExpressionAttributeValues = attribute_map({ [":me"] = worker, [":seen"] = lease.counter }),
  })
  if resp == nil then return nil, err end
  return resp ~= false
end

--- Gives a lease we own to `to` (a worker name; nil: to nobody, for whoever
-- comes first). The token goes: the new owner takes the lease up with its own.
function _M.release(c, table_name, group, lease, me, to)
  local set = "#c = #c + :one"
  local values = { [":me"] = me.worker, [":token"] = me.token, [":one"] = 1, [":seen"] = lease.counter }
  local remove = "wanted_by, #t"
  if to then
    set, values[":to"] = set .. ", #o = :to", to
  else
    remove = remove .. ", #o"
  end
  local resp, err = update(c, table_name, group, lease.sk, set, OWNED, values, remove)
  if not resp then return resp, err end
  return resp.Attributes
end

---------------------------------------------------------------------------
-- Who is alive, what is expired, who should take what
---------------------------------------------------------------------------

--- Watches counters: a lease is live while its counter keeps moving.
-- observe(leases, now) records changes; expired(lease, now) is true when its
-- counter has not moved for `duration` seconds of our own clock.
function _M.watcher(duration)
  local seen = {} -- shard id -> {counter=, since=}
  local w = {}
  function w.observe(leases, now)
    for id, lease in pairs(leases) do
      local s = seen[id]
      if not s or s.counter ~= lease.counter then seen[id] = { counter = lease.counter, since = now } end
    end
  end
  function w.expired(lease, now)
    local s = seen[lease.sk]
    return s ~= nil and s.counter == lease.counter and now - s.since >= duration
  end
  return w
end

-- A shard may start once its parent is done: read to SHARD_END, or gone from
-- both the stream and the lease table (trimmed long ago).
local function parent_done(lease, leases)
  local parent = lease.parent and leases[lease.parent]
  return parent == nil or parent.checkpoint == _M.SHARD_END
end

-- The oldest stream (by ARN: the same table's stream ARNs end in the time
-- they were made) that still has a shard not read to its end.
local function oldest_open_stream(leases)
  local oldest
  for _, lease in pairs(leases) do
    if lease.stream and lease.checkpoint ~= _M.SHARD_END and (oldest == nil or lease.stream < oldest) then
      oldest = lease.stream
    end
  end
  return oldest
end

-- A shard without a parent of a newer stream waits for the older streams:
-- their records came first. (Leases made before leases named their stream
-- hold nobody back.)
local function stream_ready(lease, oldest_open)
  return lease.parent ~= nil or lease.stream == nil or oldest_open == nil or lease.stream <= oldest_open
end

--- Decides what `worker` should do. Pure: leases as read, which are
-- expired, and the worker's name. Returns {take = {lease...}, request =
-- lease or nil, target = n}.
function _M.plan(leases, is_expired, worker)
  local workable, owned_by, mine = {}, {}, 0
  local oldest_open = oldest_open_stream(leases)
  for _, lease in pairs(leases) do
    if lease.checkpoint ~= _M.SHARD_END and parent_done(lease, leases) and stream_ready(lease, oldest_open) then
      workable[#workable + 1] = lease
      local owner = lease.owner
      if owner and not is_expired(lease) then
        owned_by[owner] = (owned_by[owner] or 0) + 1
        if owner == worker then mine = mine + 1 end
      end
    end
  end
  table_sort(workable, function(a, b) return a.sk < b.sk end)
  owned_by[worker] = owned_by[worker] or 0
  local workers = 0
  for _ in pairs(owned_by) do workers = workers + 1 end
  local target = math_ceil(#workable / workers)
  local plan = { take = {}, target = target }
  for _, lease in ipairs(workable) do
    if mine >= target then break end
    if lease.owner == nil or (lease.owner ~= worker and is_expired(lease)) then
      plan.take[#plan.take + 1] = lease
      mine = mine + 1
    end
  end
  if mine < target then
    -- Nothing free: ask the busiest worker for one of its leases.
    local busiest, most = nil, target
    for owner, n in pairs(owned_by) do
      if owner ~= worker and n > most then busiest, most = owner, n end
    end
    if busiest then
      for _, lease in ipairs(workable) do
        if lease.owner == busiest and not lease.wanted_by then plan.request = lease break end
      end
    end
  end
  return plan
end

function _M.describe(lease)
  return tostring(lease.sk) .. " (owner " .. tostring(lease.owner) .. ", counter " .. tostring(lease.counter) .. ")"
end

return _M
