--- `dynlog subscriptions`: the subscriptions of the feed (dynlog.subscribe),
-- their checkpoints, leases and dead letters.
local cli_args = require "dynlog.cli.args"
local core = require "dynlog.core"
local feed = require "dynlog.client.feed"
local output = require "dynlog.cli.output"
local subscription = require "dynlog.pipeline.subscription"
local errors = require "dynlog.errors"

local ipairs, tonumber, tostring, type = ipairs, tonumber, tostring, type
local os_date = os.date
local math_floor, math_max = math.floor, math.max
local str_format = string.format
local usage_error, new_client, exact_integer = cli_args.usage_error, cli_args.new_client, cli_args.exact_integer
local encode, fail, new_table, printable = output.encode, output.fail, output.new_table, output.printable

local _M = {}

local TABLE_NAME = "^[%w_%.%-]+$"

local function table_option(o, name)
  local v = o[name]
  if v == nil then return nil end
  if #v < 3 or #v > 255 or not v:find(TABLE_NAME) then
    usage_error("--" .. name .. " must be a table name: 3-255 characters of letters, digits, '_', '-' and '.'")
  end
  return v
end

local function time_text(ms)
  if type(ms) ~= "number" or ms <= 0 then return "-" end
  return os_date("!%Y-%m-%dT%H:%M:%S", math_floor(ms / 1000)) .. str_format(".%03dZ", math_floor(ms % 1000))
end

-- The summary of one checkpoint item.
local function summary(item, head, now_ms)
  local position = tonumber(item.position) or 0
  local state = subscription.lease_state(item, now_ms)
  return {
    name = item.name, position = position, head = head, lag_events = head and math_max(0, head - position) or nil,
    owner = item.owner, lease = state, lease_expires_at = tonumber(item.lease_expires_at),
    updated_at = tonumber(item.updated_at), created_at = tonumber(item.created_at),
  }
end

local function lease_text(s, now_ms)
  if s.lease == "held" then
    return str_format("held (%.1fs left)", math_max(0, (s.lease_expires_at - now_ms) / 1000))
  end
  return s.lease
end

local function read_summary(c, name, head)
  local item, err = subscription.read(c, name)
  if item == nil then return nil, err end
  if not item then return nil, errors.new("invalid_argument", "no subscription named " .. name) end
  return summary(item, head, math_floor(c.now() * 1000))
end

local function list(ctx, c)
  local names, err = subscription.names(c)
  if not names then return fail(ctx, err) end
  local head, herr = feed.head(c)
  if not head then return fail(ctx, herr) end
  local now_ms = math_floor(c.now() * 1000)
  local t = not ctx.json and new_table(ctx.out, { "NAME", "POSITION", "HEAD", "LAG", "OWNER", "LEASE" }) or nil
  for _, name in ipairs(names) do
    local item, rerr = subscription.read(c, name)
    if item == nil then return fail(ctx, rerr) end
    if item then
      local s = summary(item, head, now_ms)
      if ctx.json then
        ctx.out:write(encode(s), "\n")
      else
        t:add({ name, tostring(s.position), tostring(head), tostring(s.lag_events), s.owner or "-",
                lease_text(s, now_ms) })
      end
    end
  end
  if t then t:flush() end
  return 0
end

local function show(ctx, c, name)
  local head, herr = feed.head(c)
  if not head then return fail(ctx, herr) end
  local s, err = read_summary(c, name, head)
  if not s then return fail(ctx, err) end
  local parked, derr = subscription.dead_letters(c, name, ctx.dead_table)
  if not parked then return fail(ctx, derr) end
  s.dead_letters = #parked
  if ctx.json then
    ctx.out:write(encode(s), "\n")
    return 0
  end
  local now_ms = math_floor(c.now() * 1000)
  local rows = {
    { "name", s.name }, { "position", tostring(s.position) }, { "head", tostring(head) },
    { "lag", tostring(s.lag_events) .. " event(s)" }, { "owner", s.owner or "-" },
    { "lease", lease_text(s, now_ms) }, { "updated", time_text(s.updated_at) },
    { "created", time_text(s.created_at) }, { "dead letters", tostring(s.dead_letters) },
  }
  for _, row in ipairs(rows) do ctx.out:write(str_format("%-14s%s\n", row[1], printable(row[2]))) end
  return 0
end

local function position_arg(text, what)
  local n = exact_integer(text)
  if not n then usage_error(what .. " must be a position (a whole number >= 0), got " .. text) end
  return n
end

local function reset(ctx, c, name)
  local to = ctx.opts.to
  if to == nil then usage_error("reset needs --to POSITION|start|end") end
  local position
  if to == "start" then
    position = 0
  elseif to == "end" then
    local head, herr = feed.head(c)
    if not head then return fail(ctx, herr) end
    position = head
  else
    position = position_arg(to, "--to")
  end
  local item, err = subscription.set_position(c, name, position, ctx.opts.force == true)
  if not item then
    return fail(ctx, err, err.code == "bad_state"
      and "stop the subscription first, or pass --force (its running instance then reads on from the new position)"
      or nil)
  end
  if ctx.json then
    ctx.out:write(encode({ name = name, position = position }), "\n")
  else
    ctx.out:write(str_format("subscription %s: position %d\n", name, position))
  end
  return 0
