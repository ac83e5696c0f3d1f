--- The DynamoDB client: configuration, signed requests, retries, errors.
--
--   local c = dynlog.new{ table = "events", sort_key = "ulid" }
--   local resp, err = c:call("DescribeTable", { TableName = "events" })
--
-- The event-log operations (append, query, …) live in dynlog.events and the
-- table operations in dynlog.tables; both are methods of this client.
--
-- Nothing here touches the network before the first request: `new` only
-- resolves configuration (arguments, environment, shared files).
local config = require "dynlog.aws.config"
local core = require "dynlog.core"
local credentials = require "dynlog.aws.credentials"
local errors = require "dynlog.errors"
local metrics = require "dynlog.base.metrics"
local nginx = require "dynlog.base.nginx"
local options = require "dynlog.base.options"
local query = require "dynlog.aws.query"
local retry = require "dynlog.aws.retry"
local timeutil = require "dynlog.base.timeutil"
local upcast = require "dynlog.client.upcast"

local error, pairs, require, setmetatable, tonumber, tostring, type =
  error, pairs, require, setmetatable, tonumber, tostring, type
local math_floor = math.floor
local str_find, str_format, str_match, str_sub = string.find, string.format, string.match, string.sub
local core_crc32, core_json_decode, core_json_encode_safe = core.crc32, core.json_decode, core.json_encode_safe
local core_monotonic = core.monotonic
local metrics_inc, metrics_observe = metrics.inc, metrics.observe

local _M = {}
local mt = { __index = _M }

-- The AWS services dynlog speaks: which endpoint setting names each, and
-- its protocol: for JSON services the X-Amz-Target prefix and the content
-- type, for query-protocol services (dynlog.aws.query) the API version.
local SERVICES = {
  dynamodb = { config = "dynamodb", option = "endpoint", target = "DynamoDB_20120810.",
               content_type = "application/x-amz-json-1.0" },
  streams = { config = "dynamodb_streams", option = "streams_endpoint", target = "DynamoDBStreams_20120810.",
              content_type = "application/x-amz-json-1.0" },
  events = { config = "eventbridge", option = "events_endpoint", target = "AWSEvents.",
             content_type = "application/x-amz-json-1.1" },
  sts = { config = "sts", protocol = "query", version = "2011-06-15", content_type = query.CONTENT_TYPE },
  cloudformation = { config = "cloudformation", protocol = "query", version = "2010-05-15",
                     content_type = query.CONTENT_TYPE },
}
_M.SERVICES = SERVICES

local SORT_KEYS = { ulid = true, version = true }

local DEFAULTS = {
  sort_key = "ulid",
  timeout = 10,
  connect_timeout = 3,
  max_attempts = 8,
  base_delay = 0.05,
  max_delay = 20,
  conflict_retries = 10,
}

local function option_error(name, what)
  error("dynlog.new: " .. name .. " " .. what, 3)
end

local function check_type(opts, name, expected)
  local v = opts[name]
  if v ~= nil and type(v) ~= expected then
    option_error(name, "must be a " .. expected .. ", got " .. type(v))
  end
end

local function check_positive(opts, name, integer)
  local v = opts[name]
  if v == nil then return end
  if type(v) ~= "number" or not (v > 0) or (integer and v ~= math_floor(v)) then
    option_error(name, "must be a positive " .. (integer and "integer" or "number"))
  end
end

-- DynamoDB table names: 3-255 characters of [a-zA-Z0-9_.-].
local function check_table_name(name)
  if type(name) ~= "string" then option_error("table", "must be a string (the table name)") end
  if #name < 3 or #name > 255 or str_find(name, "[^%w_%.%-]") then
    option_error("table", "must be 3-255 characters of letters, digits, '_', '-' and '.'")
  end
end

