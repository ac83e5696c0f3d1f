--- `dynlog replay`: stored events published to EventBridge again, in the
-- order of the feed (dynlog.client.feed) when the table has one, else from a
-- scan of the table.
local cli_args = require "dynlog.cli.args"
local core = require "dynlog.core"
local envelope = require "dynlog.client.envelope"
local eventkey = require "dynlog.client.eventkey"
local output = require "dynlog.cli.output"
local ratelimit = require "dynlog.base.ratelimit"
local readmodels = require "dynlog.client.readmodels"
local trigger = require "dynlog.pipeline.trigger"

local ipairs, tostring = ipairs, tostring
local math_floor, math_max, math_min = math.floor, math.max, math.min
local str_format = string.format
local tbl_concat = table.concat
local unmarshal_item = core.unmarshal_item
local check_count, new_client, time_arg = cli_args.check_count, cli_args.new_client, cli_args.time_arg
local name_list, positive_number, usage_error = cli_args.name_list, cli_args.positive_number, cli_args.usage_error
local encode, fail, shown_url = output.encode, output.fail, output.shown_url

local _M = {}

-- Events read from the feed at a time, and entries per PutEvents call.
local PAGE = 100
local PUT_EVENTS_ENTRIES = 10

-- The kind of the feed table's items that keep a named replay's position.
local KIND = "replay"

-- Is the event item within [since, till)? Its time is its ULID's in ulid
-- mode, its appended_at in version mode (none: outside every range).
local function in_range(item, sort_key, since, till)
  if not since and not till then return true end
  local ms = envelope.time_of(item, sort_key)
  return ms ~= nil and (not since or ms >= since) and (not till or ms < till)
end

local function set_of(list)
  if not list then return nil end
  local set = {}
  for _, v in ipairs(list) do set[v] = true end
  return set
end

