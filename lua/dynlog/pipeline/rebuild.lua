--- Rebuilds of read models from the feed: every event from position 0
-- projected again through the read model's handlers (dynlog.pipeline.handler)
-- into a new table, or the same one; resumable, rate-limited, with a
-- switch-over readers follow.
--
--   local summary, err = dynlog.rebuild{
--     client = c,                          -- the log table's client (its feed)
--     spec = { table = "users-v2", handlers = {...} },  -- as handler.project takes it
--     logs = { "users" },                  -- the events the read model's rule takes
--     alias = "users",                     -- c:read_model_table("users") -> "users-v2" once caught up
--     rate = 500,                          -- events per second, at most
--     progress = function(p) print(p.position, p.head, p.eta_seconds) end,
--   }
--
-- A rebuild is a subscription of the feed (dynlog.pipeline.subscription),
-- named "rebuild:<target table>", whose handler projects a page of events:
-- they are grouped by stream, and each stream is projected once, for its
-- last event of the page: handler.project reads the log after the read
-- model's version and applies every event that follows, with its
-- conditional write (so the version checks hold, and a rebuild beside live
-- projections into the same table is safe). A stream's deletion (a
-- tombstone in the feed) is projected in its place among the stream's
-- events. After each page the subscription stores its position in the
-- feed table (its checkpoint, `sub#rebuild:<target table>`): a rebuild
-- stopped for any reason continues there when run again, and projects the
-- same read models; its lease keeps a second rebuild of the same table
-- from running beside it.
--
-- When it has caught up with the feed's head, it writes the alias (if
-- asked), then returns, or with `follow` goes on projecting new events as
-- the feed takes them, until `stop()` says so.
local errors = require "dynlog.errors"
local eventkey = require "dynlog.client.eventkey"
local handler = require "dynlog.pipeline.handler"
local options = require "dynlog.base.options"
local ratelimit = require "dynlog.base.ratelimit"
local readmodels = require "dynlog.client.readmodels"
local subscription = require "dynlog.pipeline.subscription"
local trigger = require "dynlog.pipeline.trigger"

local error, ipairs, pcall, tostring, type = error, ipairs, pcall, tostring, type
local math_floor, math_max, math_min = math.floor, math.max, math.min

local _M = {}

local KNOWN = options.known{ "client", "spec", "logs", "types", "alias", "rate", "progress", "follow",
                             "batch_size", "poll_interval", "after", "stop", "create_table" }

local DEFAULT_BATCH = 100
local MAX_BATCH = 1000
local DEFAULT_POLL = 1
-- Seconds between two rounds that delivered nothing before the rebuild
-- has caught up (a page to try again, a lease to wait for), at most.
local IDLE_WAIT = 0.2
-- A page that fails this many times is projected one event at a time, and
-- an event that fails as often alone stops the rebuild (poison_event).
local MAX_TRIES = 3

