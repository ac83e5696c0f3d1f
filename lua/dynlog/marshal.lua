--- DynamoDB AttributeValues through dynlog.core.
-- Plain Lua values map to DynamoDB types: string -> S (UTF-8 text),
-- `binary(bytes)` -> B, number -> N, boolean -> BOOL, `null` -> NULL,
-- `set{...}` -> SS/NS/BS (by member type), a list (or `array(t)`) -> L,
-- a table with string keys (or `{}`) -> M, `number(text)` -> N with exactly
-- those digits (a JSON number with them, too). `attribute_map(t)` marks a table
-- whose values `dynlog.core.json_encode` writes as AttributeValues, wherever
-- it sits in a request. Requests and responses never go through the tables
-- these functions build; they are for users and for stream records that
-- arrive as Lua tables.
local core = require "dynlog.core"
local errors = require "dynlog.errors"

local core_unmarshal, core_unmarshal_item, core_valid_number =
  core.unmarshal, core.unmarshal_item, core.valid_number

local _M = {
  null = core.null,
  array = core.array,
  binary = core.binary,
  is_binary = core.is_binary,
  --- number(text) -> a number kept as its decimal text, for numbers no Lua
  -- number holds exactly; raises when DynamoDB could not hold it.
  -- tostring gives the text; two are == when they are the same number.
  number = core.number,
  is_number = core.is_number,
  set = core.set,
  is_set = core.is_set,
  attribute_map = core.attribute_map,
  is_attribute_map = core.is_attribute_map,
  --- marshal(v) -> the AttributeValue table ({S = "x"}, {M = {...}}, ...);
  -- raises, naming the path, on values DynamoDB cannot hold.
  marshal = core.marshal,
  --- marshal_item(t) -> { name = AttributeValue, ... }; raises like marshal.
  marshal_item = core.marshal_item,
  --- item_size(t) -> bytes DynamoDB counts for the item t (plain values);
  -- raises like marshal.
  item_size = core.item_size,
}

--- unmarshal(av [, numbers]) -> plain value, or nil, err (invalid_argument).
-- numbers = "string" keeps every N as its decimal text; "exact" gives a Lua
-- number when one holds the N exactly, else a `number` with its text.
function _M.unmarshal(av, numbers)
  return errors.from_core(core_unmarshal(av, numbers))
end

--- unmarshal_item(t [, numbers]) -> plain table, or nil, err (invalid_argument).
function _M.unmarshal_item(item, numbers)
  return errors.from_core(core_unmarshal_item(item, numbers))
end

--- valid_number(s) -> true, or nil, err (invalid_argument) when DynamoDB
-- would refuse s as an N (syntax, more than 38 digits, out of range).
function _M.valid_number(s)
  return errors.from_core(core_valid_number(s))
end

return _M
