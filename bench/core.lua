-- Micro-benchmarks of the C core through Lua: prints ns per call.
--
--   make bench      (or: LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build54/?.so;;' lua5.4 bench/core.lua)
local core = require "dynlog.core"
local json = require "dynlog.json"
local sigv4 = require "dynlog.sigv4"

local clock = os.clock

-- Runs f n times, best of 5 rounds, and returns ns per call.
local function measure(n, f)
  local best = math.huge
  for _ = 1, 5 do
    local started = clock()
    for _ = 1, n do f() end
    local elapsed = clock() - started
    if elapsed < best then best = elapsed end
  end
  return best / n * 1e9
end

local body = json.encode({
  TableName = "events",
  Item = { pk = { S = "users#42#stream" }, sk = { S = core.ulid() }, type = { S = "signup" },
           payload = { S = string.rep("x", 900) } },
  ConditionExpression = "attribute_not_exists(pk)",
})
local request = {
  method = "POST", url = "https://dynamodb.us-east-1.amazonaws.com/", body = body,
  region = "us-east-1", service = "dynamodb", time = 1764000000,
  credentials = { access_key_id = "AKIDEXAMPLE", secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" },
  headers = { ["Content-Type"] = "application/x-amz-json-1.0", ["X-Amz-Target"] = "DynamoDB_20120810.PutItem" },
}
local decoded = json.decode(body)

local rows = {
  { "ulid() through Lua", measure(200000, core.ulid) },
  { "ulid_decode() through Lua", measure(200000, function() core.ulid_decode("01ARYZ6S41TSV4RRFFQ69G5FAV") end) },
  { ("SigV4, PutItem with a %d-byte body, cached key"):format(#body),
    measure(20000, function() sigv4.sign(request) end) },
  { ("JSON encode, %d bytes"):format(#body), measure(50000, function() json.encode(decoded) end) },
  { ("JSON decode, %d bytes"):format(#body), measure(50000, function() json.decode(body) end) },
}

print(("%-50s %12s"):format("benchmark", "ns per call"))
for _, row in ipairs(rows) do
  print(("%-50s %12.0f"):format(row[1], row[2]))
end
