--- A local EventBridge for development, served by nginx: the PutEvents API
-- of an event bus, its rules (dynlog.eventbridge.pattern) and their targets,
-- to which every matching event is delivered from timers, with retries, as
-- EventBridge delivers to API destinations. dynlog.ngx.bus and
-- dynlog.ngx.start_bus are its public names.
--
--   lua_shared_dict dynlog_bus 64m;    # the bus's deliveries, which outlive a worker
--   in init_worker_by_lua*:               dynlog.ngx.start_bus(config)
--   in the content_by_lua* of a location:  dynlog.ngx.bus(config)
local core = require "dynlog.core"
local json = require "dynlog.json"
local logger = require "dynlog.logger"
local nginx = require "dynlog.base.nginx"
local options = require "dynlog.base.options"
local pattern = require "dynlog.eventbridge.pattern"
local retry = require "dynlog.aws.retry"

local ngx = ngx -- luacheck: ignore
local error, ipairs, pairs, pcall, require, setmetatable, tostring, type =
  error, ipairs, pairs, pcall, require, setmetatable, tostring, type
local math_floor, os_date = math.floor, os.date
local str_byte, str_find, str_format, str_match, str_sub =
  string.byte, string.find, string.format, string.match, string.sub
local say_json, read_body, authorized, check_auth = nginx.say_json, nginx.read_body, nginx.authorized,
  nginx.check_auth

local _M = {}

local function nonempty(v) return type(v) == "string" and v ~= "" end

-- Configs already checked (and what was made of them), per worker.
local checked = setmetatable({}, { __mode = "k" })

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

local BUS = options.known{ "name", "account", "region", "auth", "rules", "shared_dict", "max_request_bytes",
  "max_attempts", "retry_base_delay", "retry_max_delay", "max_in_flight", "max_queue" }
local RULE = options.known{ "name", "pattern", "targets" }
local TARGET = options.known{ "url", "headers", "timeout" }
local DEFAULT_DICT = "dynlog_bus"
-- How often each worker looks for deliveries nobody has in hand.
local SWEEP_SECONDS = 1

-- What a bus config stands for, checked once per worker: its compiled rules,
-- each target with the delivery settings it is stored with, and its shared
-- dict. Raises at the caller of bus or start_bus.
local function bus_of(config, where)
  local done = checked[config]
  if done then return done end
  if type(config) ~= "table" then error(where .. ": expects a config table", 3) end
  options.check(config, BUS, where, 3)
  check_auth(config.auth, where)
  local dict_name = config.shared_dict or DEFAULT_DICT
  if not nonempty(dict_name) then error(where .. ": shared_dict must be the name of a lua_shared_dict", 3) end
  if config.rules ~= nil and type(config.rules) ~= "table" then error(where .. ": rules must be a list", 3) end
  local rules = {}
  for i, rule in ipairs(config.rules or {}) do
    local at = str_format("%s: rules[%d]", where, i)
    if type(rule) ~= "table" then error(at .. " must be a table", 3) end
    options.check(rule, RULE, at, 3)
    local p, err = pattern.compile(rule.pattern)
    if not p then error(at .. ": " .. tostring(err), 3) end
    if type(rule.targets) ~= "table" then error(at .. ": targets must be a list", 3) end
    local targets = {}
    for j, t in ipairs(rule.targets) do
      local tat = str_format("%s.targets[%d]", at, j)
      if type(t) ~= "table" then error(tat .. " must be a table", 3) end
      options.check(t, TARGET, tat, 3)
      if not nonempty(t.url) then error(tat .. ".url must be a URL", 3) end
      -- A delivery carries everything needed to make it, so that any
      -- worker can, without the config.
      targets[j] = { url = t.url, meta = json.encode({
        url = t.url, headers = t.headers, timeout = t.timeout or 5,
        max_attempts = config.max_attempts or 8, in_flight = config.max_in_flight or 8,
        base_delay = config.retry_base_delay or 0.1, max_delay = config.retry_max_delay or 5,
      }) }
    end
    rules[i] = { name = rule.name or ("rule" .. i), pattern = p, targets = targets }
  end
  if not ngx.shared[dict_name] then
    error(str_format("%s: no lua_shared_dict %q, where deliveries wait until they are done; declare one in"
      .. " http {}, e.g. `lua_shared_dict %s 64m;`", where, dict_name, dict_name), 3)
  end
  done = { rules = rules, dict_name = dict_name }
  checked[config] = done
  return done
