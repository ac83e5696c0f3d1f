--- The non-blocking HTTP transport for inside nginx (OpenResty, or nginx
-- with lua-nginx-module): the interface of dynlog.transport.curl over cosockets, so a
-- request handler or a timer waits for DynamoDB without blocking its worker.
--
--   local t = require("dynlog.transport.cosocket").new{timeout=10, connect_timeout=3,
--     pool_size=30, keepalive_timeout=60, verify=true, max_response_bytes=64 MB}
--   local res, err = t:request{method="POST", url=, headers=, body=, timeout=}
--   -- res = {status=, headers=<lower-case names>, body=, new_connections=, resent=}
--   -- (no local_port, which dynlog.transport.curl has: cosockets don't expose it)
--
-- As with dynlog.transport.curl, failures to talk at all are `nil, err` with err.code
-- "timeout", "connection" (both retryable) or "tls", and err.sent = false
-- when the request certainly never went out (no address, no connection, a
-- failed TLS handshake, no time left to send it); "invalid_argument" for a
-- URL that can't be used and "too_large" for a response over the limit. Any
-- HTTP status, 5xx included, is a response for the caller to judge. Header
-- names and values with CR, LF or NUL raise, so no caller can inject a header.
--
-- Where it runs: wherever cosockets do (server_rewrite, rewrite, access and content phases,
-- ngx.timer callbacks, ngx.thread); not in init_by_lua*, init_worker_by_lua*
-- itself (start a timer there), set_by_lua*, header/body filters or log_by_lua*.
--
-- nginx configuration it relies on (http {} context):
--   * Host names: nginx resolves them only through its own `resolver`
--     directive (e.g. `resolver 127.0.0.53 ipv6=off;`); it does not read
--     /etc/hosts, so without one even "localhost" fails. IP literals
--     (127.0.0.1, [::1]) need no resolver.
--   * https: certificates are verified (verify=true, the default) against
--     `lua_ssl_trusted_certificate` (e.g. /etc/ssl/certs/ca-certificates.crt,
--     with `lua_ssl_verify_depth 5;`); the `cafile` option of dynlog.transport.curl is
--     accepted and ignored, because nginx takes its CAs from the directive
--     only. SNI and the name checked are the URL's host.
--
-- Connections go back to the worker's cosocket pool (one pool per scheme,
-- host, port and verify setting; up to pool_size idle connections, closed
-- after keepalive_timeout seconds idle) when the response allows reuse: so
-- `new_connections` is 0 for a request that reused one. A pooled connection
-- that the server closed meanwhile is replaced by a fresh one, transparently,
-- when it fails before any byte of the response came back (as curl does).
local errors = require "dynlog.errors"
local nginx = require "dynlog.base.nginx"
local options = require "dynlog.base.options"

local ngx = nginx.in_nginx()
if not ngx then
  error("dynlog.transport.cosocket runs inside nginx with lua-nginx-module (ngx.socket is missing)", 2)
end

local error, pairs, setmetatable, tonumber, tostring, type =
  error, pairs, setmetatable, tonumber, tostring, type
local math_ceil, math_floor, math_min = math.ceil, math.floor, math.min
local str_byte, str_find, str_format, str_gsub, str_lower, str_match, str_sub =
  string.byte, string.find, string.format, string.gsub, string.lower, string.match, string.sub
local tbl_concat = table.concat
local ngx_socket_tcp = ngx.socket.tcp
local ngx_now = ngx.now

local _M = { _VERSION = "0.1" }
local mt = { __index = _M }

local DEFAULTS = {
  timeout = 10,               -- seconds for the whole request
  connect_timeout = 3,        -- seconds for the TCP connect
  pool_size = 30,             -- idle connections kept per pool (as lua_socket_pool_size)
  keepalive_timeout = 60,     -- seconds a pooled connection may stay idle
  max_response_bytes = 64 * 1024 * 1024,
}

