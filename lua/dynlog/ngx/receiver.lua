--- The EventBridge API-destination receiver, for a location of nginx:
-- dynlog.ngx.receive is its public name.
--
--   location = /events { content_by_lua_block { require("dynlog.ngx").receive(spec) } }
local errors = require "dynlog.errors"
local json = require "dynlog.json"
local logger = require "dynlog.logger"
local metrics = require "dynlog.base.metrics"
local nginx = require "dynlog.base.nginx"
local options = require "dynlog.base.options"
local retry = require "dynlog.aws.retry"

local ngx = ngx -- luacheck: ignore
local error, pcall, require, setmetatable, tostring, type = error, pcall, require, setmetatable, tostring, type
local read_body, authorized, check_auth = nginx.read_body, nginx.authorized, nginx.check_auth

-- Every answer of the receiver, counted by its status.
local function say_json(status, body)
  metrics.inc("dynlog_receiver_deliveries_total", 1, status)
  return nginx.say_json(status, body)
end

-- The trace id of a delivery: EventBridge's X-Amzn-Trace-Id header, else
-- the trace_id of the event's metadata (detail.meta.trace_id).
local function trace_of(event)
  local header = ngx.var.http_x_amzn_trace_id
  if type(header) == "string" and header ~= "" then return header end
  local meta = event.detail.meta
  local trace = type(meta) == "table" and meta.trace_id
  if type(trace) == "string" and trace ~= "" then return trace end
end

local _M = {}

-- Errors that say the event itself can never be handled, however often it
-- comes again: input dynlog or DynamoDB refuses (a value that cannot be
-- stored, an item over 400 KB, a read model made for another key schema).
local FINAL = {
  invalid_argument = true, too_large = true, schema_mismatch = true, invalid_json = true,
  invalid_pattern = true, ValidationException = true, SerializationException = true,
}

-- What EventBridge should do with an error: never retry what cannot succeed
-- (400), slow down (429), or try again later (500) for everything else: a
-- missing table, a gap in the log, a conflict, a fault of the network or of
-- AWS, or an error of a kind not known here.
local function status_for(err)
  if not errors.is(err) then return 500 end
  if FINAL[err.code] then return 400 end
  if retry.throttling(err.code) then return 429 end
  return 500
end

-- The largest event EventBridge delivers (1 MB of entry since 2026) and
-- its envelope: a body the bus or EventBridge accepted must never be 413.
local DEFAULT_MAX_BODY = 1024 * 1024 + 64 * 1024

local RECEIVE = options.known{ "auth", "max_body", "handle", "client", "project" }

-- Specs already checked (and what was made of them), per worker.
local checked = setmetatable({}, { __mode = "k" })

-- The handler a receiver spec stands for; raises at receive's caller.
local function receiver_of(spec)
  local done = checked[spec]
  if done then return done end
  if type(spec) ~= "table" then error("receive: expects a spec table", 3) end
  options.check(spec, RECEIVE, "receive", 3)
  check_auth(spec.auth, "receive")
  if spec.max_body ~= nil and (type(spec.max_body) ~= "number" or spec.max_body < 1) then
    error("receive: max_body must be a positive number of bytes", 3)
  end
  local handle = spec.handle
  if handle == nil and spec.project ~= nil then
    local handler = require "dynlog.pipeline.handler"
    local client, project = spec.client, spec.project
    handle = function(event) return handler.project(client, event, project) end
  end
  if type(handle) ~= "function" then error("receive: spec.handle (or client and project) is required", 3) end
  checked[spec] = handle
  return handle
end

--- receive(spec) in content_by_lua*: one EventBridge event per request, as
-- an API destination delivers it. spec: {auth = {header=, value=} or
-- {basic = {user=, password=}}, max_body = 1114112, handle = function(event)
-- -> true | nil, err}, or instead of handle, {client=, project=<spec of
-- dynlog.handler.project>}. handle is called as handle(event, context):
-- context.trace_id is the delivery's X-Amzn-Trace-Id header, else the
-- event's detail.meta.trace_id, else nil (handler.project reads the events
-- from the log, each with its own meta.trace_id). Answers 2xx once handled, 401 without the
-- right credentials (nothing handled), 400 for malformed input and for an
-- error that says the event can never be handled (invalid_argument,
-- too_large, schema_mismatch, ValidationException, ...), 413 for a body too
-- large, 429 when throttled and 500 for everything else (worth retrying).
function _M.receive(spec)
  local handle = receiver_of(spec)

  if ngx.req.get_method() ~= "POST" then return say_json(405, { message = "POST only" }) end
  if not authorized(spec.auth) then return say_json(401, { message = "unauthorized" }) end
  local body, status, why = read_body(spec.max_body or DEFAULT_MAX_BODY)
  if not body then return say_json(status, { message = why }) end
  local event = json.decode(body)
  if type(event) ~= "table" or json.is_array(event) or type(event.detail) ~= "table"
      or json.is_array(event.detail) then
    return say_json(400, { message = "body is not an EventBridge event (JSON object with a detail object)" })
  end
  local trace_id = trace_of(event)
  local ok, result, err = pcall(handle, event, { trace_id = trace_id })
  if not ok then
    logger.log("error", "dynlog receive: handler raised: " .. tostring(result)
      .. (trace_id and " (trace " .. trace_id .. ")" or ""))
    return say_json(500, { message = "handler failed" })
  end
  if not result then
    local code = status_for(err)
    logger.log(code >= 500 and "error" or "warn", "dynlog receive: " .. tostring(err)
      .. (trace_id and " (trace " .. trace_id .. ")" or ""))
    return say_json(code, { message = errors.is(err) and err.code or "failed" })
  end
  return say_json(200, { ok = true })
end

return _M
