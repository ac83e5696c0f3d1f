--- dynlog's error values.
-- Every expected failure is returned as `nil, err`, where `err` is a table
-- `{code=, message=, status=, retryable=, request_id=}` whose `tostring` is
-- `code: message`. Messages never carry secrets.
local getmetatable, pairs, setmetatable, tostring, type =
  getmetatable, pairs, setmetatable, tostring, type

local _M = {}

local mt = {}
mt.__index = mt
mt.__tostring = function(err)
  return tostring(err.code) .. ": " .. tostring(err.message)
end

--- Builds an error value. `fields` may add status, retryable, request_id…
function _M.new(code, message, fields)
  local err = { code = code, message = message, retryable = false }
  if fields then
    for k, v in pairs(fields) do err[k] = v end
  end
  return setmetatable(err, mt)
end

--- True when `v` is an error value made by this module.
function _M.is(v)
  return type(v) == "table" and getmetatable(v) == mt
end

--- Turns the `nil, code, message` triple of a C primitive into `nil, err`.
function _M.from_core(value, code, message, fields)
  if value ~= nil then return value end
  return nil, _M.new(code, message, fields)
end

return _M