end

-- Deliveries wait in a lua_shared_dict, which lives in shared memory: a
-- worker that dies (kill -9, OOM) takes nothing with it. Each worker stores
-- those of the events it accepts under its slot (ngx.worker.id(), which the
-- worker nginx starts in place of a dead one inherits):
--   "seq:<slot>"    the last number given out in the slot
--   "lo:<slot>"     no delivery of the slot is numbered below it
--   "d:<slot>:<n>"  a delivery: its settings as JSON, a newline, the body
-- A delivery is deleted once the target took it (2xx) or it was given up;
-- before that, the worker holds it in memory, in a queue per target drained
-- by at most `max_in_flight` timers (a burst of events must not open a
-- request per event at once, which would swamp the target the way
-- EventBridge's invocation rate limit prevents). Every second, and at once
-- when it starts, a worker sweeps its slot (and those of workers that a
-- reload did away with) for deliveries it does not hold, and takes them up:
-- so the worker that replaces a dead one delivers what the dead one had
-- accepted. A delivery may thus be made twice, never not at all.
local states = {} -- dict name → {dict=, queues = {[url] = queue}, held = {[key] = true}, settled = {[slot] = n}}

local function state_of(dict_name)
  local state = states[dict_name]
  if not state then
    state = { dict = ngx.shared[dict_name], queues = {}, held = {}, settled = {} }
    states[dict_name] = state
  end
  return state
end

local function my_slot() return ngx.worker.id() or 0 end

-- The next number of a slot. The counter is made with safe_add, which,
-- unlike incr's init, never evicts anything to make room.
local function next_number(dict, slot)
  local key = "seq:" .. slot
  local n, err = dict:incr(key, 1)
  if not n and err == "not found" then
    dict:safe_add(key, 0)
    n, err = dict:incr(key, 1)
  end
  return n, err
end

-- Stores a delivery under this worker's slot: its key, or nil and why
-- (safe_add: a full dict refuses, and never evicts another delivery).
local function store(dict, record)
  local slot = my_slot()
  local n, err = next_number(dict, slot)
  if not n then return nil, err end
  local key = "d:" .. slot .. ":" .. n
  local ok, serr = dict:safe_add(key, record)
  if not ok then return nil, serr end
  return key
end

local function split(record)
  local nl = str_find(record, "\n", 1, true)
  return json.decode(str_sub(record, 1, nl - 1)), str_sub(record, nl + 1)
end

local drain

-- Starts drain timers for a queue, up to its limit.
local function kick(state, q)
  while q.active < q.limit and q.active < q.last - q.first + 1 do
    local started, err = ngx.timer.at(0, drain, state, q)
    if not started then
      logger.log("error", "dynlog bus: could not start a delivery timer (the next sweep tries again): "
        .. tostring(err))
      return
    end
    q.active = q.active + 1
  end
end

-- Puts a stored delivery in this worker's hands.
local function hold(state, key, meta, attempt)
  local q = state.queues[meta.url]
  if not q then
    q = { first = 1, last = 0, active = 0 }
    state.queues[meta.url] = q
  end
  q.limit = meta.in_flight
  q.last = q.last + 1
  q[q.last] = { key = key, attempt = attempt }
  state.held[key] = true
  kick(state, q)
end

local function queued(state, url)
  local q = state.queues[url]
  return q and q.last - q.first + 1 or 0
end

local function done_with(state, key)
  state.dict:delete(key)
  state.held[key] = nil
end

-- One attempt to deliver; a failure worth retrying is tried again after a
-- backoff, as EventBridge retries API destinations.
local function deliver(state, q, item)
  local record = state.dict:get(item.key)
  if record == nil then -- made already, by a worker that held it too
    state.held[item.key] = nil
    return
  end
  local meta, body = split(record)
  local t = require("dynlog.transport.cosocket").new({ timeout = meta.timeout })
  local headers = { ["Content-Type"] = "application/json" }
  for k, v in pairs(meta.headers or {}) do headers[k] = v end
  -- As EventBridge passes an entry's TraceHeader on to its targets.
  if meta.trace then headers["X-Amzn-Trace-Id"] = meta.trace end
  local res, err = t:request({ method = "POST", url = meta.url, headers = headers, body = body })
  local status = res and res.status
  if status and status >= 200 and status < 300 then return done_with(state, item.key) end
  local worth = not res or status == 429 or status >= 500
  if not worth or item.attempt >= meta.max_attempts then
    logger.log("error", str_format("dynlog bus: delivery to %s dropped after %d attempt(s): %s", meta.url,
      item.attempt, res and ("HTTP " .. status) or tostring(err)))
    return done_with(state, item.key)
  end
  local wait = retry.delay(item.attempt, meta.base_delay, meta.max_delay)
  local started, terr = ngx.timer.at(wait, function(premature)
    -- A worker on its way out leaves the delivery to the one after it.
    if premature then return end
    q.last = q.last + 1
    q[q.last] = { key = item.key, attempt = item.attempt + 1 }
    kick(state, q)
  end)
  if not started then
    logger.log("error", "dynlog bus: could not schedule a retry (the next sweep takes it up): " .. tostring(terr))
    state.held[item.key] = nil
  end
end

drain = function(premature, state, q)
  while not premature and q.first <= q.last do
    local item = q[q.first]
    q[q.first] = nil
    q.first = q.first + 1
    local ok, err = pcall(deliver, state, q, item)
    if not ok then
      logger.log("error", "dynlog bus: delivery failed: " .. tostring(err))
      state.held[item.key] = nil -- the next sweep takes it up again
    end
    premature = ngx.worker.exiting()
  end
  q.active = q.active - 1
end

-- Takes up the deliveries of `slot` that this worker does not hold: those
-- of its own slot as they are, those of a slot no worker has any more moved
-- to its own. Then moves "lo:<slot>" past deliveries that are done. A
-- number given out since the last sweep may belong to a delivery still being
-- written (by the worker a reload replaces): it is not skipped yet.
local function sweep_slot(state, slot, own)
  local dict = state.dict
  local hi = dict:get("seq:" .. slot)
  if not hi then return end
  local lo = dict:get("lo:" .. slot) or 1
  local settled = state.settled[slot] or 0
  local first_left
  for n = lo, hi do
    local key = "d:" .. slot .. ":" .. n
    local left = state.held[key]
    if not left then
      local record = dict:get(key)
      if record then
        left = true
        local meta = split(record)
        if own then
          hold(state, key, meta, 1)
        else
          local moved = store(dict, record)
          if moved then
            dict:delete(key)
            left = false
            hold(state, moved, meta, 1)
          end
        end
      elseif n > settled then
        left = true
      end
    end
    if left and not first_left then first_left = n end
  end
  state.settled[slot] = hi
  local new_lo = first_left or hi + 1
  if new_lo > lo then dict:safe_set("lo:" .. slot, new_lo) end
end

local function sweep(state)
  local slot, count = my_slot(), ngx.worker.count()
  sweep_slot(state, slot, true)
  -- Slots above the number of workers: left by a reload to fewer workers.
  local s = count
  while state.dict:get("seq:" .. s) ~= nil do
    if s % count == slot then sweep_slot(state, s, false) end
    s = s + 1
  end
  for _, q in pairs(state.queues) do kick(state, q) end
end

local function sweep_timer(premature, state)
  if premature then return end
  local ok, err = pcall(sweep, state)
  if not ok then logger.log("error", "dynlog bus: sweeping the queue failed: " .. tostring(err)) end
end

--- start(config), public as dynlog.ngx.start_bus(config), in
-- init_worker_by_lua*, with the config of serve (dynlog.ngx.bus): this
-- worker takes up the deliveries waiting in the shared dict that no worker
-- holds (those of a worker that died, which it replaces), at once and then
-- every second. serve refuses to run in a worker that did not call it.
function _M.start(config)
  local bus = bus_of(config, "start_bus")
  local state = state_of(bus.dict_name)
  if state.sweeping then return end
  local started, err = ngx.timer.at(0, sweep_timer, state)
  if started then started, err = ngx.timer.every(SWEEP_SECONDS, sweep_timer, state) end
  if not started then error("start_bus: could not start a timer: " .. tostring(err), 2) end
  state.sweeping = true
end

--- serve(config), public as dynlog.ngx.bus(config), in content_by_lua*:
-- the PutEvents API of EventBridge, for local development. config: {name =
-- "dynamodb-log" (the bus accepted, by name or ARN, besides "default"),
-- account = "000000000000", region =
-- "us-east-1", auth = nil, shared_dict = "dynlog_bus", max_request_bytes =
-- 262144, max_attempts = 8, max_in_flight = 8, max_queue = 100000, rules =
-- {{name=, pattern=<EventBridge event pattern>, targets = {{url=, headers=,
-- timeout=}}}}}. Requests are validated as EventBridge does (a request it
-- cannot read or that breaks a limit fails whole, an entry it refuses fails
-- alone), answered in its response shape, each event wrapped in its
-- envelope and delivered to the targets of every matching rule, with
-- retries. An entry is answered with an EventId only once its deliveries
-- are stored in the shared dict; one that cannot be (the dict is full, or
-- max_queue deliveries to a target already wait in this worker) fails with
-- ThrottlingException, which publishers send again.
function _M.serve(config)
  local bus = bus_of(config, "bus")
  local state = states[bus.dict_name]
  if not (state and state.sweeping) then
    error("bus: call require(\"dynlog.ngx\").start_bus(config) in init_worker_by_lua* first: the worker that"
      .. " replaces one that died takes up its deliveries from there", 2)
  end
  local rules = bus.rules
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
  local max_queue = config.max_queue or 100000
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
      -- The entry's TraceHeader goes with each delivery, never into the event;
      -- one that could not be a header is dropped, as X-Ray drops invalid ones.
      local trace = given(e.TraceHeader)
      trace = type(trace) == "string" and trace ~= "" and not str_find(trace, "[%c\128-\255]")
        and (',"trace":' .. json.encode(trace) .. "}") or nil
      local stored, why_not = {}, nil
      for _, rule in ipairs(rules) do
        if why_not then break end
        if rule.pattern:match(event) then
          for _, t in ipairs(rule.targets) do
            if queued(state, t.url) >= max_queue then
              why_not = str_format("%d deliveries to %s already wait", max_queue, t.url)
              break
            end
            local meta = trace and (str_sub(t.meta, 1, -2) .. trace) or t.meta
            local key, err = store(state.dict, meta .. "\n" .. envelope)
            if not key then
              why_not = str_format("the bus's queue (lua_shared_dict %s) refused a delivery: %s", bus.dict_name,
                tostring(err))
              break
            end
            stored[#stored + 1] = { key = key, meta = meta }
          end
        end
      end
      if why_not then
        -- Not accepted: none of its deliveries is made, and the publisher sends it again.
        for _, s in ipairs(stored) do state.dict:delete(s.key) end
        logger.log("warn", "dynlog bus: entry refused: " .. why_not)
        failed = failed + 1
        answers[i] = { ErrorCode = "ThrottlingException", ErrorMessage = why_not }
      else
        for _, s in ipairs(stored) do hold(state, s.key, json.decode(s.meta), 1) end
      end
    end
  end
  return say_json(200, { FailedEntryCount = failed, Entries = answers }, AMZ_JSON)
end

return _M
