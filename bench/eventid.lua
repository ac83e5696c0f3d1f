-- Appends with and without event ids against DynamoDB Local: the write
-- units each costs (ConsumedCapacity, ReturnConsumedCapacity = "TOTAL")
-- and appends per second, one request in flight.
--   lua5.4 bench/eventid.lua PORT COUNT     (bench/eventid.sh runs it)
-- Prints one JSON object per measurement.
local dynlog = require "dynlog"
local core = require "dynlog.core"
local curl = require "dynlog.transport.curl"

local gettime = require("socket").gettime

local port, count = arg[1], tonumber(arg[2] or "300")

-- The write units of every answer, summed: PutItem answers one
-- ConsumedCapacity, TransactWriteItems a list of them.
local units = 0
local http = curl.new()
local transport = { request = function(_, req)
  local res, err = http:request(req)
  if res and res.status == 200 then
    local doc = core.json_decode(res.body)
    local consumed = type(doc) == "table" and doc.ConsumedCapacity
    if type(consumed) == "table" then
      if consumed.CapacityUnits then consumed = { consumed } end
      for _, cc in ipairs(consumed) do units = units + (cc.CapacityUnits or 0) end
    end
  end
  return res, err
end }

local function client(mode)
  local c = dynlog.new{
    table = "bench-eventid-" .. mode, sort_key = mode, endpoint = "http://127.0.0.1:" .. port,
    region = "us-east-1", transport = transport,
    credentials = { access_key_id = "AKIDBENCH", secret_access_key = "bench-secret-key" },
  }
  -- every write asks DynamoDB what it cost
  local encode = c._encode
  c._encode = function(self, params)
    if params.Item or params.TransactItems then params.ReturnConsumedCapacity = "TOTAL" end
    return encode(self, params)
  end
  assert(c:create_table())
  return c
end

local payload = { note = string.rep("x", 200), n = 0 }

local function measure(c, mode, with_ids)
  units = 0
  local t0 = gettime()
  for i = 1, count do
    payload.n = i
    local opts = with_ids and { event_id = "cmd-" .. i } or nil
    assert(c:append("bench", "s" .. (i % 50), "tick", payload, opts))
  end
  local seconds = gettime() - t0
  local result = { mode = mode, event_ids = with_ids, appends = count, wcu = units,
                   wcu_per_append = units / count, appends_per_second = count / seconds }
  -- a retry of each: found through its event id, nothing written
  if with_ids then
    units = 0
    t0 = gettime()
    for i = 1, count do
      payload.n = i
      local key = assert(c:append("bench", "s" .. (i % 50), "tick", payload, { event_id = "cmd-" .. i }))
      assert(key.existing)
    end
    result.retry_wcu_per_append = units / count
    result.retries_per_second = count / (gettime() - t0)
  end
  print(core.json_encode(result))
end

for _, mode in ipairs({ "ulid", "version" }) do
  local c = client(mode)
  -- warm-up (the server's JIT), not counted
  for i = 1, 200 do assert(c:append("warm", "w" .. (i % 10), "tick", payload, { event_id = "w" .. i })) end
  for i = 1, 200 do assert(c:append("warm", "w" .. (i % 10), "tick", payload)) end
  measure(c, mode, false)
  measure(c, mode, true)
end
