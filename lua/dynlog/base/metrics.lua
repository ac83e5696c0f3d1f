--- dynlog's metrics: counters, gauges and histograms with labels, in the
-- Prometheus text exposition format.
--
--   -- its public name is dynlog.metrics
--   metrics.prometheus()          -- the text a scraper reads
--   metrics.value("dynlog_requests_total", { service = "dynamodb", operation = "PutItem", outcome = "ok" })
--
-- METRICS below is the one list of every metric dynlog keeps: its name,
-- type, labels and help (docs/metrics.md is checked against it). In a
-- plain Lua process the values live in the process. Inside nginx they live
-- in a lua_shared_dict that every worker shares (`lua_shared_dict
-- dynlog_metrics 1m;`, another name through configure{shared_dict=}), so
-- that any worker's dynlog.ngx.metrics() serves them all; without that
-- dict each worker keeps its own, and dynlog.ngx.metrics() says the dict
-- is missing.
--
-- The hot path builds no strings: a series is found by its label values
-- through nested tables and keeps its shared-dict keys, made once.
local nginx = require "dynlog.base.nginx"
local options = require "dynlog.base.options"

local error, ipairs, pairs, tonumber, tostring, type = error, ipairs, pairs, tonumber, tostring, type
local math_huge = math.huge
local math_floor = math.floor
local str_find, str_format, str_gsub, str_sub = string.find, string.format, string.gsub, string.sub
local tbl_concat, tbl_sort = table.concat, table.sort

local _M = {}

-- Latency buckets of one request (seconds): DynamoDB answers in
-- milliseconds, a throttled or slow network in seconds.
local REQUEST_BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }

--- Every metric dynlog keeps. labels: in the order they are given to
-- inc, set and observe.
_M.METRICS = {
  { name = "dynlog_requests_total", type = "counter", labels = { "service", "operation", "outcome" },
    help = "HTTP requests to AWS (every attempt), by service (dynamodb, streams, events), operation and"
      .. " outcome: ok, throttled, conditional, client_error, server_error or transport" },
  { name = "dynlog_request_duration_seconds", type = "histogram", labels = { "service", "operation" },
    buckets = REQUEST_BUCKETS,
    help = "Time of one request to AWS (one attempt), whatever its outcome" },
  { name = "dynlog_request_retries_total", type = "counter", labels = { "service", "operation" },
    help = "Attempts sent again after a retryable failure" },
  { name = "dynlog_request_ambiguous_total", type = "counter", labels = { "service", "operation" },
    help = "Requests that failed after an attempt that may have been applied (err.ambiguous)" },
  { name = "dynlog_consumer_records_total", type = "counter", labels = { "group" },
    help = "Stream records the consumer handed to its handler and checkpointed" },
  { name = "dynlog_consumer_batches_total", type = "counter", labels = { "group" },
    help = "Batches the consumer's handler handled" },
  { name = "dynlog_consumer_handler_errors_total", type = "counter", labels = { "group" },
    help = "Batches the consumer's handler failed (each try counts)" },
  { name = "dynlog_consumer_gaps_total", type = "counter", labels = { "group" },
    help = "Records lost unread: trimmed from the stream, or their shard or stream gone" },
  { name = "dynlog_consumer_lag_seconds", type = "gauge", labels = { "group" },
    help = "Age of the oldest record not handled yet of the shard this process last worked on;"
      .. " 0 when caught up" },
  { name = "dynlog_publish_calls_total", type = "counter", labels = {},
    help = "PutEvents calls of publish" },
  { name = "dynlog_publish_entries_total", type = "counter", labels = {},
    help = "Entries publish was given" },
  { name = "dynlog_publish_failed_entries_total", type = "counter", labels = {},
    help = "Entries publish could not publish" },
  { name = "dynlog_publish_retries_total", type = "counter", labels = {},
    help = "Entries publish sent again after EventBridge refused them with a retryable error" },
  { name = "dynlog_receiver_deliveries_total", type = "counter", labels = { "status" },
    help = "Deliveries to dynlog.ngx.receive, by the HTTP status it answered" },
  { name = "dynlog_projection_events_applied_total", type = "counter", labels = { "table" },
    help = "Events handler.project applied to read models, by read-model table" },
  { name = "dynlog_projection_errors_total", type = "counter", labels = { "table" },
    help = "Projections that failed (handler.project returned an error)" },
  { name = "dynlog_projection_conflicts_total", type = "counter", labels = { "table" },
    help = "Read models that moved under a projection (a conditional write lost), each tried again" },
  { name = "dynlog_feed_events_indexed_total", type = "counter", labels = { "feed" },
    help = "Events the indexer added to the feed" },
  { name = "dynlog_feed_head", type = "gauge", labels = { "feed" },
    help = "The feed's head (its last position) as this process last committed it" },
  { name = "dynlog_feed_lag_seconds", type = "gauge", labels = { "feed" },
    help = "Age of the newest event of the indexer's last commit when it committed" },
  { name = "dynlog_subscription_delivered_total", type = "counter", labels = { "subscription" },
    help = "Events a subscription delivered to its handler" },
  { name = "dynlog_subscription_dead_letters_total", type = "counter", labels = { "subscription" },
    help = "Events a subscription parked as dead letters" },
  { name = "dynlog_subscription_lag_events", type = "gauge", labels = { "subscription" },
    help = "Events of the feed a subscription has not passed yet: the head as last read less its checkpoint" },
  { name = "dynlog_subscription_lag_seconds", type = "gauge", labels = { "subscription" },
    help = "Age of the last event a subscription delivered, when it delivered it; 0 once at the feed's head" },
}