local function check(opts)
  if type(opts) ~= "table" then error("rebuild: expects a table of options", 3) end
  options.check(opts, KNOWN, "rebuild", 3)
  local c = opts.client
  if type(c) ~= "table" or type(c.read_all) ~= "function" then
    error("rebuild: client must be a client of the log table (dynlog.new)", 3)
  end
  local spec = opts.spec
  if type(spec) ~= "table" or type(spec.table) ~= "string" or type(spec.handlers) ~= "table" then
    error("rebuild: spec must be a read model's spec as handler.project takes it ({table =, handlers =, ...})", 3)
  end
  -- The rest of the spec as handler.project checks it (an event without a
  -- detail goes no further than the check): a mistake raises here, not on
  -- every page.
  local ok, message = pcall(handler.project, c, {}, spec)
  if not ok then error("rebuild: " .. tostring(message), 3) end
  if opts.alias ~= nil and (type(opts.alias) ~= "string" or opts.alias == "") then
    error("rebuild: alias must be a read model's name (a string)", 3)
  end
  if opts.rate ~= nil and (type(opts.rate) ~= "number" or not (opts.rate > 0) or opts.rate == 1 / 0) then
    error("rebuild: rate must be a number of events per second above 0", 3)
  end
  local b = opts.batch_size
  if b ~= nil and (type(b) ~= "number" or b < 1 or b > MAX_BATCH or b ~= math_floor(b)) then
    error("rebuild: batch_size must be a whole number from 1 to " .. MAX_BATCH, 3)
  end
  if opts.poll_interval ~= nil and (type(opts.poll_interval) ~= "number" or not (opts.poll_interval > 0)) then
    error("rebuild: poll_interval must be a number of seconds above 0", 3)
  end
  local after = opts.after
  if after ~= nil and (type(after) ~= "number" or after < 0 or after ~= math_floor(after)) then
    error("rebuild: after must be a feed position (a whole number >= 0)", 3)
  end
  for _, name in ipairs({ "progress", "stop" }) do
    if opts[name] ~= nil and type(opts[name]) ~= "function" then
      error("rebuild: " .. name .. " must be a function", 3)
    end
  end
  -- logs and types: read_all checks them on the first read, blaming its
  -- caller; check them here so that the caller of rebuild is blamed.
  for _, name in ipairs({ "logs", "types" }) do
    local list = opts[name]
    if list ~= nil then
      if type(list) ~= "table" or list[1] == nil then
        error("rebuild: " .. name .. " must be a non-empty list of strings", 3)
      end
      for _, v in ipairs(list) do
        if type(v) ~= "string" then error("rebuild: " .. name .. " must be a list of strings", 3) end
      end
    end
  end
end

-- The stream an event of the feed belongs to and whether it is the
-- stream's deletion; nil for an item that is neither an event nor a
-- tombstone.
local function stream_of(ev)
  -- An erased entry's event is gone from the log: nothing to project.
  if ev.erased then return nil end
  if eventkey.is_event(ev) then return ev.pk, false end
  if eventkey.is_tombstone(ev) and type(ev.stream) == "string" then return ev.stream, true end
  return nil
end

