--- `dynlog feed index|backfill|read|head`: the feed, every event of the
-- table at a position (dynlog.client.feed), filled by the indexer
-- (dynlog.pipeline.indexer) and read in order.
local cli_args = require "dynlog.cli.args"
local core = require "dynlog.core"
local feed = require "dynlog.client.feed"
local indexer = require "dynlog.pipeline.indexer"
local output = require "dynlog.cli.output"

local ipairs, pairs, pcall, tostring = ipairs, pairs, pcall, tostring
local str_format, str_gmatch = string.format, string.gmatch
local check_count, new_client, positive_integer = cli_args.check_count, cli_args.new_client, cli_args.positive_integer
local exact_integer, usage_error = cli_args.exact_integer, cli_args.usage_error
local encode, fail = output.encode, output.fail

local _M = {}

local FOLLOW_SECONDS = 0.5
local PAGE = 100

local SUBCOMMANDS = {
  index = { ["checkpoint-table"] = true, ["worker-id"] = true, ["batch-size"] = true, start = true },
  backfill = { ["page-size"] = true, restart = true },
  read = { after = true, limit = true, logs = true, types = true, follow = true },
  head = {},
}

-- A failure, with a hint that names the feed table when it is missing.
local function feed_fail(ctx, c, err)
  if err.code == "ResourceNotFoundException" and c then
    return fail(ctx, err, "the feed table " .. feed.table_of(c) .. " (or the table " .. tostring(ctx.table)
      .. ") does not exist: `dynlog feed index` and `dynlog feed backfill` make the feed table")
  end
  return fail(ctx, err)
end

