--- The arguments of the `dynlog` command: splitting argv into the command,
-- its arguments and options, the checks of option values (a usage error,
-- exit status 2, when one is wrong), and the client they configure.
local core = require "dynlog.core"
local dynlog = require "dynlog"
local timeutil = require "dynlog.base.timeutil"

local error, getmetatable, pcall, setmetatable, tonumber, tostring, type =
  error, getmetatable, pcall, setmetatable, tonumber, tostring, type
local math_floor = math.floor
local str_find, str_gsub, str_match, str_sub = string.find, string.gsub, string.match, string.sub
local tbl_concat = table.concat
local json_decode = core.json_decode
local is_array = core.is_array

local _M = {}

local USAGE_ERROR = {}

-- Raised by argument checks, caught in main: a usage error (exit 2).
local function usage_error(message)
  error(setmetatable({ message = message }, USAGE_ERROR), 0)
end

--- is_usage_error(e) -> true for what usage_error raised.
function _M.is_usage_error(e)
  return type(e) == "table" and getmetatable(e) == USAGE_ERROR
end
_M.usage_error = usage_error

local GLOBAL_OPTIONS = {
  table = "value", ["sort-key"] = "value", endpoint = "value", region = "value", profile = "value",
  ["events-endpoint"] = "value", json = "flag", help = "flag", version = "flag",
  timeout = "value", ["max-attempts"] = "value", cafile = "value", ["feed-table"] = "value",
}

-- Splits argv into the command, its positional arguments and the options.
-- The command is noted in ctx as soon as it is seen, so that a usage error
-- after it can point to its help.
local function parse(argv, ctx)
  local COMMANDS = ctx.commands
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
        if kind == "list" then -- an option given as often as needed: its values in order
          local list = opts[name] or {}
          list[#list + 1] = value
          opts[name] = list
        else
          opts[name] = value
        end
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

-- A positive number (--rate): an integer or a decimal above 0; nil when
-- not given.
local function positive_number(opts, name)
  local v = opts[name]
  if v == nil then return nil end
  local n = (str_find(v, "^%d+$") or str_find(v, "^%d*%.%d+$")) and tonumber(v)
  if not n or n <= 0 or n > 1e9 then
    usage_error("--" .. name .. " must be a number above 0 (at most 1e9), got " .. v)
  end
  return n
end

-- A list of names (--logs a,b): comma-separated, none empty; nil when not
-- given.
local function name_list(opts, name)
  local v = opts[name]
  if v == nil then return nil end
  local list = {}
  for item in (v .. ","):gmatch("([^,]*),") do
    if item == "" then usage_error("--" .. name .. " must be names separated by commas, got " .. v) end
    list[#list + 1] = item
  end
  return list
end

-- A time option (--since, --until): RFC 3339 or epoch seconds → milliseconds
-- since the epoch, or a usage error; nil when not given.
local function time_arg(opts, name)
  local text = opts[name]
  if text == nil then return nil end
  if str_match(text, "^%d+$") or str_match(text, "^%d+%.%d+$") then
    return math_floor(tonumber(text) * 1000 + 0.5)
  end
  local seconds = timeutil.parse_rfc3339(text)
  if not seconds then
    usage_error("--" .. name .. " must be an RFC 3339 time (2026-11-25T12:00:00Z) or epoch seconds, got " .. text)
  end
  local fraction = str_match(text, "%d%d:%d%d:%d%d(%.%d+)")
  return seconds * 1000 + (fraction and math_floor(tonumber("0" .. fraction) * 1000) or 0)
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
    timeout = ctx.timeout, max_attempts = ctx.max_attempts, cafile = o.cafile, feed_table = o["feed-table"],
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
    local cmd = ctx and ctx.commands and ctx.commands[ctx.command]
    local usage = cmd and cmd.usage or ""
    for word in usage:gmatch("%S+") do
      if #names > 0 or word ~= ctx.command then names[#names + 1] = word end
    end
    local missing = {}
    for k = #positional + 1, min do missing[#missing + 1] = names[k] end
    usage_error("missing argument" .. (#missing > 0 and (": " .. tbl_concat(missing, " ")) or ""))
  end
  if #positional > max then usage_error("too many arguments: " .. positional[max + 1]) end
end

_M.parse = parse
_M.exact_integer = exact_integer
_M.too_large = too_large
_M.positive_integer = positive_integer
_M.positive_seconds = positive_seconds
_M.sort_key_arg = sort_key_arg
_M.time_arg = time_arg
_M.positive_number = positive_number
_M.name_list = name_list
_M.json_object = json_object
_M.table_settings = table_settings
_M.new_client = new_client
_M.check_count = check_count

return _M
