--- dynlog inside nginx (OpenResty, or nginx with lua-nginx-module): the
-- trigger on timers, a receiver for EventBridge API destinations, and a
-- local event bus for development. Nothing here blocks a worker: every
-- request goes over cosockets (dynlog.ngx_http).
--
--   init_worker_by_lua_block { require("dynlog.ngx").start_consumer{ ... } }
--   location = /events { content_by_lua_block { require("dynlog.ngx").receive(spec) } }
--   location = /bus    { content_by_lua_block { require("dynlog.ngx").bus(config) } }
local core = require "dynlog.core"
local errors = require "dynlog.errors"
local json = require "dynlog.json"
local logger = require "dynlog.log"
local pattern = require "dynlog.pattern"
local retry = require "dynlog.retry"
local stream = require "dynlog.stream"

local ngx = ngx -- luacheck: ignore
local error, ipairs, pairs, pcall, tonumber, tostring, type = error, ipairs, pairs, pcall, tonumber, tostring, type
local io_open, math_floor, os_date = io.open, math.floor, os.date
local str_byte, str_find, str_format, str_match, str_sub =
  string.byte, string.find, string.format, string.match, string.sub
local constant_time_equal, base64_decode = core.constant_time_equal, core.base64_decode

local _M = {}

local function say_json(status, body, content_type)
  ngx.status = status
  ngx.header["Content-Type"] = content_type or "application/json"
  ngx.print(json.encode(body))
  return ngx.exit(status)
end

---------------------------------------------------------------------------
-- The trigger on timers
---------------------------------------------------------------------------

--- start_consumer(opts) in init_worker_by_lua*: runs a dynlog.stream
-- consumer on timers in this worker (opts as for dynlog.stream.new). Every
-- worker, and every host sharing the checkpoint table, takes a share of the
-- shards; a worker that exits (reload, quit) hands its leases back.
-- Returns the consumer, whose stats() a location may show.
function _M.start_consumer(opts)
  if type(opts) ~= "table" then error("start_consumer: expects the options of dynlog.stream.new", 2) end
  local consumer = stream._new(opts, "start_consumer") -- raises at our caller's line
  local tables_ready, failures = false, 0
  local tick
  local function hand_back()
    local ok, err = pcall(consumer.release, consumer)
    if not ok then logger.log("error", "dynlog consumer: releasing leases on exit: " .. tostring(err)) end
  end
  tick = function(premature)
    if premature or ngx.worker.exiting() then return hand_back() end -- no next round
    local delay = consumer.poll_interval
    local ok, n, err = pcall(function()
      if not tables_ready then
        local created, cerr = consumer:create_tables()
        if not created then return nil, cerr end
        tables_ready = true
      end
      return consumer:poll_once()
    end)
    if not ok or not n then
      failures = failures + 1
      logger.log("error", "dynlog consumer: " .. tostring(ok and err or n))
      delay = retry.delay(failures, consumer.poll_interval, 10)
    else
      failures = 0
      if n > 0 then delay = 0 end
    end
    -- A quit that arrives during the round leaves no pending timer to run
    -- prematurely, and nginx refuses new ones: hand the leases back here.
    if ngx.worker.exiting() then return hand_back() end
    local started, terr = ngx.timer.at(delay, tick)
    if not started then
      logger.log("error", "dynlog consumer: could not schedule a timer: " .. tostring(terr))
      return hand_back()
    end
  end
  local started, err = ngx.timer.at(0, tick)
  if not started then error("start_consumer: could not start a timer: " .. tostring(err), 2) end
  return consumer
end

---------------------------------------------------------------------------
-- Reading a request
---------------------------------------------------------------------------

-- The body, or nil and the status to answer with.
local function read_body(max_bytes)
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

-- Does the request carry the configured credentials? Compared in constant
-- time, so that timing tells nothing about how much of a guess was right.
local function authorized(auth)
  if auth == nil then return true end
  local headers = ngx.req.get_headers()
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

local function check_auth(auth, where)
  if auth == nil then return end
  if type(auth) ~= "table" or not ((type(auth.header) == "string" and type(auth.value) == "string")
      or (type(auth.basic) == "table" and type(auth.basic.user) == "string"
          and type(auth.basic.password) == "string")) then
    error(where .. ": auth must be {header=, value=} or {basic = {user=, password=}}", 3)
  end
end

---------------------------------------------------------------------------
-- The receiver of EventBridge API destinations
---------------------------------------------------------------------------

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

