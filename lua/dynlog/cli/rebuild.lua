--- `dynlog rebuild`: a read model projected again from the feed
-- (dynlog.pipeline.rebuild), with progress on stderr.
local cli_args = require "dynlog.cli.args"
local core = require "dynlog.core"
local output = require "dynlog.cli.output"
local rebuild = require "dynlog.pipeline.rebuild"

local pairs, pcall, require, tostring, type = pairs, pcall, require, tostring, type
local math_floor = math.floor
local str_find, str_format, str_gsub = string.find, string.format, string.gsub
local check_count, new_client, name_list = cli_args.check_count, cli_args.new_client, cli_args.name_list
local positive_integer, positive_number, usage_error = cli_args.positive_integer, cli_args.positive_number,
  cli_args.usage_error
local encode, fail = output.encode, output.fail

local _M = {}

-- Seconds between two progress lines.
local PROGRESS_EVERY = 1

-- The spec a module gives: its `spec` field when it has one (a module like
-- examples/handler.lua, which exports its handlers and more beside its
-- spec), else the module's value itself.
local function load_spec(name)
  if not str_find(name, "^[%w_][%w_%.%-]*$") then
    usage_error("--spec must be a Lua module name (such as examples.handler), got " .. name)
  end
  local ok, value = pcall(require, name)
  if not ok then usage_error("--spec " .. name .. " could not be loaded: " .. tostring(value)) end
  local spec = type(value) == "table" and (type(value.spec) == "table" and value.spec or value)
  if type(spec) ~= "table" or type(spec.handlers) ~= "table" then
    usage_error("--spec " .. name .. " must return a read model's spec ({table =, handlers =, ...}) or a table"
      .. " with one as its `spec`")
  end
  return spec
end

local function duration(seconds)
  if seconds == nil then return "?" end
  seconds = math_floor(seconds + 0.5)
  if seconds >= 3600 then
    return str_format("%dh%02dm", math_floor(seconds / 3600), math_floor(seconds % 3600 / 60))
  end
  if seconds >= 60 then return str_format("%dm%02ds", math_floor(seconds / 60), seconds % 60) end
  return str_format("%ds", seconds)
end

local function progress_line(target, p)
  local pct = p.head > 0 and (100 * p.position / p.head) or 100
  return str_format("dynlog: rebuild %s: position %d of %d (%.1f%%), %d event(s), %s event(s)/s, ETA %s\n",
    target, p.position, p.head, pct, p.done, p.rate and str_format("%.1f", p.rate) or "?", duration(p.eta_seconds))
end

