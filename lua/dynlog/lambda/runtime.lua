--- A custom runtime for AWS Lambda (provided.al2023): the Runtime API loop.
--
--   lua5.4 -e 'os.exit(require("dynlog.lambda.runtime").main())'   (what `bootstrap` runs)
--
-- It follows https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html:
-- resolve the handler named by _HANDLER (dynlog.lambda.handlers); then, for
-- ever, GET /2018-06-01/runtime/invocation/next (with no timeout: the answer
-- comes when there is an invocation), call the handler with (event,
-- context), and POST the JSON result to /runtime/invocation/<id>/response,
-- or {"errorMessage", "errorType", "stackTrace"} to .../<id>/error with the
-- header Lambda-Runtime-Function-Error-Type. A handler that cannot be loaded
-- is posted to /runtime/init/error and the process exits with status 1.
--
-- The context: aws_request_id, deadline_ms (epoch milliseconds),
-- invoked_function_arn, trace_id (also set as _X_AMZN_TRACE_ID for the
-- invocation), client_context and identity (decoded JSON, when Lambda sends
-- them), function_name, function_version, memory_limit_in_mb,
-- log_group_name, log_stream_name, and remaining_time_ms().
--
-- Deadlines: Lambda itself ends a function at its timeout, and no runtime
-- can answer after that. What this one does: an invocation whose deadline
-- has passed before its handler starts is not run but posted as an error;
-- a handler that returns after its deadline (where the host did not stop
-- it) is posted as an error whatever it returned; and the clients of the
-- built-in handlers end their requests before the deadline
-- (dynlog.lambda.handlers), so that the trigger answers its partial batch
-- and a projection its error while there is still time to say so.
local core = require "dynlog.core"
local curl = require "dynlog.transport.curl"
local errors = require "dynlog.errors"
local handlers = require "dynlog.lambda.handlers"
local json = require "dynlog.json"
local options = require "dynlog.base.options"

local error, floor, pcall, setmetatable, tostring, type, xpcall =
  error, math.floor, pcall, setmetatable, tostring, type, xpcall

local _M = {
  API_VERSION = "2018-06-01",
  -- Requests to the Runtime API other than `next`: a loopback service that
  -- answers at once.
  API_TIMEOUT = 10,
}

local NEW = options.known{ "api", "getenv", "stderr", "now", "setenv" }

local function now_ms(self) return floor(self.now() * 1000) end

local context_methods = {}
local context_mt = { __index = context_methods }

--- context:remaining_time_ms() -> milliseconds until the deadline, 0 once past it.
function context_methods:remaining_time_ms()
  local left = self.deadline_ms - floor(self._now() * 1000)
  return left > 0 and left or 0
end

local function decoded_header(value)
  if type(value) ~= "string" or value == "" then return nil end
  local v = json.decode(value)
  return v
end