local MAX_HEADER_LINES = 200
local MAX_HEADER_BYTES = 64 * 1024
local READ_CHUNK = 65536
local STALE_RETRIES = 2      -- fresh connections tried after a dead pooled one
local DEFAULT_PORTS = { http = 80, https = 443 }
local RETRYABLE = { timeout = true, connection = true }
local COMMON_METHODS = { GET = true, POST = true, PUT = true, HEAD = true, DELETE = true } -- tokens all
local NO_BODY_METHODS = { GET = true, HEAD = true, DELETE = true, OPTIONS = true, TRACE = true }
local NEW = options.known{ "timeout", "connect_timeout", "pool_size", "keepalive_timeout", "verify",
                          "max_response_bytes", "cafile" }
local REQUEST = options.known{ "method", "url", "headers", "body", "timeout" }

---------------------------------------------------------------------------
-- Options
---------------------------------------------------------------------------

local function option_error(name, what)
  error("dynlog.transport.cosocket: " .. name .. " " .. what, 4)
end

local function seconds(opts, name)
  local v = opts[name]
  if v == nil then return DEFAULTS[name] end
  if type(v) ~= "number" or not (v > 0) or v > 86400 then
    option_error(name, "must be a number of seconds in (0, 86400]")
  end
  return v
end

local function ms(s)
  local n = math_ceil(s * 1000)
  if n < 1 then n = 1 end
  return n
end

