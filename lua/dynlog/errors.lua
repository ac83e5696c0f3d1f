--- dynlog's error values.
-- Every expected failure is returned as `nil, err`, where `err` is a table
-- `{code=, message=, status=, retryable=, request_id=}` whose `tostring` is
-- `code: message`. Messages never carry secrets.
local getmetatable, ipairs, pairs, setmetatable, tostring, type =
  getmetatable, ipairs, pairs, setmetatable, tostring, type

local _M = {}

local mt = {}
mt.__index = mt
mt.__tostring = function(err)
  return tostring(err.code) .. ": " .. tostring(err.message)
end

--- dynlog's own error codes, each documented in docs/errors.md: CODES[code]
-- is true for them (the C core's included), nil for AWS's codes, which
-- keep the names AWS gives them. One style: snake_case.
_M.CODES = {}
for _, code in ipairs({
  "aborted", "append_failed", "bad_response", "bad_state", "batch_item_failures", "config", "conflict",
  "connection", "crc32_mismatch", "credentials", "deploy_failed", "deploy_timeout", "gap", "handler_error",
  "invalid_argument", "invalid_description", "invalid_json", "invalid_pattern", "invalid_xml", "io", "no_stream",
  "out_of_memory", "overflow", "poison_event", "publish_failed",
  "schema_mismatch",
  "signing_failed", "stream", "stream_deleted", "throttled", "timeout", "tls", "too_large", "upcast_failed",
}) do _M.CODES[code] = true end

--- Builds an error value. `fields` may add status, retryable, request_id…
function _M.new(code, message, fields)
  local err = { code = code, message = message, retryable = false }
  if fields then
    for k, v in pairs(fields) do err[k] = v end
  end
  return setmetatable(err, mt)
end

--- items(code, what, errs, results, n) -> the error of a call on a list of
-- n items of which some failed (append_many, publish): `code`, a message
-- counting the failures (`what` says what befell them) and naming the
-- first, each failure `errs[i]` (an error value with index = i) in its list
-- part, and `results`, the success values of the others (results[i]).
function _M.items(code, what, errs, results, n)
  local failed, first = 0, nil
  for i in pairs(errs) do
    failed = failed + 1
    if not first or i < first then first = i end
  end
  local err = _M.new(code, failed .. " of " .. n .. " " .. what .. " (first: " .. tostring(errs[first]) .. ")", errs)
  err.results = results
  return err
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

---------------------------------------------------------------------------
-- Redaction of server text
---------------------------------------------------------------------------

local str_byte, str_find, str_format, str_gsub, str_lower, str_sub, str_upper =
  string.byte, string.find, string.format, string.gsub, string.lower, string.sub, string.upper
local tbl_concat = table.concat

_M.REDACTED = "[redacted]"

-- `word` as a pattern that matches it in any case ("ab-c" -> "[aA][bB]%-[cC]").
local function caseless(word)
  return (str_gsub(word, "%W", "%%%0"):gsub("%a", function(c)
    return "[" .. str_lower(c) .. str_upper(c) .. "]"
  end))
end

-- The value after a name, as headers, query strings and JSON write it:
-- "Name: v", "Name=v", "name":"v".
local VALUE = "[\"']?%s*[:=]%s*[\"']?)[^%s\"'&,;<>]+"
local NAMED = {
  "(" .. caseless("x-amz-security-token") .. VALUE, -- the session token, whoever's it is
  "(" .. caseless("signature") .. VALUE,            -- Authorization's Signature=, X-Amz-Signature=
}

-- Replaces every occurrence of `s` (plain text, not a pattern) in `text`.
local function replace_plain(text, s)
  local parts, n, from = {}, 0, 1
  while true do
    local a, b = str_find(text, s, from, true)
    if not a then break end
    parts[n + 1], parts[n + 2] = str_sub(text, from, a - 1), _M.REDACTED
    n, from = n + 2, b + 1
  end
  if n == 0 then return text end
  parts[n + 1] = str_sub(text, from)
  return tbl_concat(parts)
end

-- The spellings a server may give a secret back in: as sent, JSON-escaped
-- ("/" as "\/") and percent-encoded (either case of hex digit).
local function spellings(s)
  local list = { s }
  if str_find(s, "/", 1, true) then list[#list + 1] = (str_gsub(s, "/", "\\/")) end
  if str_find(s, "[^%w%-%._~]") then
    local upper = str_gsub(s, "[^%w%-%._~]", function(c) return str_format("%%%02X", str_byte(c)) end)
    list[#list + 1] = upper
    list[#list + 1] = (str_gsub(upper, "%%%x%x", str_lower))
  end
  return list
end

--- redact(text, secrets) -> text with every secret of the list `secrets`
-- (strings; other values are skipped) and the value of every
-- X-Amz-Security-Token and Signature it names replaced by "[redacted]".
-- For text that came from a server or a proxy, which may echo the request's
-- headers, before it becomes an error message. Non-strings come back as
-- they are.
function _M.redact(text, secrets)
  if type(text) ~= "string" then return text end
  if secrets then
    for _, secret in pairs(secrets) do
      if type(secret) == "string" and secret ~= "" then
        for _, s in ipairs(spellings(secret)) do text = replace_plain(text, s) end
      end
    end
  end
  for i = 1, #NAMED do
    text = str_gsub(text, NAMED[i], "%1" .. _M.REDACTED)
  end
  return text
end

return _M