--- The context of an invocation, from the headers of `next`'s answer.
function _M.context(headers, getenv, now)
  getenv = getenv or os.getenv
  local trace = headers["lambda-runtime-trace-id"]
  return setmetatable({
    aws_request_id = headers["lambda-runtime-aws-request-id"],
    deadline_ms = tonumber(headers["lambda-runtime-deadline-ms"]) or 0,
    invoked_function_arn = headers["lambda-runtime-invoked-function-arn"],
    trace_id = trace ~= "" and trace or nil,
    client_context = decoded_header(headers["lambda-runtime-client-context"]),
    identity = decoded_header(headers["lambda-runtime-cognito-identity"]),
    function_name = getenv("AWS_LAMBDA_FUNCTION_NAME"),
    function_version = getenv("AWS_LAMBDA_FUNCTION_VERSION"),
    memory_limit_in_mb = tonumber(getenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") or ""),
    log_group_name = getenv("AWS_LAMBDA_LOG_GROUP_NAME"),
    log_stream_name = getenv("AWS_LAMBDA_LOG_STREAM_NAME"),
    _now = now or core.now,
  }, context_mt)
end

local runtime = {}
local runtime_mt = { __index = runtime }

--- new{api = "host:port", getenv=, stderr=, now=, setenv=} -> a runtime.
function _M.new(opts)
  options.check(opts, NEW, "dynlog.lambda.runtime.new")
  if type(opts) ~= "table" or type(opts.api) ~= "string" or opts.api == "" then
    error("dynlog.lambda.runtime.new: api must be the Runtime API's host:port", 2)
  end
  return setmetatable({
    base = "http://" .. opts.api .. "/" .. _M.API_VERSION,
    http = curl.new({ timeout = _M.API_TIMEOUT }),
    getenv = opts.getenv or os.getenv,
    stderr = opts.stderr or io.stderr,
    now = opts.now or core.now,
    setenv = opts.setenv or core.setenv,
  }, runtime_mt)
end

function runtime:say(message)
  self.stderr:write("dynlog.lambda: ", message, "\n")
  self.stderr:flush()
end

-- One request to the Runtime API -> the response, or nil, err.
function runtime:call(method, path, body, headers, timeout)
  local h = headers or {}
  if body then h["Content-Type"] = "application/json" end
  return self.http:request({ method = method, url = self.base .. path, headers = h, body = body,
                             timeout = timeout })
end

-- The error document of the Runtime API. The stack trace: the frames of
-- debug.traceback up to the runtime's own call of the handler.
local function error_body(error_type, message, trace)
  local stack = json.array()
  for line in tostring(trace or ""):gmatch("[^\n]+") do
    line = line:gsub("^%s+", "")
    if line:find("in function 'xpcall'", 1, true) then break end
    if line ~= "stack traceback:" then stack[#stack + 1] = line end
  end
  return json.encode({ errorMessage = tostring(message), errorType = tostring(error_type), stackTrace = stack })
end

-- A post to .../error or .../init/error; true when it was accepted.
function runtime:post_error(path, header_type, error_type, message, trace)
  local res, err = self:call("POST", path, error_body(error_type, message, trace),
                             { ["Lambda-Runtime-Function-Error-Type"] = header_type })
  if not res then
    self:say("could not post an error to " .. path .. ": " .. tostring(err))
    return false
  end
  if res.status ~= 202 then
    self:say(("%s answered HTTP %s: %s"):format(path, tostring(res.status), tostring(res.body)))
    return false, res.status
  end
  return true
end

--- init_error(err): posts a failure to load the handler (err from
-- dynlog.lambda.handlers: err.error_type is its Lambda error type).
function runtime:init_error(err)
  local error_type = err.error_type or "Runtime.Unknown"
  self:say("init failed: " .. error_type .. ": " .. tostring(err.message))
  return self:post_error("/runtime/init/error", error_type, error_type, err.message)
end

-- The next invocation: {id=, event=, context=} or nil, err. `next` waits
-- as long as it takes (timeout false: none).
function runtime:next_invocation()
  local res, err = self:call("GET", "/runtime/invocation/next", nil, nil, false)
  if not res then return nil, err end
  if res.status ~= 200 then
    return nil, errors.new("bad_response", "runtime/invocation/next answered HTTP " .. tostring(res.status)
      .. ": " .. tostring(res.body), { status = res.status })
  end
  local id = res.headers["lambda-runtime-aws-request-id"]
  if type(id) ~= "string" or id == "" or id:find("[^%w%-_.]") then
    return nil, errors.new("bad_response", "runtime/invocation/next answered without a valid request id")
  end
  return { id = id, body = res.body, context = _M.context(res.headers, self.getenv, self.now) }
end

-- What a raised value says: its message, its error type, its trace.
local function raised_type(value)
  if type(value) == "table" and type(value.code) == "string" then return value.code end
  return "Error"
end

local function failure_type(err)
  if type(err) == "table" and type(err.code) == "string" then return err.code end
  return "Error"
end

--- invoke(fn, invocation) -> true when the outcome was posted. Runs the
-- handler and posts its result or its error.
function runtime:invoke(fn, inv)
  local ctx = inv.context
  local id = inv.id
  local path = "/runtime/invocation/" .. id
  self.setenv("_X_AMZN_TRACE_ID", ctx.trace_id)
  if ctx:remaining_time_ms() <= 0 then
    return self:post_error(path .. "/error", "Runtime.DeadlineExceeded", "DeadlineExceeded",
      "the invocation's deadline had passed before its handler started")
  end
  local event, derr = json.decode(inv.body)
  if event == nil and derr then
    return self:post_error(path .. "/error", "Runtime.InvalidEvent", "InvalidEvent",
      "the event is not JSON: " .. tostring(derr.message))
  end
  local trace
  local ok, result, err = xpcall(fn, function(e)
    trace = debug.traceback("", 2)
    return e
  end, event, ctx)
  if ctx.deadline_ms - now_ms(self) < 0 then
    return self:post_error(path .. "/error", "Function.DeadlineExceeded", "DeadlineExceeded",
      ("the handler returned %d ms after the invocation's deadline"):format(now_ms(self) - ctx.deadline_ms))
  end
  if not ok then
    return self:post_error(path .. "/error", "Function.Error", raised_type(result), tostring(result), trace)
  end
  if result == nil and err ~= nil then
    return self:post_error(path .. "/error", "Function.Failed", failure_type(err), tostring(err))
  end
  local encoded, body = pcall(json.encode, result == nil and json.null or result)
  if not encoded then
    return self:post_error(path .. "/error", "Runtime.InvalidResponse", "InvalidResponse",
      "the handler's result cannot be JSON: " .. tostring(body))
  end
  local res, perr = self:call("POST", path .. "/response", body)
  if not res then
    self:say("could not post the response of " .. id .. ": " .. tostring(perr))
    return false
  end
  if res.status ~= 202 then
    self:say(("the response of %s was refused (HTTP %s): %s"):format(id, tostring(res.status), tostring(res.body)))
    if res.status == 413 then
      return self:post_error(path .. "/error", "Runtime.ResponseTooLarge", "ResponseTooLarge",
        "the handler's result is larger than Lambda accepts")
    end
    return false, res.status
  end
  return true
end

--- loop(fn [, max]) -> 1 when the Runtime API fails (the process should
-- exit), or 0 after `max` invocations (for benchmarks; none: for ever).
function runtime:loop(fn, max)
  local n = 0
  while not max or n < max do
    local inv, err = self:next_invocation()
    if not inv then
      self:say("runtime/invocation/next failed: " .. tostring(err))
      return 1
    end
    local _, status = self:invoke(fn, inv)
    if status == 500 then
      self:say("the Runtime API answered HTTP 500: the runtime exits")
      return 1
    end
    n = n + 1
  end
  return 0
end

--- main([opts]) -> the exit status: resolves _HANDLER, posts an init error
-- (and returns 1) when it cannot, else loops over invocations.
-- opts: getenv, stderr, max_invocations (DYNLOG_LAMBDA_MAX_INVOCATIONS).
function _M.main(opts)
  opts = opts or {}
  local getenv = opts.getenv or os.getenv
  local stderr = opts.stderr or io.stderr
  local api = getenv("AWS_LAMBDA_RUNTIME_API")
  if not api or api == "" then
    stderr:write("dynlog.lambda: AWS_LAMBDA_RUNTIME_API is not set: this runs inside Lambda\n")
    return 1
  end
  local rt = _M.new({ api = api, getenv = getenv, stderr = stderr })
  local fn, err = handlers.resolve(getenv("_HANDLER"), { getenv = getenv })
  if not fn then
    rt:init_error(err)
    return 1
  end
  return rt:loop(fn, opts.max_invocations or tonumber(getenv("DYNLOG_LAMBDA_MAX_INVOCATIONS") or ""))
end

return _M