local DEFS = {}
for _, def in ipairs(_M.METRICS) do DEFS[def.name] = def end

--- The default name of the shared dict inside nginx.
_M.SHARED_DICT = "dynlog_metrics"

local dict_name = _M.SHARED_DICT
-- false: values in this process; a shared dict: inside nginx with the dict;
-- nil: not decided yet (on first use).
local dict = nil
local series = {} -- name -> nested tables of label values -> series

local SEP = "\31"

local function escape(v)
  return (str_gsub(str_gsub(str_gsub(v, "\\", "\\\\"), "\n", "\\n"), '"', '\\"'))
end

local function decide()
  local ngx = nginx.in_nginx()
  local d = ngx and ngx.shared and ngx.shared[dict_name]
  dict = d or false
  return dict
end

-- A new series of def for label values a, b, c.
local function new_series(def, a, b, c)
  local values, parts = { a, b, c }, {}
  for i, label in ipairs(def.labels) do
    local v = values[i]
    if v == nil then error("dynlog.metrics: " .. def.name .. " needs the label " .. label, 3) end
    parts[i] = label .. '="' .. escape(tostring(v)) .. '"'
  end
  local labels = tbl_concat(parts, ",")
  local key = def.name .. SEP .. labels .. SEP
  local s = { def = def, labels = labels, key = key, value = 0 }
  if def.type == "histogram" then
    local keys, counts = {}, {}
    for i = 1, #def.buckets + 1 do keys[i], counts[i] = key .. i, 0 end
    s.bucket_keys, s.counts, s.sum_key, s.count_key, s.sum, s.count = keys, counts, key .. "s", key .. "c", 0, 0
  end
  return s
end

local NONE = "" -- the label value slot of a metric with fewer labels

-- The series of metric `name` for label values a, b, c.
local function find(name, a, b, c)
  local t1 = series[name]
  if not t1 then
    local def = DEFS[name]
    if not def then error("dynlog.metrics: no metric " .. tostring(name), 3) end
    t1 = {}
    series[name] = t1
  end
  local ka, kb, kc = a or NONE, b or NONE, c or NONE
  local t2 = t1[ka]
  if not t2 then t2 = {}; t1[ka] = t2 end
  local t3 = t2[kb]
  if not t3 then t3 = {}; t2[kb] = t3 end
  local s = t3[kc]
  if not s then
    s = new_series(DEFS[name], a, b, c)
    t3[kc] = s
  end
  return s
end

--- inc(name, n, a, b, c): adds n (a number >= 0) to a counter, whose label
-- values are a, b, c in the order of its labels.
function _M.inc(name, n, a, b, c)
  local s = find(name, a, b, c)
  local d = dict
  if d == nil then d = decide() end
  if d then
    d:incr(s.key, n, 0)
  else
    s.value = s.value + n
  end
