--- The `dynlog` command: the event log from a shell.
--
--   os.exit(require("dynlog.cli").main(arg, os.getenv))
--
-- main(argv, getenv [, streams]) runs one command and returns its exit
-- status: 0 on success, 1 when an operation failed, 2 for a usage error.
-- `getenv` is handed to dynlog.new, so the environment the command sees can
-- be replaced; `streams` ({stdin=, stdout=, stderr=, isatty=function(fd)})
-- replaces the process's files, for tests.
--
-- Everything a command prints for scripts goes to stdout (with --json, one
-- JSON object per line); diagnostics, progress and errors go to stderr as
-- `dynlog: <code>: <message>` followed by a hint of what to do.
local core = require "dynlog.core"
local dynlog = require "dynlog"
local timeutil = require "dynlog.base.timeutil"
local trigger = require "dynlog.pipeline.trigger"

local error, getmetatable, ipairs, next, pairs, pcall, setmetatable, tonumber, tostring, type, xpcall =
  error, getmetatable, ipairs, next, pairs, pcall, setmetatable, tonumber, tostring, type, xpcall
local io_open, os_date, os_execute, os_getenv, os_remove, os_rename =
  io.open, os.date, os.execute, os.getenv, os.remove, os.rename
local math_floor, math_max, math_min = math.floor, math.max, math.min
local str_byte, str_find, str_format, str_gsub, str_match, str_rep, str_sub =
  string.byte, string.find, string.format, string.gsub, string.match, string.rep, string.sub
local tbl_concat, tbl_sort = table.concat, table.sort
local json_decode, json_encode = core.json_decode, core.json_encode
local is_array, is_binary, is_set = core.is_array, core.is_binary, core.is_set
local unmarshal_item = core.unmarshal_item

local _M = { VERSION = core._VERSION }

---------------------------------------------------------------------------
-- Output helpers
---------------------------------------------------------------------------

