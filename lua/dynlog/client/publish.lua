--- Publishing to Amazon EventBridge (PutEvents), as a method of the client.
--
--   local results, err = c:publish({
--     { source = "dynamodb-log", detail_type = "stream changes", detail = { … }, bus = "dynamodb-log" },
--   })
--
-- Entries are checked before anything is sent, split into calls of at most
-- 10 entries and `max_request_bytes` (256 KB by default: the limit every
-- EventBridge emulator enforces; AWS itself allows 1 MB since 2026-01-29),
-- and the entries EventBridge reports as failed for a passing reason are
-- sent again with backoff. Results come back one per entry, in input order;
-- the shape is that of every call on a list of items (see errors.items).
local core = require "dynlog.core"
local errors = require "dynlog.errors"
local metrics = require "dynlog.base.metrics"
local options = require "dynlog.base.options"
local retry = require "dynlog.aws.retry"
local timeutil = require "dynlog.base.timeutil"

local error, ipairs, next, pairs, pcall, tostring, type = error, ipairs, next, pairs, pcall, tostring, type
local str_find = string.find
local array, json_encode, json_is_object = core.array, core.json_encode, core.json_is_object

local _M = {}

local MAX_ENTRIES = 10
local DEFAULT_MAX_REQUEST_BYTES = 256 * 1024
-- EventBridge counts 14 bytes for an entry's Time.
local TIME_BYTES = 14
local RETRYABLE_ENTRY = { InternalFailure = true, ThrottlingException = true }
local PUBLISH = options.known{ "bus", "max_request_bytes", "ordered" }
local ENTRY = options.known{ "source", "detail_type", "detail", "bus", "resources", "time", "trace_header" }

local function bad_entry(i, message)
  return nil, errors.new("invalid_argument", "entries[" .. i .. "]: " .. message, { index = i })
end

-- The failure of entries[i]: `fields` adds status, retryable...
local function entry_error(i, code, message, fields)
  local err = errors.new(code, "entries[" .. i .. "]: " .. tostring(message), fields)
  err.index = i
  return err
end

local function nonempty_string(v)
  return type(v) == "string" and v ~= ""
end

-- The Detail text of an entry: a table is encoded, a string must already be
-- a JSON object.
local function detail_text(detail)
  if type(detail) == "table" then
    local ok, text = pcall(json_encode, detail)
    if not ok then return nil, tostring(text) end
    if not str_find(text, "^{") then return nil, "detail must be a JSON object, not a list" end
    return text
  end
  if type(detail) == "string" then
    -- vetted in C without decoding: the trigger hands over text it encoded
    if not json_is_object(detail) then return nil, "detail must be a JSON object" end
    return detail
  end
  return nil, "detail must be a table or a JSON object string, got " .. type(detail)
end

local function entry_time(t)
  if t == nil or type(t) == "number" then return t end
  if type(t) == "string" then return timeutil.parse_rfc3339(t) end
end

-- Entry → {wire = <PutEvents entry>, size = <bytes EventBridge counts>}.
local function prepare(entry, i, opts)
  if type(entry) ~= "table" then return bad_entry(i, "must be a table") end
  options.check(entry, ENTRY, "publish: entries[" .. i .. "]", 3)
  if not nonempty_string(entry.source) then return bad_entry(i, "source must be a non-empty string") end
  if not nonempty_string(entry.detail_type) then return bad_entry(i, "detail_type must be a non-empty string") end
  local detail, why = detail_text(entry.detail)
  if not detail then return bad_entry(i, why) end
  local bus = entry.bus or opts.bus
  if bus ~= nil and not nonempty_string(bus) then return bad_entry(i, "bus must be a non-empty string") end
  local time = entry_time(entry.time)
  if entry.time ~= nil and not time then return bad_entry(i, "time must be epoch seconds or an RFC 3339 string") end
  local size = #entry.source + #entry.detail_type + #detail + (bus and #bus or 0) + (time and TIME_BYTES or 0)
  local resources
  if entry.resources ~= nil then
    if type(entry.resources) ~= "table" then return bad_entry(i, "resources must be a list of strings") end
    resources = array()
    for j, r in ipairs(entry.resources) do
      if not nonempty_string(r) then return bad_entry(i, "resources[" .. j .. "] must be a non-empty string") end
      resources[j] = r
      size = size + #r
    end
  end
  if entry.trace_header ~= nil then
    if not nonempty_string(entry.trace_header) then return bad_entry(i, "trace_header must be a string") end
    size = size + #entry.trace_header
  end
  return {
    wire = { Source = entry.source, DetailType = entry.detail_type, Detail = detail, EventBusName = bus,
             Resources = resources, Time = time, TraceHeader = entry.trace_header },
    size = size,
  }
end