--- receive(spec) in content_by_lua*: one EventBridge event per request, as
-- an API destination delivers it. spec: {auth = {header=, value=} or
-- {basic = {user=, password=}}, max_body = 1114112, handle = function(event)
-- -> true | nil, err}, or instead of handle, {client=, project=<spec of
-- dynlog.handler.project>}. Answers 2xx once handled, 401 without the
-- right credentials (nothing handled), 400 for malformed input and for an
-- error that says the event can never be handled (invalid_argument,
-- too_large, schema_mismatch, ValidationException, ...), 413 for a body too
-- large, 429 when throttled and 500 for everything else (worth retrying).
function _M.receive(spec)
  if type(spec) ~= "table" then error("receive: expects a spec table", 2) end
  check_auth(spec.auth, "receive")
  local handle = spec.handle
  if not handle and spec.project then
    local handler = require "dynlog.handler"
    handle = function(event) return handler.project(spec.client, event, spec.project) end
  end
  if type(handle) ~= "function" then error("receive: spec.handle (or client and project) is required", 2) end

  if ngx.req.get_method() ~= "POST" then return say_json(405, { message = "POST only" }) end
  if not authorized(spec.auth) then return say_json(401, { message = "unauthorized" }) end
  local body, status, why = read_body(spec.max_body or DEFAULT_MAX_BODY)
  if not body then return say_json(status, { message = why }) end
  local event = json.decode(body)
  if type(event) ~= "table" or json.is_array(event) or type(event.detail) ~= "table"
      or json.is_array(event.detail) then
    return say_json(400, { message = "body is not an EventBridge event (JSON object with a detail object)" })
  end
  local ok, result, err = pcall(handle, event)
  if not ok then
    logger.log("error", "dynlog receive: handler raised: " .. tostring(result))
    return say_json(500, { message = "handler failed" })
  end
  if not result then
    local code = status_for(err)
    logger.log(code >= 500 and "error" or "warn", "dynlog receive: " .. tostring(err))
    return say_json(code, { message = errors.is(err) and err.code or "failed" })
  end
  return say_json(200, { ok = true })
end

---------------------------------------------------------------------------
-- The local event bus
---------------------------------------------------------------------------

local MAX_ENTRIES = 10
local TIME_BYTES = 14
local AMZ_JSON = "application/x-amz-json-1.1"

local LATEST_TIME = 253402300800 -- 10000-01-01T00:00:00Z

local function rfc3339(t)
  return os_date("!%Y-%m-%dT%H:%M:%SZ", math_floor(t))
end

-- A request-level error of the JSON 1.1 protocol: {"__type":, "message":}.
local function amz_error(status, kind, message)
  return say_json(status, { __type = kind, message = message }, AMZ_JSON)
end

-- Does the JSON text hold an integer literal outside int64? EventBridge
-- refuses such a Detail, while a decoder would read it as a float (Lua 5.4)
-- or a string (LuaJIT). Strings are skipped whole; the text is valid JSON.
local INT64_MAX, INT64_MIN_DIGITS = "9223372036854775807", "9223372036854775808"
local function integer_beyond_int64(text)
  local i = 1
  while true do
    local s = str_find(text, '["%-0-9]', i)
    if not s then return false end
    if str_byte(text, s) == 34 then -- a string: on to its closing quote
      local j = s + 1
      while true do
        local q = str_find(text, '["\\]', j)
        if not q then return false end
        if str_byte(text, q) == 92 then
          j = q + 2
        else
          i = q + 1
          break
        end
      end
    else
      local sign, digits, rest = str_match(text, "^(%-?)(%d+)([%.eE]?)", s)
      if rest == "" then
        local limit = sign == "-" and INT64_MIN_DIGITS or INT64_MAX
        if #digits > 19 or (#digits == 19 and digits > limit) then return true end
      end
      local _, e = str_find(text, "^%-?%d+%.?%d*[eE]?[+-]?%d*", s)
      i = e + 1
    end
  end
end

-- Request fields of the wrong JSON type: EventBridge cannot even read the
-- request (SerializationException), so the whole call fails.
local STRING_FIELDS = { "Source", "DetailType", "Detail", "EventBusName", "TraceHeader" }

local function shape_problem(e, i)
  local where = "Entries[" .. i .. "]"
  if type(e) ~= "table" or json.is_array(e) then return where .. " is not an object" end
  for _, field in ipairs(STRING_FIELDS) do
    local v = e[field]
    if v ~= nil and v ~= json.null and type(v) ~= "string" then
      local what = type(v) == "table" and "JSON structure" or type(v)
      return where .. "." .. field .. " must be a string, not a " .. what
    end
  end
  local r = e.Resources
  if r ~= nil and r ~= json.null then
    if type(r) ~= "table" or not json.is_array(r) then
      return where .. ".Resources must be an array of strings"
    end
    for j = 1, #r do
      if type(r[j]) ~= "string" then return where .. ".Resources[" .. j .. "] must be a string" end
    end
  end
  local t = e.Time
  if t ~= nil and t ~= json.null and type(t) ~= "number" then
    return where .. ".Time must be a number of seconds since the epoch"
  end
  return nil