end

--- set(name, v, a, b, c): sets a gauge.
function _M.set(name, v, a, b, c)
  local s = find(name, a, b, c)
  local d = dict
  if d == nil then d = decide() end
  if d then
    d:set(s.key, v)
  else
    s.value = v
  end
end

--- observe(name, v, a, b, c): one observation of a histogram.
function _M.observe(name, v, a, b, c)
  local s = find(name, a, b, c)
  local buckets = s.def.buckets
  local i = 1
  while buckets[i] and v > buckets[i] do i = i + 1 end
  local d = dict
  if d == nil then d = decide() end
  if d then
    d:incr(s.bucket_keys[i], 1, 0)
    d:incr(s.sum_key, v, 0)
    d:incr(s.count_key, 1, 0)
  else
    s.counts[i] = s.counts[i] + 1
    s.sum, s.count = s.sum + v, s.count + 1
  end
end

local CONFIGURE = options.known{ "shared_dict" }

--- configure{shared_dict = name}: the lua_shared_dict the values live in
-- inside nginx (default "dynlog_metrics"). Call it from init_by_lua*, before
-- any metric is kept.
function _M.configure(opts)
  if type(opts) ~= "table" then error("dynlog.metrics.configure: expects {shared_dict = <name>}", 2) end
  options.check(opts, CONFIGURE, "dynlog.metrics.configure")
  if type(opts.shared_dict) ~= "string" or opts.shared_dict == "" then
    error("dynlog.metrics.configure: shared_dict must be the name of a lua_shared_dict", 2)
  end
  dict_name, dict = opts.shared_dict, nil
end

--- shared_dict() -> the shared dict the values live in, or nil, and the
-- name it is looked for under.
function _M.shared_dict()
  local d = dict
  if d == nil then d = decide() end
  return d or nil, dict_name
end