-- Every option dynlog.new reads: a misspelt one (sortkey, max_attempt) would
-- otherwise be ignored silently and the client run on defaults.
local KNOWN_OPTIONS = options.known{
  "table", "sort_key", "region", "endpoint", "streams_endpoint", "events_endpoint", "profile",
  "cafile", "timeout", "connect_timeout", "base_delay", "max_delay", "max_attempts",
  "conflict_retries", "numbers", "credentials", "getenv", "read_file", "now", "sleep", "transport",
  "upcasters", "max_age", "tombstones", "feed_table",
}

local function check_options(opts)
  if type(opts) ~= "table" then error("dynlog.new: expects a table of options", 3) end
  options.check(opts, KNOWN_OPTIONS, "dynlog.new", 3)
  check_table_name(opts.table)
  if opts.sort_key ~= nil and not SORT_KEYS[opts.sort_key] then
    option_error("sort_key", 'must be "ulid" or "version"')
  end
  for _, name in pairs({ "region", "endpoint", "streams_endpoint", "events_endpoint", "profile", "cafile" }) do
    check_type(opts, name, "string")
  end
  for _, name in pairs({ "timeout", "connect_timeout", "base_delay", "max_delay" }) do
    check_positive(opts, name, false)
  end
  check_positive(opts, "max_attempts", true)
  check_positive(opts, "conflict_retries", true)
  require("dynlog.client.erasure")._check_max_age(opts.max_age, 4)
  check_type(opts, "tombstones", "boolean")
  if opts.feed_table ~= nil then
    if type(opts.feed_table) ~= "string" or #opts.feed_table < 3 or #opts.feed_table > 255
        or str_find(opts.feed_table, "[^%w_%.%-]") then
      option_error("feed_table", "must be a table name: 3-255 characters of letters, digits, '_', '-' and '.'")
    end
    if opts.feed_table == opts.table then option_error("feed_table", "must not be the log table") end
  end
  if opts.numbers ~= nil and opts.numbers ~= "string" then
    option_error("numbers", 'must be nil or "string"')
  end
  if opts.upcasters ~= nil and not upcast.is(opts.upcasters) then
    option_error("upcasters", "must be a registry made by dynlog.upcasters(), got " .. type(opts.upcasters))
  end
  local creds = opts.credentials
  if creds ~= nil and type(creds) ~= "table" then
    option_error("credentials", "must be a table of keys or a provider with :get()")
  end
  if creds ~= nil and type(creds.get) ~= "function" then
    options.check(creds, credentials.FIELDS, "dynlog.new: credentials", 3)
  end
end

-- A provider with :get() is used as it is; a table of keys becomes an
-- explicit provider; nothing means the default chain, whose container and
-- instance-metadata requests go through the client's own transport.
local function credentials_provider(opts, http, region, sleep)
  local given = opts.credentials
  if given and type(given.get) == "function" then return given end
  return credentials.provider({
    credentials = given, profile = opts.profile, getenv = opts.getenv, read_file = opts.read_file, http = http,
    region = region, sleep = sleep,
  })
end

-- Inside nginx every request goes over cosockets, which exist only in
-- some phases: dynlog.base.nginx says which and raises in the others.
local in_nginx, check_phase = nginx.in_nginx, nginx.check_phase

-- Sleeping must not block an nginx worker: ngx.sleep yields instead.
local function default_sleep(seconds)
  local ngx = in_nginx()
  if ngx then
    check_phase(ngx)
    return ngx.sleep(seconds)
  end
  return core.sleep(seconds)
end

local function pick(opts, name)
  local v = opts[name]
  if v == nil then return DEFAULTS[name] end
  return v
end

