--- AWS credentials: the default provider chain, with caching and refresh.
--
--   local provider = credentials.provider{ profile = "dev" }
--   local creds, err = provider:get()
--
-- Chain order (the SDKs' order, minus the sources dynlog does not support):
--   1. opts.credentials (explicit keys)
--   2. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN
--   3. web identity from the environment (EKS IRSA): AWS_WEB_IDENTITY_TOKEN_FILE
--      + AWS_ROLE_ARN (+ AWS_ROLE_SESSION_NAME) → STS AssumeRoleWithWebIdentity
--   4. the profile (shared credentials file, then config file):
--      role_arn with web_identity_token_file, source_profile or
--      credential_source (Environment, Ec2InstanceMetadata, EcsContainer)
--      → STS AssumeRole signed with the source's credentials (external_id,
--      role_session_name, duration_seconds; mfa_serial is refused: nothing
--      can prompt for a code); static keys; credential_process
--   5. container credentials (ECS, EKS Pod Identity)
--   6. EC2 instance metadata (IMDSv2)
-- A source that is not configured is skipped; a source that is configured but
-- fails ends the chain, so a broken setup never silently resolves to another
-- identity (the node's IMDS role, say).
--
-- STS is asked at its regional endpoint (sts.<region>.amazonaws.com, or
-- AWS_ENDPOINT_URL_STS, or the global one with AWS_STS_REGIONAL_ENDPOINTS=
-- legacy: see dynlog.aws.config), over the provider's transport (the
-- client's: cosockets inside nginx), with retries of throttling and 5xx.
-- Temporary credentials are refreshed `refresh_window` seconds before they
-- expire, not on every request; callers that need them while a refresh is
-- under way wait for that one refresh (inside nginx, where light threads
-- interleave) instead of starting their own.
--
-- Nothing is read or fetched until the first `get()`: requiring this module
-- or building a provider does no I/O. Secrets never enter an error message
-- or a `tostring`.
local config = require("dynlog.aws.config")
local errors = require("dynlog.errors")
local options = require("dynlog.base.options")
local retry = require("dynlog.aws.retry")
local timeutil = require("dynlog.base.timeutil")

local error, ipairs, pcall, require, setmetatable, tonumber, tostring, type =
  error, ipairs, pcall, require, setmetatable, tonumber, tostring, type
local math_floor, math_huge, math_max, math_min = math.floor, math.huge, math.max, math.min
local io_open, io_popen, os_remove, os_time, os_tmpname = io.open, io.popen, os.remove, os.time, os.tmpname
local str_find, str_gsub, str_lower, str_match, str_sub =
  string.find, string.gsub, string.lower, string.match, string.sub
local tbl_concat = table.concat

local _M = {}

local DEFAULT_REFRESH_WINDOW = 300 -- refresh when fewer than 5 minutes remain
local DEFAULT_RETRY_INTERVAL = 10  -- after a failed refresh, while still valid
local ECS_HOST = "http://169.254.170.2"
local IMDS_HOST = "http://169.254.169.254"
local IMDS_HOST_IPV6 = "http://[fd00:ec2::254]"
local IMDS_ROLE_PATH = "/latest/meta-data/iam/security-credentials/"

local function trim(s)
  return str_match(s, "^%s*(.-)%s*$")
end

-- Waiting must not block an nginx worker: ngx.sleep yields there.
local function default_sleep(seconds)
  local ngx = require("dynlog.base.nginx").in_nginx()
  if ngx then return ngx.sleep(seconds) end
  return require("dynlog.core").sleep(seconds)
end

---------------------------------------------------------------------------
-- Credentials values
---------------------------------------------------------------------------

local credentials_mt = {}
credentials_mt.__index = credentials_mt
-- Only the access key id (not a secret) and the source are ever shown.
credentials_mt.__tostring = function(c)
  return "credentials(" .. tostring(c.access_key_id) .. ", " .. tostring(c.source) .. ")"
end

-- The fields of a credentials value; a provider's options.
local FIELDS = options.known{ "access_key_id", "secret_access_key", "session_token", "expiration", "source" }
_M.FIELDS = FIELDS
local PROVIDER = options.known{ "credentials", "profile", "getenv", "read_file", "http", "now", "refresh_window",
  "retry_interval", "imds_timeout", "imds_attempts", "container_timeout", "container_attempts", "region", "sleep",
  "sts_timeout", "sts_attempts", "process_timeout", "run" }

local function is_nonempty_string(v)
  return type(v) == "string" and v ~= ""
end

-- Keys go into a header (the access key id, the session token) or a MAC
-- (the secret): only visible ASCII belongs in them. A stray "\r" (a value
-- copied from a file with CRLF line endings), a space or a control
-- character would make every request fail; name the value instead, never
-- showing it. `names` gives each field's name where it came from.
local KEY_FIELDS = { "access_key_id", "secret_access_key", "session_token" }

local function bad_value(t, names)
  for _, field in ipairs(KEY_FIELDS) do
    local v = t[field]
    if type(v) == "string" and str_find(v, "[^\33-\126]") then
      local what = str_find(v, "\r", 1, true) and "a carriage return (\\r: CRLF line endings?)"
        or str_find(v, "[%c]") and "a control character"
        or str_find(v, " ", 1, true) and "a space" or "a character outside visible ASCII"
      return names[field] .. " contains " .. what
    end
  end
end

-- A credentials value from a source, or nil, reason when a value is bad.
local function from_values(t, source, names)
  local why = bad_value(t, names)
  if why then return nil, why end
  return _M.new(t, source)
end

--- Builds a credentials value (what `provider:get()` returns).
-- @param t { access_key_id=, secret_access_key=, session_token=?, expiration=? }
-- @param source where they came from, e.g. "env"
function _M.new(t, source)
  if type(t) ~= "table" then
    error("credentials.new: expected a table", 2)
  end
  options.check(t, FIELDS, "credentials.new")
  if not is_nonempty_string(t.access_key_id) or not is_nonempty_string(t.secret_access_key) then
    error("credentials.new: access_key_id and secret_access_key must be non-empty strings", 2)
  end
  if t.session_token ~= nil and type(t.session_token) ~= "string" then
    error("credentials.new: session_token must be a string", 2)
  end
  if t.expiration ~= nil and type(t.expiration) ~= "number" then
    error("credentials.new: expiration must be epoch seconds", 2)
  end
  local why = bad_value(t, { access_key_id = "access_key_id", secret_access_key = "secret_access_key",
                             session_token = "session_token" })
  if why then error("credentials.new: " .. why, 2) end
  local token = t.session_token
  if token == "" then token = nil end
  return setmetatable({
    access_key_id = t.access_key_id,
    secret_access_key = t.secret_access_key,
    session_token = token,
    expiration = t.expiration,
    source = source or t.source or "explicit",
  }, credentials_mt)
end

---------------------------------------------------------------------------
-- RFC 3339 timestamps
---------------------------------------------------------------------------

--- Parses an RFC 3339 timestamp ("2026-11-25T12:00:00Z", fractional seconds
-- and numeric offsets allowed) into whole epoch seconds (fractions dropped).
-- @return seconds or nil, err (code "credentials")
function _M.parse_rfc3339(s)
  local t = timeutil.parse_rfc3339(s)
  if not t then return nil, errors.new("credentials", "invalid RFC 3339 timestamp") end
  return t
end

---------------------------------------------------------------------------
-- HTTP helpers
---------------------------------------------------------------------------

-- Accepts a function(req) → resp | nil, err or an object with :request(req).
local function as_send(http)
  if type(http) == "function" then return http end
  return function(req) return http:request(req) end
end

-- Only transport failures and 5xx answers are worth another attempt.
local function send_with_attempts(send, req, attempts)
  local resp, err
  for _ = 1, attempts do
    resp, err = send(req)
    if resp and resp.status < 500 then return resp end
  end
  return resp, err
end

-- URL without userinfo, query or fragment: enough to say where we asked.
local function redact_url(url)
  local scheme, rest = str_match(url, "^(%a[%w+.-]*://)(.*)$")
  if not scheme then return "(invalid URL)" end
  rest = str_match(rest, "^[^?#]*")
  local authority, path = str_match(rest, "^([^/]*)(.*)$")
  authority = str_match(authority, "@([^@]*)$") or authority
  return scheme .. authority .. path
end

-- Transports other than dynlog.transport.curl (an nginx one, a spec's fake) may
-- return plain strings or plain tables as errors.
local function describe_failure(resp, err)
  if resp then return "HTTP " .. tostring(resp.status) end
  if errors.is(err) then return tostring(err) end
  if type(err) == "table" then
    return tostring(err.code or "error") .. ": " .. tostring(err.message)
  end
  return "transport error: " .. tostring(err)
end

-- Decodes the JSON credentials document served by the container endpoint
-- and by IMDS. Never echoes the body: it may hold the secret.
local function credentials_from_document(body, source, where)
  local json = require("dynlog.json")
  local doc = type(body) == "string" and json.decode(body) or nil
  if type(doc) ~= "table" then
    return nil, where .. " returned a body that is not a JSON object"
  end
  if doc.Code ~= nil and doc.Code ~= "Success" then
    -- Echo the code only when it looks like one: the body is untrusted.
    local code = doc.Code
    if type(code) ~= "string" or #code > 64 or not str_find(code, "^[%w_-]+$") then
      code = "(unprintable)"
    end
    return nil, where .. " returned Code " .. code
  end
  if not is_nonempty_string(doc.AccessKeyId) or not is_nonempty_string(doc.SecretAccessKey) then
    return nil, where .. " returned no AccessKeyId/SecretAccessKey"
  end
  local expiration
  if doc.Expiration ~= nil then
    expiration = _M.parse_rfc3339(doc.Expiration)
    if not expiration then
      return nil, where .. " returned an invalid Expiration"
    end
  end
  return from_values({
    access_key_id = doc.AccessKeyId,
    secret_access_key = doc.SecretAccessKey,
    session_token = type(doc.Token) == "string" and doc.Token or nil,
    expiration = expiration,
  }, source, { access_key_id = where .. "'s AccessKeyId", secret_access_key = where .. "'s SecretAccessKey",
               session_token = where .. "'s Token" })
end

---------------------------------------------------------------------------
-- Sources. Each takes the provider and returns credentials, or
-- nil, reason, fatal: `fatal` when the source is configured but broken.
---------------------------------------------------------------------------

local function from_explicit(p)
  if not p._explicit then return nil, "opts.credentials not given" end
  return p._explicit
end

local function from_env(p)
  local getenv = p._getenv
  local id, secret = getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY")
  if not id and not secret then
    return nil, "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY not set"
  end
  if not (id and secret) then
    local set = id and "AWS_ACCESS_KEY_ID" or "AWS_SECRET_ACCESS_KEY"
    local unset = id and "AWS_SECRET_ACCESS_KEY" or "AWS_ACCESS_KEY_ID"
    return nil, set .. " is set but " .. unset .. " is not", true
  end
  -- AWS_SECURITY_TOKEN is the older name the SDKs still read.
  local token, token_name = getenv("AWS_SESSION_TOKEN"), "AWS_SESSION_TOKEN"
  if not token then token, token_name = getenv("AWS_SECURITY_TOKEN"), "AWS_SECURITY_TOKEN" end
  local creds, why = from_values({ access_key_id = id, secret_access_key = secret, session_token = token }, "env",
    { access_key_id = "AWS_ACCESS_KEY_ID", secret_access_key = "AWS_SECRET_ACCESS_KEY", session_token = token_name })
  if not creds then return nil, why, true end
  return creds
end

local function section_value(section, key)
  local v = section and section[key]
  if type(v) ~= "string" or v == "" then return nil end
  return v
end

-- Static keys from one section: credentials, or nil (no keys), or
-- nil, reason when only half of the pair is there.
local function keys_from_section(section, source, label)
  local id = section_value(section, "aws_access_key_id")
  local secret = section_value(section, "aws_secret_access_key")
  if not id and not secret then return nil end
  if not (id and secret) then
    return nil, label .. " has only one of aws_access_key_id and aws_secret_access_key"
  end
  local token, token_name = section_value(section, "aws_session_token"), "aws_session_token"
  if not token then token, token_name = section_value(section, "aws_security_token"), "aws_security_token" end
  return from_values({ access_key_id = id, secret_access_key = secret, session_token = token }, source,
    { access_key_id = "aws_access_key_id of " .. label, secret_access_key = "aws_secret_access_key of " .. label,
      session_token = token_name .. " of " .. label })
end
local ALLOWED_HTTP_HOSTS = {
  ["localhost"] = true,
  ["[::1]"] = true,
  ["169.254.170.2"] = true,   -- ECS task metadata
  ["169.254.170.23"] = true,  -- EKS Pod Identity
  ["[fd00:ec2::23]"] = true,  -- EKS Pod Identity, IPv6
}

local function is_loopback_ipv4(host)
  local a, b, c, d = str_match(host, "^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return false end
  for _, octet in ipairs({ a, b, c, d }) do
    if #octet > 3 or tonumber(octet) > 255 then return false end
  end
  return tonumber(a) == 127
end

-- The SDKs' rule: plain http only to loopback or the container agents'
-- link-local addresses, so the Authorization token never crosses a network
-- in clear. The authority must be a bare host[:port]: userinfo and other
-- oddities are refused because URL parsers disagree about them.
local function check_full_uri(url)
  local scheme, authority = str_match(url, "^(%a[%w+.-]*)://([^/?#]*)")
  scheme = scheme and str_lower(scheme)
  if scheme == "https" and authority ~= "" then return true end
  if scheme ~= "http" then
    return nil, "AWS_CONTAINER_CREDENTIALS_FULL_URI must be an http or https URL"
  end
  local host = str_match(authority, "^(%[[%x:]+%])") or str_match(authority, "^([%w.-]+)")
  local port = host and str_sub(authority, #host + 1)
  if not host or not (port == "" or str_find(port, "^:%d+$")) then
    return nil, "AWS_CONTAINER_CREDENTIALS_FULL_URI has an invalid host"
  end
  host = str_lower(host)
  if ALLOWED_HTTP_HOSTS[host] or is_loopback_ipv4(host) then return true end
  return nil, "AWS_CONTAINER_CREDENTIALS_FULL_URI uses http to " .. host
    .. ", which is neither loopback nor a container credentials address (use https)"
end

local function container_url(getenv)
  local relative = getenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
  if relative then
    if str_sub(relative, 1, 1) ~= "/" then relative = "/" .. relative end
    return ECS_HOST .. relative
  end
  local full = getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI")
  if not full then
    return nil, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and _FULL_URI not set"
  end
  local ok, why = check_full_uri(full)
  if not ok then return nil, why, true end
  return full
end

-- The Authorization header value; the token file is read on every fetch
-- because the agent rotates it. false when no token is configured.
local function container_token(p)
  local getenv = p._getenv
  local token
  local file = getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
  if file then
    local text = p._read_file(file)
    if not text then
      return nil, "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE " .. file
    end
    token = trim(text)
  else
    token = getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN")
  end
  if not token or token == "" then return false end
  if str_find(token, "[\r\n]") then
    return nil, "the container authorization token contains a line break"
  end
  return token
end

local function from_container(p)
  local url, why, fatal = container_url(p._getenv)
  if not url then return nil, why, fatal end
  local token
  token, why = container_token(p)
  if token == nil then return nil, why, true end
  local send, err = p:_transport()
  if not send then return nil, describe_failure(nil, err), true end
  local where = redact_url(url)
  local resp
  resp, err = send_with_attempts(send, {
    method = "GET",
    url = url,
    headers = { Authorization = token or nil, Accept = "application/json" },
    timeout = p._container_timeout,
  }, p._container_attempts)
  if not resp or resp.status ~= 200 then
    return nil, where .. " failed: " .. describe_failure(resp, err), true
  end
  local creds
  creds, why = credentials_from_document(resp.body, "container", where)
  if not creds then return nil, why, true end
  return creds
end

local function imds_base(getenv)
  local endpoint = getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT")
  if endpoint then return (str_gsub(endpoint, "/+$", "")) end
  local mode = getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE")
  if mode and str_lower(mode) == "ipv6" then return IMDS_HOST_IPV6 end
  return IMDS_HOST
end

-- Role names are IAM names ([\w+=,.@-]); anything else would bend the path.
local function first_role(body)
  local role = type(body) == "string" and str_match(body, "^%s*([^\r\n]+)")
  role = role and trim(role)
  if not role or not str_find(role, "^[%w+=,.@_-]+$") then return nil end
  return role
end

local function from_imds(p)
  local getenv = p._getenv
  local disabled = getenv("AWS_EC2_METADATA_DISABLED")
  if disabled and str_lower(disabled) == "true" then
    return nil, "disabled by AWS_EC2_METADATA_DISABLED"
  end
  local send, err = p:_transport()
  if not send then return nil, describe_failure(nil, err), true end
  local base = imds_base(getenv)
  local timeout = p._imds_timeout

  -- One attempt only: no answer here means "not on EC2", and a host that is
  -- not on EC2 must learn that fast.
  local resp
  resp, err = send({
    method = "PUT",
    url = base .. "/latest/api/token",
    headers = { ["X-aws-ec2-metadata-token-ttl-seconds"] = "21600" },
    timeout = timeout,
  })
  if not resp then
    return nil, "no answer from " .. base .. " (" .. describe_failure(nil, err) .. ")"
  end
  if resp.status ~= 200 or not is_nonempty_string(resp.body) then
    return nil, "token request to " .. base .. " failed: " .. describe_failure(resp), true
  end
  local headers = { ["X-aws-ec2-metadata-token"] = trim(resp.body) }

  resp, err = send_with_attempts(send, {
    method = "GET", url = base .. IMDS_ROLE_PATH, headers = headers, timeout = timeout,
  }, p._imds_attempts)
  if resp and resp.status == 404 then
    return nil, "no IAM role is attached to this instance", true
  end
  if not resp or resp.status ~= 200 then
    return nil, "role lookup at " .. base .. " failed: " .. describe_failure(resp, err), true
  end
  local role = first_role(resp.body)
  if not role then
    return nil, "role lookup at " .. base .. " returned no valid role name", true
  end

  local where = base .. IMDS_ROLE_PATH .. role
  resp, err = send_with_attempts(send, {
    method = "GET", url = where, headers = headers, timeout = timeout,
  }, p._imds_attempts)
  if not resp or resp.status ~= 200 then
    return nil, where .. " failed: " .. describe_failure(resp, err), true
  end
  local creds, why = credentials_from_document(resp.body, "imds", where)
  if not creds then return nil, why, true end
  return creds
end

---------------------------------------------------------------------------
-- STS: web identity and assumed roles
---------------------------------------------------------------------------

local STS_VERSION = "2011-06-15"
-- Beyond retry.retryable: the identity provider behind STS did not answer.
local STS_RETRYABLE = { IDPCommunicationError = true }

-- The STS endpoint: that of the provider's region (the client's), else of
-- the profile's; us-east-1 when no region is configured anywhere.
local function sts_endpoint(p, profile_name)
  local o = p._config_opts
  local opts = { region = p._region, profile = profile_name or o.profile, getenv = o.getenv, read_file = o.read_file }
  local ep, err = config.endpoint("sts", opts)
  if not ep and str_find(err.message, "^no AWS region") then
    opts.region = "us-east-1"
    ep, err = config.endpoint("sts", opts)
  end
  if not ep then return nil, err.message end
  local url = ep.url
  if str_find(url, "^%a+://[^/]+$") then url = url .. "/" end
  return url, ep.region
end

local function default_session_name(p)
  return "dynlog-" .. tostring(math_floor(p._now()))
end

-- The <Credentials> of an STS result as a credentials value.
local function sts_result(result, source, what)
  local c = result.Credentials
  if type(c) ~= "table" or not is_nonempty_string(c.AccessKeyId) or not is_nonempty_string(c.SecretAccessKey)
      or not is_nonempty_string(c.SessionToken) then
    return nil, what .. " returned no Credentials"
  end
  local expiration = _M.parse_rfc3339(c.Expiration)
  if not expiration then return nil, what .. " returned an invalid Expiration" end
  return from_values({ access_key_id = c.AccessKeyId, secret_access_key = c.SecretAccessKey,
                       session_token = c.SessionToken, expiration = expiration }, source,
    { access_key_id = what .. "'s AccessKeyId", secret_access_key = what .. "'s SecretAccessKey",
      session_token = what .. "'s SessionToken" })
end

-- One STS action that hands out credentials, signed with `signing` (nil
-- for AssumeRoleWithWebIdentity, which is not signed), with retries of
-- throttling, 5xx and transport failures.
local function sts_credentials(p, action, params, signing, source, what, profile_name)
  local query = require("dynlog.aws.query")
  local url, region = sts_endpoint(p, profile_name)
  if not url then return nil, what .. ": " .. tostring(region) end
  local body, err = query.encode(action, STS_VERSION, params)
  if not body then return nil, what .. ": " .. err.message end
  local send
  send, err = p:_transport()
  if not send then return nil, what .. ": " .. describe_failure(nil, err) end
  local last
  for attempt = 1, p._sts_attempts do
    local headers = { ["Content-Type"] = query.CONTENT_TYPE }
    local secrets = { params.WebIdentityToken }
    if signing then
      local scode, smessage
      headers, scode, smessage = p:_signer():sign({
        method = "POST", url = url, body = body, region = region, service = "sts", credentials = signing,
        time = math_floor(p._now()), headers = headers,
      })
      if not headers then
        return nil, what .. ": the request could not be signed (" .. tostring(smessage or scode) .. ")"
      end
      secrets = { signing.secret_access_key, signing.session_token,
                  str_match(headers.Authorization or "", "Signature=(%x+)") }
    end
    local resp
    resp, err = send({ method = "POST", url = url, headers = headers, body = body, timeout = p._sts_timeout })
    local retryable = true
    if not resp then
      last = describe_failure(nil, err)
    elseif resp.status == 200 then
      local result
      result, err = query.decode(resp.body, action, secrets)
      if not result then return nil, what .. ": " .. err.message end
      return sts_result(result, source, what)
    else
      err = query.error(resp.status, resp.body, resp.headers or {}, secrets)
      last = tostring(err)
      retryable = err.retryable or STS_RETRYABLE[err.code] == true
    end
    if not retryable or attempt >= p._sts_attempts then break end
    p._sleep(retry.delay(attempt, 0.1, 2))
  end
  return nil, what .. " failed: " .. tostring(last)
end

-- AssumeRoleWithWebIdentity with the token in `token_file`, read on every
-- fetch because the platform (EKS) rotates it.
local function web_identity(p, token_file, role_arn, session_name, origin, profile_name)
  local text = p._read_file(token_file)
  if not text then return nil, "cannot read the web identity token file " .. token_file .. " (" .. origin .. ")" end
  local token = trim(text)
  if token == "" then return nil, "the web identity token file " .. token_file .. " is empty (" .. origin .. ")" end
  return sts_credentials(p, "AssumeRoleWithWebIdentity",
    { RoleArn = role_arn, RoleSessionName = session_name, WebIdentityToken = token }, nil, "web-identity",
    "STS AssumeRoleWithWebIdentity for " .. role_arn, profile_name)
end

-- Web identity from the environment (EKS IRSA), before any profile.
local function from_web_identity(p)
  local getenv = p._getenv
  local file = getenv("AWS_WEB_IDENTITY_TOKEN_FILE")
  if not file then return nil, "AWS_WEB_IDENTITY_TOKEN_FILE not set" end
  local role = getenv("AWS_ROLE_ARN")
  if not role then return nil, "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not", true end
  local creds, why = web_identity(p, file, role, getenv("AWS_ROLE_SESSION_NAME") or default_session_name(p),
    "AWS_WEB_IDENTITY_TOKEN_FILE")
  if not creds then return nil, why, true end
  return creds
end

---------------------------------------------------------------------------
-- credential_process
---------------------------------------------------------------------------

local function shell_quote(s)
  return "'" .. str_gsub(s, "'", "'\\''") .. "'"
end

-- What a command printed on stderr, to show in an error: one line of at
-- most 200 characters.
local function stderr_excerpt(text)
  text = trim(str_gsub(str_sub(text or "", 1, 200), "%c", " "))
  if text == "" then return "" end
  return " (stderr: " .. text .. ")"
end

-- Runs `command` with /bin/sh: stdout, exit status, stderr, or nil, reason,
-- stderr. Inside nginx through ngx.pipe, which does not block the worker;
-- without it, refused, because io.popen would.
local function run_command(command, timeout)
  local nginx = require("dynlog.base.nginx")
  if nginx.in_nginx() then
    local ok, pipe = pcall(require, "ngx.pipe")
    if not ok then
      return nil, "cannot be run inside nginx without lua-resty-core's ngx.pipe (io.popen would block the worker)"
    end
    local proc, err = pipe.spawn({ "/bin/sh", "-c", command })
    if not proc then return nil, "could not be started: " .. tostring(err) end
    local ms = math_floor(timeout * 1000)
    proc:set_timeouts(ms, ms, ms, ms)
    local out, oerr = proc:stdout_read_all()
    local errtext = proc:stderr_read_all()
    if not out then
      proc:kill(9)
      proc:wait()
      return nil, "reading its output failed (" .. tostring(oerr) .. ")", errtext
    end
    local _, reason, status = proc:wait()
    if reason ~= "exit" then
      return nil, "ended by " .. tostring(reason) .. " " .. tostring(status), errtext
    end
    return out, status, errtext
  end
  local errfile = os_tmpname()
  local f, err = io_popen("( " .. command .. " ) 2>" .. shell_quote(errfile) .. "; printf '\\n%d' \"$?\"", "r")
  if not f then
    os_remove(errfile)
    return nil, "could not be started: " .. tostring(err)
  end
  local out = f:read("*a") or ""
  f:close()
  local ef = io_open(errfile, "rb")
  local errtext = ef and ef:read("*a") or ""
  if ef then ef:close() end
  os_remove(errfile)
  local status = tonumber(str_match(out, "\n(%d+)$"))
  out = str_gsub(out, "\n%d+$", "")
  if not status then return nil, "its exit status is unknown", errtext end
  return out, status, errtext
end

local function from_process(p, command, name)
  local what = "credential_process of profile " .. name
  local out, status, errtext = p._run(command, p._process_timeout)
  if not out then return nil, what .. " " .. tostring(status) .. stderr_excerpt(errtext) end
  if status ~= 0 then
    return nil, what .. " exited with status " .. tostring(status) .. stderr_excerpt(errtext)
  end
  local json = require("dynlog.json")
  local doc = json.decode(out)
  if type(doc) ~= "table" then
    return nil, what .. " did not print a JSON object" .. stderr_excerpt(errtext)
  end
  if doc.Version ~= 1 then
    return nil, what .. " printed Version " .. tostring(doc.Version) .. " (only Version 1 is known)"
  end
  if not is_nonempty_string(doc.AccessKeyId) or not is_nonempty_string(doc.SecretAccessKey) then
    return nil, what .. " printed no AccessKeyId/SecretAccessKey"
  end
  local expiration
  if doc.Expiration ~= nil then
    expiration = _M.parse_rfc3339(doc.Expiration)
    if not expiration then return nil, what .. " printed an invalid Expiration" end
  end
  return from_values({ access_key_id = doc.AccessKeyId, secret_access_key = doc.SecretAccessKey,
                       session_token = type(doc.SessionToken) == "string" and doc.SessionToken or nil,
                       expiration = expiration }, "process",
    { access_key_id = what .. "'s AccessKeyId", secret_access_key = what .. "'s SecretAccessKey",
      session_token = what .. "'s SessionToken" })
end

---------------------------------------------------------------------------
-- Profiles
---------------------------------------------------------------------------

local MAX_PROFILE_CHAIN = 10

-- A key of the profile: from the credentials file, else the config file.
local function profile_value(profile, key)
  return section_value(profile.credentials, key) or section_value(profile.config, key)
end

local function static_keys(profile)
  local files = profile.files
  local creds, why = keys_from_section(profile.credentials, "shared-credentials-file",
    "profile " .. profile.name .. " in " .. tostring(files.credentials))
  if creds or why then return creds, why end
  return keys_from_section(profile.config, "shared-config-file",
    "profile " .. profile.name .. " in " .. tostring(files.config))
end

-- Profile keys that ask for a provider dynlog does not implement; falling
-- through to another source instead would pick a different identity.
local UNSUPPORTED_PROFILE_KEYS = {
  { key = "sso_session", what = "IAM Identity Center (sso_session)" },
  { key = "sso_start_url", what = "IAM Identity Center (sso_start_url)" },
}

local CREDENTIAL_SOURCES = { Environment = from_env, Ec2InstanceMetadata = from_imds, EcsContainer = from_container }

local resolve_profile

local function assume_role(p, profile, visited, depth)
  local name = profile.name
  local role = profile_value(profile, "role_arn")
  if profile_value(profile, "mfa_serial") then
    return nil, "profile " .. name .. " sets mfa_serial, but dynlog cannot prompt for an MFA code: use a role"
      .. " whose trust policy needs no MFA, or temporary keys in the environment"
  end
  local params = { RoleArn = role, RoleSessionName = profile_value(profile, "role_session_name")
                   or default_session_name(p), ExternalId = profile_value(profile, "external_id") }
  local duration = profile_value(profile, "duration_seconds")
  if duration then
    local n = tonumber(duration)
    if not n or n ~= math_floor(n) or n < 900 or n > 43200 then
      return nil, "profile " .. name .. ": duration_seconds must be a whole number of seconds from 900 to 43200"
    end
    params.DurationSeconds = n
  end
  local token_file = profile_value(profile, "web_identity_token_file")
  if token_file then
    return web_identity(p, token_file, role, params.RoleSessionName, "profile " .. name, name)
  end
  local source_profile = profile_value(profile, "source_profile")
  local credential_source = profile_value(profile, "credential_source")
  local source, why
  if source_profile and credential_source then
    return nil, "profile " .. name .. " sets both source_profile and credential_source"
  elseif source_profile then
    source, why = resolve_profile(p, source_profile, visited, depth + 1, true)
    if not source then
      return nil, "source_profile " .. source_profile .. " of profile " .. name .. ": " .. tostring(why)
    end
  elseif credential_source then
    local fetch = CREDENTIAL_SOURCES[credential_source]
    if not fetch then
      return nil, "profile " .. name .. ": credential_source must be Environment, Ec2InstanceMetadata or"
        .. " EcsContainer, not " .. credential_source
    end
    source, why = fetch(p)
    if not source then
      return nil, "credential_source " .. credential_source .. " of profile " .. name .. ": " .. tostring(why)
    end
  else
    return nil, "profile " .. name .. " sets role_arn but none of source_profile, credential_source and"
      .. " web_identity_token_file"
  end
  return sts_credentials(p, "AssumeRole", params, source, "assume-role",
    "STS AssumeRole for " .. role .. " (profile " .. name .. ")", name)
end

-- Credentials of a profile, or nil, reason, fatal. `name` nil is the chosen
-- profile (opts.profile, AWS_PROFILE, default); `as_source` when it is
-- another profile's source_profile, whose own keys then win over its role.
function resolve_profile(p, name, visited, depth, as_source)
  if depth > MAX_PROFILE_CHAIN then
    return nil, "profiles chained through source_profile more than " .. MAX_PROFILE_CHAIN .. " deep", true
  end
  local o = p._config_opts
  local profile, err = config.load_profile(name and { profile = name, getenv = o.getenv, read_file = o.read_file }
    or o)
  if not profile then return nil, err.message, true end
  name = profile.name
  local files = profile.files
  if not profile.credentials and not profile.config then
    local where = "no profile " .. name .. " in " .. tostring(files.credentials)
      .. " or " .. tostring(files.config)
    -- A profile the user named must exist; only "default" may be absent.
    return nil, where, profile.explicit or as_source
  end
  local keys, why = static_keys(profile)
  if why then return nil, why, true end
  local role = profile_value(profile, "role_arn")
  if role and not (as_source and keys) then
    if visited[name] then return nil, "profiles " .. name .. " form a loop through source_profile", true end
    visited[name] = true
    local creds, reason = assume_role(p, profile, visited, depth)
    if not creds then return nil, reason, true end
    return creds
  end
  if keys then return keys end
  if profile_value(profile, "web_identity_token_file") then
    return nil, "profile " .. name .. " sets web_identity_token_file without role_arn", true
  end
  local command = profile_value(profile, "credential_process")
  if command then
    local creds, reason = from_process(p, command, name)
    if not creds then return nil, reason, true end
    return creds
  end
  for _, section in ipairs({ profile.credentials or false, profile.config or false }) do
    for _, item in ipairs(UNSUPPORTED_PROFILE_KEYS) do
      if section and section_value(section, item.key) then
        return nil, "profile " .. name .. " uses " .. item.what .. ", which dynlog does not support", true
      end
    end
  end
  return nil, "profile " .. name .. " has no aws_access_key_id", as_source
end

local function from_shared_files(p)
  return resolve_profile(p, nil, {}, 1, false)
end

local CHAIN = {
  { name = "explicit", fetch = from_explicit },
  { name = "env", fetch = from_env },
  { name = "web identity", fetch = from_web_identity },
  { name = "shared files", fetch = from_shared_files },
  { name = "container", fetch = from_container },
  { name = "imds", fetch = from_imds },
}

---------------------------------------------------------------------------
-- The provider
---------------------------------------------------------------------------

local Provider = {}
Provider.__index = Provider
Provider.__tostring = function(p)
  local source = p._source and p._source.name or "unresolved"
  return "credentials.provider(" .. source .. ")"
end

local function check_type(opts, name, expected)
  local v = opts[name]
  if v ~= nil and type(v) ~= expected then
    error("credentials.provider: opts." .. name .. " must be a " .. expected, 3)
  end
end

local function check_provider_opts(opts)
  if type(opts) ~= "table" then
    error("credentials.provider: opts must be a table", 3)
  end
  options.check(opts, PROVIDER, "credentials.provider", 3)
  check_type(opts, "credentials", "table")
  options.check(opts.credentials, FIELDS, "credentials.provider: credentials", 3)
  check_type(opts, "profile", "string")
  check_type(opts, "getenv", "function")
  check_type(opts, "read_file", "function")
  check_type(opts, "now", "function")
  check_type(opts, "region", "string")
  check_type(opts, "sleep", "function")
  check_type(opts, "run", "function")
  for _, name in ipairs({ "refresh_window", "retry_interval", "imds_timeout",
      "imds_attempts", "container_timeout", "container_attempts", "sts_timeout", "sts_attempts",
      "process_timeout" }) do
    check_type(opts, name, "number")
  end
  local http = opts.http
  if http ~= nil and type(http) ~= "function" and type(http) ~= "table"
      and type(http) ~= "userdata" then
    error("credentials.provider: opts.http must be a function or an object with :request", 3)
  end
end

--- Builds a provider. Does no I/O.
-- @param opts {
--   credentials = { access_key_id=, secret_access_key=, session_token=?, expiration=? },
--   profile = name, getenv = fn, read_file = fn (see dynlog.aws.config),
--   http = function(req) → resp | nil, err, or an object with :request(req)
--          (default: dynlog.transport.curl, created on first use),
--   now = function() → epoch seconds (default os.time),
--   refresh_window = seconds before expiration to refresh (300),
--   retry_interval = seconds between refresh attempts once inside the
--                    window, while the old credentials still work (10),
--   imds_timeout = 1, imds_attempts = 2, container_timeout = 2,
--   container_attempts = 2,
--   region = the region whose STS endpoint to ask (default: as configured,
--            else us-east-1),
--   sts_timeout = 5, sts_attempts = 3,
--   sleep = function(seconds) between STS attempts and while waiting for
--           another caller's refresh (default: ngx.sleep inside nginx),
--   process_timeout = seconds a credential_process may take inside nginx (60),
--   run = function(command, timeout) → stdout, exit status, stderr | nil,
--         reason, stderr: how credential_process commands run (default:
--         /bin/sh, through ngx.pipe inside nginx) }
function _M.provider(opts)
  opts = opts or {}
  check_provider_opts(opts)
  local explicit = opts.credentials and _M.new(opts.credentials, "explicit")
  return setmetatable({
    _explicit = explicit,
    _getenv = config.getenv_from(opts),
    _read_file = opts.read_file or config.read_file,
    _config_opts = { profile = opts.profile, getenv = opts.getenv, read_file = opts.read_file },
    _http = opts.http and as_send(opts.http) or nil,
    _now = opts.now or os_time,
    _window = opts.refresh_window or DEFAULT_REFRESH_WINDOW,
    _retry_interval = opts.retry_interval or DEFAULT_RETRY_INTERVAL,
    _imds_timeout = opts.imds_timeout or 1,
    _imds_attempts = opts.imds_attempts or 2,
    _container_timeout = opts.container_timeout or 2,
    _container_attempts = opts.container_attempts or 2,
    _region = opts.region,
    _sts_timeout = opts.sts_timeout or 5,
    _sts_attempts = opts.sts_attempts or 3,
    _process_timeout = opts.process_timeout or 60,
    _run = opts.run or run_command,
    _sleep = opts.sleep or default_sleep,
    _refreshing = false,
    _cached = nil,
    _refresh_at = nil,
    _source = nil,
  }, Provider)
end

-- The SigV4 signer of STS requests, made on first use.
function Provider:_signer()
  if not self._signer_obj then self._signer_obj = require("dynlog.core").sigv4_signer() end
  return self._signer_obj
end

-- The transport, created on first use so that requiring and constructing
-- stay free of the C module and of any connection.
function Provider:_transport()
  if not self._http then
    local http = require("dynlog.transport.curl")
    local transport, err = http.new({
      timeout = math_max(self._imds_timeout, self._container_timeout),
      connect_timeout = self._imds_timeout,
    })
    if not transport then return nil, err end
    self._http = as_send(transport)
  end
  return self._http
end

-- Runs the chain, or, once a source has produced credentials, asks that
-- source again: refreshing must not switch identities.
function Provider:_resolve()
  if self._source then
    local creds, reason = self._source.fetch(self)
    if creds then return creds end
    return nil, errors.new("credentials",
      "refreshing AWS credentials failed: " .. self._source.name .. ": " .. tostring(reason))
  end
  local tried = {}
  for _, source in ipairs(CHAIN) do
    local creds, reason, fatal = source.fetch(self)
    if creds then
      self._source = source
      return creds
    end
    tried[#tried + 1] = source.name .. ": " .. tostring(reason)
    if fatal then break end
  end
  return nil, errors.new("credentials",
    "no usable AWS credentials (" .. tbl_concat(tried, "; ") .. ")", { tried = tried })
end

-- When to ask the source again: never for static credentials; `window`
-- seconds before expiry for temporary ones, but no more often than every
-- `retry_interval` when a source hands out credentials already in the window.
function Provider:_next_refresh(creds, now)
  if not creds.expiration then return math_huge end
  local at = creds.expiration - self._window
  if at <= now then
    at = math_min(now + self._retry_interval, creds.expiration)
  end
  return at
end

--- The current credentials, fetched or refreshed as needed.
-- @return { access_key_id=, secret_access_key=, session_token=?,
--   expiration=? (epoch seconds), source= } or nil, err (code "credentials").
--   The value is shared: treat it as read-only.
function Provider:get()
  local now = self._now()
  local cached = self._cached
  if cached and now < self._refresh_at then return cached end

  if self._refreshing then
    -- Another light thread is refreshing (nginx: its STS request yields).
    -- The old credentials serve while they are valid; else wait for it.
    if cached and cached.expiration and now < cached.expiration then return cached end
    return self:_wait_for_refresh()
  end
  self._refreshing = true
  local ok, fresh, err = pcall(self._resolve, self)
  self._refreshing = false
  if not ok then error(fresh, 0) end
  self._last_err = err
  if fresh then
    self._cached = fresh
    self._refresh_at = self:_next_refresh(fresh, now)
    return fresh
  end
  if cached and cached.expiration and now < cached.expiration then
    -- The old credentials still work: use them and try again a bit later.
    self._refresh_at = math_min(now + self._retry_interval, cached.expiration)
    return cached
  end
  return nil, err
end

-- Waits, in steps of 10 ms, for the refresh under way; its credentials or
-- its error.
function Provider:_wait_for_refresh()
  local waited, limit = 0, self._sts_timeout * self._sts_attempts + self._process_timeout
  while self._refreshing and waited < limit do
    self._sleep(0.01)
    waited = waited + 0.01
  end
  local cached = self._cached
  if not self._refreshing and cached and (not cached.expiration or self._now() < cached.expiration) then
    return cached
  end
  return nil, self._last_err or errors.new("credentials", "gave up waiting for the refresh of the AWS credentials")
end

--- Forgets the cached credentials and the chosen source, e.g. after AWS
-- answered ExpiredTokenException; the next `get()` runs the chain again.
function Provider:invalidate()
  self._cached, self._refresh_at, self._source = nil, nil, nil
end

return _M
