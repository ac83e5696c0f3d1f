--- `dynlog replay`: stored events published to EventBridge again.
local cli_args = require "dynlog.cli.args"
local core = require "dynlog.core"
local envelope = require "dynlog.client.envelope"
local eventkey = require "dynlog.client.eventkey"
local output = require "dynlog.cli.output"
local trigger = require "dynlog.pipeline.trigger"

local ipairs, tostring = ipairs, tostring
local str_format, str_sub = string.format, string.sub
local unmarshal_item = core.unmarshal_item
local check_count, new_client, time_arg = cli_args.check_count, cli_args.new_client, cli_args.time_arg
local encode, fail, shown_url = output.encode, output.fail, output.shown_url

local _M = {}

-- Is the event item within [since, till)? Its time is its ULID's in ulid
-- mode, its appended_at in version mode (none: outside every range).
local function in_range(item, sort_key, since, till)
  if not since and not till then return true end
  local ms = envelope.time_of(item, sort_key)
  return ms ~= nil and (not since or ms >= since) and (not till or ms < till)
end

_M.replay = {
  usage = "replay",
  summary = "publish stored events to EventBridge again",
  options = { log = "value", since = "value", ["until"] = "value", bus = "value", source = "value",
              ["detail-type"] = "value" },
  help = [[
Publishes the stored events again, as an EventBridge archive replay did:
scans the whole table, page by page, and publishes every event (items whose
pk ends in "#stream") with the detail the trigger gives it
({"log", "key", "type", "payload", "appended_at", "meta"}, or the partial
form beyond 10240 bytes, and the entry's Time and TraceHeader) to bus
"dynamodb-log", source "dynamodb-log", detail type "stream changes".
Each stream's events go out in sort-key order, as the scan returns them;
streams are interleaved. The scan is eventually consistent. Prints the number published; with --json
{"published", "scanned", "bus"}.

options:
  --log LOG             only events of this log
  --since TIME          only events at or after TIME: RFC 3339
                        (2026-11-25T12:00:00Z) or epoch seconds; the time of
                        an event is its ULID's in ulid mode, its appended_at
                        in version mode (events without one are left out)
  --until TIME          only events before TIME (as --since)
  --bus NAME            the event bus (default dynamodb-log)
  --source S            the events' source (default dynamodb-log)
  --detail-type T       the events' detail type (default "stream changes")]],
  run = function(ctx, args)
    check_count(args, 0, 0, ctx)
    local o = ctx.opts
    local since, till = time_arg(o, "since"), time_arg(o, "until")
    local log = o.log
    local bus, source = o.bus or trigger.BUS, o.source or trigger.SOURCE
    local detail_type = o["detail-type"] or trigger.DETAIL_TYPE
    local c, cerr = new_client(ctx)
    if not c then return fail(ctx, cerr) end

    local params = { TableName = ctx.table }
    if log then
      params.FilterExpression = "begins_with(pk, :prefix)"
      params.ExpressionAttributeValues = { [":prefix"] = { S = log .. "#" } }
    end
    local published, scanned = 0, 0
    repeat
      local resp, err = c:call("Scan", params)
      if not resp then return fail(ctx, err) end
      local entries = {}
      for _, raw in ipairs(resp.Items or {}) do
        scanned = scanned + 1
        local item = unmarshal_item(raw)
        local wanted = eventkey.is_event(item)
          and (log == nil or item.log == log or str_sub(item.pk, 1, #log + 1) == log .. "#")
        if wanted and in_range(item, ctx.sort_key, since, till) then
          entries[#entries + 1] = trigger.entry(item, { bus = bus, source = source, detail_type = detail_type })
        end
      end
      if #entries > 0 then
        local _, perr = c:publish(entries)
        if perr then
          local ok_in_page, unreachable = 0, false
          for i = 1, #entries do
            if perr.results and perr.results[i] then ok_in_page = ok_in_page + 1 end
            local code = perr[i] and perr[i].code
            if code == "connection" or code == "timeout" or code == "tls" then unreachable = true end
          end
          ctx.err:write("dynlog: replay stopped after publishing ", tostring(published + ok_in_page),
            " event(s)\n")
          return fail(ctx, perr, unreachable and ("could not reach EventBridge at " .. shown_url(c.services.events.url)
            .. "; check --events-endpoint (AWS_ENDPOINT_URL_EVENTBRIDGE) and --region") or nil)
        end
        published = published + #entries
      end
      params.ExclusiveStartKey = resp.LastEvaluatedKey
    until params.ExclusiveStartKey == nil
    if ctx.json then
      ctx.out:write(encode({ published = published, scanned = scanned, bus = bus }), "\n")
    else
      ctx.out:write(str_format("published %d event(s) to bus %s (%d item(s) scanned)\n", published, bus, scanned))
    end
    return 0
  end,
}

return _M