-- JSON with object keys in sorted order, so the same event always prints
-- the same way (dynlog.core's encoder follows the table's own order).
local function encode(v)
  if type(v) ~= "table" or is_set(v) or is_binary(v) then return json_encode(v) end
  local n, count, string_keys = #v, 0, true
  for k in pairs(v) do
    count = count + 1
    if type(k) ~= "string" then string_keys = false end
  end
  local parts = {}
  if is_array(v) or (n > 0 and n == count) then
    for i = 1, n do parts[i] = encode(v[i]) end
    return "[" .. tbl_concat(parts, ",") .. "]"
  end
  if not string_keys then return json_encode(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  tbl_sort(keys)
  for i, k in ipairs(keys) do parts[i] = json_encode(k) .. ":" .. encode(v[k]) end
  return "{" .. tbl_concat(parts, ",") .. "}"
end
_M.encode = encode

-- Columns count characters, not bytes: UTF-8 continuation bytes take no room.
local function width(s)
  local _, continuation = str_gsub(s, "[\128-\191]", "")
  return #s - continuation
end

-- Control characters would break the columns (and the terminal).
local function printable(s)
  return (str_gsub(tostring(s), "%c", function(c) return str_format("\\x%02x", str_byte(c)) end))
end

-- An aligned table on a stream: the first `hold` rows are kept to size the
-- columns, later rows are printed as they come, in those widths (or wider).
local Table = {}
Table.__index = Table

local function new_table(out, columns, hold)
  return setmetatable({ out = out, columns = columns, hold = hold or 200, rows = {}, widths = false }, Table)
end

function Table:_line(cells)
  local parts, last = {}, #cells
  for i, cell in ipairs(cells) do
    if i < last then
      parts[i] = cell .. str_rep(" ", self.widths[i] - width(cell))
    else
      parts[i] = cell
    end
  end
  self.out:write(tbl_concat(parts, "  "), "\n")
end

function Table:flush()
  if not self.widths then
    if #self.rows == 0 then return end
    local widths = {}
    for i, name in ipairs(self.columns) do widths[i] = width(name) end
    for _, row in ipairs(self.rows) do
      for i, cell in ipairs(row) do widths[i] = math_max(widths[i], width(cell)) end
    end
    self.widths = widths
    self:_line(self.columns)
    for _, row in ipairs(self.rows) do self:_line(row) end
    self.rows = {}
  end
  self.out:flush()
end

function Table:add(row)
  for i, cell in ipairs(row) do row[i] = printable(cell) end
  if self.widths then return self:_line(row) end
  self.rows[#self.rows + 1] = row
  if #self.rows >= self.hold then self:flush() end
end

-- "2026-11-25T12:00:00.123Z" of a ULID, or "" when it is not one.
local function ulid_time_text(sk)
  local ms = type(sk) == "string" and core.ulid_decode(sk)
  if not ms then return "" end
  return os_date("!%Y-%m-%dT%H:%M:%S", math_floor(ms / 1000)) .. str_format(".%03dZ", ms % 1000)
end

local function id_of(ev)
  return str_match(tostring(ev.pk), "^[^#]*#(.*)#stream$") or ""
end

-- The printer of events: JSON lines, or an aligned table.
local function event_printer(ctx, with_stream, hold)
  if ctx.json then
    return {
      add = function(_, ev) ctx.out:write(encode(ev), "\n") end,
      flush = function() ctx.out:flush() end,
    }
  end
  local ulid = ctx.sort_key == "ulid"
  local columns = {}
  if with_stream then columns[#columns + 1] = "LOG" columns[#columns + 1] = "ID" end
  columns[#columns + 1] = "SK"
  if ulid then columns[#columns + 1] = "TIME" end
  columns[#columns + 1] = "TYPE"
  columns[#columns + 1] = "PAYLOAD"
  local t = new_table(ctx.out, columns, hold)
  return {
    add = function(_, ev)
      local row = {}
      if with_stream then row[#row + 1] = tostring(ev.log) row[#row + 1] = id_of(ev) end
      row[#row + 1] = tostring(ev.sk)
      if ulid then row[#row + 1] = ulid_time_text(ev.sk) end
      row[#row + 1] = tostring(ev.type)
      row[#row + 1] = encode(ev.payload)
      t:add(row)
    end,
    flush = function() t:flush() end,
  }
end

---------------------------------------------------------------------------
-- Errors
---------------------------------------------------------------------------

-- A URL as it may be shown: without any user:password@ part.
local function shown_url(url)
  return (str_gsub(tostring(url), "^(%a[%w+.-]*://)[^/@]*@", "%1"))
end

local function hint_for(ctx, err)
  local code = err.code
  local c = ctx.client
  local where = c and (" at " .. shown_url(c.url) .. " in " .. tostring(c.region)) or ""
  if code == "ResourceNotFoundException" then
    return "table " .. tostring(ctx.table) .. " does not exist" .. where
      .. ": create it with `dynlog tables create` (or check --table, --region and --endpoint)"
  elseif code == "config" then
    if str_find(err.message, "region", 1, true) then return "set AWS_REGION or pass --region" end
    if str_find(err.message, "endpoint", 1, true) then
      return "check --endpoint, --events-endpoint and the AWS_ENDPOINT_URL* variables"
    end
    return "check the AWS_* variables, --profile and ~/.aws/config"
  elseif code == "credentials" or code == "UnrecognizedClientException" or code == "InvalidSignatureException"
      or code == "MissingAuthenticationTokenException" or code == "ExpiredTokenException" then
    return "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or choose a profile with AWS_PROFILE or --profile"
  elseif code == "AccessDeniedException" then
    return "the credentials in use may not do this; check their IAM policy"
  elseif code == "tls" then
    return "no trusted TLS connection to the service" .. where
      .. "; check --endpoint and the CAs trusted: --cafile (AWS_CA_BUNDLE)"
  elseif code == "timeout" then
    return "no answer from the service" .. where .. " within --timeout (default 10 s) in any of --max-attempts"
      .. " (default 8); check --endpoint (AWS_ENDPOINT_URL_DYNAMODB) and --region"
  elseif code == "connection" and str_find(tostring(err.message), "not HTTP", 1, true) then
    return "something that is not the service answered" .. where .. "; check --endpoint (AWS_ENDPOINT_URL_DYNAMODB)"
  elseif code == "connection" then
    return "could not reach the service" .. where .. "; check --endpoint (AWS_ENDPOINT_URL_DYNAMODB) and --region"
  elseif code == "conflict" then
    return "another event took that position; read the stream with `dynlog head LOG ID` and try again"
  elseif code == "schema_mismatch" then
    return "the table's sort key decides the mode: check --sort-key (DYNLOG_SORT_KEY)"
  elseif code == "no_stream" then
    return "enable it with `dynlog tables create`, which turns the stream on for an existing table"
  elseif code == "publish_failed" then
    return "check --events-endpoint (AWS_ENDPOINT_URL_EVENTBRIDGE), --bus and the credentials"
  elseif code == "invalid_argument" or code == "too_large" then
    return "see `dynlog " .. tostring(ctx.command) .. " --help`"
  elseif err.retryable then
    return "the service is busy or failing; try again later"
  end
end

--- fail(ctx, err [, hint]) -> 1, after telling what failed on stderr.
local function fail(ctx, err, hint)
  ctx.err:write("dynlog: ", tostring(err.code), ": ", tostring(err.message), "\n")
  hint = hint or hint_for(ctx, err)
  if hint then ctx.err:write("  hint: ", hint, "\n") end
  return 1
end

local USAGE_ERROR = {}

-- Raised by argument checks, caught in main: a usage error (exit 2).
local function usage_error(message)
  error(setmetatable({ message = message }, USAGE_ERROR), 0)
end

---------------------------------------------------------------------------
-- Commands: their options and help
---------------------------------------------------------------------------

local GLOBAL_OPTIONS = {
  table = "value", ["sort-key"] = "value", endpoint = "value", region = "value", profile = "value",
  ["events-endpoint"] = "value", json = "flag", help = "flag", version = "flag",
  timeout = "value", ["max-attempts"] = "value", cafile = "value",
}

local GLOBAL_HELP = [[
global options (before or after the command):
  --table NAME              the event table (default: $DYNLOG_TABLE)
  --sort-key ulid|version   the table's sort-key mode (default: $DYNLOG_SORT_KEY, else ulid)
  --region R                AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, the profile's)
  --profile P               profile of ~/.aws/credentials and ~/.aws/config (default: AWS_PROFILE)
  --endpoint URL            DynamoDB and Streams endpoint (default: AWS_ENDPOINT_URL_DYNAMODB, …)
  --events-endpoint URL     EventBridge endpoint (default: AWS_ENDPOINT_URL_EVENTBRIDGE, …)
  --timeout SECONDS         for one request, connecting included (default 10)
  --max-attempts N          attempts per request, retries included (default 8)
  --cafile PATH             PEM file of trusted CAs for https (default: AWS_CA_BUNDLE,
                            the profile's ca_bundle, else the system's)
  --json                    one JSON object per line on stdout, for scripts
  -h, --help                help (`dynlog COMMAND --help` for one command)
  --version                 the version]]

local COMMANDS = {}
local ORDER = { "append", "query", "head", "tail", "import", "replay", "tables" }

local function command_help(name)
  local cmd = COMMANDS[name]
  return "usage: dynlog " .. cmd.usage .. " [options]\n\n" .. cmd.help .. "\n\n" .. GLOBAL_HELP .. "\n"
end

local function overview()
  local lines = {
    "usage: dynlog [global options] COMMAND [options] [arguments]",
    "",
    "Append-only event logs on Amazon DynamoDB.",
    "",
    "commands:",
  }
  for _, name in ipairs(ORDER) do
    local cmd = COMMANDS[name]
    lines[#lines + 1] = str_format("  %-34s %s", cmd.usage, cmd.summary)
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = GLOBAL_HELP
  lines[#lines + 1] = ""
  lines[#lines + 1] = "exit status: 0 success, 1 a failed operation, 2 a usage error."
  lines[#lines + 1] = "`dynlog COMMAND --help` tells more about each command."
  return tbl_concat(lines, "\n") .. "\n"
end

---------------------------------------------------------------------------
-- Arguments
---------------------------------------------------------------------------

-- Splits argv into the command, its positional arguments and the options.
-- The command is noted in ctx as soon as it is seen, so that a usage error
-- after it can point to its help.
local function parse(argv, ctx)
  local opts, positional, command = {}, {}, nil
  local i, n = 1, #argv
  local only_positional = false
  while i <= n do
    local a = argv[i]
    if only_positional or a == "-" or str_sub(a, 1, 1) ~= "-" then
      if command == nil then
        command = a
        ctx.command = COMMANDS[a] and a or nil
      else
        positional[#positional + 1] = a
      end
    elseif a == "--" then
      only_positional = true
    elseif a == "-h" then
      opts.help = true
    else
      local name, value = str_match(a, "^%-%-([%w%-]+)=(.*)$")
      if not name then name = str_match(a, "^%-%-([%w%-]+)$") end
      if not name then usage_error("unknown option " .. a) end
      local cmd = command and COMMANDS[command]
      local kind = GLOBAL_OPTIONS[name] or (cmd and cmd.options[name])
      if not kind then
        if command == nil then
          usage_error("unknown option --" .. name .. " (options of a command come after it)")
        end
        usage_error("unknown option --" .. name)
      end
      if kind == "flag" then
        if value ~= nil then usage_error("option --" .. name .. " takes no value") end
        opts[name] = true
      else
        if value == nil then
          i = i + 1
          value = argv[i]
          if value == nil then usage_error("option --" .. name .. " needs a value") end
        end
        opts[name] = value
      end
    end
    i = i + 1
  end
  return command, positional, opts
end

-- The largest integer that every number of dynlog holds exactly, on Lua 5.4
-- and on LuaJIT (a double) alike: 2^53 - 1, JavaScript's MAX_SAFE_INTEGER.
local MAX_EXACT = 9007199254740991
_M.MAX_EXACT = MAX_EXACT

-- The integer written in `text` (decimal digits only), or nil when it is
-- not one; false when it lies beyond MAX_EXACT, where it would be rounded.
local function exact_integer(text)
  if type(text) ~= "string" or not str_find(text, "^%d+$") then return nil end
  local digits = str_gsub(text, "^0+(%d)", "%1")
  if #digits > 16 or tonumber(digits) > MAX_EXACT then return false end
  return math_floor(tonumber(digits))
end

-- The usage error of an integer option beyond MAX_EXACT.
local function too_large(name, v)
  usage_error("--" .. name .. " must be at most " .. MAX_EXACT .. " (larger integers cannot be held exactly), got "
    .. v)
end

local function positive_integer(opts, name)
  local v = opts[name]
  if v == nil then return nil end
  local n = exact_integer(v)
  if n == false then too_large(name, v) end
  if not n or n < 1 then usage_error("--" .. name .. " must be a positive integer, got " .. v) end
  return n
end

-- --timeout: a positive number of seconds.
local function positive_seconds(opts, name)
  local v = opts[name]
  if v == nil then return nil end
  local n = (str_find(v, "^%d+$") or str_find(v, "^%d*%.%d+$")) and tonumber(v)
  if not n or n <= 0 or n > 86400 then
    usage_error("--" .. name .. " must be a number of seconds above 0 and at most 86400, got " .. v)
  end
  return n
end

-- A sort key from the command line: a string in ulid mode, an integer in
-- version mode.
local function sort_key_arg(ctx, name, v)
  if v == nil or ctx.sort_key == "ulid" then return v end
  local n = exact_integer(v)
  if n == false then too_large(name, v) end
  if not n then usage_error("--" .. name .. " must be a version number in version mode, got " .. v) end
  return n
end

-- A JSON object from text; usage error naming `what` otherwise.
local function json_object(text, what)
  local value, _, message = json_decode(text)
  if value == nil then usage_error(what .. " is not valid JSON: " .. tostring(message)) end
  if type(value) ~= "table" or is_array(value) then usage_error(what .. " must be a JSON object") end
  return value
end

local TABLE_NAME = "^[%w_%.%-]+$"

-- Reads the table name and sort-key mode; usage errors when missing or bad.
local function table_settings(ctx)
  local name = ctx.opts.table or ctx.getenv("DYNLOG_TABLE")
  if name == nil or name == "" then
    usage_error("no table: pass --table NAME or set DYNLOG_TABLE")
  end
  if #name < 3 or #name > 255 or not str_find(name, TABLE_NAME) then
    usage_error("invalid table name " .. name .. ": 3-255 characters of letters, digits, '_', '-' and '.'")
  end
  local mode = ctx.opts["sort-key"] or ctx.getenv("DYNLOG_SORT_KEY")
  if mode == nil or mode == "" then mode = "ulid" end
  if mode ~= "ulid" and mode ~= "version" then
    usage_error("--sort-key must be ulid or version, got " .. mode)
  end
  ctx.table, ctx.sort_key = name, mode
end

-- The client, or nil, err (code "config") when the configuration is bad.
local function new_client(ctx)
  local o = ctx.opts
  local ok, c = pcall(dynlog.new, {
    table = ctx.table, sort_key = ctx.sort_key, region = o.region, endpoint = o.endpoint,
    profile = o.profile, events_endpoint = o["events-endpoint"], getenv = ctx.getenv,
    timeout = ctx.timeout, max_attempts = ctx.max_attempts, cafile = o.cafile,
  })
  if not ok then
    local message = str_gsub(tostring(c), "^dynlog%.new: ", "")
    return nil, dynlog.errors.new("config", message)
  end
  ctx.client = c
  return c
end

-- Checks the number of positional arguments; a missing one is named after
-- the command's usage line ("append LOG ID TYPE [JSON]": LOG, ID, TYPE).
local function check_count(positional, min, max, ctx)
  if #positional < min then
    local names = {}
    local usage = ctx and COMMANDS[ctx.command] and COMMANDS[ctx.command].usage or ""
    for word in usage:gmatch("%S+") do
      if #names > 0 or word ~= ctx.command then names[#names + 1] = word end
    end
    local missing = {}
    for k = #positional + 1, min do missing[#missing + 1] = names[k] end
    usage_error("missing argument" .. (#missing > 0 and (": " .. tbl_concat(missing, " ")) or ""))
  end
  if #positional > max then usage_error("too many arguments: " .. positional[max + 1]) end
end

---------------------------------------------------------------------------
-- append, query, head
---------------------------------------------------------------------------

local function read_all(file)
  local text = file:read("*a")
  return text or ""
end

local function expected_version(ctx)
  local v = ctx.opts["expected-version"]
  if v == nil then return nil end
  if ctx.sort_key ~= "version" then
    usage_error("--expected-version is for version-mode tables (--sort-key version)")
  end
  if v == "any" or v == "no_stream" then return v end
  local n = exact_integer(v)
  if n == false then too_large("expected-version", v) end
  if not n then usage_error('--expected-version must be a version number, "no_stream" or "any", got ' .. v) end
  return n
end

COMMANDS.append = {
  usage = "append LOG ID TYPE [JSON]",
  summary = "append one event; prints its key",
  options = { ["expected-version"] = "value" },
  help = [[
Appends one event of type TYPE to the stream LOG/ID. Its payload is the
JSON object JSON, or read from stdin when JSON is absent or "-"; payload.id
is set to ID. Prints the new event's key: the partition key and the sort key
(a ULID, or the version number in version mode); with --json
{"pk": ..., "sk": ...}.

options:
  --expected-version N|no_stream|any   version mode: write exactly version N+1,
                                       version 1, or after the head (default any)

An invalid JSON argument is a usage error (exit 2).]],
  run = function(ctx, args)
    check_count(args, 3, 4, ctx)
    local log, id, event_type, text = args[1], args[2], args[3], args[4]
    local expected = expected_version(ctx)
    local payload
    if text == nil or text == "-" then
      payload = json_object(read_all(ctx.stdin), "the payload on stdin")
    else
      payload = json_object(text, "the payload argument")
    end
    local c, cerr = new_client(ctx)
    if not c then return fail(ctx, cerr) end
    local key, err = c:append(log, id, event_type, payload, { expected_version = expected })
    if not key then return fail(ctx, err) end
    if ctx.json then
      ctx.out:write(encode(key), "\n")
    else
      ctx.out:write(key.pk, "  ", tostring(key.sk), "\n")
    end
    return 0
  end,
}

COMMANDS.query = {
  usage = "query LOG ID",
  summary = "the events of a stream, in order",
  options = { after = "value", before = "value", limit = "value", reverse = "flag" },
  help = [[
Prints the events of the stream LOG/ID in sort-key order, read page by page:
a table of SK, TIME (ulid mode), TYPE and PAYLOAD, or with --json one event
per line ({"pk", "sk", "log", "type", "payload"}). An empty stream prints
nothing.

options:
  --after SK     only events after this sort key (exclusive)
  --before SK    only events before this sort key (exclusive)
  --limit N      at most N events
  --reverse      newest first]],
  run = function(ctx, args)
    check_count(args, 2, 2, ctx)
    local q = {
      after = sort_key_arg(ctx, "after", ctx.opts.after), before = sort_key_arg(ctx, "before", ctx.opts.before),
      limit = positive_integer(ctx.opts, "limit"), reverse = ctx.opts.reverse == true,
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

COMMANDS.head = {
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

---------------------------------------------------------------------------
-- tail
---------------------------------------------------------------------------

local POLL_SECONDS = 0.25
local REDISCOVER_SECONDS = 10

-- The event item of a stream record, or nil when it is not an event to show.
local function record_event(record, log)
  if record.eventName ~= "INSERT" and record.eventName ~= "MODIFY" then return nil end
  local image = record.dynamodb and record.dynamodb.NewImage
  if type(image) ~= "table" then return nil end
  local item = unmarshal_item(image)
  if type(item) ~= "table" or type(item.pk) ~= "string" or str_sub(item.pk, -7) ~= "#stream" then return nil end
  if log and item.log ~= log and str_sub(item.pk, 1, #log + 1) ~= log .. "#" then return nil end
  return item
end

-- The reading state of every shard: {id=, parent=, iterator=, done=, last=}.
local Follower = {}
Follower.__index = Follower

local function new_follower(c, arn, from_start)
  return setmetatable({ c = c, arn = arn, from_start = from_start, shards = {}, order = {}, first = true }, Follower)
end

-- Finds the stream's shards; those seen for the first time are read from
-- LATEST (open shards at start-up) or from TRIM_HORIZON (with --from-start,
-- and shards born while following, such as the children of a split).
function Follower:discover()
  local desc, err = self.c:describe_stream(self.arn)
  if not desc then return nil, err end
  for _, shard in ipairs(desc.Shards or {}) do
    local id = shard.ShardId
    if not self.shards[id] then
      local open = shard.SequenceNumberRange == nil or shard.SequenceNumberRange.EndingSequenceNumber == nil
      local st = { id = id, parent = shard.ParentShardId }
      if self.first and not self.from_start then
        st.start = "LATEST"
        st.done = not open
      else
        st.start = "TRIM_HORIZON"
      end
      self.shards[id] = st
      self.order[#self.order + 1] = id
    end
  end
  self.first = false
  return true
end

-- A child shard is read once its parent (if we read it) is finished.
function Follower:ready(st)
  if st.done then return false end
  local parent = st.parent and self.shards[st.parent]
  return parent == nil or parent.done == true
end

function Follower:iterator(st)
  if st.iterator then return st.iterator end
  local it, err
  if st.last then
    it, err = self.c:get_shard_iterator(self.arn, st.id, "AFTER_SEQUENCE_NUMBER", st.last)
  else
    it, err = self.c:get_shard_iterator(self.arn, st.id, st.start)
  end
  if not it then return nil, err end
  st.iterator = it
  return it
end

-- Opens an iterator on every shard that can be read now (before the first
-- poll, so that LATEST means "from the moment tail started").
function Follower:open()
  for _, id in ipairs(self.order) do
    local st = self.shards[id]
    if self:ready(st) then
      local _, err = self:iterator(st)
      if err then return nil, err end
    end
  end
  return true
end

-- One round over the readable shards: calls on_record(record) for each
-- record; returns the number of records read, or nil, err.
function Follower:poll(on_record)
  local n = 0
  for _, id in ipairs(self.order) do
    local st = self.shards[id]
    if self:ready(st) then
      local it, err = self:iterator(st)
      if not it then return nil, err end
      local resp
      resp, err = self.c:get_records(it, 1000)
      if not resp then
        if err.code == "ExpiredIteratorException" then
          st.iterator = nil
        elseif err.code == "TrimmedDataAccessException" then
          st.iterator, st.last, st.start = nil, nil, "TRIM_HORIZON"
        else
          return nil, err
        end
      else
        for _, record in ipairs(resp.records) do
          n = n + 1
          st.last = record.dynamodb and record.dynamodb.SequenceNumber or st.last
          if on_record(record) == false then return n end
        end
        st.iterator = resp.next_iterator
        if not st.iterator then st.done = true end
      end
    end
  end
  return n
end

COMMANDS.tail = {
  usage = "tail",
  summary = "follow the table's stream, printing new events",
  options = { log = "value", count = "value", ["from-start"] = "flag" },
  help = [[
Follows the table's DynamoDB stream and prints each new event as it arrives
(as `dynlog query` prints events, with LOG and ID columns; --json: one event
per line), until SIGINT, SIGTERM, SIGHUP or SIGPIPE (exit status 0) or --count
events.
Only events are shown (items whose pk ends in "#stream"). It starts at the
end of the stream: events appended before it started are not shown, unless
--from-start. A line on stderr tells when it is following.

options:
  --log LOG      only events of this log
  --count N      stop after N events
  --from-start   begin with the oldest records the stream keeps (24 hours)]],
  run = function(ctx, args)
    check_count(args, 0, 0, ctx)
    local count = positive_integer(ctx.opts, "count")
    local log = ctx.opts.log
    local c, cerr = new_client(ctx)
    if not c then return fail(ctx, cerr) end
    local arn, err = c:latest_stream_arn()
    if not arn then return fail(ctx, err) end
    local follower = new_follower(c, arn, ctx.opts["from-start"] == true)
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
      local ev = record_event(record, log)
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

---------------------------------------------------------------------------
-- import
---------------------------------------------------------------------------

local SAVE_EVERY = 100
local CONCURRENCY = 16
local MAX_CONCURRENCY = 1024

-- Progress state: {line = last line number done, failed = {n = true},
-- pending = {n = true}}: failed lines were refused (fix them, then rerun),
-- pending ones were kept back by a failure of the operation (rerun).
local function load_state(path)
  local f = io_open(path, "rb")
  if not f then return { line = 0, failed = {}, pending = {} } end
  local text = f:read("*a")
  f:close()
  local doc = json_decode(text or "")
  if type(doc) ~= "table" or type(doc.line) ~= "number" or doc.line < 0 or doc.line ~= math_floor(doc.line) then
    return nil, dynlog.errors.new("bad_state", "progress file " .. path .. " does not hold {\"line\": N, ...}")
  end
  local function line_set(list)
    local set = {}
    for _, n in ipairs(type(list) == "table" and list or {}) do
      if type(n) == "number" then set[n] = true end
    end
    return set
  end
  return { line = doc.line, failed = line_set(doc.failed), pending = line_set(doc.pending) }
end

local function sorted_lines(set)
  local list = {}
  for n in pairs(set) do list[#list + 1] = n end
  tbl_sort(list)
  return list
end

local function save_state(path, file, state)
  local doc = { file = file, line = state.line, failed = core.array(sorted_lines(state.failed)) }
  if next(state.pending) then doc.pending = sorted_lines(state.pending) end
  local tmp = path .. ".tmp"
  local f, err = io_open(tmp, "wb")
  if not f then return nil, dynlog.errors.new("io", "cannot write " .. tmp .. ": " .. tostring(err)) end
  f:write(encode(doc), "\n")
  f:close()
  local ok, rerr = os_rename(tmp, path)
  if not ok then
    os_remove(tmp)
    return nil, dynlog.errors.new("io", "cannot write " .. path .. ": " .. tostring(rerr))
  end
  return true
end

-- Opens the input: stdin for "-", else the file. Returns the file, whether
-- it is a regular file (its next line is there without waiting, and it can
-- be read twice) and then its number of lines, for the progress bar; or
-- nil, err. A pipe (`<(zcat f.gz)`, a FIFO) is read once, as it comes: its
-- lines are not counted beforehand.
local function open_input(ctx, file)
  if file == "-" then return ctx.stdin, ctx.stdin:seek("cur") ~= nil, nil end
  local f, oerr = io_open(file, "rb")
  if not f then return nil, dynlog.errors.new("io", tostring(oerr)) end
  if not f:seek("end") then return f, false, nil end
  f:seek("set", 0)
  local total, last = 0, "\n"
  while true do
    local chunk, rerr = f:read(65536)
    if not chunk then
      if rerr then
        f:close()
        return nil, dynlog.errors.new("io", "cannot read " .. file .. ": " .. tostring(rerr))
      end
      break
    end
    local _, newlines = str_gsub(chunk, "\n", "")
    total, last = total + newlines, str_sub(chunk, -1)
  end
  if last ~= "\n" then total = total + 1 end
  f:seek("set", 0)
  return f, true, total
end

-- A number in JSON as the text of an id: only integers held exactly
-- (within MAX_EXACT), else nil.
local function id_text(n)
  if n ~= math_floor(n) or n > MAX_EXACT or n < -MAX_EXACT then return nil end
  return str_format("%d", n)
end

local UTF8_BOM = "\239\187\191"

-- The fields of the seed format's line {"pk", "sk", "type", "log",
-- "payload"}: log and id from the partition key, which must agree with
-- "log" and "payload.id"; the sort key kept with --keep-keys.
local function seed_event(doc, payload, job)
  if type(doc.pk) ~= "string" then return nil, '"pk" must be a string' end
  local log, id = str_match(doc.pk, "^([^#]*)#([^#]*)#stream$")
  if not log then return nil, '"pk" must be "<log>#<id>#stream", got ' .. encode(doc.pk) end
  if doc.log ~= nil and doc.log ~= log then
    return nil, '"log" is ' .. encode(doc.log) .. ' but "pk" is of log ' .. encode(log)
  end
  local pid = payload and payload.id
  if pid ~= nil and pid ~= id then
    return nil, '"payload.id" is ' .. encode(pid) .. ' but "pk" is of id ' .. encode(id)
  end
  if type(doc.type) ~= "string" then return nil, '"type" must be a string' end
  local ev = { log = log, id = id, type = doc.type, payload = payload }
  if job.keep_keys then
    local sk = doc.sk
    if job.sort_key == "ulid" then
      if type(sk) ~= "string" or not core.ulid_decode(sk) then
        return nil, '"sk" must be a ULID to keep it in a ulid-mode table, got ' .. encode(sk)
      end
    elseif type(sk) ~= "number" or sk < 1 or not id_text(sk) then
      return nil, '"sk" must be a version number (1 to ' .. MAX_EXACT .. ') to keep it in a version-mode table, got '
        .. encode(sk)
    end
    ev.sk = sk
  end
  return ev
end

-- The event of one input line, or nil, message. Two formats: dynlog's
-- {"log", "id", "type", "payload"} and the seed format (with "pk").
local function line_event(text, job)
  local doc, _, message = json_decode(text)
  if doc == nil then return nil, "invalid JSON: " .. tostring(message) end
  if type(doc) ~= "table" or is_array(doc) then return nil, "not a JSON object" end
  local payload = doc.payload
  if payload == core.null then payload = nil end
  if payload ~= nil and (type(payload) ~= "table" or is_array(payload)) then
    return nil, '"payload" must be a JSON object'
  end
  if doc.pk ~= nil then return seed_event(doc, payload, job) end
  local id = doc.id
  if type(id) == "number" then
    id = id_text(id)
    if not id then
      return nil, '"id" is a number that cannot be held exactly (integers up to ' .. MAX_EXACT
        .. '): write it as a string'
    end
  end
  for _, f in ipairs({ { "log", doc.log }, { "id", id }, { "type", doc.type } }) do
    if type(f[2]) ~= "string" then return nil, '"' .. f[1] .. '" must be a string' end
  end
  return { log = doc.log, id = id, type = doc.type, payload = payload }
end

-- Failures that belong to a line (its event is invalid) rather than to the
-- operation (the table, the network): the first are skipped and reported,
-- the second stop the import.
local LINE_ERRORS = { invalid_argument = true, too_large = true }

local function new_progress(ctx, total)
  local bar = { last = 0, shown = false }
  if not ctx.isatty(2) then
    return { update = function() end, clear = function() end, done = function() end }
  end
  local function draw(line, failed)
    local text
    if total and total > 0 then
      local fraction = math_min(1, line / total)
      local filled = math_floor(fraction * 30 + 0.5)
      text = str_format("\r  [%s%s] %d/%d lines %3d%%", str_rep("#", filled), str_rep("-", 30 - filled), line, total,
        math_floor(fraction * 100))
    else
      text = str_format("\r  %d lines", line)
    end
    if failed > 0 then text = text .. str_format(", %d failed", failed) end
    ctx.err:write(text, "\27[K")
    ctx.err:flush()
    bar.shown = true
  end
  function bar.update(line, failed, force)
    local now = core.now()
    if force or now - bar.last >= 0.1 then
      bar.last = now
      draw(line, failed)
    end
  end
  function bar.clear()
    if bar.shown then ctx.err:write("\r\27[K") bar.shown = false end
  end
  function bar.done(line, failed)
    draw(line, failed)
    ctx.err:write("\n")
    bar.shown = false
  end
  return bar
end

-- The next lines that need doing, up to `size`: {n=, event=, problem=}
-- each (neither for a blank line). Counts the lines skipped in r.
local function read_batch(job, r, size)
  local state, batch = job.state, {}
  while #batch < size and not core.signal_caught() do
    -- read, not lines(): an interrupted read returns an error instead of raising it
    local text, rerr = job.input:read("*l")
    if text == nil then
      if rerr and not core.signal_caught() then
        r.stop_err, r.stop_line = dynlog.errors.new("io", "cannot read: " .. tostring(rerr)), r.line_no + 1
      end
      r.ended = true
      break
    end
    local n = r.line_no + 1
    r.line_no = n
    if n == 1 then text = str_gsub(text, "^" .. UTF8_BOM, "") end
    if n <= state.line and not state.failed[n] and not state.pending[n] then
      r.skipped = r.skipped + 1
    elseif job.limit and r.processed >= job.limit then
      r.stopped_by_limit, r.line_no, r.ended = true, n - 1, true
      break
    else
      r.processed = r.processed + 1
      local entry = { n = n }
      if str_find(text, "%S") then
        -- a bad line is that line's failure, whatever it holds
        local ok, ev, problem = pcall(line_event, text, job)
        if ok then entry.event, entry.problem = ev, problem else entry.problem = "cannot read it: " .. tostring(ev) end
      end
      batch[#batch + 1] = entry
    end
  end
  return batch
end

-- The problem of a line whose event the library refused, or nil when the
-- failure is the operation's: a kept sort key taken by another event
-- (conflict) belongs to its line too.
local function line_problem(entry, err)
  if LINE_ERRORS[err.code] or (err.code == "conflict" and entry.event.sk ~= nil) then
    return err.code .. ": " .. str_gsub(tostring(err.message), "^events%[%d+%]: ", "")
  end
end

-- Appends the events of a batch with many requests in flight; marks each
-- entry written (and `existing`, already there at its kept key), or with
-- the problem of its line, or `pending` with the failure of the operation
-- that kept it from being written. Events held back behind a line's
-- problem in their stream go out again in another round.
local function append_batch_of_lines(job, batch)
  local todo = {}
  for _, entry in ipairs(batch) do
    if entry.event then todo[#todo + 1] = entry end
  end
  while #todo > 0 do
    local events = {}
    for k, entry in ipairs(todo) do events[k] = entry.event end
    local results, errs, partial = job.client:append_many(events, { concurrency = job.concurrency })
    results = results or partial
    local again = {}
    for k, entry in ipairs(todo) do
      local err = errs and errs[k]
      local cause = err and err.code == "aborted" and err.cause
      if not err then
        entry.written, entry.existing = true, results[k].existing
      elseif cause and cause.index and line_problem(todo[cause.index], cause) then
        again[#again + 1] = entry
      else
        entry.problem = line_problem(entry, err)
        if not entry.problem then entry.pending = cause or err end
      end
    end
    todo = again
  end
end

-- Records a batch's outcome in job.state and r, in line order.
local function record_batch(job, r, batch)
  local ctx, state = job.ctx, job.state
  for _, entry in ipairs(batch) do
    local n = entry.n
    state.failed[n], state.pending[n] = nil, nil
    if entry.pending then
      state.pending[n] = true
      if not r.stop_err then r.stop_err, r.stop_line = entry.pending, n end
    elseif entry.problem then
      state.failed[n] = true
      r.failed = r.failed + 1
      job.bar.clear()
      ctx.err:write("dynlog: line ", tostring(n), ": ", entry.problem, "\n")
    elseif entry.existing then
      r.existing = r.existing + 1
    elseif entry.written then
      r.imported = r.imported + 1
    end
    state.line = math_max(state.line, n)
  end
end

-- Reads and appends the lines of job.input, updating job.state. Returns
-- {imported=, skipped=, failed=, line_no=, stop_err=, stop_line=,
-- stopped_by_limit=}: stop_err is the failure that stopped it (the
-- operation's, not a line's). Lines go out in batches of job.every (one at
-- a time from a pipe or terminal, where the next line may be long in
-- coming); the progress is saved after each.
local function import_lines(job)
  local r = { imported = 0, existing = 0, skipped = 0, failed = 0, line_no = 0, processed = 0, limit = job.limit }
  local size = job.seekable and job.every or 1
  local since_save = 0
  while not (r.ended or r.stop_err or core.signal_caught()) do
    local batch = read_batch(job, r, size)
    append_batch_of_lines(job, batch)
    record_batch(job, r, batch)
    since_save = since_save + #batch
    if since_save >= job.every or r.stop_err then
      since_save = 0
      local ok, werr = job.save()
      if not ok then r.stop_err, r.stop_line = r.stop_err or werr, r.stop_line or r.line_no end
    end
    if #batch > 0 then job.bar.update(batch[#batch].n, r.failed) end
  end
  return r
end

-- The summary on stdout, what to do next on stderr, and the exit status.
local function import_report(ctx, file, state_path, state, r, signal)
  local still_failed, pending = sorted_lines(state.failed), sorted_lines(state.pending)
  local keep_keys = ctx.opts["keep-keys"] == true
  if ctx.json then
    ctx.out:write(encode({ imported = r.imported, skipped = r.skipped, failed = core.array(still_failed),
                           pending = core.array(pending), line = state.line, state = state_path,
                           existing = keep_keys and r.existing or nil }), "\n")
  else
    ctx.out:write(str_format("imported %d event(s); ", r.imported))
    if keep_keys then ctx.out:write(str_format("%d already there; ", r.existing)) end
    ctx.out:write(str_format("skipped %d line(s) done before; %d line(s) failed", r.skipped, #still_failed))
    if state_path then ctx.out:write("; progress in ", state_path) end
    ctx.out:write("\n")
  end
  ctx.out:flush()
  local resume = not state_path and "stdin has no progress file: pass --state PATH to make an import resumable"
    or pending[1] and ("rerun the same command to resume from line " .. pending[1])
    or ("rerun the same command to resume after line " .. state.line)
  if r.stop_err then
    ctx.err:write("dynlog: import stopped at line ", tostring(r.stop_line or r.line_no), "\n")
    local hint = hint_for(ctx, r.stop_err)
    return fail(ctx, r.stop_err, (hint and (hint .. "; then ") or "") .. resume)
  end
  if signal then
    ctx.err:write("dynlog: interrupted by SIG", signal, " after line ", tostring(state.line), "; ", resume, "\n")
    return 1
  end
  if r.stopped_by_limit then
    ctx.err:write("dynlog: stopped after --limit ", tostring(r.limit), " line(s); ", resume, "\n")
  end
  if #still_failed > 0 then
    ctx.err:write("dynlog: ", tostring(#still_failed), " line(s) failed (", tbl_concat(still_failed, ", "),
      "); fix them in ", file == "-" and "the input" or file, " and run the same command again to retry them\n")
    return 1
  end
  return 0
end

COMMANDS.import = {
  usage = "import FILE",
  summary = "append newline-delimited JSON events, resumably",
  options = { state = "value", ["save-every"] = "value", limit = "value", concurrency = "value",
              ["keep-keys"] = "flag" },
  help = [[
Appends the events of FILE ("-" for stdin), one JSON object per line:
  {"log": "users", "id": "42", "type": "signup", "payload": {...}}
("payload" may be left out; a numeric id is taken as its decimal text, if it
is an integer up to 9007199254740991; blank lines and a UTF-8 byte order mark
at the start are skipped). Lines of the seed format, as the original Node
tools write events.ldjson, are read too:
  {"pk": "users#42#stream", "sk": ..., "type": "signup", "log": "users", "payload": {...}}
pk must be "<log>#<id>#stream" and agree with "log" and "payload.id". They are
appended as new events, with new sort keys; with --keep-keys each keeps its
sk (a ULID in ulid mode, a version number in version mode), written only
where no event is: an identical event already at that key counts as there
(so a rerun writes nothing twice), another one fails the line (conflict).
From a file, lines go out in batches of --save-every
lines, with up to --concurrency requests in flight (append_many): the events
of one stream are written one after the other, in the order of the file.
From a pipe or a terminal, each line is appended as soon as it is read. A
progress bar is drawn on stderr when it is a terminal (with a total of lines
for a regular file, without for a pipe: a pipe is read only once).

Resumable: the number of the last line done is kept in a progress file
(FILE.progress, or --state PATH; stdin has none unless --state is given; a
pipe named as FILE, such as <(zcat events.gz), needs --state),
written after every batch and at the end, as
  {"file": "...", "line": N, "failed": [n, ...], "pending": [n, ...]}
A rerun skips lines up to N except the failed and pending ones, which it
tries again, so fix a failed line in FILE and run the same command. Ctrl-C
(SIGINT), SIGTERM, SIGHUP and SIGPIPE stop it after the current batch, with
the progress saved. Lines that fail (bad JSON, an invalid event) are reported on stderr with their number and the
import goes on; the exit status is then 1. A failure of the operation itself
(no table, no network) stops the import after the batch, with the lines it
kept back saved as pending: rerun to resume. An import killed in the middle
of a batch (SIGKILL, a crash) appends that batch's lines again when resumed
(--save-every 1 avoids that, at one request in flight and one write per
line; with --keep-keys nothing is written twice).
Prints a summary; with --json
{"imported", "skipped", "failed", "pending", "line", "state"} (and
"existing", the events already there, with --keep-keys).

options:
  --keep-keys       seed-format lines keep their sort key (sk)
  --state PATH      the progress file (default FILE.progress)
  --save-every N    lines per batch, saved after each (default 100)
  --concurrency N   requests in flight (default 16)
  --limit N         process at most N lines in this run, then stop (exit 0)]],
  run = function(ctx, args)
    check_count(args, 1, 1, ctx)
    local file = args[1]
    local every = positive_integer(ctx.opts, "save-every") or SAVE_EVERY
    local concurrency = positive_integer(ctx.opts, "concurrency") or CONCURRENCY
    if concurrency > MAX_CONCURRENCY then
      usage_error("--concurrency must be at most " .. MAX_CONCURRENCY)
    end
    local limit = positive_integer(ctx.opts, "limit")
    local input, seekable, total = open_input(ctx, file)
    if not input then return fail(ctx, seekable, "check the file name") end
    local state_path = ctx.opts.state
    if not state_path and file ~= "-" then
      if not seekable then
        input:close()
        usage_error(file .. " is not a regular file (a pipe?): it can be read only once, and its progress cannot be"
          .. " kept beside it; pass --state PATH for the progress file")
      end
      state_path = file .. ".progress"
    end
    local state = { line = 0, failed = {}, pending = {} }
    if state_path then
      local serr
      state, serr = load_state(state_path)
      if not state then return fail(ctx, serr, "remove it to start from the first line") end
    end
    local c, cerr = new_client(ctx)
    if not c then return fail(ctx, cerr) end

    local job = {
      ctx = ctx, client = c, input = input, state = state, every = every, limit = limit,
      concurrency = concurrency, bar = new_progress(ctx, total),
      -- a regular file: its next line is there without waiting
      seekable = seekable,
      keep_keys = ctx.opts["keep-keys"] == true, sort_key = ctx.sort_key,
    }
    function job.save()
      if not state_path then return true end
      return save_state(state_path, file, state)
    end
    core.signal_catch()
    local r = import_lines(job)
    local signal = core.signal_caught()
    core.signal_restore()
    if input ~= ctx.stdin then input:close() end
    local saved, werr = job.save()
    if not saved then r.stop_err = r.stop_err or werr end
    job.bar.done(r.line_no, r.failed)
    return import_report(ctx, file, state_path, state, r, signal)
  end,
}

---------------------------------------------------------------------------
-- replay
---------------------------------------------------------------------------

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

COMMANDS.replay = {
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
        local wanted = type(item) == "table" and type(item.pk) == "string" and str_sub(item.pk, -7) == "#stream"
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

---------------------------------------------------------------------------
-- tables
---------------------------------------------------------------------------

local function table_summary(desc)
  local types = {}
  for _, def in ipairs(desc.AttributeDefinitions or {}) do types[def.AttributeName] = def.AttributeType end
  local keys = {}
  for i, k in ipairs(desc.KeySchema or {}) do
    keys[i] = { name = k.AttributeName, key_type = k.KeyType, type = types[k.AttributeName] }
  end
  local mode = types.sk == "S" and "ulid" or types.sk == "N" and "version" or nil
  local spec = desc.StreamSpecification
  return {
    table = desc.TableName, status = desc.TableStatus, key_schema = core.array(keys), sort_key = mode,
    stream_arn = desc.LatestStreamArn,
    stream_view_type = spec and spec.StreamEnabled and spec.StreamViewType or nil,
    item_count = desc.ItemCount,
  }
end

local function print_summary(ctx, s)
  if ctx.json then
    ctx.out:write(encode(s), "\n")
    return
  end
  local keys = {}
  for i, k in ipairs(s.key_schema) do
    keys[i] = str_format("%s %s (%s)", tostring(k.name), tostring(k.key_type), tostring(k.type))
  end
  local stream = "none"
  if s.stream_arn and s.stream_view_type then
    stream = s.stream_arn .. " (" .. s.stream_view_type .. ")"
  end
  local rows = {
    { "table", s.table }, { "status", s.status },
    { "key schema", tbl_concat(keys, ", ") .. (s.sort_key and ("; " .. s.sort_key .. " mode") or "") },
    { "stream", stream },
    { "item count", tostring(s.item_count) .. " (DynamoDB refreshes it about every six hours)" },
  }
  for _, row in ipairs(rows) do ctx.out:write(str_format("%-12s%s\n", row[1], printable(row[2]))) end
end

COMMANDS.tables = {
  usage = "tables create|describe",
  summary = "create the table (idempotent) or describe it",
  options = {},
  help = [[
tables create     creates the event table for --sort-key's mode ({pk HASH S,
                  sk RANGE S for ulid or N for version}, on-demand billing,
                  a NEW_AND_OLD_IMAGES stream) and waits until it is ACTIVE.
                  An existing table with that key schema is fine (its stream
                  is turned on if it had none); another schema is an error.
tables describe   the table's name, status, key schema (and so its mode),
                  stream ARN and item count.
Both print the description; with --json {"table", "status", "key_schema",
"sort_key", "stream_arn", "stream_view_type", "item_count"}.]],
  run = function(ctx, args)
    check_count(args, 1, 1, ctx)
    local sub = args[1]
    if sub ~= "create" and sub ~= "describe" then
      usage_error("unknown tables command " .. sub .. " (create or describe)")
    end
    local c, cerr = new_client(ctx)
    if not c then return fail(ctx, cerr) end
    local desc, err
    if sub == "create" then desc, err = c:create_table() else desc, err = c:describe_table() end
    if not desc then return fail(ctx, err) end
    print_summary(ctx, table_summary(desc))
    return 0
  end,
}

---------------------------------------------------------------------------
-- main
---------------------------------------------------------------------------

local function isatty(fd)
  local a, _, c = os_execute("test -t " .. math_floor(fd))
  return a == true or a == 0 or (a == nil and c == 0)
end

local function usage(ctx, command, message)
  ctx.err:write("dynlog: ", message, "\n")
  local cmd = command and COMMANDS[command]
  if cmd then
    ctx.err:write("usage: dynlog ", cmd.usage, " [options]\n",
      "try `dynlog ", command, " --help`\n")
  else
    ctx.err:write("usage: dynlog [global options] COMMAND [options] [arguments]\n",
      "try `dynlog --help`\n")
  end
  return 2
end

local function run(ctx, argv)
  local command, positional, opts = parse(argv, ctx)
  ctx.opts, ctx.json, ctx.command = opts, opts.json == true, command
  if command == "help" then
    command = positional[1]
    opts.help = true
    positional = {}
    ctx.command = command
  end
  if opts.version then
    ctx.out:write("dynlog ", _M.VERSION, "\n")
    return 0
  end
  if command == nil then
    if opts.help then ctx.out:write(overview()) return 0 end
    usage_error("no command given")
  end
  local cmd = COMMANDS[command]
  if not cmd then
    ctx.command = nil
    usage_error("unknown command " .. command)
  end
  if opts.help then
    ctx.out:write(command_help(command))
    return 0
  end
  table_settings(ctx)
  ctx.timeout, ctx.max_attempts = positive_seconds(opts, "timeout"), positive_integer(opts, "max-attempts")
  return cmd.run(ctx, positional)
end

--- main(argv, getenv [, streams]) -> exit status.
function _M.main(argv, getenv, streams)
  streams = streams or {}
  local raw_getenv = getenv or os_getenv
  local ctx = {
    getenv = function(name)
      local v = raw_getenv(name)
      if v == "" then return nil end
      return v
    end,
    stdin = streams.stdin or io.stdin, out = streams.stdout or io.stdout, err = streams.stderr or io.stderr,
    isatty = streams.isatty or isatty,
  }
  local args = {}
  for i = 1, #(argv or {}) do args[i] = tostring(argv[i]) end
  local ok, status = xpcall(run, function(e)
    if type(e) == "table" and getmetatable(e) == USAGE_ERROR then return e end
    return debug.traceback(tostring(e), 2)
  end, ctx, args)
  if not ok then
    if type(status) == "table" then
      status = usage(ctx, ctx.command, status.message)
    else
      ctx.err:write("dynlog: internal error: ", tostring(status), "\n")
      status = 1
    end
  end
  ctx.out:flush()
  ctx.err:flush()
  return status
end

return _M
