--- The output of the `dynlog` command: JSON with sorted keys, aligned
-- tables of events, and failures told on stderr with a hint of what to do.
local core = require "dynlog.core"
local envelope = require "dynlog.client.envelope"
local eventkey = require "dynlog.client.eventkey"

local ipairs, pairs, setmetatable, tostring, type = ipairs, pairs, setmetatable, tostring, type
local os_date = os.date
local math_floor, math_max = math.floor, math.max
local str_byte, str_find, str_format, str_gsub, str_rep =
  string.byte, string.find, string.format, string.gsub, string.rep
local tbl_concat, tbl_sort = table.concat, table.sort
local json_encode = core.json_encode
local is_array, is_binary, is_set = core.is_array, core.is_binary, core.is_set

local _M = {}

---------------------------------------------------------------------------
-- Output helpers
---------------------------------------------------------------------------

-- JSON with object keys in sorted order, so the same event always prints
-- the same way (dynlog.core's encoder follows the table's own order).
local function encode(v)
  if type(v) ~= "table" or is_set(v) or is_binary(v) then return json_encode(v) end
  local n, count, string_keys = #v, 0, true
  for k in pairs(v) do
    count = count + 1
    if type(k) ~= "string" then string_keys = false end
  end
  local parts = {}
  if is_array(v) or (n > 0 and n == count) then
    for i = 1, n do parts[i] = encode(v[i]) end
    return "[" .. tbl_concat(parts, ",") .. "]"
  end
  if not string_keys then return json_encode(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  tbl_sort(keys)
  for i, k in ipairs(keys) do parts[i] = json_encode(k) .. ":" .. encode(v[k]) end
  return "{" .. tbl_concat(parts, ",") .. "}"
end
_M.encode = encode

-- Columns count characters, not bytes: UTF-8 continuation bytes take no room.
local function width(s)
  local _, continuation = str_gsub(s, "[\128-\191]", "")
  return #s - continuation
end

-- Control characters would break the columns (and the terminal).
local function printable(s)
  return (str_gsub(tostring(s), "%c", function(c) return str_format("\\x%02x", str_byte(c)) end))
end

-- An aligned table on a stream: the first `hold` rows are kept to size the
-- columns, later rows are printed as they come, in those widths (or wider).
local Table = {}
Table.__index = Table

local function new_table(out, columns, hold)
  return setmetatable({ out = out, columns = columns, hold = hold or 200, rows = {}, widths = false }, Table)
end

function Table:_line(cells)
  local parts, last = {}, #cells
  for i, cell in ipairs(cells) do
    if i < last then
      parts[i] = cell .. str_rep(" ", self.widths[i] - width(cell))
    else
      parts[i] = cell
    end
  end
  self.out:write(tbl_concat(parts, "  "), "\n")
end

function Table:flush()
  if not self.widths then
    if #self.rows == 0 then return end
    local widths = {}
    for i, name in ipairs(self.columns) do widths[i] = width(name) end
    for _, row in ipairs(self.rows) do
      for i, cell in ipairs(row) do widths[i] = math_max(widths[i], width(cell)) end
    end
    self.widths = widths
    self:_line(self.columns)
    for _, row in ipairs(self.rows) do self:_line(row) end
    self.rows = {}
  end
  self.out:flush()
end

function Table:add(row)
  for i, cell in ipairs(row) do row[i] = printable(cell) end
  if self.widths then return self:_line(row) end
  self.rows[#self.rows + 1] = row
  if #self.rows >= self.hold then self:flush() end
end

-- "2026-11-25T12:00:00.123Z" of an event: its ULID's time in ulid mode, its
-- appended_at in version mode (as time ranges read it), or "" when it has none.
local function time_text(ev, sort_key)
  local ms = envelope.time_of(ev, sort_key)
  if not ms then return "" end
  return os_date("!%Y-%m-%dT%H:%M:%S", math_floor(ms / 1000)) .. str_format(".%03dZ", ms % 1000)
end

local function id_of(ev)
  local _, id = eventkey.parse(ev.pk)
  return id or ""
end

-- The printer of events: JSON lines, or an aligned table.
local function event_printer(ctx, with_stream, hold)
  if ctx.json then
    return {
      add = function(_, ev) ctx.out:write(encode(ev), "\n") end,
      flush = function() ctx.out:flush() end,
    }
  end
  local columns = {}
  if with_stream then columns[#columns + 1] = "LOG" columns[#columns + 1] = "ID" end
  columns[#columns + 1] = "SK"
  columns[#columns + 1] = "TIME"
  columns[#columns + 1] = "TYPE"
  columns[#columns + 1] = "PAYLOAD"
  local t = new_table(ctx.out, columns, hold)
  return {
    add = function(_, ev)
      local row = {}
      if with_stream then row[#row + 1] = tostring(ev.log) row[#row + 1] = id_of(ev) end
      row[#row + 1] = tostring(ev.sk)
      row[#row + 1] = time_text(ev, ctx.sort_key)
      row[#row + 1] = tostring(ev.type)
      row[#row + 1] = encode(ev.payload)
      t:add(row)
    end,
    flush = function() t:flush() end,
  }
end
_M.printable = printable
_M.new_table = new_table
_M.event_printer = event_printer

---------------------------------------------------------------------------
-- Errors
---------------------------------------------------------------------------

-- A URL as it may be shown: without any user:password@ part.
local function shown_url(url)
  return (str_gsub(tostring(url), "^(%a[%w+.-]*://)[^/@]*@", "%1"))
end

local function hint_for(ctx, err)
  local code = err.code
  local c = ctx.client
  local where = c and (" at " .. shown_url(c.url) .. " in " .. tostring(c.region)) or ""
  if code == "ResourceNotFoundException" then
    return "table " .. tostring(ctx.table) .. " does not exist" .. where
      .. ": create it with `dynlog tables create` (or check --table, --region and --endpoint)"
  elseif code == "config" then
    if str_find(err.message, "region", 1, true) then return "set AWS_REGION or pass --region" end
    if str_find(err.message, "endpoint", 1, true) then
      return "check --endpoint, --events-endpoint and the AWS_ENDPOINT_URL* variables"
    end
    return "check the AWS_* variables, --profile and ~/.aws/config"
  elseif code == "credentials" or code == "UnrecognizedClientException" or code == "InvalidSignatureException"
      or code == "MissingAuthenticationTokenException" or code == "ExpiredTokenException" then
    return "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or choose a profile with AWS_PROFILE or --profile"
  elseif code == "AccessDeniedException" then
    return "the credentials in use may not do this; check their IAM policy"
  elseif code == "tls" then
    return "no trusted TLS connection to the service" .. where
      .. "; check --endpoint and the CAs trusted: --cafile (AWS_CA_BUNDLE)"
  elseif code == "timeout" then
    return "no answer from the service" .. where .. " within --timeout (default 10 s) in any of --max-attempts"
      .. " (default 8); check --endpoint (AWS_ENDPOINT_URL_DYNAMODB) and --region"
  elseif code == "connection" and str_find(tostring(err.message), "not HTTP", 1, true) then
    return "something that is not the service answered" .. where .. "; check --endpoint (AWS_ENDPOINT_URL_DYNAMODB)"
  elseif code == "connection" then
    return "could not reach the service" .. where .. "; check --endpoint (AWS_ENDPOINT_URL_DYNAMODB) and --region"
  elseif code == "conflict" then
    return "another event took that position; read the stream with `dynlog head LOG ID` and try again"
  elseif code == "schema_mismatch" then
    return "the table's sort key decides the mode: check --sort-key (DYNLOG_SORT_KEY)"
  elseif code == "no_stream" then
    return "enable it with `dynlog tables create`, which turns the stream on for an existing table"
  elseif code == "publish_failed" then
    return "check --events-endpoint (AWS_ENDPOINT_URL_EVENTBRIDGE), --bus and the credentials"
  elseif code == "invalid_argument" or code == "too_large" then
    return "see `dynlog " .. tostring(ctx.command) .. " --help`"
  elseif err.retryable then
    return "the service is busy or failing; try again later"
  end
end

--- fail(ctx, err [, hint]) -> 1, after telling what failed on stderr.
local function fail(ctx, err, hint)
  ctx.err:write("dynlog: ", tostring(err.code), ": ", tostring(err.message), "\n")
  hint = hint or hint_for(ctx, err)
  if hint then ctx.err:write("  hint: ", hint, "\n") end
  return 1
end
_M.shown_url = shown_url
_M.hint_for = hint_for
_M.fail = fail

return _M
