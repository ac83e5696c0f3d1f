--- `dynlog append LOG ID TYPE [JSON]`: one event appended.
local cli_args = require "dynlog.cli.args"
local output = require "dynlog.cli.output"

local tostring = tostring
local check_count, exact_integer, json_object = cli_args.check_count, cli_args.exact_integer, cli_args.json_object
local new_client, too_large, usage_error = cli_args.new_client, cli_args.too_large, cli_args.usage_error
local encode, fail = output.encode, output.fail

local _M = {}

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

_M.append = {
  usage = "append LOG ID TYPE [JSON]",
  summary = "append one event; prints its key",
  options = { ["expected-version"] = "value", ["event-id"] = "value", meta = "value" },
  help = [[
Appends one event of type TYPE to the stream LOG/ID. Its payload is the
JSON object JSON, or read from stdin when JSON is absent or "-"; payload.id
is set to ID. Prints the new event's key: the partition key and the sort key
(a ULID, or the version number in version mode); with --json
{"pk": ..., "sk": ...}.

options:
  --expected-version N|no_stream|any   version mode: write exactly version N+1,
                                       version 1, or after the head (default any)
  --event-id ID                        the event's id: appended again with the same
                                       ID (a retry), nothing is written and the key
                                       of the event already there is printed
  --meta JSON                          the event's metadata, a JSON object:
                                       correlation_id, causation_id, trace_id
                                       (strings), schema_version (an integer)
                                       and keys of your own

An invalid JSON argument is a usage error (exit 2).]],
  run = function(ctx, args)
    check_count(args, 3, 4, ctx)
    local log, id, event_type, text = args[1], args[2], args[3], args[4]
    local expected = expected_version(ctx)
    local meta = ctx.opts.meta and json_object(ctx.opts.meta, "--meta")
    local payload
    if text == nil or text == "-" then
      payload = json_object(read_all(ctx.stdin), "the payload on stdin")
    else
      payload = json_object(text, "the payload argument")
    end
    local c, cerr = new_client(ctx)
    if not c then return fail(ctx, cerr) end
    local key, err = c:append(log, id, event_type, payload,
                              { expected_version = expected, event_id = ctx.opts["event-id"], meta = meta })
    if not key then return fail(ctx, err) end
    if ctx.json then
      ctx.out:write(encode(key), "\n")
    else
      ctx.out:write(key.pk, "  ", tostring(key.sk), "\n")
    end
    return 0
  end,
}

return _M
