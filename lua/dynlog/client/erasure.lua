--- Erasure: delete_stream, truncate, and the expiry of events by age.
-- These are methods of the client (dynlog.client mixes them in).
--
-- A deleted stream leaves a tombstone, an item of its own partition:
--   {pk = "<log>#<id>#tombstone", sk = "tombstone" (ulid mode) or 0 (version mode),
--    log, id, stream = "<log>#<id>#stream", state = "deleting" | "deleted",
--    last = <sort key of the stream's last event, when it had one>, deleted_at = <ms>}
-- Its pk does not end in "#stream", so a Query of the stream's pk (the
-- original tools', or dynlog's) never sees it, and it is no event to them.
--
-- delete_stream writes the tombstone first ("deleting"): from then on every
-- append to the stream is refused (stream_deleted). Then it deletes the
-- events, page by page, 25 per BatchWriteItem, and marks the tombstone
-- "deleted". A failure half-way leaves the tombstone "deleting" and some
-- events still there: delete_stream again finishes the job (it is
-- idempotent, and deletes whatever it finds under the stream's pk).
-- With reopen = true the tombstone is removed at the end, and the stream
-- takes appends again: a new stream, which in version mode starts at 1.
local core = require "dynlog.core"
local errors = require "dynlog.errors"
local eventkey = require "dynlog.client.eventkey"
local options = require "dynlog.base.options"

local error, ipairs, math_floor, math_min, math_random, pairs, pcall, tostring, type =
  error, ipairs, math.floor, math.min, math.random, pairs, pcall, tostring, type
local array, attribute_map = core.array, core.attribute_map

local _M = {}

local TOMBSTONE_SK, GUARD_SK = eventkey.TOMBSTONE_SK, eventkey.GUARD_SK

--- The attribute that holds an event's expiry (epoch seconds), on which
-- create_table enables DynamoDB TTL when the client has max_age.
local EXPIRES_AT = "expires_at"

-- BatchWriteItem takes at most 25 requests.
local MAX_BATCH = 25
-- Events read per Query of a deletion.
local PAGE = 250

local DELETE_STREAM = options.known{ "reopen" }
local TRUNCATE = options.known{ "before" }

local function tombstone_key(client, pk)
  return eventkey.tombstone(pk), TOMBSTONE_SK[client.sort_key]
end

local function read_tombstone(client, pk)
  local tpk, tsk = tombstone_key(client, pk)
  local resp, err = client:_request("dynamodb", "GetItem", { TableName = client.table,
    Key = attribute_map({ pk = tpk, sk = tsk }), ConsistentRead = true }, true, "number")
  if not resp then return nil, err end
  return resp.Item or false
end

--- _refuse_deleted(pk) -> true when the stream (its pk) takes appends, or
-- nil, err (stream_deleted) when it has a tombstone. One consistent GetItem,
-- none for a client made with tombstones = false.
function _M:_refuse_deleted(pk)
  if not self.tombstones then return true end
  local tomb, err = read_tombstone(self, pk)
  if tomb == nil then
    -- A key of the wrong type: a table of the other sort-key mode, which
    -- the append's own write tells as schema_mismatch.
    if err.code == "ValidationException" then return true end
    return nil, err
  end
  if not tomb then return true end
  return nil, errors.new("stream_deleted", pk .. " was deleted (its tombstone is " .. tostring(tomb.state)
    .. "); no events can be appended to it. delete_stream(log, id, {reopen = true}) opens it again",
    { state = tomb.state })
end

-- The pause before another round of unprocessed items: the client's backoff.
local function backoff(client, attempt)
  client.sleep(math_random() * math_min(client.max_delay, client.base_delay * 2 ^ attempt))
end

-- Tombstones read per BatchGetItem (its limit).
local MAX_READ_BATCH = 100

-- A failure of a read of many tombstones, for one of their streams: its own
-- copy, since append_many names the event in each copy's message.
local function copy_error(err)
  local fields = {}
  for k, v in pairs(err) do fields[k] = v end
  return errors.new(err.code, err.message, fields)
end

--- _refuse_deleted_many(pks, into) -> into: what _refuse_deleted answers of
-- each stream of pks (at most 100), into[pk] = true or an error value, from
-- one consistent BatchGetItem of their tombstones (keys left unprocessed are
-- asked again, with backoff). A stream the read could not answer for (a key
-- of the wrong type: a table of the other sort-key mode) is left out, for
-- its caller to ask _refuse_deleted. Nothing is read for a client made with
-- tombstones = false: every stream is open.
function _M:_refuse_deleted_many(pks, into)
  if #pks > MAX_READ_BATCH then error("_refuse_deleted_many: at most " .. MAX_READ_BATCH .. " streams", 2) end
  if not self.tombstones then
    for _, pk in ipairs(pks) do into[pk] = true end
    return into
  end
  local keys, by_tpk = array(), {}
  for _, pk in ipairs(pks) do
    local tpk, tsk = tombstone_key(self, pk)
    keys[#keys + 1] = attribute_map({ pk = tpk, sk = tsk })
    by_tpk[tpk] = pk
  end
  local request = { [self.table] = { Keys = keys, ConsistentRead = true } }
  local attempt = 0
  while request do
    local resp, err = self:_request("dynamodb", "BatchGetItem", { RequestItems = request }, false)
    if not resp then
      if err.code == "ValidationException" then return into end
      for _, pk in ipairs(pks) do
        if into[pk] == nil then into[pk] = copy_error(err) end
      end
      return into
    end
    for _, item in ipairs((resp.Responses or {})[self.table] or {}) do
      local pk = by_tpk[item.pk and item.pk.S]
      if pk then
        local state = item.state and item.state.S
        into[pk] = errors.new("stream_deleted", pk .. " was deleted (its tombstone is " .. tostring(state)
          .. "); no events can be appended to it. delete_stream(log, id, {reopen = true}) opens it again",
          { state = state })
      end
    end
    request = resp.UnprocessedKeys
    if request and not request[self.table] then request = nil end
    if request then
      -- Keys answered for and not left over have no tombstone.
      local left = {}
      for _, key in ipairs(request[self.table].Keys or {}) do left[key.pk and key.pk.S or ""] = true end
      for tpk, pk in pairs(by_tpk) do
        if not left[tpk] and into[pk] == nil then into[pk] = true end
      end
      request[self.table].ConsistentRead = true
      attempt = attempt + 1
      if attempt >= self.max_attempts then
        for _, pk in ipairs(pks) do
          if into[pk] == nil then
            into[pk] = errors.new("throttled", "the tombstone of " .. pk .. " was still unprocessed after "
              .. attempt .. " BatchGetItem attempts", { retryable = true })
          end
        end
        return into
      end
      backoff(self, attempt)
    end
  end
  for _, pk in ipairs(pks) do
    if into[pk] == nil then into[pk] = true end
  end
  return into
end

--- _expires_at(log) -> the expiry (epoch seconds) of an event of `log`
-- appended now, when the client has a max_age for that log; else nil.
function _M:_expires_at(log)
  local ages = self.max_age
  local age = ages and ages[log]
  if not age then return nil end
  return math_floor(self.now()) + age
end

-- The events of a stream (keys and event ids), one page from the start,
-- or nil, err.
local function first_keys(client, pk, before, limit)
  local cond, values = "pk = :pk", { [":pk"] = pk }
  if before ~= nil then
    cond = cond .. " AND sk < :before"
    values[":before"] = before
  end
  local resp, err = client:_request("dynamodb", "Query", { TableName = client.table, KeyConditionExpression = cond,
    ExpressionAttributeValues = attribute_map(values), ProjectionExpression = "pk, sk, event_id", ConsistentRead = true,
    Limit = limit }, false)
  if not resp then return nil, err end
  return resp.Items or {}, resp.LastEvaluatedKey
end

-- Deletes `keys` (typed {pk=, sk=} as Query gives them), 25 per request,
-- retrying UnprocessedItems with backoff. Returns the number deleted, or
-- nil, err.
local function delete_keys(client, keys)
  for first = 1, #keys, MAX_BATCH do
    local requests = array()
    for i = first, math_min(first + MAX_BATCH - 1, #keys) do
      requests[#requests + 1] = { DeleteRequest = { Key = keys[i] } }
    end
    local attempt = 0
    while #requests > 0 do
      attempt = attempt + 1
      local resp, err = client:_request("dynamodb", "BatchWriteItem",
        { RequestItems = { [client.table] = requests } }, false)
      if not resp then return nil, err end
      local left = resp.UnprocessedItems and resp.UnprocessedItems[client.table]
      if type(left) ~= "table" or #left == 0 then break end
      if attempt >= client.max_attempts then
        return nil, errors.new("throttled", #left .. " deletions still unprocessed after " .. attempt
          .. " attempts; call again to finish", { retryable = true })
      end
      requests = array(left)
      backoff(client, attempt)
    end
  end
  return #keys
end

-- The keys of a page's events, and of the guards of those appended with an
-- event id (typed, as Query gives them).
local function page_keys(client, pk, items)
  local log, id = eventkey.parse(pk)
  local keys, guards = {}, {}
  for i, item in ipairs(items) do
    keys[i] = { pk = item.pk, sk = item.sk }
    local event_id = item.event_id and item.event_id.S
    local gpk = event_id and log and eventkey.event_id_key(log, id, event_id)
    if gpk then
      local sk = GUARD_SK[client.sort_key]
      guards[#guards + 1] = { pk = { S = gpk }, sk = type(sk) == "number" and { N = tostring(sk) } or { S = sk } }
    end
  end
  return keys, guards
end

-- Deletes every event of pk (before `before`, when given), page by page,
-- each page's event-id guards first: an interrupted deletion never leaves a
-- guard whose event is gone, which would make a retry of that event id a
-- conflict. Returns the number deleted, or nil, err, deleted so far.
local function delete_events(client, pk, before)
  local deleted = 0
  while true do
    local items, err = first_keys(client, pk, before, PAGE)
    if not items then return nil, err, deleted end
    if #items == 0 then return deleted end
    local keys, guards = page_keys(client, pk, items)
    if #guards > 0 then
      local _, gerr = delete_keys(client, guards)
      if gerr then return nil, gerr, deleted end
    end
    local n, derr = delete_keys(client, keys)
    if not n then return nil, derr, deleted end
    deleted = deleted + n
  end
end

-- The stream's pk, or nil, err; raises at the line that called the
-- method for a log or id that is not a string.
local function stream_pk(log, id)
  local ok, pk, err = pcall(eventkey.build, log, id)
  if not ok then error(pk, 3) end
  return pk, err
end

local function write_tombstone(client, log, id, pk)
  local head, err = client:_request("dynamodb", "Query", { TableName = client.table,
    KeyConditionExpression = "pk = :pk", ExpressionAttributeValues = attribute_map({ [":pk"] = pk }),
    ProjectionExpression = "sk", ScanIndexForward = false, Limit = 1, ConsistentRead = true }, true, "number")
  if not head then return nil, err end
  local last = head.Items and head.Items[1] and head.Items[1].sk
  local tpk, tsk = tombstone_key(client, pk)
  local _, perr = client:_request("dynamodb", "PutItem", { TableName = client.table,
    Item = attribute_map({ pk = tpk, sk = tsk, log = log, id = id, stream = pk, state = "deleting", last = last,
                           deleted_at = math_floor(client.now() * 1000) }),
    ConditionExpression = "attribute_not_exists(pk)" })
  -- Another deletion wrote it first: the same job.
  if perr and perr.code ~= "ConditionalCheckFailedException" then return nil, perr end
  return true
end

--- delete_stream(log, id [, opts]) -> {deleted = <events deleted by this
-- call>, state = "deleted" or "reopened"}, or nil, err (after which the
-- stream refuses appends and delete_stream again finishes the deletion).
-- opts.reopen: remove the tombstone once the events are gone, so that
-- appends start a new stream.
function _M:delete_stream(log, id, opts)
  options.check(opts, DELETE_STREAM, "delete_stream")
  local reopen = opts and opts.reopen
  if reopen ~= nil and type(reopen) ~= "boolean" then error("delete_stream: reopen must be a boolean", 2) end
  local pk, kerr = stream_pk(log, id)
  if not pk then return nil, kerr end
  local tomb, err = read_tombstone(self, pk)
  if tomb == nil then return nil, err end
  if not tomb then
    local ok, werr = write_tombstone(self, log, id, pk)
    if not ok then return nil, werr end
  end
  local deleted, derr = delete_events(self, pk)
  if not deleted then return nil, derr end
  local tpk, tsk = tombstone_key(self, pk)
  local key = attribute_map({ pk = tpk, sk = tsk })
  if reopen then
    local _, rerr = self:_request("dynamodb", "DeleteItem", { TableName = self.table, Key = key })
    if rerr then return nil, rerr end
    return { deleted = deleted, state = "reopened" }
  end
  if not tomb or tomb.state ~= "deleted" then
    local _, uerr = self:_request("dynamodb", "UpdateItem", { TableName = self.table, Key = key,
      UpdateExpression = "SET #state = :deleted", ExpressionAttributeNames = { ["#state"] = "state" },
      ExpressionAttributeValues = attribute_map({ [":deleted"] = "deleted" }),
      ConditionExpression = "attribute_exists(pk)" })
    if uerr and uerr.code ~= "ConditionalCheckFailedException" then return nil, uerr end
  end
  return { deleted = deleted, state = "deleted" }
end

--- truncate(log, id, {before = sk}) -> {deleted = n}, or nil, err: the
-- events whose sort key is below `before` are deleted, the others kept.
-- Idempotent: after a failure, truncate again.
function _M:truncate(log, id, opts)
  options.check(opts, TRUNCATE, "truncate")
  if type(opts) ~= "table" or opts.before == nil then error("truncate: opts.before (a sort key) is required", 2) end
  local pk, kerr = stream_pk(log, id)
  if not pk then return nil, kerr end
  local ulid = self.sort_key == "ulid"
  if type(opts.before) ~= (ulid and "string" or "number") then
    error("truncate: before must be a " .. (ulid and "ULID string in ulid mode" or "version number in version mode")
      .. ", got " .. type(opts.before), 2)
  end
  local deleted, err = delete_events(self, pk, opts.before)
  if not deleted then return nil, err end
  return { deleted = deleted }
end

--- _enable_ttl() -> true, or nil, err: DynamoDB TTL on expires_at, unless
-- it is on already.
function _M:_enable_ttl()
  local desc, err = self:call("DescribeTimeToLive", { TableName = self.table })
  if not desc then return nil, err end
  local ttl = desc.TimeToLiveDescription or {}
  local status = ttl.TimeToLiveStatus
  if status == "ENABLED" or status == "ENABLING" then
    if ttl.AttributeName == EXPIRES_AT then return true end
    return nil, errors.new("schema_mismatch", "table " .. self.table .. " has TTL on " .. tostring(ttl.AttributeName)
      .. ", but max_age needs it on " .. EXPIRES_AT)
  end
  local _, uerr = self:call("UpdateTimeToLive", { TableName = self.table,
    TimeToLiveSpecification = { Enabled = true, AttributeName = EXPIRES_AT } })
  if uerr then return nil, uerr end
  return true
end

--- _check_max_age(v, level) raises (at level) unless v is nil or a table
-- of log names to positive whole seconds. (A function of the module, not a
-- method: dynlog.new calls it.)
function _M._check_max_age(v, level)
  if v == nil then return end
  if type(v) ~= "table" then error("dynlog.new: max_age must be a table {[log] = seconds}", level) end
  for log, age in pairs(v) do
    if type(log) ~= "string" or type(age) ~= "number" or age <= 0 or age ~= math_floor(age) then
      error("dynlog.new: max_age[" .. tostring(log) .. "] must be a positive whole number of seconds", level)
    end
  end
end

return _M