--- Creates a client. Raises on invalid configuration (a bad option, no
-- region); does no I/O beyond reading the environment and shared files.
function _M.new(opts)
  check_options(opts)
  local env_opts = { region = opts.region, profile = opts.profile, getenv = opts.getenv,
                     read_file = opts.read_file }
  local region, rerr = config.region(env_opts)
  if not region then error("dynlog.new: " .. tostring(rerr.message), 2) end
  env_opts.region = region
  local services, origins = {}, {}
  for name, svc in pairs(SERVICES) do
    env_opts.endpoint = svc.option and opts[svc.option] or nil
    local endpoint, eerr = config.endpoint(svc.config, env_opts)
    if not endpoint then error("dynlog.new: " .. tostring(eerr.message), 2) end
    -- A bare host gets the root path; an endpoint with a path (a local bus
    -- on a location of nginx, say) keeps its own.
    local url = endpoint.url
    if str_find(url, "^%a+://[^/]+$") then url = url .. "/" end
    services[name] = { name = name, url = url, signing_name = endpoint.signing_name,
                       signing_region = endpoint.region, target = svc.target, content_type = svc.content_type,
                       protocol = svc.protocol or "json", version = svc.version, targets = {} }
    origins[name] = endpoint.origin
  end
  -- AWS_CA_BUNDLE and the profile's ca_bundle, as the AWS CLI reads them.
  local cafile, cerr = config.ca_bundle({ cafile = opts.cafile, profile = opts.profile, getenv = opts.getenv,
                                          read_file = opts.read_file })
  if cerr then error("dynlog.new: " .. tostring(cerr.message), 2) end
  -- DynamoDB Local serves its streams on its own port: a DynamoDB endpoint
  -- of one's own is the streams endpoint too, unless one is set for streams.
  if origins.streams == "default" and origins.dynamodb ~= "default" then
    services.streams.url = services.dynamodb.url
  end

  local self = {
    table = opts.table,
    sort_key = pick(opts, "sort_key"),
    region = region,
    services = services,
    url = services.dynamodb.url,
    timeout = pick(opts, "timeout"),
    max_attempts = pick(opts, "max_attempts"),
    base_delay = pick(opts, "base_delay"),
    max_delay = pick(opts, "max_delay"),
    conflict_retries = pick(opts, "conflict_retries"),
    numbers = opts.numbers,
    upcasters = opts.upcasters or false, -- c:upcaster makes one when none was given
    max_age = opts.max_age,
    tombstones = opts.tombstones ~= false,
    feed_table = opts.feed_table or (opts.table .. "-feed"),
    provider = false, -- below: it needs the client's transport
    signer = core.sigv4_signer(),
    sleep = opts.sleep or default_sleep,
    now = opts.now or core.now,
    clock_skew = 0, -- seconds to add to our clock, learnt from the server's Date
    transport = opts.transport,
    transport_opts = { timeout = pick(opts, "timeout"), connect_timeout = pick(opts, "connect_timeout"),
                       cafile = cafile },
  }
  setmetatable(self, mt)
  self.provider = credentials_provider(opts, function(req) return self:_transport():request(req) end, region,
    self.sleep)
  return self
end

function mt.__tostring(self)
  return str_format("dynlog.client(%s, %s, %s)", self.table, self.sort_key, self.url)
end

-- The transport is made on first use: creating a client stays free of I/O
-- and of libcurl state until it is needed. Inside nginx it is the cosocket
-- transport, never the blocking libcurl one.
function _M:_transport()
  local t = self.transport
  if t then
    -- A client made in a timer may be used later from any phase: say which
    -- phases cannot make requests every time, not only the first.
    if self._ngx then check_phase(self._ngx) end
    return t
  end
  local ngx = in_nginx()
  if ngx then
    check_phase(ngx)
    t = require("dynlog.transport.cosocket").new(self.transport_opts)
  else
    t = require("dynlog.transport.curl").new(self.transport_opts)
  end
  self.transport, self._own_transport, self._ngx = t, true, ngx or nil
  return t
end

---------------------------------------------------------------------------
-- One attempt
---------------------------------------------------------------------------

local redact = errors.redact

local function excerpt(body)
  body = str_sub(body or "", 1, 120)
  return (body:gsub("[%c]", " "))
end

-- Cancellation reasons of a transaction that may well commit if sent again.
local TRANSIENT_CANCELLATIONS = {
  TransactionConflict = true, ThrottlingError = true, ProvisionedThroughputExceeded = true,
}