end

local function dead_letters(ctx, c, name)
  local letters, err = subscription.dead_letters(c, name, ctx.dead_table)
  if not letters then return fail(ctx, err) end
  local t = not ctx.json and new_table(ctx.out, { "POSITION", "TYPE", "STREAM", "TRIES", "STATUS", "ERROR" }) or nil
  for _, l in ipairs(letters) do
    if ctx.json then
      ctx.out:write(encode({ name = name, position = tonumber(l.position or l.sk), type = l.type, stream = l.stream,
                             tries = l.tries, status = l.status, error = l.error, parked_at = l.parked_at,
                             event = l.event }), "\n")
    else
      t:add({ tostring(l.position or l.sk), tostring(l.type), tostring(l.stream), tostring(l.tries),
              tostring(l.status), tostring(l.error) })
    end
  end
  if t then t:flush() end
  return 0
end

local function resubmit(ctx, c, name, positions)
  local all = ctx.opts.all == true
  if all and #positions > 0 then usage_error("resubmit takes positions or --all, not both") end
  if not all and #positions == 0 then usage_error("resubmit needs positions or --all") end
  local wanted = {}
  if all then
    local letters, err = subscription.dead_letters(c, name, ctx.dead_table, subscription.PARKED)
    if not letters then return fail(ctx, err) end
    for _, l in ipairs(letters) do wanted[#wanted + 1] = tonumber(l.sk) end
  else
    for _, p in ipairs(positions) do wanted[#wanted + 1] = position_arg(p, "a position") end
  end
  local done = core.array()
  for _, p in ipairs(wanted) do
    local ok, err = subscription.resubmit(c, name, p, ctx.dead_table)
    if ok == nil then return fail(ctx, err) end
    if not ok then
      return fail(ctx, errors.new("invalid_argument",
        str_format("subscription %s has no dead letter at position %d", name, p)),
        "list them with `dynlog subscriptions dead-letters " .. name .. "`")
    end
    done[#done + 1] = p
  end
  if ctx.json then
    ctx.out:write(encode({ name = name, resubmitted = done }), "\n")
  else
    ctx.out:write(str_format("subscription %s: %d dead letter(s) resubmitted\n", name, #done))
  end
  return 0
end

local SUBCOMMANDS = { show = show, reset = reset, ["dead-letters"] = dead_letters, resubmit = resubmit }

_M.subscriptions = {
  usage = "subscriptions [show|reset|dead-letters|resubmit NAME]",
  summary = "list subscriptions of the feed; show, reset, dead letters",
  options = { to = "value", force = "flag", all = "flag", ["feed-table"] = "value",
              ["dead-letter-table"] = "value" },
  help = [[
subscriptions                      every subscription of the feed: NAME,
                                   POSITION (its checkpoint: the last feed
                                   position handled), HEAD (the feed's last
                                   position), LAG (HEAD - POSITION), OWNER
                                   and LEASE (held, expired or free)
subscriptions show NAME            one subscription, with its times and its
                                   number of dead letters
subscriptions reset NAME --to POSITION|start|end
                                   moves its checkpoint: it delivers what
                                   follows POSITION next (start: from the
                                   first event; end: from the next one to
                                   come). Refused while a running instance
                                   holds its lease, unless --force: the
                                   instance then reads on from there
subscriptions dead-letters NAME    its parked events (on_poison =
                                   "dead_letter"): POSITION, TYPE, STREAM,
                                   TRIES, STATUS, ERROR
subscriptions resubmit NAME [POSITION...|--all]
                                   marks dead letters "resubmitted": the
                                   running subscription delivers them again
                                   on its next round (and deletes them once
                                   handled, or parks them again)
With --json, one object per line.

options:
  --to POSITION|start|end    (reset) the new checkpoint
  --force                    (reset) even while the lease is held
  --all                      (resubmit) every parked dead letter
  --feed-table NAME          the feed table (default <table>-feed)
  --dead-letter-table NAME   where the dead letters are (default the feed table)]],
  run = function(ctx, args)
    local sub = args[1]
    local o = ctx.opts
    ctx.dead_table = table_option(o, "dead-letter-table")
    local feed_table = table_option(o, "feed-table")
    if sub == nil then
      if o.to or o.force or o.all then usage_error("--to, --force and --all go with reset and resubmit") end
    else
      if not SUBCOMMANDS[sub] then
        usage_error("unknown subscriptions command " .. sub .. " (show, reset, dead-letters or resubmit)")
      end
      if args[2] == nil then usage_error("missing argument: NAME") end
      if sub ~= "resubmit" and args[3] ~= nil then usage_error("too many arguments: " .. args[3]) end
      if sub ~= "reset" and (o.to or o.force) then usage_error("--to and --force go with reset") end
      if sub ~= "resubmit" and o.all then usage_error("--all goes with resubmit") end
    end
    local c, cerr = new_client(ctx)
    if not c then return fail(ctx, cerr) end
    if feed_table then c.feed_table = feed_table end
    if sub == nil then return list(ctx, c) end
    local rest = {}
    for i = 3, #args do rest[#rest + 1] = args[i] end
    return SUBCOMMANDS[sub](ctx, c, args[2], rest)
  end,
}

return _M
