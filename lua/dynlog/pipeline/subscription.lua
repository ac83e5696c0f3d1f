--- Catch-up subscriptions: a named reader of the feed that hands every
-- event, history first and then live, to a handler in feed order, and
-- remembers how far it got (dynlog.subscribe is its public name).
--
--   local sub = dynlog.subscribe{ client = c, name = "users-projection",
--     handler = function(events, sub) ... return true end }
--   sub:run()        -- until sub:stop(), SIGINT, SIGTERM, SIGHUP or SIGPIPE
--
-- Its state is one item of the feed table, feed.named_key("sub", name):
--
--   {pk "sub#<name>", sk 0, name, position, owner, token, lease_expires_at,
--    updated_at, created_at}
--
-- position is the last feed position handled (0: none). Reading history
-- and following live are one loop: read_all after position; when it comes
-- back with nothing (last == head) the subscription waits poll_interval and
-- reads again, so nothing falls between the two and nothing comes twice.
--
-- One instance per name works at a time, across processes and hosts: the
-- owner and token in the item are a lease until lease_expires_at (ms since
-- the epoch, the owner's clock); another instance takes it once it has
-- expired (or was released on stop). Every write of the owner (renewal,
-- checkpoint) is conditioned on its owner and token, so an instance that
-- lost the lease cannot move the checkpoint: its batch is delivered again
-- by the new owner. Delivery is at least once.
--
-- A failing handler gets the same batch again, with backoff; after max_tries
-- failures the batch is delivered one event at a time, and an event that
-- fails max_tries times alone is poison: the subscription stops at it
-- (on_poison = "stop"), or parks it as a dead letter and goes on
-- ("dead_letter"): {pk "dead#<name>", sk <position>, name, position, event,
-- type, stream, error, tries, status = "parked", parked_at}. A dead letter
-- whose status is set to "resubmitted" is delivered again, once, on the
-- subscription's next round, before new events: success deletes it, failure
-- parks it again with tries + 1.
--
-- The names of every subscription are kept in one more item,
-- feed.named_key("subs", "all") {names = <string set>}, for listing.
local core = require "dynlog.core"
local errors = require "dynlog.errors"
local feed = require "dynlog.client.feed"
local logger = require "dynlog.logger"
local metrics = require "dynlog.base.metrics"
local options = require "dynlog.base.options"
local retry = require "dynlog.aws.retry"

local error, ipairs, pairs, pcall, setmetatable, tonumber, tostring, type =
  error, ipairs, pairs, pcall, setmetatable, tonumber, tostring, type
local math_floor, math_max, math_min = math.floor, math.max, math.min
local str_format, str_sub = string.format, string.sub
local attribute_map = core.attribute_map

local _M = {}
local mt = { __index = _M }

local DEFAULTS = {
  from = "start",
  batch_size = 100,
  poll_interval = 0.5,
  lease_duration = 10,
  max_tries = 5,
  on_poison = "stop",
  retry_base_delay = 0.5,
  retry_max_delay = 30,
}

--- The options of dynlog.subscribe (and of dynlog.ngx.start_subscription).
_M.OPTIONS = options.known{
  "client", "name", "from", "logs", "types", "handler", "batch_size", "poll_interval", "lease_duration",
  "max_tries", "on_poison", "dead_letter_table", "retry_base_delay", "retry_max_delay", "worker_id", "now",
  "sleep",
}

--- The statuses of a dead letter.
_M.PARKED, _M.RESUBMITTED = "parked", "resubmitted"

-- The longest error text a dead letter keeps.
local MAX_ERROR_TEXT = 2000

--- The key of the checkpoint item of subscription `name`.
function _M.key(name)
  return feed.named_key("sub", name)
end

--- The key of the dead letter of subscription `name` at `position`.
function _M.dead_key(name, position)
  return feed.named_key("dead", name, position)
end

--- The key of the item that lists every subscription's name.
_M.INDEX_KEY = feed.named_key("subs", "all")

local function is_position(v)
  return type(v) == "number" and v >= 0 and v == math_floor(v) and v < 2 ^ 53
end
_M.is_position = is_position

local function check_names(v, what, where, level)
  if v == nil then return end
  if type(v) ~= "table" or v[1] == nil then
    error(where .. ": " .. what .. " must be a non-empty list of strings", level)
  end
  for k, name in pairs(v) do
    if type(k) ~= "number" or type(name) ~= "string" or name == "" then
      error(where .. ": " .. what .. " must be a non-empty list of strings", level)
    end
  end
end

-- Raises as error(msg, level) would here: `level` counts from check.
local function check(opts, where, level)
  if type(opts) ~= "table" then error(where .. ": expects a table of options", level) end
  options.check(opts, _M.OPTIONS, where, level)
  if type(opts.client) ~= "table" then error(where .. ": client is required (dynlog.new{...})", level) end
  if type(opts.name) ~= "string" or opts.name == "" then
    error(where .. ": name must be a non-empty string (the subscription's name)", level)
  end
  if type(opts.handler) ~= "function" then error(where .. ": handler must be a function(events, sub)", level) end
  local from = opts.from
  if from ~= nil and from ~= "start" and from ~= "end" and not is_position(from) then
    error(where .. ': from must be "start", "end" or a position (a whole number >= 0), got ' .. tostring(from), level)
  end
  check_names(opts.logs, "logs", where, level + 1)
  check_names(opts.types, "types", where, level + 1)
  local bs = opts.batch_size
  if bs ~= nil and (type(bs) ~= "number" or bs ~= math_floor(bs) or bs < 1 or bs > 1000) then
    error(where .. ": batch_size must be a whole number 1..1000", level)
  end
  local mt_ = opts.max_tries
  if mt_ ~= nil and (type(mt_) ~= "number" or mt_ ~= math_floor(mt_) or mt_ < 1) then
    error(where .. ": max_tries must be a whole number >= 1", level)
  end
  for _, name in ipairs({ "poll_interval", "retry_base_delay", "retry_max_delay" }) do
    local v = opts[name]
    if v ~= nil and (type(v) ~= "number" or not (v >= 0)) then
      error(where .. ": " .. name .. " must be a number of seconds >= 0", level)
    end
  end
  local ld = opts.lease_duration
  if ld ~= nil and (type(ld) ~= "number" or not (ld > 0)) then
    error(where .. ": lease_duration must be a number of seconds > 0", level)
  end
  if opts.on_poison ~= nil and opts.on_poison ~= "stop" and opts.on_poison ~= "dead_letter" then
    error(where .. ': on_poison must be "stop" or "dead_letter"', level)
  end
  local dlt = opts.dead_letter_table
  if dlt ~= nil and (type(dlt) ~= "string" or dlt == "") then
    error(where .. ": dead_letter_table must be a table name", level)
  end
  if dlt ~= nil and dlt == opts.client.table then
    error(where .. ": dead_letter_table must not be the log table (" .. dlt .. ")", level)
  end
  if opts.worker_id ~= nil and (type(opts.worker_id) ~= "string" or opts.worker_id == "") then
    error(where .. ": worker_id must be a non-empty string", level)
  end
  for _, name in ipairs({ "now", "sleep" }) do
    if opts[name] ~= nil and type(opts[name]) ~= "function" then
      error(where .. ": " .. name .. " must be a function", level)
    end
  end
end

local function default_worker_id()
  local f = io.open("/etc/hostname", "r")
  local host = f and f:read("*l") or "host"
  if f then f:close() end
  return str_format("%s:%d:%s", host, core.getpid(), core.ulid():sub(-6))
end

local function new_subscription(opts, where, level)
  check(opts, where, level)
  local c = opts.client
  local self = {
    client = c,
    name = opts.name,
    handler = opts.handler,
    logs = opts.logs,
    types = opts.types,
    feed_table = feed.table_of(c),
    worker = opts.worker_id or default_worker_id(),
    token = core.ulid(), -- this instance: another under the same worker_id has another
    now = opts.now or c.now,
    sleep = opts.sleep or c.sleep,
    held = false,        -- holds the lease
    position = nil,      -- the checkpoint, as last read or written
    head = nil,
    owner = nil,         -- the lease's owner as last seen
    expires_at = nil,    -- ms
    renewed_at = 0,      -- when our last write to the item was sent (s)
    pending = {},        -- events read, not yet handled
    pending_last = nil,  -- the `last` of the read that gave them
    single = false,      -- delivering pending one event at a time
    tries = 0,           -- failures of the batch (or the event) at the front
    retry_at = 0,
    next_dead_check = 0,
    last_delivered_at = nil, -- appended_at of the last event delivered
    counts = { delivered = 0, batches = 0, failures = 0, retries = 0, dead_lettered = 0 },
    stopping = false,
    running = false,
    failed = nil,        -- the error that stopped it (a poison event)
  }
  for name, default in pairs(DEFAULTS) do
    local v = opts[name]
    if v == nil then v = default end
    self[name] = v
  end
  self.dead_letter_table = opts.dead_letter_table or self.feed_table
  return setmetatable(self, mt)
end

--- new(opts) -> a subscription, not yet running. Raises on invalid
-- options (an unknown key too); does no I/O. See dynlog.subscribe.
function _M.new(opts)
  local sub = new_subscription(opts, "subscribe", 4) -- not a tail call: error levels count this frame
  return sub
end

-- For dynlog.subscribe and dynlog.ngx.start_subscription: the same,
-- raising at their caller's line.
function _M._new(opts, where)
  local sub = new_subscription(opts, where, 5)
  return sub
end

---------------------------------------------------------------------------
-- The item: checkpoint and lease
---------------------------------------------------------------------------

local function ms(seconds)
  return math_floor(seconds * 1000)
end

local function conditional(c, operation, params)
  local resp, err = c:_request("dynamodb", operation, params, true)
  if resp then return resp end
  if err.code == "ConditionalCheckFailedException" then return false end
  return nil, err
end

--- read(c, name) -> the checkpoint item of subscription `name` (plain
-- values), false when it has none, or nil, err.
function _M.read(c, name)
  local resp, err = c:_request("dynamodb", "GetItem", {
    TableName = feed.table_of(c), Key = _M.key(name), ConsistentRead = true,
  }, true)
  if not resp then return nil, err end
  return resp.Item or false
end

--- names(c) -> the sorted names of every subscription of c's feed, or nil, err.
function _M.names(c)
  local resp, err = c:_request("dynamodb", "GetItem", {
    TableName = feed.table_of(c), Key = _M.INDEX_KEY, ConsistentRead = true,
  }, true)
  if not resp then return nil, err end
  local names = {}
  local set = resp.Item and resp.Item.names
  if type(set) == "table" then
    for k, v in pairs(set) do
      local n = type(k) == "string" and k or v
      if type(n) == "string" then names[#names + 1] = n end
    end
  end
  table.sort(names)
  return names
end

local function index_name(c, name)
  local _, err = c:_request("dynamodb", "UpdateItem", {
    TableName = feed.table_of(c), Key = _M.INDEX_KEY,
    UpdateExpression = "ADD #n :n", ExpressionAttributeNames = { ["#n"] = "names" },
    ExpressionAttributeValues = { [":n"] = { SS = { name } } },
  }, false)
  if err then return nil, err end
  return true
end

--- Whether a checkpoint item's lease is held at `now_ms`: "held", "expired"
-- or "free".
function _M.lease_state(item, now_ms)
  if not item or item.owner == nil then return "free" end
  if (tonumber(item.lease_expires_at) or 0) > now_ms then return "held" end
  return "expired"
end

--- set_position(c, name, position [, force]) -> the item, or nil, err: moves
-- a subscription's checkpoint (dynlog subscriptions reset). Refused
-- (bad_state) while another instance holds a live lease, unless force:
-- then the lease goes too, so its holder cannot write over the new
-- position; it takes the lease again and reads on from there.
function _M.set_position(c, name, position, force, now)
  local now_ms = ms(now or c.now())
  local condition = "attribute_exists(pk)"
  if not force then
    condition = condition .. " AND (attribute_not_exists(#o) OR #e <= :now)"
  end
  local resp, err = conditional(c, "UpdateItem", {
    TableName = feed.table_of(c), Key = _M.key(name),
    UpdateExpression = "SET #p = :p, updated_at = :now, #e = :zero REMOVE #o, #t",
    ConditionExpression = condition,
    ExpressionAttributeNames = { ["#p"] = "position", ["#o"] = "owner", ["#t"] = "token",
                                 ["#e"] = "lease_expires_at" },
    ExpressionAttributeValues = attribute_map({ [":p"] = position, [":now"] = now_ms, [":zero"] = 0 }),
    ReturnValues = "ALL_NEW",
  })
  if resp then return resp.Attributes end
  if resp == nil then return nil, err end
  local item, rerr = _M.read(c, name)
  if item == nil then return nil, rerr end
  if not item then return nil, errors.new("invalid_argument", "no subscription named " .. name) end
  return nil, errors.new("bad_state", str_format("subscription %s is running (lease held by %s until %s); "
    .. "stop it first, or force", name, tostring(item.owner), tostring(item.lease_expires_at)))
end

--- dead_letters(c, name [, dead_letter_table [, status]]) -> the dead letters
-- of subscription `name` (plain items, in position order), only those of
-- `status` when given, or nil, err.
function _M.dead_letters(c, name, dead_letter_table, status)
  local letters, start = {}, nil
  local values = { [":pk"] = { S = _M.dead_key(name, 0).pk.S } }
  local filter, names
  if status then
    filter, names, values[":s"] = "#s = :s", { ["#s"] = "status" }, { S = status }
  end
  repeat
    local resp, err = c:_request("dynamodb", "Query", {
      TableName = dead_letter_table or feed.table_of(c), ConsistentRead = true,
      KeyConditionExpression = "pk = :pk", FilterExpression = filter, ExpressionAttributeNames = names,
      ExpressionAttributeValues = values, ExclusiveStartKey = start,
    }, true, c.numbers)
    if not resp then return nil, err end
    for _, item in ipairs(resp.Items or {}) do letters[#letters + 1] = item end
    start = resp.LastEvaluatedKey and attribute_map(resp.LastEvaluatedKey) or nil
  until not start
  return letters
end

--- resubmit(c, name, position [, dead_letter_table]) -> true, false when
-- subscription `name` has no dead letter at `position`, or nil, err: sets
-- the dead letter's status to "resubmitted", so that the running
-- subscription delivers it again on its next round.
function _M.resubmit(c, name, position, dead_letter_table)
  local resp, err = conditional(c, "UpdateItem", {
    TableName = dead_letter_table or feed.table_of(c), Key = _M.dead_key(name, position),
    UpdateExpression = "SET #s = :r", ConditionExpression = "attribute_exists(pk)",
    ExpressionAttributeNames = { ["#s"] = "status" },
    ExpressionAttributeValues = attribute_map({ [":r"] = _M.RESUBMITTED }),
  })
  if resp == nil then return nil, err end
  return resp ~= false
end

-- Where a new subscription starts: from = "start" → 0, "end" → the head
-- now, a position as it is.
function _M:_start_position()
  if self.from == "start" then return 0 end
  if self.from == "end" then return feed.head(self.client) end
  return self.from
end

function _M:_adopt(item, now)
  self.held = true
  self.owner = self.worker
  self.position = tonumber(item.position) or 0
  self.expires_at = tonumber(item.lease_expires_at)
  self.renewed_at = now
  self.pending, self.pending_last, self.single, self.tries, self.retry_at = {}, nil, false, 0, 0
  self.next_dead_check = 0
  logger.log("info", str_format("subscription %s: %s holds the lease, from position %d", self.name,
    self.worker, self.position))
end

function _M:_drop(why)
  if self.held then
    logger.log("info", str_format("subscription %s: %s no longer holds the lease (%s)", self.name, self.worker, why))
  end
  self.held = false
  self.pending, self.pending_last, self.single, self.tries, self.retry_at = {}, nil, false, 0, 0
end

-- Takes the lease when the item has none, or an expired one. Returns true
-- (held), false (another instance holds it), or nil, err.
function _M:_acquire(now)
  local c = self.client
  local item, err = _M.read(c, self.name)
  if item == nil then return nil, err end
  local now_ms = ms(now)
  local expires = ms(now + self.lease_duration)
  if not item then
    local start, serr = self:_start_position()
    if not start then return nil, serr end
    local key = _M.key(self.name)
    local fields = attribute_map({ pk = key.pk.S, sk = 0, name = self.name, position = start,
                                   owner = self.worker, token = self.token, lease_expires_at = expires,
                                   updated_at = now_ms, created_at = now_ms })
    local ok, perr = conditional(c, "PutItem", {
      TableName = self.feed_table, Item = fields, ConditionExpression = "attribute_not_exists(pk)",
    })
    if ok == nil then return nil, perr end
    if not ok then return false end -- another instance made it first: read again next round
    item = { position = start, lease_expires_at = expires }
  else
    self.owner, self.expires_at = item.owner, tonumber(item.lease_expires_at)
    self.position = tonumber(item.position) or self.position
    local mine = item.owner == self.worker and item.token == self.token
    if not mine and _M.lease_state(item, now_ms) == "held" then return false end
    local resp, uerr = conditional(c, "UpdateItem", {
      TableName = self.feed_table, Key = _M.key(self.name),
      UpdateExpression = "SET #o = :me, #t = :token, #e = :exp",
      ConditionExpression = "attribute_exists(pk) AND (attribute_not_exists(#o) OR #e <= :now OR "
        .. "(#o = :me AND #t = :token))",
      ExpressionAttributeNames = { ["#o"] = "owner", ["#t"] = "token", ["#e"] = "lease_expires_at" },
      ExpressionAttributeValues = attribute_map({ [":me"] = self.worker, [":token"] = self.token,
                                                  [":exp"] = expires, [":now"] = now_ms }),
      ReturnValues = "ALL_NEW",
    })
    if resp == nil then return nil, uerr end
    if not resp then return false end
    item = resp.Attributes
  end
  -- Listed for `dynlog subscriptions` (again on every take: ADD to a set
  -- is idempotent, and a crash between the two writes leaves no name out).
  local iok, ierr = index_name(c, self.name)
  if not iok then return nil, ierr end
  self:_adopt(item, now)
  return true
end

-- One write of the owner: `set` (an UpdateExpression's SET list, without
-- the lease's expiry) on the condition that the lease is still ours.
-- Returns true, false when the lease was lost (dropped), or nil, err.
function _M:_write(set, values, why)
  local sent_at = self.now()
  local expires = ms(sent_at + self.lease_duration)
  values[":me"], values[":token"], values[":exp"] = self.worker, self.token, expires
  local resp, err = conditional(self.client, "UpdateItem", {
    TableName = self.feed_table, Key = _M.key(self.name),
    UpdateExpression = "SET " .. (set and (set .. ", ") or "") .. "#e = :exp",
    ConditionExpression = "#o = :me AND #t = :token",
    ExpressionAttributeNames = { ["#o"] = "owner", ["#t"] = "token", ["#e"] = "lease_expires_at",
                                 ["#p"] = set and "position" or nil },
    ExpressionAttributeValues = attribute_map(values),
  })
  if resp == nil then return nil, err end
  if not resp then
    self:_drop(why)
    return false
  end
  self.renewed_at, self.expires_at = sent_at, expires
  return true
end

-- Renews the lease when a third of it has passed. Returns true, false
-- (lost), or nil, err.
function _M:_renew(now)
  if now - self.renewed_at < self.lease_duration / 3 then return true end
  return self:_write(nil, {}, "lease lost")
end

-- The gauges of how far behind the head this subscription is (events;
-- and no time behind once at the head).
local function gauge_lag(self)
  if not (self.head and self.position) then return end
  local behind = math_max(0, self.head - self.position)
  metrics.set("dynlog_subscription_lag_events", behind, self.name)
  if behind == 0 then metrics.set("dynlog_subscription_lag_seconds", 0, self.name) end
end

-- Stores the checkpoint `position`. Returns true, false (lease lost), or nil, err.
function _M:_checkpoint(position)
  local ok, err = self:_write("#p = :p, updated_at = :now", { [":p"] = position, [":now"] = ms(self.now()) },
    "lease lost before the checkpoint")
  if ok then
    self.position = position
    gauge_lag(self)
  end
  return ok, err
end

---------------------------------------------------------------------------
-- Delivery
---------------------------------------------------------------------------

-- Calls the handler. Returns true, or false, err.
function _M:_call(events)
  local ok, result, herr = pcall(self.handler, events, self)
  if not ok then return false, errors.new("handler_error", tostring(result)) end
  if result == false or (result == nil and herr ~= nil) then
    return false, errors.is(herr) and herr or errors.new("handler_error", tostring(herr or "handler returned false"))
  end
  return true
end

function _M:_delivered(events)
  local counts = self.counts
  counts.delivered, counts.batches = counts.delivered + #events, counts.batches + 1
  metrics.inc("dynlog_subscription_delivered_total", #events, self.name)
  local last = events[#events]
  if last and type(last.appended_at) == "number" then
    self.last_delivered_at = last.appended_at
    local lag = self.now() - last.appended_at / 1000
    metrics.set("dynlog_subscription_lag_seconds", lag > 0 and lag or 0, self.name)
  end
end

local function event_text(ev)
  return str_format("position %s (%s %s)", tostring(ev.position), tostring(ev.pk), tostring(ev.sk))
end

-- Writes the dead letter of `ev`. Returns true, or nil, err.
function _M:_park(ev, err, tries)
  local key = _M.dead_key(self.name, ev.position)
  local text = str_sub(tostring(err), 1, MAX_ERROR_TEXT)
  local item = attribute_map({ pk = key.pk.S, sk = tonumber(key.sk.N), name = self.name,
                               position = tonumber(ev.position), event = ev, type = ev.type, stream = ev.pk,
                               error = text, tries = tries, status = _M.PARKED, parked_at = ms(self.now()) })
  local _, perr = self.client:_request("dynamodb", "PutItem", { TableName = self.dead_letter_table, Item = item },
    false)
  if perr then return nil, perr end
  self.counts.dead_lettered = self.counts.dead_lettered + 1
  metrics.inc("dynlog_subscription_dead_letters_total", 1, self.name)
  logger.log("error", str_format("subscription %s: event at %s failed %d times: parked as a dead letter: %s",
    self.name, event_text(ev), tries, text))
  return true
end

-- The dead letters whose status says "resubmitted", in position order.
function _M:_resubmitted()
  return _M.dead_letters(self.client, self.name, self.dead_letter_table, _M.RESUBMITTED)
end

-- Delivers the resubmitted dead letters, once each. Returns the number
-- delivered, or nil, err.
function _M:_redeliver()
  local letters, err = self:_resubmitted()
  if not letters then return nil, err end
  local n = 0
  for _, letter in ipairs(letters) do
    local ev = letter.event
    if type(ev) ~= "table" then ev = { position = letter.sk } end
    local key = _M.dead_key(self.name, letter.sk)
    local ok, herr = self:_call({ ev })
    if ok then
      local _, derr = self.client:_request("dynamodb", "DeleteItem", { TableName = self.dead_letter_table, Key = key },
        false)
      if derr then return nil, derr end
      self:_delivered({ ev })
      n = n + 1
      logger.log("info", str_format("subscription %s: resubmitted event at %s delivered", self.name, event_text(ev)))
    else
      self.counts.failures = self.counts.failures + 1
      local _, uerr = self.client:_request("dynamodb", "UpdateItem", {
        TableName = self.dead_letter_table, Key = key,
        UpdateExpression = "SET #s = :parked, tries = tries + :one, #e = :e, parked_at = :now",
        ConditionExpression = "attribute_exists(pk)",
        ExpressionAttributeNames = { ["#s"] = "status", ["#e"] = "error" },
        ExpressionAttributeValues = attribute_map({ [":parked"] = _M.PARKED, [":one"] = 1,
          [":e"] = str_sub(tostring(herr), 1, MAX_ERROR_TEXT), [":now"] = ms(self.now()) }),
      }, false)
      if uerr and uerr.code ~= "ConditionalCheckFailedException" then return nil, uerr end
      logger.log("error", str_format("subscription %s: resubmitted event at %s failed again: %s", self.name,
        event_text(ev), tostring(herr)))
    end
  end
  return n
end

-- A failure of the unit at the front (the batch, or its first event when
-- delivering one at a time). Returns 0, or nil, err when the subscription
-- stops (a poison event with on_poison = "stop").
function _M:_failed(err)
  local counts = self.counts
  counts.failures = counts.failures + 1
  self.tries = self.tries + 1
  local now = self.now()
  if self.tries < self.max_tries then
    counts.retries = counts.retries + 1
    logger.log("warn", str_format("subscription %s: %s failed (attempt %d of %d): %s", self.name,
      self.single and ("event at " .. event_text(self.pending[1])) or ("batch of " .. #self.pending),
      self.tries, self.max_tries, tostring(err)))
    self.retry_at = now + retry.delay(self.tries, self.retry_base_delay, self.retry_max_delay)
    return 0
  end
  if not self.single and #self.pending > 1 then
    -- The batch failed max_tries times: one event at a time, to find the one.
    logger.log("warn", str_format("subscription %s: batch of %d failed %d times (%s); delivering it one event "
      .. "at a time", self.name, #self.pending, self.tries, tostring(err)))
    self.single, self.tries = true, 0
    counts.retries = counts.retries + 1
    self.retry_at = now + retry.delay(1, self.retry_base_delay, self.retry_max_delay)
    return 0
  end
  -- One event, max_tries failures: poison.
  local ev = self.pending[1]
  if self.on_poison == "stop" then
    local perr = errors.new("poison_event", str_format("subscription %s stopped at the event at %s, which failed "
      .. "%d times: %s", self.name, event_text(ev), self.tries, tostring(err)), { position = ev.position, cause = err })
    logger.log("error", tostring(perr))
    self.failed, self.stopping = perr, true
    return nil, perr
  end
  local ok, perr = self:_park(ev, err, self.tries)
  if not ok then return nil, perr end
  return self:_done_single(false)
end

-- The event at the front (delivering one at a time) is done with:
-- delivered (handled) or parked. Returns 1 or 0, or nil, err.
function _M:_done_single(handled)
  local ev = table.remove(self.pending, 1)
  local to = #self.pending == 0 and self.pending_last or tonumber(ev.position)
  local ok, err = self:_checkpoint(to)
  if ok == nil then
    table.insert(self.pending, 1, ev)
    return nil, err
  end
  if not ok then return 0 end
  if handled then self:_delivered({ ev }) end
  self.tries, self.retry_at = 0, 0
  if #self.pending == 0 then self.single, self.pending_last = false, nil end
  return handled and 1 or 0
end

-- Reads the next batch after the checkpoint. Returns true, or nil, err.
function _M:_read()
  local events, last, head = self.client:read_all{ after = self.position, limit = self.batch_size,
                                                   logs = self.logs, types = self.types }
  if not events then return nil, last end
  self.head = head
  gauge_lag(self)
  if #events == 0 then
    -- Filters passed over everything up to the head: remember it, so that
    -- those entries are not read again.
    if last > self.position then
      local ok, err = self:_checkpoint(last)
      if ok == nil then return nil, err end
    end
    return true
  end
  self.pending, self.pending_last, self.single, self.tries = events, last, false, 0
  return true
end

--- poll_once() -> the number of events delivered this round, or nil, err.
-- One round: the lease (taken, renewed), the resubmitted dead letters, then
-- one batch (or, after a batch failed max_tries times, one event). Returns 0
-- while another instance holds the lease, while waiting to retry, and when
-- the feed is read to its head. For hosts that schedule their own loop.
function _M:poll_once()
  if self.failed then return nil, self.failed end
  local now = self.now()
  if not self.held then
    local held, err = self:_acquire(now)
    if held == nil then return nil, err end
    if not held then return 0 end
  else
    local ok, err = self:_renew(now)
    if ok == nil then return nil, err end
    if not ok then return 0 end
  end
  if now < self.retry_at then return 0 end
  local delivered = 0
  if now >= self.next_dead_check then
    local n, err = self:_redeliver()
    if not n then return nil, err end
    delivered = n
    self.next_dead_check = now + self.poll_interval
  end
  if #self.pending == 0 then
    local ok, err = self:_read()
    if not ok then return nil, err end
    if #self.pending == 0 then return delivered end
  end
  -- Still ours? Renewed right before the handler when a third of the lease
  -- has gone, so that a long round never hands a batch over on an expired lease.
  local ok, rerr = self:_renew(self.now())
  if ok == nil then return nil, rerr end
  if not ok then return delivered end
  if self.single then
    local handled, herr = self:_call({ self.pending[1] })
    if not handled then return self:_failed(herr) end
    local n, derr = self:_done_single(true)
    if not n then return nil, derr end
    return delivered + n
  end
  local batch = self.pending
  local handled, herr = self:_call(batch)
  if not handled then
    local n, ferr = self:_failed(herr)
    if not n then return nil, ferr end
    return delivered
  end
  local written, cerr = self:_checkpoint(self.pending_last)
  if written == nil then return nil, cerr end
  if not written then return delivered end -- lease lost: the new owner delivers it again
  self:_delivered(batch)
  self.pending, self.pending_last, self.tries, self.retry_at = {}, nil, 0, 0
  return delivered + #batch
end

--- run() -> true once stopped (by stop(), SIGINT, SIGTERM, SIGHUP or
-- SIGPIPE), or nil, err when a poison event stopped it (on_poison =
-- "stop"). The lease is released on the way out. Errors of a round are
-- logged and the round tried again after a pause.
function _M:run()
  core.signal_catch()
  self.running = true
  local pause = 0
  while not self.stopping and not core.signal_caught() do
    local n, err = self:poll_once()
    if self.failed then break end
    if not n then
      pause = pause + 1
      logger.log("error", "subscription " .. self.name .. ": " .. tostring(err))
      self.sleep(retry.delay(pause, math_max(self.poll_interval, 0.05), 10))
    else
      pause = 0
      if n == 0 and not self.stopping then
        local wait = self.poll_interval
        local until_retry = self.retry_at - self.now()
        if self.held and until_retry > 0 then wait = math_min(wait, until_retry) end
        if wait > 0 then self.sleep(wait) end
      end
    end
  end
  self.running = false
  self:release()
  core.signal_restore()
  if self.failed then return nil, self.failed end
  return true
end

--- stop(): run() returns after the current round.
function _M:stop()
  self.stopping = true
end

--- release(): gives the lease up, so that another instance takes the
-- subscription over at once instead of when the lease expires. Returns
-- true, or nil, err.
function _M:release()
  if not self.held then return true end
  local resp, err = conditional(self.client, "UpdateItem", {
    TableName = self.feed_table, Key = _M.key(self.name),
    UpdateExpression = "SET #e = :zero REMOVE #o, #t",
    ConditionExpression = "#o = :me AND #t = :token",
    ExpressionAttributeNames = { ["#o"] = "owner", ["#t"] = "token", ["#e"] = "lease_expires_at" },
    ExpressionAttributeValues = attribute_map({ [":me"] = self.worker, [":token"] = self.token, [":zero"] = 0 }),
  })
  self:_drop("released")
  self.owner = nil
  if resp == nil then return nil, err end
  return true
end

--- stats() -> {name, position, head, lag_events, lag_ms, delivered, batches,
-- failures, retries, dead_lettered, owner, running, held, worker}.
-- position: the checkpoint as last read or written; head: the feed's head
-- as last read; lag_events = head - position; lag_ms: 0 when caught up,
-- else now - appended_at of the last event delivered (nil before one is).
function _M:stats()
  local counts = self.counts
  local lag_events, lag_ms
  if self.head and self.position then lag_events = math_max(0, self.head - self.position) end
  if lag_events == 0 then
    lag_ms = 0
  elseif self.last_delivered_at then
    lag_ms = math_max(0, ms(self.now()) - self.last_delivered_at)
  end
  return {
    name = self.name, position = self.position, head = self.head, lag_events = lag_events, lag_ms = lag_ms,
    delivered = counts.delivered, batches = counts.batches, failures = counts.failures, retries = counts.retries,
    dead_lettered = counts.dead_lettered, owner = self.owner, running = self.running, held = self.held,
    worker = self.worker,
  }
end

return _M
