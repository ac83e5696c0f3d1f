--- `dynlog tail`: the table's DynamoDB stream followed, its new events printed.
local cli_args = require "dynlog.cli.args"
local core = require "dynlog.core"
local envelope = require "dynlog.client.envelope"
local eventkey = require "dynlog.client.eventkey"
local output = require "dynlog.cli.output"
local shard_reader = require "dynlog.pipeline.shard_reader"

local tostring, type = tostring, type
local str_sub = string.sub
local unmarshal_item = core.unmarshal_item
local check_count, new_client, positive_integer = cli_args.check_count, cli_args.new_client, cli_args.positive_integer
local time_arg = cli_args.time_arg
local event_printer, fail = output.event_printer, output.fail

local _M = {}

local POLL_SECONDS = 0.25
local REDISCOVER_SECONDS = 10

-- The event item of a stream record, or nil when it is not an event to show.
-- since: only events of that time or later (their ULID's time in ulid
-- mode, their appended_at in version mode).
local function record_event(record, log, since, sort_key)
  if record.eventName ~= "INSERT" and record.eventName ~= "MODIFY" then return nil end
  local image = record.dynamodb and record.dynamodb.NewImage
  if type(image) ~= "table" then return nil end
  local item = unmarshal_item(image)
  if not eventkey.is_event(item) then return nil end
  if log and item.log ~= log and str_sub(item.pk, 1, #log + 1) ~= log .. "#" then return nil end
  if since then
    local ms = envelope.time_of(item, sort_key)
    if not ms or ms < since then return nil end
  end
  return item
end

_M.tail = {
  usage = "tail",
  summary = "follow the table's stream, printing new events",
  options = { log = "value", count = "value", ["from-start"] = "flag", since = "value" },
  help = [[
Follows the table's DynamoDB stream and prints each new event as it arrives
(as `dynlog query` prints events, with LOG and ID columns; --json: one event
per line), until SIGINT, SIGTERM, SIGHUP or SIGPIPE (exit status 0) or --count
events.
Only events are shown (items whose pk ends in "#stream"). It starts at the
end of the stream: events appended before it started are not shown, unless
--from-start or --since. A line on stderr tells when it is following.

options:
  --log LOG      only events of this log
  --count N      stop after N events
  --from-start   begin with the oldest records the stream keeps (24 hours)
  --since TIME   begin with the oldest records the stream keeps, showing only
                 events of TIME or later: RFC 3339 (2026-11-25T12:00:00Z) or
                 epoch seconds; an event's time is its ULID's in ulid mode,
                 its appended_at in version mode (events without one are
                 not shown)]],
  run = function(ctx, args)
    check_count(args, 0, 0, ctx)
    local count = positive_integer(ctx.opts, "count")
    local log = ctx.opts.log
    local since = time_arg(ctx.opts, "since")
    local c, cerr = new_client(ctx)
    if not c then return fail(ctx, cerr) end
    local arn, err = c:latest_stream_arn()
    if not arn then return fail(ctx, err) end
    local follower = shard_reader.follow(c, arn, ctx.opts["from-start"] == true or since ~= nil)
    local ok
    ok, err = follower:discover()
    if ok then ok, err = follower:open() end
    if not ok then return fail(ctx, err) end
    -- Signals are caught from here on: the line below tells a waiting
    -- script that tail runs, and a SIGTERM right after it must stop it cleanly.
    core.signal_catch()
    ctx.err:write("dynlog: following the stream of ", ctx.table, log and (" (log " .. log .. ")") or "",
      "; stop with Ctrl-C\n")
    ctx.err:flush()

    local printer = event_printer(ctx, true, 1)
    local shown = 0
    local function on_record(record)
      local ev = record_event(record, log, since, ctx.sort_key)
      if not ev then return true end
      printer:add(ev)
      printer:flush()
      shown = shown + 1
      return not (count and shown >= count)
    end

    local next_discovery = core.now() + REDISCOVER_SECONDS
    local status = 0
    while not core.signal_caught() and not (count and shown >= count) do
      local n, perr = follower:poll(on_record)
      if not n then status = fail(ctx, perr) break end
      if core.now() >= next_discovery then
        local dok, derr = follower:discover()
        if not dok then status = fail(ctx, derr) break end
        next_discovery = core.now() + REDISCOVER_SECONDS
      end
      if n == 0 and not (count and shown >= count) then c.sleep(POLL_SECONDS) end
    end
    local signal = core.signal_caught()
    core.signal_restore()
    if signal and status == 0 then
      ctx.err:write("dynlog: stopped by SIG", signal, " after ", tostring(shown), " event(s)\n")
    end
    return status
  end,
}

return _M
