--- The trigger: DynamoDB Streams records → EventBridge, as the original
-- Node.js/Python examples of this design publish them.
--
--   local result = require("dynlog.pipeline.trigger").handle(c, batch)
--   -- batch = {Records = {...}} as Lambda delivers it (typed NewImage)
--   -- result = {batchItemFailures = {{itemIdentifier = <SequenceNumber>}, ...}}
--
-- INSERT and MODIFY records whose pk ends in "#stream" (and the INSERT of
-- a stream's tombstone, as a deletion: see deletion_detail) are grouped by log
-- and published in order, to bus "dynamodb-log" with Source "dynamodb-log"
-- and DetailType "stream changes". Detail: {"log", "key": {"pk", "sk"},
-- "type", "payload"}; when that is longer than 10240 bytes, {"log", "key",
-- "type", "partial": true, "payload": {"id"}} instead, and the handler
-- reads the rest from the log. The payload is the stored one, at the schema
-- version it was written in: upcasters apply where events are read (get,
-- query, and so the handler; c:upcast for a detail), never here.
-- After those original fields, dynlog's own: "appended_at" (milliseconds
-- since the epoch) and "meta" (the event's metadata), each when the event
-- has it. The partial form keeps appended_at, and meta when the partial
-- detail with it still fits (else meta is left out too: it is in the log).
-- The PutEvents entry's Time is appended_at (else the ULID's time, for
-- events written before dynlog kept it), and its TraceHeader the
-- metadata's trace_id.
--
-- Numbers in the detail are the stream record's N text, digit for digit:
-- the image is read with numbers = "exact", so a number no Lua number holds
-- exactly (beyond 2^53 on LuaJIT, beyond 64 bits or a double's digits on
-- Lua 5.4) is a dynlog.number, which JSON encoding writes as its own text.
local core = require "dynlog.core"
local envelope = require "dynlog.client.envelope"
local eventkey = require "dynlog.client.eventkey"
local logger = require "dynlog.logger"
local options = require "dynlog.base.options"

local ipairs, pcall, tonumber, tostring, type = ipairs, pcall, tonumber, tostring, type
local is_event, is_tombstone, parse_key = eventkey.is_event, eventkey.is_tombstone, eventkey.parse
local json_encode, unmarshal_item = core.json_encode, core.unmarshal_item

local HANDLE = options.known{ "bus", "source", "detail_type", "max_detail_bytes", "log" }

local _M = {
  BUS = "dynamodb-log",
  SOURCE = "dynamodb-log",
  DETAIL_TYPE = "stream changes",
  MAX_DETAIL_BYTES = 10240,
  -- The field of a replayed event's detail that names its replay, as
  -- EventBridge's own replays name theirs in the envelope.
  REPLAY_NAME = "replay-name",
}

local PUBLISHED = { INSERT = true, MODIFY = true }

-- The log of an event item: its log attribute, else the one in its key
-- (nil for an item written by other means whose key names none).
local function log_of(item)
  if type(item.log) == "string" then return item.log end
  return (parse_key(item.pk))
end

-- A field of the detail; a field the item lacks is left out, as it was
-- when the detail was a table.
local function field(name, value, first)
  if value == nil then return "" end
  return (first and '"' or ',"') .. name .. '":' .. json_encode(value)
end

-- The fields in the order of the original examples' detail, whatever the
-- hash order of a Lua table: the same event always gives the same bytes.
local function detail_text(head, partial, payload, tail)
  return head .. (partial and ',"partial":true' or "") .. field("payload", payload) .. tail .. "}"
end

-- dynlog's fields after the original ones (dynlog.client.envelope).
local function time_field(item)
  local t = item[envelope.TIME]
  if type(t) ~= "number" and not core.is_number(t) then return "" end
  return field(envelope.TIME, t)
end

local function meta_field(item)
  local m = item[envelope.META]
  if type(m) ~= "table" then return "" end
  return field(envelope.META, m)
end

-- The replay marker: a replayed event's detail ends with
-- "replay-name": <the replay's name>, so that its consumers can tell it from
-- a live one ("" for a live event).
local function replay_field(name)
  if name == nil then return "" end
  return field(_M.REPLAY_NAME, name)
end

--- The detail JSON of one event item, shortened to the partial form when
-- the whole would exceed max_bytes. replay_name (optional): the name of the
-- replay that publishes it again, the last field of every form.
function _M.detail(item, max_bytes, replay_name)
  local head = "{" .. field("log", log_of(item), true) .. ',"key":{' .. field("pk", item.pk, true)
    .. field("sk", item.sk) .. "}" .. field("type", item.type)
  max_bytes = max_bytes or _M.MAX_DETAIL_BYTES
  local time, meta, replay = time_field(item), meta_field(item), replay_field(replay_name)
  local whole = detail_text(head, false, item.payload, time .. meta .. replay)
  if #whole <= max_bytes then return whole end
  local payload = item.payload
  -- dynlog's own events always hold payload.id; an item written by other
  -- means may not, and its id is then the one in its key.
  local id = type(payload) == "table" and payload.id
  if not id then
    local _
    _, id = parse_key(item.pk)
  end
  local partial = detail_text(head, true, { id = id }, time .. meta .. replay)
  if #partial <= max_bytes then return partial end
  return detail_text(head, true, { id = id }, time .. replay)
end

