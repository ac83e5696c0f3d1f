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
--
-- This module keeps main and the dispatch; each command is a module of
-- its own (dynlog.cli.append, .query (query and head), .tail, .import,
-- .replay, .rebuild, .tables, .feed, .subscriptions, .up, .deploy (deploy and remove)), over
-- dynlog.cli.args (arguments) and dynlog.cli.output.
local cli_args = require "dynlog.cli.args"
local core = require "dynlog.core"
local output = require "dynlog.cli.output"

-- The modules of the commands; each returns {<command> = {...}}.
local MODULES = {
  append = require "dynlog.cli.append",
  query = require "dynlog.cli.query",
  tail = require "dynlog.cli.tail",
  import = require "dynlog.cli.import",
  replay = require "dynlog.cli.replay",
  rebuild = require "dynlog.cli.rebuild",
  tables = require "dynlog.cli.tables",
  feed = require "dynlog.cli.feed",
  subscriptions = require "dynlog.cli.subscriptions",
  deploy = require "dynlog.cli.deploy",
  up = require "dynlog.cli.up",
}

local ipairs, pairs, tostring, type, xpcall = ipairs, pairs, tostring, type, xpcall
local os_execute, os_getenv = os.execute, os.getenv
local math_floor = math.floor
local str_format = string.format
local tbl_concat = table.concat

local _M = { VERSION = core._VERSION }
_M.encode = output.encode
_M.MAX_EXACT = cli_args.MAX_EXACT

local usage_error, parse, table_settings = cli_args.usage_error, cli_args.parse, cli_args.table_settings
local positive_integer, positive_seconds = cli_args.positive_integer, cli_args.positive_seconds

---------------------------------------------------------------------------
-- Commands: their options and help
---------------------------------------------------------------------------

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
  --feed-table NAME         the feed's table (default: <table>-feed)
  --json                    one JSON object per line on stdout, for scripts
  -h, --help                help (`dynlog COMMAND --help` for one command)
  --version                 the version]]

-- name -> {usage=, summary=, options=, help=, run=function(ctx, args) -> status}
local COMMANDS = {}
local GROUPS = { "append", "query", "tail", "import", "replay", "rebuild", "tables", "feed", "subscriptions", "up",
                 "deploy" }
for _, name in ipairs(GROUPS) do
  for command, cmd in pairs(MODULES[name]) do COMMANDS[command] = cmd end
end
local ORDER = { "append", "query", "head", "tail", "import", "replay", "rebuild", "tables", "feed", "subscriptions",
                "up", "deploy", "remove" }

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
  -- Commands whose tables come from elsewhere (a description) say table = false.
  if cmd.table ~= false then table_settings(ctx) end
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
    commands = COMMANDS,
  }
  local args = {}
  for i = 1, #(argv or {}) do args[i] = tostring(argv[i]) end
  local ok, status = xpcall(run, function(e)
    if cli_args.is_usage_error(e) then return e end
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
