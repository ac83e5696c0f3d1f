--- JSON through dynlog.core (yajl underneath).
-- `null` is a light userdata (the same value as cjson.null); an empty table
-- encodes as `{}`, and `json.array(t)` marks a table to encode as a JSON array
-- even when it is empty. Decoded arrays carry that mark, so they encode back
-- as arrays. Integers stay integers; floats read back bit-identical; a
-- `dynlog.number` is written as its own digits.
local core = require "dynlog.core"
local errors = require "dynlog.errors"

local core_decode = core.json_decode

local _M = {
  null = core.null,
  array = core.array,
  is_array = core.is_array,
  --- encode(value) -> text; raises on values JSON cannot hold, naming where.
  encode = core.json_encode,
}

--- decode(text) -> value, or nil, err (code "invalid_json").
function _M.decode(text)
  return errors.from_core(core_decode(text))
end

return _M
