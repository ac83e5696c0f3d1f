--- `dynlog replay`: stored events published to EventBridge again.
local cli_args = require "dynlog.cli.args"
local core = require "dynlog.core"
local eventkey = require "dynlog.client.eventkey"
local output = require "dynlog.cli.output"
local timeutil = require "dynlog.base.timeutil"
local trigger = require "dynlog.pipeline.trigger"

local ipairs, tonumber, tostring, type = ipairs, tonumber, tostring, type
local math_floor = math.floor
local str_format, str_match, str_sub = string.format, string.match, string.sub
local unmarshal_item = core.unmarshal_item
local check_count, new_client, usage_error = cli_args.check_count, cli_args.new_client, cli_args.usage_error
local encode, fail, shown_url = output.encode, output.fail, output.shown_url

local _M = {}

-- --since: RFC 3339 or epoch seconds → milliseconds, or a usage error.
local function since_ms(text)
  if str_match(text, "^%d+$") or str_match(text, "^%d+%.%d+$") then
    return math_floor(tonumber(text) * 1000 + 0.5)
  end
  local seconds = timeutil.parse_rfc3339(text)
  if not seconds then
    usage_error("--since must be an RFC 3339 time (2026-11-25T12:00:00Z) or epoch seconds, got " .. text)
  end
  local fraction = str_match(text, "%d%d:%d%d:%d%d(%.%d+)")
  return seconds * 1000 + (fraction and math_floor(tonumber("0" .. fraction) * 1000) or 0)
end

_M.replay = {
  usage = "replay",
  summary = "publish stored events to EventBridge again",
  options = { log = "value", since = "value", bus = "value", source = "value", ["detail-type"] = "value" },
  help = [[
Publishes the stored events again, as an EventBridge archive replay did:
scans the whole table, page by page, and publishes every event (items whose
pk ends in "#stream") with the detail the trigger gives it
({"log", "key", "type", "payload"}, or the partial form beyond 10240 bytes)
to bus "dynamodb-log", source "dynamodb-log", detail type "stream changes".
Each stream's events go out in sort-key order, as the scan returns them;
streams are interleaved. The scan is eventually consistent. Prints the number published; with --json
{"published", "scanned", "bus"}.

options:
  --log LOG             only events of this log
  --since TIME          only events at or after TIME: RFC 3339
                        (2026-11-25T12:00:00Z) or epoch seconds; ulid mode
                        only (version numbers carry no time)
  --bus NAME            the event bus (default dynamodb-log)
  --source S            the events' source (default dynamodb-log)
  --detail-type T       the events' detail type (default "stream changes")]],
  run = function(ctx, args)
    check_count(args, 0, 0, ctx)
    local o = ctx.opts
    local since
    if o.since then
      if ctx.sort_key ~= "ulid" then
        usage_error("--since needs ULID sort keys: a version-mode table's events carry no time")
      end
      since = since_ms(o.since)
    end
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
        if wanted and since then
          local ms = type(item.sk) == "string" and core.ulid_decode(item.sk)
          wanted = ms and ms >= since
        end
        if wanted then
          entries[#entries + 1] = { bus = bus, source = source, detail_type = detail_type,
                                    detail = trigger.detail(item) }
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