_M.rebuild = {
  usage = "rebuild --spec MODULE",
  summary = "project a read model again from the feed, into a new table or its own",
  options = { spec = "value", into = "value", alias = "value", rate = "value", follow = "flag", logs = "value",
              types = "value", after = "value", ["batch-size"] = "value", ["poll-interval"] = "value" },
  help = [[
Projects a read model again from the feed (the table <table>-feed), from
its first position, through the handlers of its spec (as handler.project
takes it), into the spec's table or the one --into names (created when
missing; the same table the read model lives in works too). Each page of
events is grouped by stream and each stream projected once; the read
model's version checks hold, so live projections may run beside it.
The rebuild runs as the subscription rebuild:<target table> (see
`dynlog subscriptions`): its position is stored in the feed table after
each page: the same command run again continues there (after Ctrl-C, an
error, a crash). A line of progress goes to stderr every second or so
(position, head, events/s, ETA). Once the rebuild has caught up with the
feed's head, --alias NAME points c:read_model_table(NAME) at the target
table; --follow then keeps projecting new events until Ctrl-C or SIGTERM.
Prints a summary; with --json {"table", "position", "head", "done",
"projected", "applied", "caught_up", "alias", "subscription"}.

options:
  --spec MODULE         a Lua module (found through LUA_PATH) that returns the
                        read model's spec {table =, handlers =, key =, deleted =},
                        or a table whose `spec` is one (examples.handler)
  --into TABLE          the target table (default: the spec's table)
  --alias NAME          once caught up, c:read_model_table(NAME) returns the
                        target table (an alias item in the feed table)
  --logs LOG,LOG        only events of these logs (as the read model's rule)
  --types TYPE,TYPE     only events of these types
  --rate N              at most N events per second
  --after POSITION      start after this feed position instead of the stored one
                        (0: from the first event again)
  --batch-size N        events per page (default 100, at most 1000)
  --follow              after catching up, keep projecting new events
  --poll-interval S     with --follow, seconds between reads of the feed (default 1)]],
  run = function(ctx, args)
    check_count(args, 0, 0, ctx)
    local o = ctx.opts
    if not o.spec then usage_error("--spec MODULE is required: the module that returns the read model's spec") end
    local rate = positive_number(o, "rate")
    local batch = positive_integer(o, "batch-size")
    if batch and batch > 1000 then usage_error("--batch-size must be at most 1000, got " .. o["batch-size"]) end
    local poll = positive_number(o, "poll-interval")
    local after
    if o.after then
      after = cli_args.exact_integer(o.after)
      if after == false then cli_args.too_large("after", o.after) end
      if not after then usage_error("--after must be a feed position (a whole number from 0), got " .. o.after) end
    end
    local into = o.into
    if into and (#into < 3 or #into > 255 or str_find(into, "[^%w_%.%-]")) then
      usage_error("invalid table name " .. into .. ": 3-255 characters of letters, digits, '_', '-' and '.'")
    end
    local logs, types = name_list(o, "logs"), name_list(o, "types")
    local given = load_spec(o.spec)
    local spec = {}
    for k, v in pairs(given) do spec[k] = v end
    spec.table = into or spec.table
    if type(spec.table) ~= "string" then
      usage_error("the spec of " .. o.spec .. " names no table: pass --into TABLE")
    end
    local c, cerr = new_client(ctx)
    if not c then return fail(ctx, cerr) end

    core.signal_catch()
    local last_line, announced = core.now(), false
    -- A spec rebuild refuses (a key that is not a function, …) raises: the
    -- module's mistake, a usage error.
    local ran, summary, err = pcall(rebuild.rebuild, {
      client = c, spec = spec, logs = logs, types = types, alias = o.alias, rate = rate, after = after,
      batch_size = batch, poll_interval = poll, follow = o.follow == true,
      stop = function() return core.signal_caught() and true or false end,
      progress = function(p)
        local now = core.now()
        if o.follow and not announced and p.position >= p.head then
          announced = true
          ctx.err:write("dynlog: rebuild ", spec.table, " caught up at position ", tostring(p.position),
            o.alias and ("; " .. o.alias .. " now reads " .. spec.table) or "",
            "; following the feed (stop with Ctrl-C)\n")
          ctx.err:flush()
        elseif now - last_line >= PROGRESS_EVERY then
          ctx.err:write(progress_line(spec.table, p))
          ctx.err:flush()
          last_line = now
        end
      end,
    })
    local signal = core.signal_caught()
    core.signal_restore()
    if not ran then
      usage_error("--spec " .. o.spec .. " is not a spec rebuild takes: "
        .. str_gsub(tostring(summary), "^rebuild: ", ""))
    end
    if not summary then
      if err.code == "ResourceNotFoundException" then
        return fail(ctx, err, "the table has no feed (" .. c.feed_table .. ") or no such target table: index the"
          .. " table first")
      end
      return fail(ctx, err, "run the same command again to continue from the position stored")
    end
    if ctx.json then
      ctx.out:write(encode({ table = spec.table, position = summary.position, head = summary.head,
                             done = summary.done, projected = summary.projected, applied = summary.applied,
                             caught_up = summary.caught_up, alias = summary.alias,
                             subscription = summary.subscription }), "\n")
    else
      ctx.out:write(str_format("rebuilt %s: %d event(s) read, %d projection(s), %d event(s) applied;"
        .. " at position %d of %d%s\n", spec.table, summary.done, summary.projected, summary.applied,
        summary.position, summary.head,
        summary.alias and ("; " .. summary.alias .. " now reads " .. spec.table) or ""))
    end
    if signal and not summary.caught_up then
      ctx.err:write("dynlog: rebuild of ", spec.table, " interrupted by SIG", signal, " at position ",
        tostring(summary.position), "; run the same command again to continue\n")
      return 1
    end
    return 0
  end,
}

return _M