-- An AWS error response → dynlog error value. `secrets` are those of the
-- request: a server or proxy that echoes the request's headers must not put
-- them into the error (see errors.redact).
local function aws_error(res, secrets)
  local fields = { status = res.status, request_id = res.headers["x-amzn-requestid"] }
  local doc = core_json_decode(res.body, true)
  local aws_type = type(doc) == "table" and doc.__type
  if type(aws_type) ~= "string" then
    fields.retryable = retry.retryable(nil, res.status)
    return errors.new("bad_response", "HTTP " .. tostring(res.status) .. " without an AWS error body: "
      .. excerpt(redact(res.body, secrets)), fields)
  end
  local code = redact(str_match(aws_type, "#(.+)$") or aws_type, secrets)
  local message = redact(tostring(doc.message or doc.Message or ""), secrets)
  fields.retryable = retry.retryable(code, res.status)
  local reasons = doc.CancellationReasons
  if type(reasons) == "table" then
    fields.reasons = reasons
    -- A transaction cancelled only by conflicts with other transactions or
    -- by throttling is worth retrying; one cancelled by a failed condition
    -- (or a validation error) is not.
    local transient, final = false, false
    for _, r in pairs(reasons) do
      local reason = type(r) == "table" and r.Code
      if type(r) == "table" then r.Message = redact(r.Message, secrets) end
      if TRANSIENT_CANCELLATIONS[reason] then
        transient = true
      elseif reason and reason ~= "None" then
        final = true
      end
    end
    fields.retryable = transient and not final
  end
  return errors.new(code, message, fields)
end

-- What a server could give back of a request's secrets: the keys it was
-- signed with and its signature.
local function secrets_of(creds, headers)
  return { creds.secret_access_key, creds.session_token, str_match(headers.Authorization or "", "Signature=(%x+)") }
end

local function checked_crc32(res)
  local sent = res.headers["x-amz-crc32"]
  if not sent then return true end
  if tonumber(sent) == core_crc32(res.body) then return true end
  return nil, errors.new("crc32_mismatch", "response body does not match its x-amz-crc32 header",
    { status = res.status, retryable = true })
end

-- The X-Amz-Target of a service's operation ("DynamoDB_20120810.PutItem"),
-- made once per service and operation rather than at every request.
local function target_of(svc, operation)
  local targets = svc.targets
  local target = targets[operation]
  if not target then
    target = svc.target .. operation
    targets[operation] = target
  end
  return target
end

local function attempt(self, svc, operation, body, unwrap, numbers)
  local creds, cerr = self.provider:get()
  if not creds then return nil, cerr end
  -- sign_post: the same headers as sign{method = "POST", …} without a
  -- request table. A query-protocol request has no target header: its
  -- action is in the body.
  local headers, scode, smessage = self.signer:sign_post(svc.url, body, math_floor(self.now() + self.clock_skew),
    svc.signing_region or self.region, svc.signing_name, creds, svc.content_type,
    svc.target and target_of(svc, operation))
  -- Never send a request unsigned: AWS would only say that it has no
  -- signature (MissingAuthenticationTokenException), hiding the cause.
  if not headers then
    return errors.from_core(nil, scode or "signing_failed", "the request could not be signed, so it was not"
      .. " sent: " .. tostring(smessage or scode), { sent = false })
  end
  local res, terr = self:_transport():request({ method = "POST", url = svc.url, headers = headers,
                                              body = body, timeout = self.timeout })
  if not res then return nil, terr end
  local ok, crc_err = checked_crc32(res)
  if not ok then return nil, crc_err end
  if res.status ~= 200 then
    local err
    if svc.protocol == "query" then
      err = query.error(res.status, res.body, res.headers, secrets_of(creds, headers))
    else
      err = aws_error(res, secrets_of(creds, headers))
    end
    -- The transport sent this request twice (a kept-alive connection died
    -- after it went out): the first may have been applied.
    if res.resent then err.resent = true end
    return nil, err, res
  end
  if svc.protocol == "query" then
    local value, err = query.decode(res.body, operation, secrets_of(creds, headers))
    if not value then err.status = res.status end
    return value, err
  end
  local value, code, message = core_json_decode(res.body, unwrap, numbers)
  if value == nil then
    return nil, errors.new("bad_response", "response is not valid JSON (" .. tostring(message) .. ")",
      { status = res.status, retryable = false, code_detail = code })
  end
  -- Every AWS JSON API answers an object: anything else is not its answer.
  if type(value) ~= "table" or core.is_array(value) then
    return nil, errors.new("bad_response", "response is not a JSON object: " .. excerpt(redact(res.body,
      secrets_of(creds, headers))), { status = res.status, retryable = false })
  end
  return value