-- Label text → {label = value}.
local function parse_labels(text)
  local labels, pos = {}, 1
  while pos <= #text do
    local _, e, label = str_find(text, '^([%a_][%w_]*)="', pos)
    if not e then break end
    local i, buf = e + 1, {}
    while i <= #text do
      local ch = str_sub(text, i, i)
      if ch == "\\" then
        local nx = str_sub(text, i + 1, i + 1)
        buf[#buf + 1] = nx == "n" and "\n" or nx
        i = i + 2
      elseif ch == '"' then
        break
      else
        buf[#buf + 1] = ch
        i = i + 1
      end
    end
    labels[label] = tbl_concat(buf)
    pos = i + 2 -- past the quote and the comma
  end
  return labels
end

-- name -> labels text -> {value=} or {counts=, sum=, count=}: every value.
local function collect()
  local out = {}
  local function slot(name, labels)
    local byname = out[name]
    if not byname then byname = {}; out[name] = byname end
    local e = byname[labels]
    if not e then e = { value = 0, counts = {}, sum = 0, count = 0 }; byname[labels] = e end
    return e
  end
  local d = dict
  if d == nil then d = decide() end
  if d then
    for _, key in ipairs(d:get_keys(0)) do
      local _, e1, name = str_find(key, "^([^\31]*)\31")
      local s2, _, suffix = str_find(key, "\31([^\31]*)$")
      local def = e1 and DEFS[name]
      if def and s2 and s2 > e1 then
        local v = d:get(key)
        if type(v) == "number" then
          local e = slot(name, str_sub(key, e1 + 1, s2 - 1))
          if suffix == "" then e.value = v
          elseif suffix == "s" then e.sum = v
          elseif suffix == "c" then e.count = v
          else
            local i = tonumber(suffix)
            if i then e.counts[i] = v end
          end
        end
      end
    end
  else
    local function walk(t, depth)
      for _, child in pairs(t) do
        if depth == 3 then
          local e = slot(child.def.name, child.labels)
          e.value, e.sum, e.count = child.value, child.sum or 0, child.count or 0
          if child.counts then for i, n in ipairs(child.counts) do e.counts[i] = n end end
        else
          walk(child, depth + 1)
        end
      end
    end
    for _, t in pairs(series) do walk(t, 1) end
  end
  return out
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  tbl_sort(keys)
  return keys
end

-- A number as Prometheus reads it.
local function number(v)
  if v == math_huge then return "+Inf" end
  if v == -math_huge then return "-Inf" end
  if v ~= v then return "NaN" end
  if v == math_floor(v) and v > -1e15 and v < 1e15 then return str_format("%d", v) end
  local text = str_format("%.15g", v)
  if tonumber(text) == v then return text end
  return str_format("%.17g", v)
end

--- snapshot() -> a list of {name=, type=, labels = {label = value},
-- value=} (counters and gauges) or {…, count=, sum=, buckets = {{le=,
-- count=}, …}} (histograms, cumulative, the last le math.huge): every
-- series kept so far, in the order of METRICS, then of their labels.
function _M.snapshot()
  local all, list = collect(), {}
  for _, def in ipairs(_M.METRICS) do
    local byname = all[def.name]
    if byname then
      for _, labels in ipairs(sorted_keys(byname)) do
        local e = byname[labels]
        local item = { name = def.name, type = def.type, labels = parse_labels(labels) }
        if def.type == "histogram" then
          local buckets, total = {}, 0
          for i = 1, #def.buckets + 1 do
            total = total + (e.counts[i] or 0)
            buckets[i] = { le = def.buckets[i] or math_huge, count = total }
          end
          item.buckets, item.sum, item.count = buckets, e.sum, e.count
        else
          item.value = e.value
        end
        list[#list + 1] = item
      end
    end
  end
  return list
end

--- value(name, labels) -> the value of a counter or gauge (0 when never
-- kept), or of a histogram {count=, sum=}, for labels {label = value}.
function _M.value(name, labels)
  local def = DEFS[name]
  if not def then error("dynlog.metrics.value: no metric " .. tostring(name), 2) end
  labels = labels or {}
  for _, item in ipairs(_M.snapshot()) do
    if item.name == name then
      local same = true
      for _, label in ipairs(def.labels) do
        if labels[label] ~= nil and item.labels[label] ~= tostring(labels[label]) then same = false end
      end
      if same then
        if def.type == "histogram" then return { count = item.count, sum = item.sum } end
        return item.value
      end
    end
  end
  if def.type == "histogram" then return { count = 0, sum = 0 } end
  return 0
end

--- prometheus() -> the text exposition format (version 0.0.4) of every
-- metric: # HELP and # TYPE of each, then its series; a histogram's
-- cumulative _bucket{le=…} (up to +Inf), _sum and _count.
function _M.prometheus()
  local all, out = collect(), {}
  for _, def in ipairs(_M.METRICS) do
    local name = def.name
    out[#out + 1] = "# HELP " .. name .. " " .. str_gsub(str_gsub(def.help, "\\", "\\\\"), "\n", "\\n")
    out[#out + 1] = "# TYPE " .. name .. " " .. def.type
    local byname = all[name]
    if byname then
      for _, labels in ipairs(sorted_keys(byname)) do
        local e = byname[labels]
        if def.type == "histogram" then
          local sep = labels == "" and "" or ","
          local total = 0
          for i = 1, #def.buckets + 1 do
            total = total + (e.counts[i] or 0)
            out[#out + 1] = name .. "_bucket{" .. labels .. sep .. 'le="' .. number(def.buckets[i] or math_huge)
              .. '"} ' .. number(total)
          end
          local braces = labels == "" and "" or "{" .. labels .. "}"
          out[#out + 1] = name .. "_sum" .. braces .. " " .. number(e.sum)
          out[#out + 1] = name .. "_count" .. braces .. " " .. number(e.count)
        else
          out[#out + 1] = name .. (labels == "" and "" or "{" .. labels .. "}") .. " " .. number(e.value)
        end
      end
    end
  end
  return tbl_concat(out, "\n") .. "\n"
end

--- reset(): forgets every value (in this process, or in the shared dict).
function _M.reset()
  local d = dict
  if d == nil then d = decide() end
  if d then d:flush_all() end
  series = {}
end

return _M
