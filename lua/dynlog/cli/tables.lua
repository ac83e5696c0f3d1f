--- `dynlog tables create|describe`: the event table.
local cli_args = require "dynlog.cli.args"
local core = require "dynlog.core"
local output = require "dynlog.cli.output"

local ipairs, tostring = ipairs, tostring
local str_format = string.format
local tbl_concat = table.concat
local check_count, new_client, usage_error = cli_args.check_count, cli_args.new_client, cli_args.usage_error
local encode, fail, printable = output.encode, output.fail, output.printable

local _M = {}

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

_M.tables = {
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

return _M
