--- The blocking HTTP transport: one libcurl handle per transport, so that
-- consecutive requests share one keep-alive connection.
--
--   local t = http.new{timeout=10, connect_timeout=3, cafile=nil}
--   local res, err = t:request{method="POST", url=, headers=, body=, timeout=}  -- timeout false: none
--   -- res = {status=, headers=<lower-case names>, body=, new_connections=, local_port=}
--
-- Failures to talk at all (timeout, refused connection, TLS) are `nil, err`
-- with err.code "timeout", "connection" or "tls" and err.retryable set, and
-- err.sent = false when the request certainly never went out (the host had
-- no address, the connection or the TLS handshake failed or timed out), so
-- the server cannot have applied it. Any HTTP status, 5xx included, is a
-- response for the caller to judge.
local curl = require "dynlog.curl"
local errors = require "dynlog.errors"
local options = require "dynlog.base.options"

local setmetatable, type = setmetatable, type
local str_find = string.find

local _M = {}
local mt = { __index = _M }

local RETRYABLE = { timeout = true, connection = true }

local NEW = options.known{ "timeout", "connect_timeout", "cafile", "max_response_bytes" }
local REQUEST = options.known{ "method", "url", "headers", "body", "timeout" }

--- Creates a transport. Options: `timeout` and `connect_timeout` (seconds),
-- `cafile` (a PEM file of trusted CAs; default the system's store),
-- `max_response_bytes`.
function _M.new(opts)
  options.check(opts, NEW, "dynlog.transport.curl.new")
  opts = opts or {}
  return setmetatable({ handle = curl.http_client(opts) }, mt)
end

--- The error value of a failure class ("timeout", "connection", …) that the
-- C core reported, with `unsent` as it said; dynlog.transport.concurrent shares it.
function _M.failure(code, message, unsent)
  local err = errors.new(code, message, { retryable = RETRYABLE[code] or false })
  if unsent then err.sent = false end
  return err
end

function _M:request(req)
  options.check(req, REQUEST, "dynlog.transport.curl request")
  -- As dynlog.transport.cosocket answers it: a URL that cannot be sent is an error
  -- value (the C core would raise, to guard its own callers).
  if type(req.url) == "string" and str_find(req.url, "[%c ]") then
    return nil, _M.failure("invalid_argument", "URL has a space or a control character in it", true)
  end
  local res, code, message, unsent = self.handle:request(req.method or "GET", req.url,
    req.headers, req.body, req.timeout)
  if res then return res end
  return nil, _M.failure(code, message, unsent)
end

--- Releases the connection now rather than at garbage collection.
function _M:close()
  self.handle:close()
end

return _M
