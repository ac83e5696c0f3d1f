--- The AWS query protocol (STS, CloudFormation): form-encoded requests,
-- XML answers.
--
--   local query = require "dynlog.aws.query"
--   local result, err = query.call(c, "cloudformation", "CreateChangeSet", {
--     StackName = "app", ChangeSetName = "v2", TemplateBody = body,
--     Capabilities = { "CAPABILITY_IAM" },                        -- Capabilities.member.1
--     Parameters = { { ParameterKey = "Env", ParameterValue = "prod" } },
--     Tags = { { Key = "team", Value = "core" } },
--   })
--   -- result.Id, result.StackId; result.ResponseMetadata.RequestId
--
-- query.call(c, service, action, params) → result | nil, err
--   `c` is a dynlog client; `service` a query-protocol service of the client
--   ("sts" or "cloudformation"); the request goes through the client's one
--   request path (c:_request: endpoint from configuration, SigV4 signing,
--   retries of throttling and 5xx, clock-skew and expired-token recovery).
--   `err` is a dynlog error value: AWS's own code (`AccessDenied`,
--   `ValidationError`, `Throttling`, …) with `message`, `status`,
--   `request_id`, `retryable` and `aws_type` (`Sender` or `Receiver`), or
--   one of dynlog's (`timeout`, `bad_response`, …).
--
-- Parameters (query.encode):
--   strings as they are; numbers as integers when they are whole, else with
--   17 significant digits; booleans as true/false;
--   a table with elements 1..n (or marked by dynlog.json.array) is a list:
--   `Name.member.1`, `Name.member.2`, … (an empty one sends `Name=`);
--   a table marked by query.map(t) is a map: `Name.entry.1.key`,
--   `Name.entry.1.value`, … in key order;
--   any other table is a structure: `Name.Field`.
--   Names and values are percent-encoded as SigV4 wants (only A-Z a-z 0-9
--   - _ . ~ stay as they are).
--
-- Results (query.decode): the `<ActionResult>` element as Lua values:
--   an element without child elements is its text (a string: "" when
--   empty, so an empty list comes back as "": use query.list(v));
--   an element whose children are all `<member>` is a list;
--   an element whose children are all `<entry><key/><value/></entry>` is a
--   map key → value;
--   any other element is a table child name → value (a name that repeats
--   gives a list of its values).
--   `ResponseMetadata = { RequestId = … }` is added to the result, as the
--   SDKs do; an answer without a result element (DeleteStack) is just that.
local core = require "dynlog.core"
local errors = require "dynlog.errors"
local retry = require "dynlog.aws.retry"

local error, ipairs, next, pairs, setmetatable, getmetatable, tostring, type =
  error, ipairs, next, pairs, setmetatable, getmetatable, tostring, type
local math_floor, math_huge = math.floor, math.huge
local str_byte, str_format, str_gsub, str_sub = string.byte, string.format, string.gsub, string.sub
local tbl_concat, tbl_sort = table.concat, table.sort

local _M = {}

--- The Content-Type of a query-protocol request.
_M.CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"

---------------------------------------------------------------------------
-- Requests
---------------------------------------------------------------------------

local map_mt = { __name = "dynlog.query.map" }

--- query.map(t) → t marked as a map (encoded as `Name.entry.N.key/value`).
function _M.map(t)
  if type(t) ~= "table" then error("query.map: expected a table", 2) end
  return setmetatable(t, map_mt)
end

--- Percent-encoding as SigV4 canonicalises it.
local function pct(s)
  return (str_gsub(s, "[^%w%-_%.~]", function(c) return str_format("%%%02X", str_byte(c)) end))
end
_M.percent_encode = pct

local function number_text(n)
  if n ~= n or n == math_huge or n == -math_huge then return nil end
  if n == math_floor(n) and n > -2 ^ 53 and n < 2 ^ 53 then return str_format("%d", n) end
  return str_format("%.17g", n)
