--- `dynlog query LOG ID` and `dynlog head LOG ID`: the events of a stream.
local cli_args = require "dynlog.cli.args"
local output = require "dynlog.cli.output"

local check_count, new_client, positive_integer, sort_key_arg, time_arg =
  cli_args.check_count, cli_args.new_client, cli_args.positive_integer, cli_args.sort_key_arg, cli_args.time_arg
local event_printer, fail = output.event_printer, output.fail

local _M = {}

_M.query = {
  usage = "query LOG ID",
  summary = "the events of a stream, in order",
  options = { after = "value", before = "value", limit = "value", reverse = "flag", since = "value",
              ["until"] = "value" },
  help = [[
Prints the events of the stream LOG/ID in sort-key order, read page by page:
a table of SK, TIME (the ULID's time, or appended_at in version mode), TYPE
and PAYLOAD, or with --json one event per line ({"pk", "sk", "log", "type",
"payload", "appended_at", "meta"}). An empty stream prints nothing.

options:
  --after SK     only events after this sort key (exclusive)
  --before SK    only events before this sort key (exclusive)
  --since TIME   only events at or after TIME: RFC 3339 (2026-11-25T12:00:00Z)
                 or epoch seconds; the ULID's time in ulid mode, appended_at
                 in version mode (read with a filter: the whole stream is read)
  --until TIME   only events before TIME (as --since)
  --limit N      at most N events
  --reverse      newest first]],
  run = function(ctx, args)
    check_count(args, 2, 2, ctx)
    local q = {
      after = sort_key_arg(ctx, "after", ctx.opts.after), before = sort_key_arg(ctx, "before", ctx.opts.before),
      limit = positive_integer(ctx.opts, "limit"), reverse = ctx.opts.reverse == true,
      since = time_arg(ctx.opts, "since"), till = time_arg(ctx.opts, "until"),
    }
    local c, cerr = new_client(ctx)
    if not c then return fail(ctx, cerr) end
    local events, err = c:query(args[1], args[2], q)
    if not events then return fail(ctx, err) end
    local printer = event_printer(ctx, false)
    for ev in events do printer:add(ev) end
    printer:flush()
    if events.err then return fail(ctx, events.err) end
    return 0
  end,
}

_M.head = {
  usage = "head LOG ID",
  summary = "the latest event of a stream",
  options = {},
  help = [[
Prints the latest event of the stream LOG/ID (a strongly consistent read), as
`dynlog query` prints events. An empty stream is not a failure: nothing is
printed and the exit status is 0.]],
  run = function(ctx, args)
    check_count(args, 2, 2, ctx)
    local c, cerr = new_client(ctx)
    if not c then return fail(ctx, cerr) end
    local ev, err = c:head(args[1], args[2])
    if err then return fail(ctx, err) end
    if ev then
      local printer = event_printer(ctx, false)
      printer:add(ev)
      printer:flush()
    end
    return 0
  end,
}

return _M