-- Splits the pending entry indexes into calls: at most 10 entries and
-- max_bytes per call, in order.
local function calls_of(pending, prepared, max_bytes)
  local calls, current, bytes = {}, {}, 0
  for _, idx in ipairs(pending) do
    local size = prepared[idx].size
    if #current == MAX_ENTRIES or (#current > 0 and bytes + size > max_bytes) then
      calls[#calls + 1] = current
      current, bytes = {}, 0
    end
    current[#current + 1] = idx
    bytes = bytes + size
  end
  if #current > 0 then calls[#calls + 1] = current end
  return calls
end

-- One PutEvents call. Fills results (or errs) for its entries; returns the
-- indexes worth sending again.
local function put_events(client, call, prepared, results, errs)
  local wire = array()
  for j, idx in ipairs(call) do wire[j] = prepared[idx].wire end
  metrics.inc("dynlog_publish_calls_total", 1)
  local resp, err = client:_request("events", "PutEvents", { Entries = wire }, false)
  local again = {}
  local answers = resp and resp.Entries
  if resp and (type(answers) ~= "table" or #answers ~= #call) then
    err = errors.new("bad_response", "PutEvents answered " .. tostring(type(answers) == "table" and #answers)
      .. " results for " .. #call .. " entries")
  end
  if err then
    -- _request has already retried the whole call; what is left is final.
    for _, idx in ipairs(call) do
      errs[idx] = entry_error(idx, err.code, err.message, { status = err.status, request_id = err.request_id,
        retryable = err.retryable, attempts = err.attempts, ambiguous = err.ambiguous })
    end
    return again
  end
  for j, idx in ipairs(call) do
    local a = answers[j]
    if a.EventId then
      results[idx], errs[idx] = { event_id = a.EventId }, nil
    elseif a.ErrorCode then
      -- Server text: a token or signature it names is never passed on.
      errs[idx] = entry_error(idx, a.ErrorCode, errors.redact(a.ErrorMessage),
        { retryable = RETRYABLE_ENTRY[a.ErrorCode] or false })
      if RETRYABLE_ENTRY[a.ErrorCode] then again[#again + 1] = idx end
    else
      errs[idx] = entry_error(idx, "bad_response", "PutEvents answered neither an EventId nor an ErrorCode")
    end
  end
  return again
end

-- Sends the pending entries, then again those that failed for a reason
-- worth retrying (throttling, an internal failure), with backoff.
local function send(client, pending, prepared, results, errs, max_bytes)
  for attempt = 1, client.max_attempts do
    local again = {}
    for _, call in ipairs(calls_of(pending, prepared, max_bytes)) do
      for _, idx in ipairs(put_events(client, call, prepared, results, errs)) do again[#again + 1] = idx end
    end
    if #again == 0 or attempt == client.max_attempts then return end
    metrics.inc("dynlog_publish_retries_total", #again)
    pending = again
    client.sleep(retry.delay(attempt, client.base_delay, client.max_delay))
  end
end

-- Call after call, each finished (retries included) before the next
-- starts; the first call that leaves an entry unpublished stops the rest,
-- so nothing is published ahead of an entry that came before it.
local function send_in_order(client, pending, prepared, results, errs, max_bytes)
  local calls = calls_of(pending, prepared, max_bytes)
  for c, call in ipairs(calls) do
    send(client, call, prepared, results, errs, max_bytes)
    for _, idx in ipairs(call) do
      if errs[idx] then
        for later = c + 1, #calls do
          for _, skipped in ipairs(calls[later]) do
            errs[skipped] = entry_error(skipped, "aborted", "not sent, because entries[" .. idx
              .. "] was not published", { cause = errs[idx] })
          end
        end
        return
      end
    end
  end
end

-- A failure of the whole call: nothing was published.
local function refused(err)
  err.results = {}
  return nil, err, err.results
end

--- publish(entries [, opts]) -> results, or nil, err, results.
-- entries: {source=, detail_type=, detail=<table or JSON object string>,
-- bus=, resources=, time=<epoch seconds or RFC 3339>, trace_header=}.
-- opts: bus (default for entries without one), max_request_bytes, ordered
-- (true: each call waits for the one before it, and the first call left
-- with a failed entry stops the rest, whose entries are "aborted").
-- results[i] is {event_id=} for each entry published; when some were not,
-- err (code "publish_failed", see errors.items) has err[i], why entries[i]
-- was not.
function _M:publish(entries, opts)
  options.check(opts, PUBLISH, "publish")
  opts = opts or {}
  if type(entries) ~= "table" then error("publish: entries must be a list", 2) end
  local max_bytes = opts.max_request_bytes or DEFAULT_MAX_REQUEST_BYTES
  local prepared, pending = {}, {}
  for i, entry in ipairs(entries) do
    local p, err = prepare(entry, i, opts)
    if not p then return refused(err) end
    if p.size > max_bytes then
      return refused(errors.new("too_large", "entries[" .. i .. "] is " .. p.size .. " bytes; a PutEvents call"
        .. " holds " .. max_bytes, { index = i }))
    end
    prepared[i], pending[i] = p, i
  end
  metrics.inc("dynlog_publish_entries_total", #entries)
  local results, errs = {}, {}
  if opts.ordered then
    send_in_order(self, pending, prepared, results, errs, max_bytes)
  else
    send(self, pending, prepared, results, errs, max_bytes)
  end
  if next(errs) == nil then return results end
  local failed = 0
  for _ in pairs(errs) do failed = failed + 1 end
  metrics.inc("dynlog_publish_failed_entries_total", failed)
  return nil, errors.items("publish_failed", "entries were not published", errs, results, #entries), results
end

return _M