-- Publishes entries in calls of at most `batch` entries, each call waiting
-- for the rate limiter first; after(i) is called once entries[1..i] are
-- published; stop() (optional) is asked before each call, and true ends
-- the run there. Returns the count published (and true when stop() ended
-- it), or nil, err, the count
-- published in order (entries[1..n]: later calls are not sent after a
-- failure), the count published in all (EventBridge may have taken entries
-- of the failed call after the one it refused).
local function publish_all(c, entries, batch, limiter, after, stop)
  local done = 0
  while done < #entries do
    -- stop() (a signal caught): the calls made are done, the rest is not sent
    if stop and stop() then return done, true end
    local chunk = {}
    for i = done + 1, math_min(#entries, done + batch) do chunk[#chunk + 1] = entries[i] end
    if limiter then limiter:take(#chunk) end
    local _, perr = c:publish(chunk, { ordered = true })
    if perr then
      local prefix, taken = 0, 0
      while perr.results and perr.results[prefix + 1] do prefix = prefix + 1 end
      perr.unreachable = false
      for i = 1, #chunk do
        if perr.results and perr.results[i] then taken = taken + 1 end
        local code = perr[i] and perr[i].code
        if code == "connection" or code == "timeout" or code == "tls" then perr.unreachable = true end
      end
      return nil, perr, done + prefix, done + taken
    end
    done = done + #chunk
    if after then
      local ok, aerr = after(done)
      if not ok then return nil, aerr, done, done end
    end
  end
  return done
end

local function publish_failed(ctx, c, perr, published, resume)
  ctx.err:write("dynlog: replay stopped after publishing ", tostring(published), " event(s)",
    resume and ("; " .. resume) or "", "\n")
  return fail(ctx, perr, perr.unreachable and ("could not reach EventBridge at " .. shown_url(c.services.events.url)
    .. "; check --events-endpoint (AWS_ENDPOINT_URL_EVENTBRIDGE) and --region") or nil)
end

-- The table's items page by page (Scan): each stream's events in sort-key
-- order, streams interleaved.
local function replay_scan(ctx, c, r)
  local params = { TableName = ctx.table }
  if r.logs then
    local terms, values = {}, {}
    for i, log in ipairs(r.logs) do
      terms[i] = "begins_with(pk, :p" .. i .. ")"
      values[":p" .. i] = { S = log .. "#" }
    end
    params.FilterExpression = tbl_concat(terms, " OR ")
    params.ExpressionAttributeValues = values
  end
  local published, scanned = 0, 0
  repeat
    local resp, err = c:call("Scan", params)
    if not resp then return fail(ctx, err) end
    local entries = {}
    for _, raw in ipairs(resp.Items or {}) do
      scanned = scanned + 1
      local item = unmarshal_item(raw)
      local log = eventkey.is_event(item) and (item.log or eventkey.parse(item.pk))
      local wanted = log and (not r.logs or r.log_set[item.log] or r.log_set[log])
        and (not r.types or r.type_set[item.type])
      if wanted and in_range(item, ctx.sort_key, r.since, r.till) then
        entries[#entries + 1] = trigger.entry(item, r.entry_opts)
      end
    end
    if #entries > 0 then
      local n, perr, _, taken = publish_all(c, entries, r.batch, r.limiter)
      if not n then return publish_failed(ctx, c, perr, published + taken) end
      published = published + n
    end
    params.ExclusiveStartKey = resp.LastEvaluatedKey
  until params.ExclusiveStartKey == nil
  if ctx.json then
    ctx.out:write(encode({ published = published, scanned = scanned, bus = r.entry_opts.bus }), "\n")
  else
    ctx.out:write(str_format("published %d event(s) to bus %s (%d item(s) scanned)\n", published,
      r.entry_opts.bus, scanned))
  end
  return 0
end

-- The feed from position `after` up to the head it has when the replay
-- starts, in feed order. A named replay stores its position after each
-- published call, so that the same name continues after it.
local function replay_feed(ctx, c, r, after, upto)
  local name = r.name
  local published, first, position = 0, nil, after
  local function save(pos)
    position = pos
    if not r.named then return true end
    return readmodels.save_position(c, KIND, name, pos, upto)
  end
  local resume = r.named and ("run it again with --name " .. name .. " to continue") or nil
  core.signal_catch()
  local signal
  while position < upto do
    signal = core.signal_caught()
    if signal then break end
    local events, last, err = c:read_all({ after = position, limit = PAGE, logs = r.logs, types = r.types,
                                           numbers = "exact" })
    if not events then core.signal_restore() return fail(ctx, err) end
    last = math_min(last, upto)
    local entries, positions = {}, {}
    for _, ev in ipairs(events) do
      -- An erased entry's event is gone from the log (delete_stream,
      -- truncate, TTL): there is nothing to publish again.
      if ev.position <= upto and not ev.erased and (eventkey.is_event(ev) or eventkey.is_tombstone(ev))
          and in_range(ev, ctx.sort_key, r.since, r.till) then
        entries[#entries + 1] = trigger.entry(ev, r.entry_opts)
        positions[#positions + 1] = ev.position
        first = first or ev.position
      end
    end
    local n, perr, done, taken = publish_all(c, entries, r.batch, r.limiter, function(i)
      -- the page's last call: the entries the filters passed over are done too
      return save(i == #entries and last or positions[i])
    end, core.signal_caught)
    if not n then
      core.signal_restore()
      if done > 0 then save(positions[done]) end
      return publish_failed(ctx, c, perr, published + taken, resume)
    end
    published = published + n
    if perr == true then -- stopped by a signal between two calls
      signal = core.signal_caught()
      break
    end
    if #entries == 0 then
      local ok, serr = save(last)
      if not ok then core.signal_restore() return fail(ctx, serr) end
    end
  end
  core.signal_restore()
  if ctx.json then
    ctx.out:write(encode({ published = published, bus = r.entry_opts.bus, name = name, first = first,
                           position = position, head = upto, complete = position >= upto }), "\n")
  elseif position > after then
    ctx.out:write(str_format("published %d event(s) to bus %s (replay %s: feed positions %d to %d of %d)\n",
      published, r.entry_opts.bus, name, after + 1, position, upto))
  else
    ctx.out:write(str_format("published %d event(s) to bus %s (replay %s: at feed position %d of %d)\n",
      published, r.entry_opts.bus, name, position, upto))
  end
  if signal then
    ctx.err:write("dynlog: replay ", name, " interrupted by SIG", signal, " at position ", tostring(position),
      resume and ("; " .. resume) or "", "\n")
    return 1
  end
  return 0
end

_M.replay = {
  usage = "replay",
  summary = "publish stored events to EventBridge again, in feed order",
  options = { log = "value", logs = "value", types = "value", since = "value", ["until"] = "value",
              bus = "value", source = "value", ["detail-type"] = "value", rate = "value", name = "value",
              from = "value", scan = "flag", feed = "flag" },
  help = [[
Publishes the stored events again, as an EventBridge archive replay did,
with the detail the trigger gives them ({"log", "key", "type", "payload",
"appended_at", "meta"}, or the partial form beyond 10240 bytes, and the
entry's Time and TraceHeader) to bus "dynamodb-log", source "dynamodb-log",
detail type "stream changes", in calls of up to 10 entries.

When the table has a feed (the table <table>-feed, with events in it), the
events go out in feed order, across streams, from the first position (or
where --name or --from says) up to the feed's head when the replay
started; each detail ends with "replay-name": NAME, so that consumers can
tell a replayed event from a live one (every other field as the trigger
gives it). A replay with --name stores its position in the feed table
after each call EventBridge accepted: the same command run again continues
after it, so an interrupted replay (Ctrl-C, an error) publishes each event
once (an event of a call EventBridge refused in part may go out twice).
Events erased from the log since the feed took them (delete_stream,
truncate, TTL) are not published.
Prints the number published; with --json {"published", "bus", "name",
"first", "position", "head", "complete"}.

With --scan (or when the table has no feed, or an empty one), the whole
table is scanned page by page, as before the feed: each stream's events in
sort-key order, streams interleaved, without the replay marker; the scan is
eventually consistent. Prints the number published; with --json
{"published", "scanned", "bus"}.

options:
  --logs LOG,LOG        only events of these logs (--log LOG: one)
  --types TYPE,TYPE     only events of these types
  --since TIME          only events at or after TIME: RFC 3339
                        (2026-11-25T12:00:00Z) or epoch seconds; the time of
                        an event is its ULID's in ulid mode, its appended_at
                        in version mode (events without one are left out)
  --until TIME          only events before TIME (as --since)
  --rate N              at most N events per second (a token bucket of one
                        second's events; calls shrink to fit): never faster
  --name NAME           the replay's name (its marker, and its position in the
                        feed table under replay#NAME: run again to continue);
                        default replay-<ULID>, which is not stored
  --from POSITION       start at this feed position (the first event replayed
                        is the one at POSITION), whatever --name stored
  --feed                the feed, or fail when there is none
  --scan                a scan of the table, even when it has a feed
  --bus NAME            the event bus (default dynamodb-log)
  --source S            the events' source (default dynamodb-log)
  --detail-type T       the events' detail type (default "stream changes")]],
  run = function(ctx, args)
    check_count(args, 0, 0, ctx)
    local o = ctx.opts
    if o.log and o.logs then usage_error("--log and --logs: give one of them") end
    if o.scan and o.feed then usage_error("--scan and --feed: give one of them") end
    if o.scan and (o.name or o.from) then usage_error("--name and --from read the feed: leave out --scan") end
    local rate = positive_number(o, "rate")
    local from = o.from and cli_args.exact_integer(o.from)
    if o.from and not (from and from >= 1) then
      if from == false then cli_args.too_large("from", o.from) end
      usage_error("--from must be a feed position (a whole number from 1), got " .. o.from)
    end
    if o.name and (o.name == "" or #o.name > 200 or o.name:find("[%c#]")) then
      usage_error("--name must be 1 to 200 characters without '#' or control characters, got " .. o.name)
    end
    local logs = o.log and { o.log } or name_list(o, "logs")
    local types = name_list(o, "types")
    local r = {
      logs = logs, types = types, log_set = set_of(logs), type_set = set_of(types),
      since = time_arg(o, "since"), till = time_arg(o, "until"),
      entry_opts = { bus = o.bus or trigger.BUS, source = o.source or trigger.SOURCE,
                     detail_type = o["detail-type"] or trigger.DETAIL_TYPE },
      -- never more entries in one call than a second's worth
      batch = rate and math_max(1, math_min(PUT_EVENTS_ENTRIES, math_floor(rate))) or PUT_EVENTS_ENTRIES,
    }
    local c, cerr = new_client(ctx)
    if not c then return fail(ctx, cerr) end
    if rate then r.limiter = ratelimit.new({ rate = rate, burst = r.batch, now = c.now, sleep = c.sleep }) end
    if o.scan then return replay_scan(ctx, c, r) end

    local head, herr = c:feed_head()
    if not head then
      if herr.code ~= "ResourceNotFoundException" then return fail(ctx, herr) end
      if o.feed or o.name or o.from then
        return fail(ctx, herr, "the table has no feed (" .. c.feed_table .. "): index it first, or replay"
          .. " with --scan")
      end
      return replay_scan(ctx, c, r)
    end
    if head == 0 and not (o.feed or o.name or o.from) then
      ctx.err:write("dynlog: the feed ", c.feed_table, " is empty: replaying from a scan of the table\n")
      return replay_scan(ctx, c, r)
    end
    r.name, r.named = o.name or ("replay-" .. core.ulid():lower()), o.name ~= nil
    r.entry_opts.replay_name = r.name
    local after = 0
    if from then
      after = from - 1
    elseif r.named then
      local stored, perr = readmodels.position(c, KIND, r.name)
      if stored == nil then return fail(ctx, perr) end
      after = stored or 0
    end
    return replay_feed(ctx, c, r, after, head)
  end,
}

return _M