end

---------------------------------------------------------------------------
-- Attempts, retries and recoveries
---------------------------------------------------------------------------

-- Signature rejected because our clock is off: learn the server's time from
-- its Date header so that the next signature carries it.
local SKEW_CODES = { InvalidSignatureException = true, RequestTimeTooSkewed = true,
                     SignatureDoesNotMatch = true }
-- The session token is no longer valid: JSON services and query ones say so
-- with different codes.
local EXPIRED_TOKEN_CODES = { ExpiredTokenException = true, ExpiredToken = true }

local function learn_clock_skew(self, err, res)
  if not (err and SKEW_CODES[err.code] and res) then return false end
  local msg = err.message or ""
  if err.code ~= "RequestTimeTooSkewed" and not str_find(msg, "expired", 1, true)
      and not str_find(msg, "skew", 1, true) then
    return false
  end
  local server = timeutil.parse_http_date(res.headers.date)
  if not server then return false end
  self.clock_skew = server - self.now()
  return true
end

-- An outcome we cannot know: the request may have been applied. Not so
-- when the transport says it never went out (`sent == false`: no address,
-- refused, a connect that timed out, nothing signed).
local function ambiguous(err)
  if err.sent == false then return false end
  return err.code == "timeout" or err.code == "connection" or (err.status or 0) >= 500
    or err.code == "crc32_mismatch" or err.resent == true
end

-- The outcome class of a failed attempt, for dynlog_requests_total.
local function outcome_of(err)
  local code = err.code
  if retry.throttling(code) then return "throttled" end
  if code == "ConditionalCheckFailedException" then return "conditional" end
  if code == "TransactionCanceledException" then
    for _, r in pairs(err.reasons or {}) do
      if type(r) == "table" and r.Code == "ConditionalCheckFailed" then return "conditional" end
    end
  end
  local status = err.status
  if status and status >= 500 then return "server_error" end
  if status and status >= 400 then return "client_error" end
  return "transport"
end

-- Sends one request body to a service with retries. Returns the decoded
-- response, or nil, err where err.attempts counts the attempts made and
-- err.ambiguous tells that an earlier attempt may have been applied
-- although this one failed.
local function send(self, svc, operation, body, unwrap, numbers)
  local was_ambiguous, recovered_skew, recovered_token = false, false, false
  local n = 0
  while true do
    n = n + 1
    local started = core_monotonic()
    local value, err, res = attempt(self, svc, operation, body, unwrap, numbers)
    local name = svc.name
    metrics_observe("dynlog_request_duration_seconds", core_monotonic() - started, name, operation)
    if value ~= nil then
      metrics_inc("dynlog_requests_total", 1, name, operation, "ok")
      return value
    end
    metrics_inc("dynlog_requests_total", 1, name, operation, outcome_of(err))
    -- One free re-sign for each kind of recovery, not counted as an attempt.
    if not recovered_skew and learn_clock_skew(self, err, res) then
      recovered_skew, n = true, n - 1
    elseif not recovered_token and EXPIRED_TOKEN_CODES[err.code] and self.provider.invalidate then
      self.provider:invalidate()
      recovered_token, n = true, n - 1
    elseif err.retryable and n < self.max_attempts then
      was_ambiguous = was_ambiguous or ambiguous(err)
      metrics_inc("dynlog_request_retries_total", 1, name, operation)
      self.sleep(retry.delay(n, self.base_delay, self.max_delay))
    else
      err.attempts = n
      -- The last attempt counts too: a final timeout leaves it unknown
      -- whether that attempt was applied.
      err.ambiguous = was_ambiguous or ambiguous(err)
      if err.ambiguous then metrics_inc("dynlog_request_ambiguous_total", 1, name, operation) end
      err.resent, err.sent = nil, nil
      return nil, err
    end
  end
