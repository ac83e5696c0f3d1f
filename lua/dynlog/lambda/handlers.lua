--- The handlers a Lambda function of dynlog runs, by the name in _HANDLER.
--
--   trigger               dynlog.pipeline.trigger.handle(c, event): a DynamoDB
--                         Streams batch in, its partial-batch response
--                         {batchItemFailures = ...} out
--   project:<module>      dynlog.pipeline.handler.project(c, event, spec) for an
--                         EventBridge event, spec = require(<module>)
--   <module>.<function>   require(<module>)[<function>](event, context): a
--                         function of one's own
--
-- The client of `trigger` and `project:` is made once, when the function
-- starts, from the environment (DYNLOG_TABLE, DYNLOG_SORT_KEY and what
-- dynlog.new reads itself: AWS_REGION, the credentials Lambda sets,
-- AWS_ENDPOINT_URL_*, AWS_CA_BUNDLE), and serves every invocation. Its
-- requests end before the invocation's deadline (DEADLINE_MARGIN_MS
-- before it): a request is given at most the time left, none is started
-- once it is gone (err.code "timeout", not retried), and a backoff sleeps
-- no further than the deadline.
--
-- resolve(name) -> fn, or nil, err: err.code "config", err.error_type the
-- Lambda error type of the init failure: "Runtime.HandlerNotFound",
-- "Runtime.ImportModuleError", "Runtime.ConfigError".
local core = require "dynlog.core"
local config = require "dynlog.aws.config"
local curl = require "dynlog.transport.curl"
local dynlog = require "dynlog"
local errors = require "dynlog.errors"
local handler = require "dynlog.pipeline.handler"
local options = require "dynlog.base.options"
local trigger = require "dynlog.pipeline.trigger"

local floor, pcall, tostring, type = math.floor, pcall, tostring, type

local _M = {
  -- Requests end this long before the invocation's deadline, leaving the
  -- runtime the time to post the outcome.
  DEADLINE_MARGIN_MS = 250,
}

local RESOLVE = options.known{ "getenv" }

-- A failure to make the handler: dynlog's code "config", and the error
-- type Lambda is told.
local function init_error(reason, message)
  return nil, errors.new("config", message, { error_type = "Runtime." .. reason })
end

-- The time an invocation has left for requests, in seconds: the deadline
-- is set by the handler before it calls anything.
local function left(budget)
  if not budget.deadline_ms then return nil end
  return (budget.deadline_ms - _M.DEADLINE_MARGIN_MS - floor(core.now() * 1000)) / 1000
end

-- A transport whose requests end before the invocation's deadline.
local function bounded_transport(inner, budget)
  return {
    request = function(_, req)
      local seconds = left(budget)
      if seconds then
        if seconds <= 0.001 then
          return nil, errors.new("timeout", "the invocation's deadline is near: no request is started",
            { retryable = false, sent = false })
        end
        if not req.timeout or req.timeout > seconds then
          req = { method = req.method, url = req.url, headers = req.headers, body = req.body, timeout = seconds }
        end
      end
      return inner:request(req)
    end,
    close = function() inner:close() end,
  }
end

--- client(getenv) -> the client of the built-in handlers, and its budget
-- ({deadline_ms = }: set per invocation), or nil, err.
function _M.client(getenv)
  getenv = getenv or os.getenv
  local table_name = getenv("DYNLOG_TABLE")
  if not table_name or table_name == "" then
    return init_error("ConfigError", "DYNLOG_TABLE is not set: the log table's name")
  end
  local sort_key = getenv("DYNLOG_SORT_KEY")
  if sort_key == "" then sort_key = nil end
  local cafile, cerr = config.ca_bundle({ getenv = getenv })
  if cerr then return init_error("ConfigError", tostring(cerr.message)) end
  local budget = {}
  local ok, c = pcall(dynlog.new, {
    table = table_name, sort_key = sort_key, getenv = getenv,
    transport = bounded_transport(curl.new({ cafile = cafile }), budget),
    sleep = function(seconds)
      local rest = left(budget)
      if rest and seconds > rest then seconds = rest end
      if seconds > 0 then core.sleep(seconds) end
    end,
  })
  if not ok then return init_error("ConfigError", tostring(c)) end
  return c, budget
end

local function load(module)
  if type(module) ~= "string" or not module:find("^[%w_][%w_.%-]*$") or module:find("%.%.") then
    return init_error("HandlerNotFound", "not a Lua module name: " .. tostring(module))
  end
  local ok, value = pcall(require, module)
  if not ok then return init_error("ImportModuleError", tostring(value)) end
  return value
end

--- resolve(name [, {getenv=}]) -> fn(event, context), or nil, err.
function _M.resolve(name, opts)
  options.check(opts, RESOLVE, "dynlog.lambda.handlers.resolve")
  local getenv = opts and opts.getenv or os.getenv
  if type(name) ~= "string" or name == "" then
    return init_error("HandlerNotFound", "_HANDLER is not set: trigger, project:<module> or <module>.<function>")
  end
  if name == "trigger" then
    local c, budget = _M.client(getenv)
    if not c then return nil, budget end
    local bus = getenv("DYNLOG_EVENT_BUS")
    local topts = { bus = bus ~= "" and bus or nil }
    return function(event, context)
      budget.deadline_ms = context and context.deadline_ms
      return trigger.handle(c, event, topts)
    end
  end
  local module = name:match("^project:(.*)$")
  if module then
    local spec, err = load(module)
    if not spec then return nil, err end
    if type(spec) ~= "table" or type(spec.table) ~= "string" or type(spec.handlers) ~= "table" then
      return init_error("HandlerNotFound", "module " .. module .. " does not return a handler spec"
        .. " ({table = <read-model table>, handlers = {...}})")
    end
    local c, budget = _M.client(getenv)
    if not c then return nil, budget end
    return function(event, context)
      budget.deadline_ms = context and context.deadline_ms
      return handler.project(c, event, spec)
    end
  end
  local mod, fname = name:match("^(.+)%.([%a_][%w_]*)$")
  if not mod then
    return init_error("HandlerNotFound", "unknown handler " .. ("%q"):format(name)
      .. ": trigger, project:<module> or <module>.<function>")
  end
  local m, err = load(mod)
  if not m then return nil, err end
  local fn = type(m) == "table" and m[fname]
  if type(fn) ~= "function" then
    return init_error("HandlerNotFound", "module " .. mod .. " has no function " .. fname)
  end
  return fn
end

return _M