end

local function given(v)
  if v == json.null then return nil end
  return v
end

-- The bytes EventBridge counts for an entry (its shape is checked already).
local function entry_size(e)
  local size = 0
  for _, field in ipairs(STRING_FIELDS) do
    local v = given(e[field])
    if v then size = size + #v end
  end
  if given(e.Time) then size = size + TIME_BYTES end
  for _, r in ipairs(given(e.Resources) or {}) do size = size + #r end
  return size
end

-- Is `name` this bus: "default", its name, or the ARN of either in this
-- bus's region and account?
local function is_this_bus(config, name)
  local own = config.name or "dynamodb-log"
  if name == "default" or name == own then return true end
  local region, account, bus = str_match(name, "^arn:aws[%w%-]*:events:([%w%-]+):(%d+):event%-bus/(.+)$")
  return bus ~= nil and (bus == "default" or bus == own) and region == (config.region or "us-east-1")
    and account == (config.account or "000000000000")
end

-- An entry EventBridge would refuse: its ErrorCode and message; or nil,
-- nil and the decoded detail.
local function entry_problem(config, e)
  for _, field in ipairs({ "Source", "DetailType", "Detail" }) do
    local v = given(e[field])
    if v == nil or v == "" then
      return "InvalidArgument", "Parameter " .. field .. " is not valid. Reason: " .. field
        .. " is a required argument."
    end
  end
  local detail = json.decode(e.Detail) -- nil beyond 1000 levels of nesting, too
  if type(detail) ~= "table" or json.is_array(detail) then
    return "MalformedDetail", "Detail is malformed."
  end
  if integer_beyond_int64(e.Detail) then
    return "MalformedDetail", "Detail is malformed: an integer does not fit in 64 bits."
  end
  local bus = given(e.EventBusName)
  if bus ~= nil and not is_this_bus(config, bus) then
    return "ResourceNotFoundException", "Event bus " .. bus .. " does not exist."
  end
  -- The envelope's time is RFC 3339: years 1970 to 9999 (os.date gives
  -- nothing, or a five-digit year, beyond).
  local t = given(e.Time)
  if t ~= nil and not (t >= 0 and t < LATEST_TIME) then
    return "InvalidArgument", "Parameter Time is not valid. Reason: it must be a time from 1970 to 9999."
  end
  return nil, nil, detail
end

local function compile_rules(config)
  if config.compiled then return config.compiled end
  local compiled = {}
  for i, rule in ipairs(config.rules or {}) do
    local p, err = pattern.compile(rule.pattern)
    if not p then error(("bus: rules[%d]: %s"):format(i, tostring(err)), 3) end
    if type(rule.targets) ~= "table" then error(("bus: rules[%d]: targets must be a list"):format(i), 3) end
    compiled[i] = { name = rule.name or ("rule" .. i), pattern = p, targets = rule.targets }
  end
  config.compiled = compiled
  return compiled
end

-- Deliveries wait in a queue per target and worker, drained by at most
-- `max_in_flight` timers: a burst of events must not open a request per
-- event at once, which would swamp the target (and what it writes to) the
-- way EventBridge's invocation rate limit prevents.
local queues = {} -- target url → {items = {first=, last=, [i] = delivery}, active=}

local drain

local function enqueue(config, target, body, attempt)
  local q = queues[target.url]
  if not q then
    q = { first = 1, last = 0, active = 0 }
    queues[target.url] = q
  end
  if q.last - q.first + 1 >= (config.max_queue or 100000) then
    logger.log("error", str_format("dynlog bus: delivery to %s dropped: %d deliveries already wait",
      target.url, q.last - q.first + 1))
    return
  end
  q.last = q.last + 1
  q[q.last] = { config = config, target = target, body = body, attempt = attempt }
  if q.active < (config.max_in_flight or 8) then
    local started, err = ngx.timer.at(0, drain, q)
    if started then
      q.active = q.active + 1
    elseif q.active == 0 then
      logger.log("error", "dynlog bus: could not start a delivery timer: " .. tostring(err))
    end
  end
end

-- One attempt to deliver; a failure worth retrying goes back to the queue
-- after a backoff, as EventBridge retries API destinations.
local function deliver(d)
  local target, config = d.target, d.config
  local t = require("dynlog.ngx_http").new({ timeout = target.timeout or 5 })
  local headers = { ["Content-Type"] = "application/json" }
  for k, v in pairs(target.headers or {}) do headers[k] = v end
  local res, err = t:request({ method = "POST", url = target.url, headers = headers, body = d.body })
  local status = res and res.status
  if status and status >= 200 and status < 300 then return end
  local worth = not res or status == 429 or status >= 500
  local max_attempts = config.max_attempts or 8
  if not worth or d.attempt >= max_attempts then
    logger.log("error", str_format("dynlog bus: delivery to %s dropped after %d attempt(s): %s", target.url,
      d.attempt, res and ("HTTP " .. status) or tostring(err)))
    return
  end
  local wait = retry.delay(d.attempt, config.retry_base_delay or 0.1, config.retry_max_delay or 5)
  ngx.timer.at(wait, function(premature)
    if not premature then enqueue(config, target, d.body, d.attempt + 1) end
  end)