end

local function is_list(t)
  if core.is_array(t) then return true end
  if next(t) == nil then return false end
  local n = #t
  if n == 0 then return false end
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do
    if type(k) ~= "string" then return nil, "has a key that is not a string (" .. tostring(k) .. ")" end
    keys[#keys + 1] = k
  end
  tbl_sort(keys)
  return keys
end

local add_value

local function add_table(out, name, t, depth)
  if depth > 32 then return nil, name .. ": nested too deeply" end
  if getmetatable(t) == map_mt then
    local keys, why = sorted_keys(t)
    if not keys then return nil, name .. " " .. why end
    for i, k in ipairs(keys) do
      out[#out + 1] = pct(name .. ".entry." .. i .. ".key") .. "=" .. pct(k)
      local ok, err = add_value(out, name .. ".entry." .. i .. ".value", t[k], depth + 1)
      if not ok then return nil, err end
    end
    return true
  end
  if is_list(t) then
    if #t == 0 then
      out[#out + 1] = pct(name) .. "="
      return true
    end
    for i = 1, #t do
      local ok, err = add_value(out, name .. ".member." .. i, t[i], depth + 1)
      if not ok then return nil, err end
    end
    return true
  end
  local keys, why = sorted_keys(t)
  if not keys then return nil, name .. " " .. why end
  for _, k in ipairs(keys) do
    local ok, err = add_value(out, name .. "." .. k, t[k], depth + 1)
    if not ok then return nil, err end
  end
  return true
end

function add_value(out, name, v, depth)
  local tv = type(v)
  local text
  if tv == "string" then
    text = v
  elseif tv == "number" then
    text = number_text(v)
    if not text then return nil, name .. " is not a finite number" end
  elseif tv == "boolean" then
    text = v and "true" or "false"
  elseif tv == "table" then
    return add_table(out, name, v, depth)
  else
    return nil, name .. " cannot be sent (a " .. tv .. ")"
  end
  out[#out + 1] = pct(name) .. "=" .. pct(text)
  return true
end

--- query.encode(action, version, params) → the form body | nil, err
-- (code "invalid_argument"): `Action=…&Version=…` and the parameters.
function _M.encode(action, version, params)
  if type(action) ~= "string" or action == "" then error("query.encode: action must be a string", 2) end
  if type(version) ~= "string" or version == "" then error("query.encode: version must be a string", 2) end
  if params ~= nil and type(params) ~= "table" then error("query.encode: params must be a table", 2) end
  local out = { "Action=" .. pct(action), "Version=" .. pct(version) }
  local keys, why = sorted_keys(params or {})
  if not keys then return nil, errors.new("invalid_argument", action .. ": params " .. why) end
  for _, k in ipairs(keys) do
    if k == "Action" or k == "Version" then
      return nil, errors.new("invalid_argument", action .. ": params must not hold " .. k)
    end
    local ok, err = add_value(out, k, params[k], 1)
    if not ok then return nil, errors.new("invalid_argument", action .. ": " .. err) end
  end
  return tbl_concat(out, "&")
end

---------------------------------------------------------------------------
-- Answers
---------------------------------------------------------------------------

local function child(el, name)
  for _, c in ipairs(el.children) do
    if c.name == name then return c end
  end
  return nil
end

local function all_named(children, name)
  for _, c in ipairs(children) do
    if c.name ~= name then return false end
  end
  return true
end

--- query.value(element) → the Lua value of an element of core.xml_decode's
-- tree, by the rules at the top of this file.
local function value_of(el)
  local children = el.children
  if #children == 0 then return el.text end
  if all_named(children, "member") then
    local list = core.array({})
    for i, c in ipairs(children) do list[i] = value_of(c) end
    return list
  end
  if all_named(children, "entry") then
    local map, ok = {}, true
    for _, c in ipairs(children) do
      local k, v = child(c, "key"), child(c, "value")
      if not k or #k.children > 0 then ok = false break end
      map[k.text] = v and value_of(v) or ""
    end
    if ok then return map end
  end
  local t, repeated = {}, {}
  for _, c in ipairs(children) do
    local name, v = c.name, value_of(c)
    if t[name] == nil then
      t[name] = v
    elseif repeated[name] then
      local list = t[name]
      list[#list + 1] = v
    else
      t[name], repeated[name] = core.array({ t[name], v }), true
    end
  end
  return t
end
_M.value = value_of

--- query.list(v) → v when it is a list, an empty list when it is "" or nil
-- (how an empty `<Name/>` list comes back).
function _M.list(v)
  if v == nil or v == "" then return core.array({}) end
  return v
end

local function excerpt(body)
  body = str_sub(body or "", 1, 120)
  return (str_gsub(body, "[%c]", " "))
end

local function local_name(name)
  return (str_gsub(name or "", "^.*:", ""))
end

--- query.decode(body, action [, secrets]) → result | nil, err
-- (code "bad_response"): a 200 answer's `<ActionResult>` as Lua values.
function _M.decode(body, action, secrets)
  local root, code, message = core.xml_decode(body or "")
  if not root then
    return nil, errors.new("bad_response", "response is not valid XML (" .. tostring(message) .. "): "
      .. excerpt(errors.redact(body, secrets)), { retryable = false, code_detail = code })
  end
  if local_name(root.name) ~= action .. "Response" then
    return nil, errors.new("bad_response", "expected a " .. action .. "Response, got <" .. tostring(root.name)
      .. ">", { retryable = false })
  end
  local result_el = child(root, action .. "Result")
  local result = result_el and value_of(result_el) or {}
  if type(result) ~= "table" then result = {} end
  local meta = child(root, "ResponseMetadata")
  local id = meta and child(meta, "RequestId")
  result.ResponseMetadata = { RequestId = id and id.text or nil }
  return result
end

--- query.error(status, body, headers [, secrets]) → err: a non-200 answer
-- as a dynlog error value (AWS's code; retryable when throttling or 5xx).
function _M.error(status, body, headers, secrets)
  local fields = { status = status, request_id = headers and headers["x-amzn-requestid"] }
  local root = core.xml_decode(body or "")
  local err_el = root and (local_name(root.name) == "Error" and root or child(root, "Error"))
  local code_el = err_el and child(err_el, "Code")
  if not code_el or code_el.text == "" then
    fields.retryable = retry.retryable(nil, status)
    return errors.new("bad_response", "HTTP " .. tostring(status) .. " without an AWS error body: "
      .. excerpt(errors.redact(body, secrets)), fields)
  end
  local code = errors.redact(code_el.text, secrets)
  local msg_el, type_el = child(err_el, "Message"), child(err_el, "Type")
  local id_el = child(root, "RequestId") or child(err_el, "RequestId")
  if id_el and id_el.text ~= "" then fields.request_id = id_el.text end
  fields.aws_type = type_el and type_el.text or nil
  fields.retryable = retry.retryable(code, status)
  return errors.new(code, errors.redact(msg_el and msg_el.text or "", secrets), fields)
end

--- query.call(c, service, action, params) → result | nil, err (see the top).
function _M.call(c, service, action, params)
  if type(c) ~= "table" or type(c._request) ~= "function" then
    error("query.call: expected a dynlog client", 2)
  end
  if type(action) ~= "string" or not action:find("^%u%w+$") then
    error("query.call: action must be an operation name such as \"AssumeRole\"", 2)
  end
  if params ~= nil and type(params) ~= "table" then error("query.call: params must be a table", 2) end
  local svc = c.services and c.services[service]
  if not svc or svc.protocol ~= "query" then
    error("query.call: " .. tostring(service) .. " is not a query-protocol service of the client", 2)
  end
  return c:_request(service, action, params or {})
end

return _M