end

--- _request(service, operation, params [, unwrap [, numbers]]) -> the
-- decoded response, or nil, err. The one way every request of dynlog
-- goes: encodes `params` (a table; a string is a JSON body encoded
-- already, as an append encodes its item to learn its size), signs, sends
-- with retries and decodes. `service` is "dynamodb", "streams" or
-- "events"; `unwrap` and `numbers` are those of dynlog.core.json_decode
-- (true: AttributeValues become plain values, read as `numbers` says).
-- For a query-protocol service ("sts", "cloudformation": see
-- dynlog.aws.query, whose query.call is the way to call them) `params` is
-- form-encoded and the XML answer decoded by dynlog.aws.query.
function _M:_request(service, operation, params, unwrap, numbers)
  local svc = self.services[service]
  if not svc then error("_request: unknown service " .. tostring(service), 2) end
  local body = params
  if svc.protocol == "query" then
    local err
    body, err = query.encode(operation, svc.version, params)
    if not body then return nil, err end
  elseif type(params) ~= "string" then
    local err
    body, err = self:_encode(params)
    if not body then return nil, err end
  end
  return send(self, svc, operation, body, unwrap, numbers)
end

--- call(operation, params) -> the decoded response, or nil, err.
-- Any DynamoDB operation; params are in AttributeValue form already and the
-- response comes back as DynamoDB sends it.
function _M:call(operation, params)
  if type(operation) ~= "string" or not str_find(operation, "^%u%a+$") then
    error("call: operation must be a DynamoDB operation name such as \"GetItem\"", 2)
  end
  if type(params) ~= "table" then error("call: params must be a table", 2) end
  return self:_request("dynamodb", operation, params, false)
end

--- Encodes a request body; a value that cannot be stored becomes an
-- invalid_argument error instead of a raised one.
function _M:_encode(params)
  return errors.from_core(core_json_encode_safe(params))
end

--- c:upcaster(type, from_version, fn) -> c: registers an upcaster in the
-- client's registry (the one given as `upcasters`, else one of its own);
-- see dynlog.client.upcast. Raises as reg:add does.
function _M:upcaster(event_type, from, fn)
  if not self.upcasters then self.upcasters = upcast.new() end
  upcast.add(self.upcasters, event_type, from, fn, "upcaster", 3)
  return self
end

--- c:upcast(event) -> the event brought to the latest schema
-- version of its type, or nil, err ("upcast_failed"): for events that were
-- not read through get, head or query, such as an EventBridge detail
-- (whose payload is the stored one). `event` ({type=, payload=, meta=}) is
-- changed in place and returned.
function _M:upcast(event)
  if type(event) ~= "table" then error("upcast: event must be a table, got " .. type(event), 2) end
  if not self.upcasters then return event end
  return upcast.apply(self.upcasters, event)
end

-- Methods of the event log, tables, DynamoDB Streams, publishing and erasure.
for _, module in pairs({ "dynlog.client.events", "dynlog.client.tables", "dynlog.client.streams",
                         "dynlog.client.publish", "dynlog.client.erasure" }) do
  for name, f in pairs(require(module)) do _M[name] = f end
end

-- The feed (dynlog.client.feed): its readers and its table.
do
  local feed = require "dynlog.client.feed"
  _M.read_all, _M.read_log, _M.create_feed_table = feed.read_all, feed.read_log, feed.create_feed_table
  _M.feed_head, _M.feed_position = feed.head, feed.position_of
  -- The table a read model's alias names (dynlog.client.readmodels).
  _M.read_model_table = require("dynlog.client.readmodels").read_model_table
end

return _M