-- "a,b" -> {"a", "b"}; a usage error for an empty name.
local function name_list(opts, name)
  local text = opts[name]
  if text == nil then return nil end
  local list = {}
  for part in str_gmatch(text .. ",", "([^,]*),") do
    if part == "" then usage_error("--" .. name .. " must be a comma-separated list of names, got " .. text) end
    list[#list + 1] = part
  end
  return list
end

local function run_index(ctx, c)
  local o = ctx.opts
  local start = o.start
  if start ~= nil and start ~= "trim_horizon" and start ~= "latest" then
    usage_error("--start must be trim_horizon or latest, got " .. start)
  end
  local batch_size = positive_integer(o, "batch-size")
  if batch_size and batch_size > 1000 then usage_error("--batch-size must be 1..1000, got " .. o["batch-size"]) end
  local checkpoints = o["checkpoint-table"] or (ctx.table .. "-checkpoints")
  local ok, ix = pcall(indexer.new, { client = c, checkpoint_table = checkpoints, worker_id = o["worker-id"],
                                      batch_size = batch_size, start = start })
  if not ok then usage_error((tostring(ix):gsub("^.-indexer%.new: ", ""))) end
  local made, err = ix:create_tables()
  if not made then return feed_fail(ctx, c, err) end
  ctx.err:write("dynlog: indexing the stream of ", ctx.table, " into ", feed.table_of(c), " (checkpoints in ",
    checkpoints, "); stop with Ctrl-C\n")
  ctx.err:flush()
  ix:run() -- until SIGINT, SIGTERM, SIGHUP or SIGPIPE; hands its leases back
  local s = ix:stats()
  if ctx.json then
    ctx.out:write(encode({ indexed = s.indexed, seen = s.seen, erased = s.erased, head = s.head,
                           lag_ms = s.lag_ms, worker = s.worker }), "\n")
  end
  ctx.err:write(str_format("dynlog: stopped after indexing %d event(s) (%d handed over, %d erased)\n",
    s.indexed, s.seen, s.erased))
  return 0
end

local function run_backfill(ctx, c)
  local o = ctx.opts
  local page_size = positive_integer(o, "page-size")
  local counts, err = indexer.backfill{ client = c, page_size = page_size, restart = o.restart == true,
    on_progress = function(k)
      ctx.err:write(str_format("dynlog: backfill: page %d: %d item(s) scanned, %d stream(s), %d event(s), %d added\n",
        k.pages, k.scanned, k.streams, k.events, k.added))
      ctx.err:flush()
    end }
  if not counts then
    if err.counts then
      ctx.err:write(str_format("dynlog: backfill stopped after adding %d event(s); run it again to go on\n",
        err.counts.added))
    end
    return feed_fail(ctx, c, err)
  end
  local head, herr = feed.head(c)
  if not head then return feed_fail(ctx, c, herr) end
  counts.head = head
  if ctx.json then
    ctx.out:write(encode(counts), "\n")
  else
    ctx.out:write(str_format("added %d event(s) of %d in %d stream(s) to %s (head %d)%s\n", counts.added,
      counts.events, counts.streams, feed.table_of(c), head, counts.resumed and ", resuming an earlier run" or ""))
  end
  if counts.out_of_order > 0 then
    ctx.err:write(str_format("dynlog: %d stream(s) had events in the feed already that sort after events added "
      .. "now: those follow them in the feed\n", counts.out_of_order))
  end
  return 0
end

local function run_read(ctx, c)
  local o = ctx.opts
  local after = 0
  if o.after ~= nil then
    after = exact_integer(o.after)
    if after == false then cli_args.too_large("after", o.after) end
    if not after then usage_error("--after must be a position (a whole number >= 0), got " .. o.after) end
  end
  local limit = positive_integer(o, "limit")
  local logs, types = name_list(o, "logs"), name_list(o, "types")
  local follow = o.follow == true
  local shown, head = 0, nil
  local status = 0
  if follow then core.signal_catch() end
  while not (limit and shown >= limit) do
    local want = limit and (limit - shown) or PAGE
    if want > PAGE then want = PAGE end
    local events, last, h = c:read_all{ after = after, limit = want, logs = logs, types = types }
    if not events then status = feed_fail(ctx, c, last) break end
    head = h
    for _, ev in ipairs(events) do
      ctx.out:write(encode(ev), "\n")
      shown = shown + 1
    end
    ctx.out:flush()
    after = last
    if last >= h then
      if not follow or core.signal_caught() then break end
      c.sleep(FOLLOW_SECONDS)
      if core.signal_caught() then break end
    end
  end
  if follow then core.signal_restore() end
  if status == 0 and not ctx.json then
    ctx.err:write(str_format("dynlog: %d event(s) to position %d (head %s)\n", shown, after, tostring(head)))
  end
  return status
end

local function run_head(ctx, c)
  local head, err = feed.head(c)
  if not head then return feed_fail(ctx, c, err) end
  if ctx.json then
    ctx.out:write(encode({ head = head, feed_table = feed.table_of(c) }), "\n")
  else
    ctx.out:write(tostring(head), "\n")
  end
  return 0
end

_M.feed = {
  usage = "feed index|backfill|read|head",
  summary = "the feed: every event at a position, indexed from the stream",
  options = { ["checkpoint-table"] = "value", ["worker-id"] = "value", ["batch-size"] = "value", start = "value",
              ["page-size"] = "value", restart = "flag",
              after = "value", limit = "value", logs = "value", types = "value", follow = "flag" },
  help = [[
The feed gives every event of the table a position (1, 2, 3, … with no
hole) in one order that outlives the 24 hours of the DynamoDB stream. It is
kept in the table <table>-feed.

feed index      runs the indexer until SIGINT, SIGTERM, SIGHUP or SIGPIPE:
                reads the table's DynamoDB stream with leases and
                checkpoints (several indexers share the shards) and gives
                each new event the next position; events deleted
                (delete_stream, truncate, TTL) keep their position, their
                payload erased. Makes the checkpoint and feed tables.
                Prints a line on stderr when it starts and when it stops
                (with --json, {"indexed", "seen", "erased", "head",
                "lag_ms", "worker"} on stdout at the end).
  --checkpoint-table NAME  the leases' table (default <table>-checkpoints;
                           its group is <table>#feed, apart from a trigger's)
  --worker-id ID           this indexer's name in the leases (default: host,
                           pid and a random part)
  --batch-size N           records per batch, 1..1000 (default 100)
  --start trim_horizon|latest  where shards without a checkpoint start
                           (default trim_horizon: the oldest record kept)
feed backfill   adds the events the feed lacks (written before any indexer
                ran, or while the table had no stream): scans the table page
                by page and commits each stream's events in sort-key order;
                events in the feed already keep their position. Progress on
                stderr after each page. Resumable: a run that stopped goes
                on from its last page when run again. Prints the counts;
                with --json {"added", "events", "streams", "scanned",
                "pages", "out_of_order", "resumed", "head"}.
  --page-size N            items per Scan page (default: 1 MB of items)
  --restart                scan from the start, not where a run stopped
feed read       prints the feed's events in order, one JSON object per line
                (the event as `dynlog query --json` prints it, with its
                "position"), from the first or after --after.
  --after POS              only events after position POS (default 0)
  --limit N                at most N events (default: all up to the head)
  --logs a,b               only events of these logs
  --types t,u              only events of these types
  --follow                 at the head, wait for more (until SIGINT/SIGTERM)
feed head       prints the feed's last position (0 when empty); with --json
                {"head", "feed_table"}.]],
  run = function(ctx, args)
    check_count(args, 1, 1, ctx)
    local sub = args[1]
    local allowed = SUBCOMMANDS[sub]
    if not allowed then usage_error("unknown feed command " .. sub .. " (index, backfill, read or head)") end
    for name in pairs(ctx.opts) do
      if _M.feed.options[name] and not allowed[name] then
        usage_error("option --" .. name .. " is not one of `feed " .. sub .. "`")
      end
    end
    local c, cerr = new_client(ctx)
    if not c then return fail(ctx, cerr) end
    if sub == "index" then return run_index(ctx, c) end
    if sub == "backfill" then return run_backfill(ctx, c) end
    if sub == "read" then return run_read(ctx, c) end
    return run_head(ctx, c)
  end,
}

return _M
