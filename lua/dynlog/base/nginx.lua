--- What dynlog knows of nginx (lua-nginx-module), in one place: whether the
-- code runs inside it, the phases where requests can be made, and how a
-- location reads a request, checks its credentials and answers with JSON.
-- Loading it outside nginx is fine: only in_nginx and check_auth are of use
-- there.
--
--   local nginx = require "dynlog.base.nginx"
--   local ngx = nginx.in_nginx()          -- the ngx table, or false
--   if ngx then nginx.check_phase(ngx) end -- raises in init_by_lua*, log_by_lua*, ...
local core = require "dynlog.core"
local options = require "dynlog.base.options"

local error, rawget, tonumber, tostring, type = error, rawget, tonumber, tostring, type
local io_open = io.open
local str_match = string.match
local constant_time_equal, base64_decode, json_encode = core.constant_time_equal, core.base64_decode,
  core.json_encode

local _M = {}

---------------------------------------------------------------------------
-- Where the code runs
---------------------------------------------------------------------------

--- in_nginx() -> the `ngx` table when running inside nginx with cosockets
-- (ngx.socket.tcp), false elsewhere.
function _M.in_nginx()
  local ngx = rawget(_G, "ngx")
  return type(ngx) == "table" and type(ngx.socket) == "table" and ngx.socket.tcp ~= nil and ngx
end

-- Inside nginx every request goes over cosockets, which exist only in
-- some phases: say so rather than block the worker or fail obscurely.
local COSOCKET_PHASES = { server_rewrite = true, rewrite = true, access = true, content = true, timer = true,
                          ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true }

--- check_phase(ngx): raises (with no position: the message says it all)
-- when the current phase has no cosockets, so no request or sleep can be
-- made in it.
function _M.check_phase(ngx)
  local phase = ngx.get_phase()
  if not COSOCKET_PHASES[phase] then
    error("dynlog: no requests can be made in nginx's " .. tostring(phase) .. " phase (cosockets are not"
      .. " available there); run the work from a timer, e.g. ngx.timer.at(0, function() ... end)", 0)
  end
end

---------------------------------------------------------------------------
-- Serving a location (content_by_lua*)
---------------------------------------------------------------------------

--- say_json(status, body, content_type = "application/json"): answers the
-- request with `body` encoded as JSON and ends it.
function _M.say_json(status, body, content_type)
  local ngx = rawget(_G, "ngx")
  ngx.status = status
  ngx.header["Content-Type"] = content_type or "application/json"
  ngx.print(json_encode(body))
  return ngx.exit(status)
end

--- read_body(max_bytes) -> the request's body, or nil, the status to answer
-- with and why.
function _M.read_body(max_bytes)
  local ngx = rawget(_G, "ngx")
  local declared = tonumber(ngx.var.http_content_length)
  if declared and declared > max_bytes then return nil, 413, "body over " .. max_bytes .. " bytes" end
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if not body then
    -- nginx keeps bodies over client_body_buffer_size in a temporary file.
    local path = ngx.req.get_body_file()
    local f = path and io_open(path, "rb")
    if not f then return nil, 400, "empty body" end
    body = f:read(max_bytes + 1)
    f:close()
    if not body then return nil, 400, "empty body" end
  end
  if #body > max_bytes then return nil, 413, "body over " .. max_bytes .. " bytes" end
  return body
end

--- authorized(auth) -> does the request carry the credentials of `auth`
-- (checked by check_auth; nil lets everyone in)? Compared in constant time,
-- so that timing tells nothing about how much of a guess was right.
function _M.authorized(auth)
  if auth == nil then return true end
  local headers = rawget(_G, "ngx").req.get_headers()
  if auth.header then
    local given = headers[auth.header]
    return type(given) == "string" and constant_time_equal(given, auth.value)
  end
  if auth.basic then
    local given = headers["authorization"]
    if type(given) ~= "string" then return false end
    local encoded = str_match(given, "^[Bb]asic%s+(%S+)$")
    local decoded = encoded and base64_decode(encoded)
    return type(decoded) == "string"
      and constant_time_equal(decoded, auth.basic.user .. ":" .. auth.basic.password)
  end
  return false
end

local AUTH = options.known{ "header", "value", "basic" }
local BASIC = options.known{ "user", "password" }

local function nonempty(v) return type(v) == "string" and v ~= "" end

--- check_auth(auth, where): a credential check that cannot fail open. An
-- empty header name, key, user or password is a configuration error (an
-- empty `x-api-key:` would match an empty key), raised before any request
-- is accepted, at the caller of the function that called the function
-- calling check_auth (receive's caller, say, through the check of its spec).
function _M.check_auth(auth, where)
  if auth == nil then return end
  local shape = where .. ": auth must be {header=, value=} or {basic = {user=, password=}}"
  if type(auth) ~= "table" then error(shape, 4) end
  options.check(auth, AUTH, where .. ": auth", 4)
  if auth.basic ~= nil then
    if auth.header ~= nil or auth.value ~= nil then error(shape .. ", not both", 4) end
    if type(auth.basic) ~= "table" then error(shape, 4) end
    options.check(auth.basic, BASIC, where .. ": auth.basic", 4)
    if not (nonempty(auth.basic.user) and nonempty(auth.basic.password)) then
      error(where .. ": auth.basic.user and auth.basic.password must be non-empty strings"
        .. " (an empty secret would let anyone in)", 4)
    end
    return
  end
  if not nonempty(auth.header) then error(shape .. ": auth.header must be a non-empty header name", 4) end
  if not nonempty(auth.value) then
    error(where .. ": auth.value must be a non-empty string (an empty key would let anyone in;"
      .. " is the variable holding it set?)", 4)
  end
end

return _M
