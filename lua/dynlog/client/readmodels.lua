--- What replays and rebuilds of read models keep in the feed table: their
-- positions, and the aliases that point readers at a read model's table.
--
--   local users_table = assert(c:read_model_table("users"))   -- "users-v2" after a switch-over
--
-- Items (keys from dynlog.client.feed.named_key):
--
--   position   pk "<kind>#<name>", sk 0   {position, head, updated_at}: the last
--              kind "replay" (dynlog replay --name): the position done
--              (a rebuild's is the checkpoint of its subscription)
--   alias      pk "alias#<name>", sk 0    {table, at, updated_at}: the table of
--                                         the read model `name`, since the
--                                         rebuild that wrote it caught up with
--                                         the feed at position `at`
local core = require "dynlog.core"
local errors = require "dynlog.errors"
local feed = require "dynlog.client.feed"

local error, pairs, tonumber, type = error, pairs, tonumber, type
local math_floor = math.floor
local str_find, str_format = string.find, string.format
local attribute_map = core.attribute_map

local _M = {}

-- The item (kind, name), unmarshalled, or false when there is none, or nil, err.
local function get(c, kind, name)
  local resp, err = c:_request("dynamodb", "GetItem", {
    TableName = feed.table_of(c), Key = feed.named_key(kind, name), ConsistentRead = true,
  }, true)
  if not resp then return nil, err end
  return resp.Item or false
end

local function put(c, kind, name, fields)
  local item = {}
  for k, v in pairs(fields) do item[k] = v end
  local key = feed.named_key(kind, name)
  item.pk, item.sk = key.pk.S, 0
  item.updated_at = math_floor(c.now() * 1000)
  local _, err = c:_request("dynamodb", "PutItem", { TableName = feed.table_of(c), Item = attribute_map(item) }, false)
  if err then return nil, err end
  return true
end

--- position(c, kind, name) -> the position stored under (kind, name), false
-- when none is, or nil, err.
function _M.position(c, kind, name)
  local item, err = get(c, kind, name)
  if item == nil then return nil, err end
  if not item then return false end
  local pos = tonumber(item.position)
  if not pos or pos < 0 or pos ~= math_floor(pos) then
    return nil, errors.new("bad_state", str_format("the item %s#%s of the feed table has no position", kind, name))
  end
  return pos
end

--- save_position(c, kind, name, position [, head]) -> true, or nil, err.
function _M.save_position(c, kind, name, position, head)
  return put(c, kind, name, { position = position, head = head })
end

local TABLE_NAME = "^[%w_%.%-]+$"

local function check_table_name(name, what, level)
  if type(name) ~= "string" or #name < 3 or #name > 255 or not str_find(name, TABLE_NAME) then
    error(what .. " must be a table name: 3-255 characters of letters, digits, '_', '-' and '.'", level + 1)
  end
end

--- alias(c, name) -> {table =, at =, updated_at =} of the alias `name`, false
-- when there is none, or nil, err.
function _M.alias(c, name)
  local item, err = get(c, "alias", name)
  if item == nil then return nil, err end
  if not item then return false end
  if type(item.table) ~= "string" then
    return nil, errors.new("bad_state", "the alias " .. name .. " in the feed table names no table")
  end
  return { table = item.table, at = tonumber(item.at), updated_at = tonumber(item.updated_at) }
end

--- set_alias(c, name, table_name, at) -> true, or nil, err: from now on
-- read_model_table(name) is table_name; at is the feed position the table
-- had caught up with.
function _M.set_alias(c, name, table_name, at)
  check_table_name(table_name, "set_alias: table_name", 2)
  return put(c, "alias", name, { table = table_name, at = at })
end

--- c:read_model_table(name) -> the table that holds the read model `name`:
-- the one its alias names (written by a rebuild that caught up with the
-- feed), else `name` itself; or nil, err. One consistent read of the feed
-- table, which may be missing (then: name). Call it when a service starts,
-- or now and then, rather than before every read.
function _M.read_model_table(c, name)
  if type(name) ~= "string" or name == "" then
    error("read_model_table: name must be a read model's name (a string)", 2)
  end
  local alias, err = _M.alias(c, name)
  if alias == nil then
    if err.code == "ResourceNotFoundException" then return name end
    return nil, err
  end
  return alias and alias.table or name
end

return _M