end

drain = function(premature, q)
  while not premature and q.first <= q.last do
    local d = q[q.first]
    q[q.first] = nil
    q.first = q.first + 1
    local ok, err = pcall(deliver, d)
    if not ok then logger.log("error", "dynlog bus: delivery failed: " .. tostring(err)) end
    premature = ngx.worker.exiting()
  end
  q.active = q.active - 1
end

--- bus(config) in content_by_lua*: the PutEvents API of EventBridge, for
-- local development. config: {name = "dynamodb-log" (the bus accepted, by
-- name or ARN, besides "default"), account = "000000000000", region =
-- "us-east-1", auth = nil, max_request_bytes = 262144, max_attempts = 8,
-- max_in_flight = 8, max_queue = 100000, rules = {{name=,
-- pattern=<EventBridge event pattern>, targets = {{url=, headers=}}}}}.
-- Requests are validated as EventBridge does (a request it cannot read or
-- that breaks a limit fails whole, an entry it refuses fails alone),
-- answered in its response shape, each event wrapped in its envelope and
-- delivered to the targets of every matching rule, with retries.
function _M.bus(config)
  if type(config) ~= "table" then error("bus: expects a config table", 2) end
  check_auth(config.auth, "bus")
  local rules = compile_rules(config)
  if ngx.req.get_method() ~= "POST" then return amz_error(405, "UnknownOperationException", "POST only") end
  if not authorized(config.auth) then return amz_error(401, "UnrecognizedClientException", "unauthorized") end
  local target = ngx.var.http_x_amz_target
  if target ~= "AWSEvents.PutEvents" then
    return amz_error(400, "UnknownOperationException", "only AWSEvents.PutEvents")
  end
  local max_bytes = config.max_request_bytes or 256 * 1024
  local body, status, why = read_body(max_bytes * 4)
  if not body then return amz_error(status, "SerializationException", why) end
  local request = json.decode(body)
  if type(request) ~= "table" or json.is_array(request) then
    return amz_error(400, "SerializationException", "the request body is not a JSON object")
  end
  local entries = given(request.Entries)
  if entries == nil then
    return amz_error(400, "ValidationException",
      "1 validation error detected: Value null at 'entries' failed to satisfy constraint: Member must not be null")
  end
  if type(entries) ~= "table" or not json.is_array(entries) then
    return amz_error(400, "SerializationException", "Entries must be an array")
  end
  if #entries < 1 or #entries > MAX_ENTRIES then
    return amz_error(400, "ValidationException", "1 validation error detected: Value at 'entries' failed to"
      .. " satisfy constraint: Member must have length between 1 and " .. MAX_ENTRIES)
  end
  local total = 0
  for i, e in ipairs(entries) do
    local problem = shape_problem(e, i)
    if problem then return amz_error(400, "SerializationException", problem) end
    total = total + entry_size(e)
  end
  if total > max_bytes then
    return amz_error(400, "ValidationException", "Total size of the entries in the request is over the limit.")
  end

  local answers, failed = json.array(), 0
  local now = ngx.now()
  for i, e in ipairs(entries) do
    local code, message, detail = entry_problem(config, e)
    if code then
      failed = failed + 1
      answers[i] = { ErrorCode = code, ErrorMessage = message }
    else
      local id = core.uuid4()
      answers[i] = { EventId = id }
      local event = {
        version = "0", id = id, ["detail-type"] = e.DetailType, source = e.Source,
        account = config.account or "000000000000",
        time = rfc3339(given(e.Time) or now),
        region = config.region or "us-east-1",
        resources = json.array(given(e.Resources) or {}),
      }
      -- The detail goes out as it came in: re-encoding it would turn an
      -- integer beyond 2^53 into a string or a float on the way.
      local envelope = str_sub(json.encode(event), 1, -2) .. ',"detail":' .. e.Detail .. "}"
      event.detail = detail
      for _, rule in ipairs(rules) do
        if rule.pattern:match(event) then
          for _, t in ipairs(rule.targets) do enqueue(config, t, envelope, 1) end
        end
      end
    end
  end
  return say_json(200, { FailedEntryCount = failed, Entries = answers }, AMZ_JSON)
end

return _M