-- The events of a page as the projections to make: per stream, in the
-- order the streams first appear, the last event of each run of events
-- (project applies the whole run) and each deletion in its place.
local function plan(events)
  local streams, by_stream = {}, {}
  for _, ev in ipairs(events) do
    local stream, deletion = stream_of(ev)
    if stream then
      local actions = by_stream[stream]
      if not actions then
        actions = {}
        by_stream[stream] = actions
        streams[#streams + 1] = actions
      end
      local last = actions[#actions]
      if last and not last.deletion and not deletion then
        last.item = ev
      else
        actions[#actions + 1] = { item = ev, deletion = deletion }
      end
    end
  end
  return streams
end

-- Projects one page; adds to the counts in `summary`. Returns true, or
-- nil, err.
local function project_page(c, spec, events, summary)
  for _, actions in ipairs(plan(events)) do
    for _, action in ipairs(actions) do
      local item = action.item
      local detail = action.deletion and trigger.deletion_detail(item) or trigger.detail(item)
      local ok, result, err = pcall(handler.project, c, { detail = detail }, spec)
      if not ok then
        return nil, errors.new("handler_error", "rebuild: projecting " .. tostring(item.pk) .. " "
          .. tostring(item.sk) .. " raised: " .. tostring(result), { cause = result })
      end
      if not result then return nil, err end
      summary.projected = summary.projected + 1
      summary.applied = summary.applied + (result.applied or 0)
    end
  end
  return true
end

--- The name of the subscription (dynlog.subscribe) a rebuild into
-- `table_name` runs as: its checkpoint is that subscription's item,
-- feed.named_key("sub", "rebuild:<table>").
function _M.subscription_name(table_name)
  return "rebuild:" .. table_name
end

-- Where the subscription starts: `after` when given (a new subscription
-- starts there; an existing one is moved there), else where it stopped
-- (a new one: from the first position). Returns the `from` option for a
-- new subscription, or nil, err.
local function start_at(c, sub_name, after)
  if after == nil then return "start" end
  local item, err = subscription.read(c, sub_name)
  if item == nil then return nil, err end
  if not item then return after end
  local moved, merr = subscription.set_position(c, sub_name, after)
  if not moved then return nil, merr end
  return after
end

--- rebuild(opts) -> summary, or nil, err.
-- opts: client (the log table's client), spec (as handler.project takes it;
-- spec.table is the target table, created if missing unless create_table =
-- false), logs and types (the events to project, as read_all filters them;
-- default all), alias (a read model's name: once caught up, the alias item
-- makes c:read_model_table(alias) return spec.table), rate (events per
-- second, at most), batch_size (events per page, default 100), after (a
-- position to start after, instead of the one stored; 0: from the first),
-- progress(p) (called after each page with {position, head, done, rate,
-- eta_seconds}), follow (keep projecting new events after catching up,
-- reading the feed every poll_interval seconds, default 1, until stop()
-- returns true), stop (a function asked before each page: true stops the
-- rebuild, its position kept, as an interruption).
-- It runs as the subscription subscription_name(spec.table) (see
-- dynlog.pipeline.subscription: its checkpoint and lease in the feed
-- table, retries of a failing page with backoff), one page per round; the
-- lease is given back when it returns.
-- summary: {position, head, done (events handed to the handlers), projected
-- (project calls), applied (events applied), caught_up (true once it
-- reached the head), alias (the alias written, or nil), stopped (true when
-- stop() ended it), subscription (its name)}.
function _M.rebuild(opts)
  check(opts)
  local c, spec = opts.client, opts.spec
  local name = spec.table
  -- The feed first: without one there is nothing to rebuild from, and no
  -- table is made for nothing.
  local _, ferr = c:feed_head()
  if ferr then return nil, ferr end
  if opts.create_table ~= false then
    local ok, err = handler.create_table(c, name)
    if not ok then return nil, err end
  end
  local sub_name = _M.subscription_name(name)
  local from, serr = start_at(c, sub_name, opts.after)
  if not from then return nil, serr end
  local batch = opts.batch_size or DEFAULT_BATCH
  local limiter
  if opts.rate then
    batch = math_max(1, math_min(batch, math_floor(opts.rate)))
    limiter = ratelimit.new({ rate = opts.rate, burst = batch, now = c.now, sleep = c.sleep })
  end
  local poll = opts.poll_interval or DEFAULT_POLL
  local summary = { position = nil, head = nil, done = 0, projected = 0, applied = 0, caught_up = false,
                    subscription = sub_name }
  local sub = subscription.new({
    client = c, name = sub_name, from = from, logs = opts.logs, types = opts.types, batch_size = batch,
    poll_interval = poll, max_tries = MAX_TRIES,
    handler = function(events)
      if limiter then limiter:take(#events) end
      return project_page(c, spec, events, summary)
    end,
  })
  local function finish(result, err)
    local _, rerr = sub:release()
    if result and rerr then return nil, rerr end
    return result, err
  end
  local started = c.now()
  local function report()
    if not opts.progress then return end
    local elapsed = c.now() - started
    local rate = elapsed > 0 and summary.done / elapsed or nil
    local left = summary.head - summary.position
    opts.progress({ position = summary.position, head = summary.head, done = summary.done, rate = rate,
                    eta_seconds = left <= 0 and 0 or (rate and rate > 0 and left / rate) or nil })
  end
  while true do
    if opts.stop and opts.stop() then
      summary.stopped = true
      break
    end
    local n, err = sub:poll_once()
    if not n then return finish(nil, err) end
    local st = sub:stats()
    local moved = st.position ~= nil and st.position ~= summary.position
    summary.position, summary.head, summary.done = st.position, st.head or st.position, st.delivered
    local caught_up = st.held and summary.head ~= nil and summary.position >= summary.head
    if caught_up and not summary.caught_up then
      -- The switch-over: readers of the alias read the target table from now on.
      summary.caught_up = true
      if opts.alias then
        local ok, aerr = readmodels.set_alias(c, opts.alias, name, summary.position)
        if not ok then return finish(nil, aerr) end
        summary.alias = opts.alias
      end
    end
    if moved or n > 0 then report() end
    if caught_up and not opts.follow then break end
    -- Nothing delivered: the feed read to its head, a page waiting to be
    -- tried again, or another instance holding the lease.
    if n == 0 then c.sleep(caught_up and poll or math_min(poll, IDLE_WAIT)) end
  end
  return finish(summary)
end

return _M