--- Creates a transport. Options: `timeout` (seconds for a whole request,
-- default 10), `connect_timeout` (seconds, default 3), `pool_size` (idle
-- connections kept per pool, default 30), `keepalive_timeout` (seconds idle
-- before a pooled connection is closed, default 60), `verify` (check TLS
-- certificates and host names, default true), `max_response_bytes` (default
-- 64 MB), `cafile` (ignored: see lua_ssl_trusted_certificate above).
-- Raises on invalid options, as dynlog.transport.curl does.
function _M.new(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("dynlog.transport.cosocket: new expects a table of options", 2)
  end
  options.check(opts, NEW, "dynlog.transport.cosocket.new")
  opts = opts or {}
  local self = {
    timeout = seconds(opts, "timeout"),
    connect_timeout = seconds(opts, "connect_timeout"),
    keepalive_timeout = seconds(opts, "keepalive_timeout"),
    pool_size = DEFAULTS.pool_size,
    max_response_bytes = DEFAULTS.max_response_bytes,
    verify = true,
  }
  local size = opts.pool_size
  if size ~= nil then
    if type(size) ~= "number" or size < 1 or size ~= math_floor(size) then
      option_error("pool_size", "must be a positive integer")
    end
    self.pool_size = size
  end
  local max = opts.max_response_bytes
  if max ~= nil then
    if type(max) ~= "number" or not (max >= 1024) then
      option_error("max_response_bytes", "must be at least 1024")
    end
    self.max_response_bytes = max
  end
  if opts.verify ~= nil then
    if type(opts.verify) ~= "boolean" then option_error("verify", "must be a boolean") end
    self.verify = opts.verify
  end
  if opts.cafile ~= nil and type(opts.cafile) ~= "string" then
    option_error("cafile", "must be a path (and is ignored: use lua_ssl_trusted_certificate)")
  end
  self.connect_ms, self.keepalive_ms = ms(self.connect_timeout), ms(self.keepalive_timeout)
  self._urls, self._url_count = {}, 0
  return setmetatable(self, mt)
end

---------------------------------------------------------------------------
-- The request
---------------------------------------------------------------------------

-- A request that cannot be made: nothing was sent.
local function invalid(message)
  return nil, errors.new("invalid_argument", message, { retryable = false, sent = false })
end

-- scheme://host[:port][/path][?query][#fragment]; IPv6 literals in brackets.
local function parse_url(url)
  if type(url) ~= "string" then return invalid("url must be a string") end
  local scheme, authority, rest = str_match(url, "^(%a[%w+.-]*)://([^/?#]*)(.*)$")
  if not scheme then return invalid("malformed URL: " .. url) end
  scheme = str_lower(scheme)
  local port = DEFAULT_PORTS[scheme]
  if not port then return invalid("unsupported URL scheme: " .. scheme) end
  if str_find(authority, "@", 1, true) then return invalid("user info in URLs is not supported") end
  local host, port_part, ipv6
  if str_sub(authority, 1, 1) == "[" then
    host, port_part = str_match(authority, "^%[([%x:%.]+)%](.*)$")
    ipv6 = true
  else
    host, port_part = str_match(authority, "^([%w%.%-_]+)(.*)$")
  end
  if not host or (ipv6 and not str_find(host, ":", 1, true)) then
    return invalid("malformed host in URL: " .. url)
  end
  if port_part ~= "" and port_part ~= ":" then
    local digits = str_match(port_part, "^:(%d+)$")
    local n = tonumber(digits)
    if not n or n < 1 or n > 65535 then return invalid("malformed port in URL: " .. url) end
    port = n
  end
  local target = str_match(rest, "^[^#]*")
  if target == "" then
    target = "/"
  elseif str_sub(target, 1, 1) == "?" then
    target = "/" .. target
  end
  if str_find(target, "[%c ]") then
    return invalid("URL has a space or a control character in its path or query")
  end
  local bracketed = ipv6 and ("[" .. host .. "]") or host
  local authority_out = bracketed
  if port ~= DEFAULT_PORTS[scheme] then authority_out = bracketed .. ":" .. port end
  return {
    scheme = scheme,
    tls = scheme == "https",
    host = host,                  -- without brackets: the TLS server name
    connect_host = bracketed,     -- what ngx.socket.tcp connect parses
    port = port,
    authority = authority_out,    -- the Host header
    target = target,
  }
end

-- Header names checked already (RFC 9110 tokens), each with its lower-case
-- form: a client sends the same few names again and again. Bounded, as
-- callers may make up names.
local CHECKED_NAMES, checked_count = {}, 0
local MAX_CHECKED_NAMES = 256

-- The lower-case name of a header that is safe to send; raises otherwise.
local function check_header(name, value)
  if type(name) ~= "string" or type(value) ~= "string" then
    error("dynlog.transport.cosocket: headers must map names to strings", 4)
  end
  local lname = CHECKED_NAMES[name]
  if not lname then
    if name == "" or str_find(name, "[^%w!#$%%&'*+%-.^_`|~]") then
      error("dynlog.transport.cosocket: invalid character in header name '" .. str_gsub(name, "%c", "?") .. "'", 4)
    end
    lname = str_lower(name)
    if checked_count < MAX_CHECKED_NAMES then
      CHECKED_NAMES[name], checked_count = lname, checked_count + 1
    end
  end
  if str_find(value, "\r", 1, true) or str_find(value, "\n", 1, true) or str_find(value, "\0", 1, true) then
    error("dynlog.transport.cosocket: header '" .. name .. "' has a CR, LF or NUL in its value", 4)
  end
  return lname
end

-- The request as a list of pieces for sock:send, which joins them in C (no
-- Lua string of the whole head to make and intern): the request line, the
-- caller's headers, then Host, Content-Length and Connection unless the
-- caller set Host or Connection, then the body. A caller's Content-Length
-- is replaced by the body's real length. Raises on injection.
local function build_request(method, u, headers, body)
  local buf = { method, " ", u.target, " HTTP/1.1\r\n" }
  local n = 4
  local has_host, connection = false, nil
  if headers ~= nil then
    if type(headers) ~= "table" then error("dynlog.transport.cosocket: headers must be a table", 3) end
    for name, value in pairs(headers) do
      local lname = check_header(name, value)
      if lname == "transfer-encoding" then
        error("dynlog.transport.cosocket: request bodies are sent with Content-Length, not Transfer-Encoding", 3)
      end
      if lname ~= "content-length" then
        if lname == "host" then has_host = true end
        if lname == "connection" then connection = str_lower(value) end
        buf[n + 1], buf[n + 2], buf[n + 3], buf[n + 4] = name, ": ", value, "\r\n"
        n = n + 4
      end
    end
  end
  if not has_host then
    buf[n + 1], buf[n + 2], buf[n + 3] = "Host: ", u.authority, "\r\n"
    n = n + 3
  end
  if body ~= nil or not NO_BODY_METHODS[method] then
    buf[n + 1], buf[n + 2], buf[n + 3] = "Content-Length: ", body and #body or 0, "\r\n"
    n = n + 3
  end
  if not connection then
    buf[n + 1] = "Connection: keep-alive\r\n"
    n = n + 1
  end
  buf[n + 1] = "\r\n"
  if body and body ~= "" then buf[n + 2] = body end
  return buf, connection
end

---------------------------------------------------------------------------
-- One exchange on one connection
---------------------------------------------------------------------------

local function fail(code, message)
  return nil, errors.new(code, message, { retryable = RETRYABLE[code] or false })
end

local function io_fail(err, doing)
  if err == "timeout" then return fail("timeout", "timed out " .. doing) end
  return fail("connection", doing .. ": " .. tostring(err))
end

-- Milliseconds left before the request's deadline, or nil when none.
local function left_ms(st)
  local left = st.deadline - ngx_now()
  if left <= 0 then return nil end
  return ms(left)
end

-- The response is read through a buffer of our own, st.buf from st.pos on:
-- one receiveany most often brings the whole response (status line,
-- headers and a small body), which is then cut up here, instead of one
-- call into nginx for each line.

-- Reads what the socket has (or waits for it) into the buffer: true, or nil, err.
local function fill(st, doing)
  local left = left_ms(st)
  if not left then return io_fail("timeout", doing) end
  local sock = st.sock
  sock:settimeout(left)
  local data, err = sock:receiveany(READ_CHUNK)
  if not data then return io_fail(err, doing) end
  local buf, pos = st.buf, st.pos
  if pos > #buf then
    st.buf = data
  else
    st.buf = str_sub(buf, pos) .. data
  end
  st.pos = 1
  return true
end

-- The next line (LF-terminated; CRs dropped, as cosockets' "*l" does), or nil, err.
local function read_line(st, doing)
  while true do
    local buf, pos = st.buf, st.pos
    local e = str_find(buf, "\n", pos, true)
    if e then
      st.pos = e + 1
      if e > pos and str_byte(buf, e - 1) == 13 then e = e - 1 end
      local line = str_sub(buf, pos, e - 1)
      if str_find(line, "\r", 1, true) then line = str_gsub(line, "\r", "") end
      return line
    end
    if #buf - pos >= MAX_HEADER_BYTES then
      return fail("too_large", "a response line over " .. MAX_HEADER_BYTES .. " bytes")
    end
    local ok, err = fill(st, doing)
    if not ok then return nil, err end
  end
end

-- The next `n` bytes, or nil, err.
local function read_bytes(st, n, doing)
  local buf, pos = st.buf, st.pos
  local have = #buf - pos + 1
  if have >= n then
    st.pos = pos + n
    return str_sub(buf, pos, pos + n - 1)
  end
  -- The rest comes straight from the socket, in one receive.
  local head = have > 0 and str_sub(buf, pos) or ""
  st.buf, st.pos = "", 1
  local left = left_ms(st)
  if not left then return io_fail("timeout", doing) end
  local sock = st.sock
  sock:settimeout(left)
  local data, err = sock:receive(n - have)
  if not data then return io_fail(err, doing) end
  return head .. data
end

-- Is `token` (a pattern) one of the comma-separated items of `list`?
local function has_token(list, token)
  if not list then return false end
  return str_find("," .. str_lower(list) .. ",", "[,%s]" .. token .. "[%s]*,") ~= nil
end

-- Lower-case header names seen already (bounded: servers may make up names).
local LOWER, lower_count = {}, 0

-- Adds one "Name: value" line (or a folded continuation) to headers.
local function add_header_line(headers, line, last)
  local first = str_byte(line, 1)
  if (first == 32 or first == 9) and last then -- obsolete line folding
    headers[last] = headers[last] .. " " .. str_match(line, "^%s*(.-)%s*$")
    return last
  end
  -- Most lines are "Name: value", with a name seen before: cut at the colon.
  local colon = str_find(line, ":", 1, true)
  local lname = colon and LOWER[str_sub(line, 1, colon - 1)]
  local value
  if lname then
    local from, last_byte = colon + 1, str_byte(line, -1)
    local b = str_byte(line, from)
    if b == 32 then
      from = from + 1
      b = str_byte(line, from)
    end
    if b ~= 32 and b ~= 9 and last_byte ~= 32 and last_byte ~= 9 then value = str_sub(line, from) end
  end
  if not value then
    local name
    name, value = str_match(line, "^([^:%s]+)[ \t]*:[ \t]*(.-)[ \t]*$")
    if not name then return last end
    lname = LOWER[name]
    if not lname then
      lname = str_lower(name)
      if lower_count < MAX_CHECKED_NAMES then LOWER[name], lower_count = lname, lower_count + 1 end
    end
  end
  local prev = headers[lname]
  headers[lname] = prev and (prev .. ", " .. value) or value
  return lname
end

-- Header (or trailer) lines up to the empty line.
local function read_header_lines(st, headers, doing)
  local count, size, last = 0, 0, nil
  while true do
    local line, err = read_line(st, doing)
    if not line then return nil, err end
    if line == "" then return headers end
    count, size = count + 1, size + #line
    if count > MAX_HEADER_LINES or size > MAX_HEADER_BYTES then
      return fail("too_large", "response headers over " .. MAX_HEADER_LINES .. " lines or "
        .. MAX_HEADER_BYTES .. " bytes")
    end
    last = add_header_line(headers, line, last)
  end
end

local function too_large(max)
  return fail("too_large", "response body over the size limit (" .. max .. " bytes)")
end

local function read_chunked(st, headers, max)
  local parts, n, total = {}, 0, 0
  while true do
    local line, err = read_line(st, "reading a chunk size")
    if not line then return nil, err end
    local hex = str_match(line, "^[ \t]*(%x+)[ \t]*;?")
    if not hex then return fail("connection", "malformed chunked response body") end
    if #hex > 12 then return too_large(max) end
    local size = tonumber(hex, 16)
    if size == 0 then
      local _, terr = read_header_lines(st, headers, "reading the trailers")
      if terr then return nil, terr end
      return tbl_concat(parts)
    end
    total = total + size
    if total > max then return too_large(max) end
    local data, derr = read_bytes(st, size, "reading the response body")
    if not data then return nil, derr end
    n = n + 1
    parts[n] = data
    local crlf, cerr = read_line(st, "reading the response body")
    if not crlf then return nil, cerr end
    if crlf ~= "" then return fail("connection", "malformed chunked response body") end
  end
end

-- A body delimited by the end of the connection.
local function read_to_close(st, max)
  local parts, n, total = {}, 0, 0
  local buf, pos = st.buf, st.pos
  if pos <= #buf then
    parts[1], n, total = str_sub(buf, pos), 1, #buf - pos + 1
    if total > max then return too_large(max) end
  end
  st.buf, st.pos = "", 1
  local sock = st.sock
  while true do
    local left = left_ms(st)
    if not left then return io_fail("timeout", "reading the response body") end
    sock:settimeout(left)
    local data, err = sock:receiveany(READ_CHUNK)
    if not data then
      if err == "closed" then return tbl_concat(parts) end
      return io_fail(err, "reading the response body")
    end
    total = total + #data
    if total > max then return too_large(max) end
    n = n + 1
    parts[n] = data
  end
end

-- Content-Length, tolerating a repeated header with the same value.
local function content_length(value)
  local single = str_match(value, "^%s*(%d+)%s*$")
  if single then return tonumber(single) end
  local len
  for item in value:gmatch("[^,]+") do
    local v = tonumber(str_match(item, "^%s*(%d+)%s*$"))
    if not v or (len and v ~= len) then return nil end
    len = v
  end
  return len
end

-- Reads the response; returns res, keepable or nil, err, nothing_received.
local function read_response(st, method, max)
  local line, status, major, minor
  repeat -- skip interim 1xx responses (not 101)
    local err
    line, err = read_line(st, "reading the status line")
    if not line then return nil, err, st.received == 0 and st.pos == 1 and st.buf == "" end
    st.received = st.received + 1
    major, minor, status = str_match(line, "^HTTP/(%d)%.(%d) (%d%d%d)")
    status = tonumber(status)
    if not status then return fail("connection", "malformed HTTP status line") end
    if status >= 100 and status < 200 and status ~= 101 then
      local _, herr = read_header_lines(st, {}, "reading an interim response")
      if herr then return nil, herr end
    end
  until status >= 200 or status == 101

  local headers, herr = read_header_lines(st, {}, "reading the response headers")
  if not headers then return nil, herr end

  local keep
  local connection = headers["connection"]
  if major == "1" and minor == "1" then
    keep = not (connection and has_token(connection, "close"))
  else
    keep = connection ~= nil and has_token(connection, "keep%-alive")
  end

  local body, berr
  local te = headers["transfer-encoding"]
  if method == "HEAD" or status == 204 or status == 304 or status == 101 then
    body = ""
    keep = keep and status ~= 101
  elseif te and str_find(str_lower(te), "chunked%s*$") then
    body, berr = read_chunked(st, headers, max)
  elseif te or not headers["content-length"] then
    body, berr = read_to_close(st, max)
    keep = false
  else
    local len = content_length(headers["content-length"])
    if not len then return fail("connection", "malformed Content-Length in the response") end
    if len > max then return too_large(max) end
    if len == 0 then
      body = ""
    else
      body, berr = read_bytes(st, len, "reading the response body")
    end
  end
  if not body then return nil, berr end
  -- Bytes after the response: the connection is out of step, not for reuse.
  if st.pos <= #st.buf then keep = false end
  return { status = status, headers = headers, body = body }, keep
end

-- A failure before any byte of the request went out: the server cannot
-- have applied it.
local function unsent(_, err)
  err.sent = false
  return nil, err
end

local function connect_error(u, err)
  if err == "timeout" then return unsent(fail("timeout", "timed out connecting to " .. u.authority)) end
  err = tostring(err)
  if str_find(err, "no resolver defined", 1, true) then
    -- A setup mistake, not a network hiccup: retrying cannot help.
    return nil, errors.new("connection", "cannot resolve \"" .. u.host .. "\": nginx has no `resolver`"
      .. " directive (add one to the http {} block, or use an IP address in the URL)",
      { retryable = false, sent = false })
  end
  return unsent(fail("connection", "connecting to " .. u.authority .. ": " .. err))
end

-- One attempt on one connection. The third result is true when a reused
-- pooled connection died before the response began: worth a fresh one.
local function exchange(self, u, method, payload, deadline, close_after)
  local sock = ngx_socket_tcp()
  local st = { sock = sock, deadline = deadline, received = 0, buf = "", pos = 1 }
  local left = left_ms(st)
  if not left then return unsent(io_fail("timeout", "before connecting")) end
  sock:settimeouts(math_min(self.connect_ms, left), left, left)

  local ok, err = sock:connect(u.connect_host, u.port, u.connect_opts)
  if not ok then return connect_error(u, err) end
  local reused = sock:getreusedtimes() > 0

  if u.tls and not reused then
    left = left_ms(st)
    if not left then
      sock:close()
      return unsent(io_fail("timeout", "before the TLS handshake"))
    end
    sock:settimeout(left)
    local session, terr = sock:sslhandshake(false, u.host, self.verify)
    if not session then
      sock:close()
      if terr == "timeout" then return unsent(fail("timeout", "timed out in the TLS handshake")) end
      return unsent(fail("tls", "TLS handshake with " .. u.authority .. ": " .. tostring(terr)))
    end
  end

  if not reused then -- a pooled connection comes at once: the send timeout set above holds
    left = left_ms(st)
    if not left then
      sock:close()
      return unsent(io_fail("timeout", "before sending the request"))
    end
    sock:settimeout(left)
  end
  local sent, serr = sock:send(payload)
  if not sent then
    sock:close()
    if serr == "closed" and u.tls and self.verify and not reused then
      -- lua-nginx-module (0.10.23) can report a handshake whose certificate
      -- failed verification as done, with the connection already closed:
      -- a TLS failure, which a retry cannot mend, not a lost connection.
      return nil, errors.new("tls", "TLS with " .. u.authority .. ": the connection closed right after the "
        .. "handshake (a certificate that failed verification? see nginx's error log)",
        { retryable = false, sent = false })
    end
    local res, e = io_fail(serr, "sending the request")
    return res, e, reused and serr ~= "timeout"
  end

  local res, keep_or_err, nothing = read_response(st, method, self.max_response_bytes)
  if not res then
    sock:close()
    local err_value = keep_or_err
    return nil, err_value, reused and nothing and err_value.code == "connection"
  end
  if keep_or_err and not close_after then
    local kept = sock:setkeepalive(self.keepalive_ms, self.pool_size)
    if not kept then sock:close() end
  else
    sock:close()
  end
  res.new_connections = reused and 0 or 1
  return res
end

-- The parsed URL, with its connection pool: parsed once per URL (a client
-- sends to one or two), kept in a bounded cache of the transport's.
local MAX_URLS = 64

function _M:_url(url)
  local urls = self._urls
  local u = urls[url]
  if u then return u end
  local err
  u, err = parse_url(url)
  if not u then return nil, err end
  local pool = str_format("dynlog:%s:%s:%d:%s", u.scheme, u.connect_host, u.port,
    u.tls and tostring(self.verify) or "")
  u.connect_opts = { pool = pool, pool_size = self.pool_size }
  if self._url_count >= MAX_URLS then
    urls = {}
    self._urls, self._url_count = urls, 0
  end
  urls[url], self._url_count = u, self._url_count + 1
  return u
end

--- Sends one request: `{method=, url=, headers=, body=, timeout=}` (timeout
-- in seconds for this request, default the transport's). Returns
-- `{status=, headers=<lower-case names; repeats joined with ", ">, body=,
-- new_connections=}` or nil, err. Raises on headers that would inject.
function _M:request(req)
  if type(req) ~= "table" then error("dynlog.transport.cosocket: request expects a table", 2) end
  options.check(req, REQUEST, "dynlog.transport.cosocket request")
  local method = req.method or "GET"
  if not COMMON_METHODS[method]
      and (type(method) ~= "string" or not str_find(method, "^[%w!#$%%&'*+%-.^_`|~]+$")) then
    error("dynlog.transport.cosocket: invalid method", 2)
  end
  local body = req.body
  if body ~= nil and type(body) ~= "string" then error("dynlog.transport.cosocket: body must be a string", 2) end
  local timeout = req.timeout
  if timeout ~= nil and (type(timeout) ~= "number" or not (timeout > 0) or timeout > 86400) then
    error("dynlog.transport.cosocket: timeout must be a number of seconds in (0, 86400]", 2)
  end
  local u, uerr = self:_url(req.url)
  if not u then
    -- still check the headers, so that a bad URL never hides an injection
    if req.headers ~= nil then build_request(method, { target = "/", authority = "" }, req.headers, body) end
    return nil, uerr
  end
  local payload, connection = build_request(method, u, req.headers, body)
  local close_after = connection ~= nil and has_token(connection, "close")
  local deadline = ngx_now() + (timeout or self.timeout)

  local res, err, stale
  for try = 0, STALE_RETRIES do
    res, err, stale = exchange(self, u, method, payload, deadline, close_after)
    -- After a dead pooled connection the request went out again: the
    -- first may have reached the server, so the caller must not trust a
    -- failed condition (see `resent` in dynlog.transport.curl).
    if res and try > 0 then res.resent = true end
    if try > 0 and err then err.sent = nil end -- but an earlier try was
    if res or not stale then break end
  end
  return res, err
end

--- Nothing to release: idle connections belong to the worker's pool and
-- close after keepalive_timeout. Here for the interface of dynlog.transport.curl.
function _M:close()
end

return _M