-- The PutEvents entry's Time (epoch seconds) and TraceHeader of an event.
-- An event written before dynlog kept appended_at has the time of its
-- ULID, if its sort key is one.
local function entry_time(item)
  local t = tonumber(tostring(item[envelope.TIME]))
  if not t and type(item.sk) == "string" then t = core.ulid_decode(item.sk) end
  return t and t / 1000
end

local function trace_header(item)
  local m = item[envelope.META]
  local trace = type(m) == "table" and m.trace_id
  if type(trace) == "string" and trace ~= "" and #trace <= envelope.MAX_TRACE_ID then return trace end
end

--- The PutEvents entry of one event item (for c:publish): opts bus, source,
-- detail_type, max_detail_bytes as for handle; replay_name, the replay
-- marker of a replayed event (see detail).
function _M.entry(item, opts)
  opts = opts or {}
  return {
    bus = opts.bus or _M.BUS, source = opts.source or _M.SOURCE,
    detail_type = opts.detail_type or _M.DETAIL_TYPE,
    detail = is_tombstone(item) and _M.deletion_detail(item, opts.replay_name)
      or _M.detail(item, opts.max_detail_bytes, opts.replay_name),
    time = entry_time(item), trace_header = trace_header(item),
  }
end

--- The detail JSON of a stream's deletion, from its tombstone item: the
-- fields of an event's detail for the stream's key (key.sk: the sort key of
-- the last event the stream had, left out when it had none), then
-- "deleted": true (and the replay marker, when replay_name is given). It
-- carries no type: no event handler is called for it.
function _M.deletion_detail(tomb, replay_name)
  return "{" .. field("log", tomb.log, true) .. ',"key":{' .. field("pk", tomb.stream, true)
    .. field("sk", tomb.last) .. "}" .. field("payload", { id = tomb.id }) .. ',"deleted":true'
    .. replay_field(replay_name) .. "}"
end

-- The event item of a record, or nil when the record is not one to publish,
-- or false, message when its image cannot be read. An INSERT without its
-- new image means a stream of the wrong view type: say so (once per batch)
-- rather than publish nothing in silence.
local function event_item(record, say)
  if not PUBLISHED[record.eventName] then return nil end
  local image = record.dynamodb and record.dynamodb.NewImage
  if type(image) ~= "table" then
    if say then
      say("warn", "trigger: stream records carry no NewImage (the table's stream view type is "
        .. tostring(record.dynamodb and record.dynamodb.StreamViewType)
        .. "; it must be NEW_IMAGE or NEW_AND_OLD_IMAGES)")
    end
    return nil
  end
  local item, _, message = unmarshal_item(image, "exact")
  if item == nil then return false, message end
  -- A tombstone written (INSERT) is a stream deleted: one deletion event.
  if record.eventName == "INSERT" and is_tombstone(item) then return item end
  if not is_event(item) then return nil end
  return item
end

local function sequence_number(record)
  return record.dynamodb and record.dynamodb.SequenceNumber
end

-- Records grouped by log, in order of first appearance; each entry keeps
-- the position of its record in the batch. Also the position of the first
-- record whose image could not be read: it is not published, and it and
-- every record after it are reported as failures.
local function group(records, opts, say)
  local groups, by_log = {}, {}
  local warn = say
  local unreadable
  for position, record in ipairs(records) do
    local item, message = event_item(record, warn)
    if not item and warn and record.dynamodb and record.dynamodb.NewImage == nil
        and PUBLISHED[record.eventName] then
      warn = nil -- once per batch
    end
    if item == false then
      say("error", "trigger: record " .. tostring(sequence_number(record))
        .. " has a NewImage that cannot be read: " .. tostring(message))
      unreadable = unreadable or position
    end
    if item then
      local log = log_of(item) or false -- false: the items whose log nothing names
      local g = by_log[log]
      if not g then
        g = { entries = {}, positions = {} }
        by_log[log] = g
        groups[#groups + 1] = g
      end
      g.entries[#g.entries + 1] = _M.entry(item, opts)
      g.positions[#g.positions + 1] = position
    end
  end
  return groups, unreadable
end

--- handle(c, batch [, opts]) -> {batchItemFailures = {...}}
-- opts: bus, source, detail_type, max_detail_bytes, log (a function called
-- as log(level, message) for failures; default dynlog.logger).
-- On failure, the list names the first record that could not be published
-- and every record after it, so a retry from there skips nothing; it is
-- empty when everything was published.
function _M.handle(c, batch, opts)
  options.check(opts, HANDLE, "trigger.handle")
  opts = opts or {}
  local say = opts.log or logger.log -- the logger's function: "log" is an event log's name here
  local records = type(batch) == "table" and batch.Records or {}
  local groups, first_failed = group(records, opts, say)
  for _, g in ipairs(groups) do
    local ok, results, err = pcall(c.publish, c, g.entries, { ordered = true })
    if not ok then
      if not first_failed or g.positions[1] < first_failed then first_failed = g.positions[1] end
      say("error", "trigger: publish raised: " .. tostring(results))
    elseif not results then
      local per_entry = err and err.results or {}
      for j, position in ipairs(g.positions) do
        if not per_entry[j] then
          if not first_failed or position < first_failed then first_failed = position end
          break
        end
      end
      say("error", "trigger: " .. tostring(err))
    end
  end
  -- An array even when empty: Lambda reads {"batchItemFailures": {}} as a
  -- malformed response, and so would any Lambda-shaped host.
  local failures = core.array()
  if first_failed then
    for position = first_failed, #records do
      failures[#failures + 1] = { itemIdentifier = sequence_number(records[position]) }
    end
  end
  return { batchItemFailures = failures }
end

return _M
