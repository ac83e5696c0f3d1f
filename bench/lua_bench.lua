-- Lua side of bench/run.sh (Lua 5.4 and LuaJIT): ULID, SigV4, marshalling.
-- Prints one JSON object per line (see bench/c/cbench.c).
--   lua_bench.lua RUNTIME_LABEL BODY_FILE
local core = require "dynlog.core"
local sigv4 = require "dynlog.sigv4"
local cjson = require "cjson"

local label, body_file = arg[1], arg[2]
-- CPU time (as cbench): the wall clock of a shared machine counts the time
-- other processes ran. Rounds last milliseconds, so os.clock's resolution is enough.
local clock = os.clock
local ROUNDS = 7

local function report(bench, impl, n, f, extra)
  f(math.floor(n / 10) + 1) -- warm-up (and JIT compilation)
  local r = {}
  for i = 1, ROUNDS do
    local t0 = clock()
    f(n)
    r[i] = (clock() - t0) / n * 1e9
  end
  table.sort(r)
  local line = ('{"bench":"%s","impl":"%s","unit":"ns","best":%.1f,"median":%.1f,"worst":%.1f,"iters":%d,"rounds":%d')
    :format(bench, impl .. " (" .. label .. ")", r[1], r[math.floor((ROUNDS + 1) / 2)], r[ROUNDS], n, ROUNDS)
  if extra then
    for k, v in pairs(extra) do line = line .. (',"%s":%s'):format(k, tostring(v)) end
  end
  io.write(line, "}\n")
  io.flush()
  return r[1]
end

-- Like report, with the hashing floor (bench/c/lfloor.c) measured in the
-- same rounds: floor and f alternate, so that both see the same load, and the
-- row carries the floor's best and the ratio of the two bests (x_floor).
local function report_vs_floor(bench, impl, n, f, floor_fn)
  f(math.floor(n / 10) + 1)
  floor_fn(math.floor(n / 10) + 1)
  local r, fl = {}, {}
  for i = 1, ROUNDS do
    local t0 = clock()
    floor_fn(n)
    fl[i] = (clock() - t0) / n * 1e9
    t0 = clock()
    f(n)
    r[i] = (clock() - t0) / n * 1e9
  end
  table.sort(r)
  table.sort(fl)
  io.write(('{"bench":"%s","impl":"%s","unit":"ns","best":%.1f,"median":%.1f,"worst":%.1f,"iters":%d,"rounds":%d,'
    .. '"floor_best":%.1f,"x_floor":%.3f}\n'):format(bench, impl .. " (" .. label .. ")", r[1],
    r[math.floor((ROUNDS + 1) / 2)], r[ROUNDS], n, ROUNDS, fl[1], r[1] / fl[1]))
  io.flush()
end

-- ---- ULID ----
local ulid = core.ulid
report("ulid", "core.ulid()", 500000, function(n)
  local last
  for _ = 1, n do last = ulid() end
  return last
end)

-- ---- SigV4 ----
local f = assert(io.open(body_file, "rb"))
local body = f:read("a")
f:close()
local function request(secret)
  return {
    method = "POST", url = "https://dynamodb.us-east-1.amazonaws.com/", body = body,
    region = "us-east-1", service = "dynamodb", time = 1764000000,
    credentials = { access_key_id = "AKIDEXAMPLE", secret_access_key = secret },
    headers = { ["Content-Type"] = "application/x-amz-json-1.0", ["X-Amz-Target"] = "DynamoDB_20120810.PutItem" },
  }
end
local NSECRETS = 4096
local reqs = {}
for i = 0, NSECRETS - 1 do
  reqs[i] = request(("wJalrXUtnFEMI/K7MDENG+bPxRfi%012d"):format(i))
end
local signer = sigv4.new_signer()
local h = assert(signer:sign(reqs[0]))
io.stderr:write(label, ": ", h.Authorization, "\n")
-- The cached-key rows do what the client does for each request: build the
-- request (a new table, or the arguments of sign_post) from the service's
-- fields, the credentials and the clock, sign, and get the headers table
-- that goes to the transport.
local URL, CT, TARGET, OP = "https://dynamodb.us-east-1.amazonaws.com/", "application/x-amz-json-1.0",
  "DynamoDB_20120810.", "PutItem"
local creds0 = reqs[0].credentials
-- The floor of this very request (bench/c/lfloor.c), when run.sh built it.
local has_floor, benchfloor = pcall(require, "benchfloor")
local floor_fn
do
  local _, steps = core.sigv4_signer():sign(reqs[0], true)
  local creq_len, sts_len = #steps.canonical_request, #steps.string_to_sign
  if has_floor then
    floor_fn = function(n) benchfloor.cached(body, creq_len, sts_len, n) end
  else
    io.stderr:write(label, ": no benchfloor module: the Lua rows are compared with cbench's floor\n")
  end
end
local function report_cached(impl, n, run)
  if floor_fn then return report_vs_floor("sigv4_cached", impl, n, run, floor_fn) end
  return report("sigv4_cached", impl, n, run)
end
local floor = math.floor
local function now() return 1764000000.25 end
report_cached("dynlog.sigv4 sign{req}, table per call", 20000, function(n)
  for _ = 1, n do
    assert(signer:sign({ method = "POST", url = URL, body = body, region = "us-east-1", service = "dynamodb",
      credentials = creds0, time = floor(now()),
      headers = { ["Content-Type"] = CT, ["X-Amz-Target"] = TARGET .. OP } }))
  end
end)
local k = 1
report("sigv4_derived", "dynlog.sigv4 signer:sign", 10000, function(n)
  for _ = 1, n do
    assert(signer:sign(reqs[k % NSECRETS]))
    k = k + 1
  end
end)
local raw = core.sigv4_signer()
report_cached("core sign{req}, table per call", 20000, function(n)
  for _ = 1, n do
    raw:sign({ method = "POST", url = URL, body = body, region = "us-east-1", service = "dynamodb",
      credentials = creds0, time = floor(now()),
      headers = { ["Content-Type"] = CT, ["X-Amz-Target"] = TARGET .. OP } })
  end
end)
do -- sign_post gives what sign gives
  local a = raw:sign_post(URL, body, floor(now()), "us-east-1", "dynamodb", creds0, CT, TARGET .. OP)
  local b = raw:sign({ method = "POST", url = URL, body = body, region = "us-east-1", service = "dynamodb",
    credentials = creds0, time = floor(now()), headers = { ["Content-Type"] = CT, ["X-Amz-Target"] = TARGET .. OP } })
  for name, v in pairs(b) do assert(a[name] == v, name) end
  for name in pairs(a) do assert(b[name] ~= nil, name) end
end
report_cached("core sign_post(url, body, ...)", 20000, function(n)
  for _ = 1, n do
    raw:sign_post(URL, body, floor(now()), "us-east-1", "dynamodb", creds0, CT, TARGET .. OP)
  end
end)
local stats = signer:stats()
io.stderr:write(("%s: signer stats: derivations=%d cache_hits=%d\n"):format(label, stats.key_derivations,
  stats.key_cache_hits))

-- ---- marshalling ----
-- A realistic event: envelope + nested payload, ~3 KB of JSON.
local function event(i)
  local lines = {}
  for j = 1, 16 do
    lines[j] = { sku = ("SKU-%06d"):format(i * 10 + j), qty = j, price = 19.99 + j,
                 title = "Widget, blue, größe " .. j, tags = { "sale", "spring", "b2b" } }
  end
  return {
    stream = "orders#" .. i, seq = 1000000 + i, type = "order.placed", version = 3,
    at = "2025-11-24T16:00:00.123Z", id = "01KAWJ5W8G7Q2YV3D9N6RTE1HX",
    meta = { source = "checkout-svc", trace = "1-5f84c7a1-3c4d5e6f7a8b9c0d1e2f3a4b", ip = "203.0.113.7",
             user_agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)",
             retries = 0, sampled = true },
    payload = {
      customer = { id = 42, name = "Ada Lovelace", email = "ada@example.com",
                   address = { street = "12 Analytical Engine Rd", city = "London", zip = "NW1 6XE", country = "GB" } },
      lines = lines,
      totals = { net = 251.92, tax = 50.38, gross = 302.3, currency = "EUR", discount = 0 },
      notes = string.rep("Leave at the door. ", 6),
      flags = { "gift", "express" },
    },
  }
end
local ev = event(7)
local typed = { TableName = "events", Item = core.attribute_map(ev), ConditionExpression = "attribute_not_exists(pk)" }
local untyped = { TableName = "events", Item = ev, ConditionExpression = "attribute_not_exists(pk)" }
local av_text = core.json_encode(typed)
local cj_text = cjson.encode(untyped)
-- sanity: both round-trip to the same data
local back = core.json_decode(av_text, true)
assert(back.Item.payload.lines[3].sku == ev.payload.lines[3].sku and back.Item.seq == ev.seq)
assert(cjson.decode(cj_text).Item.payload.totals.gross == ev.payload.totals.gross)

local function mbs(bytes, best_ns) return ("%.1f"):format(bytes / best_ns * 1e3) end -- bytes/ns*1e3 = MB/s
local N = 2000
local function rep_codec(bench, impl, text, run)
  local best = report(bench, impl, N, run, { bytes = #text })
  io.write(('{"bench":"%s","impl":"%s","unit":"MB/s","best":%s,"bytes":%d}\n'):format(
    bench .. "_mbs", impl .. " (" .. label .. ")", mbs(#text, best), #text))
end
local enc, dec = core.json_encode, core.json_decode
rep_codec("marshal_encode", "dynlog AV json_encode", av_text, function(n) for _ = 1, n do enc(typed) end end)
rep_codec("marshal_encode", "cjson.encode untyped", cj_text, function(n) for _ = 1, n do cjson.encode(untyped) end end)
rep_codec("marshal_decode", "dynlog AV json_decode(unwrap)", av_text,
  function(n) for _ = 1, n do dec(av_text, true) end end)
rep_codec("marshal_decode", "cjson.decode untyped", cj_text, function(n) for _ = 1, n do cjson.decode(cj_text) end end)
rep_codec("marshal_encode", "dynlog json_encode untyped", cj_text, function(n) for _ = 1, n do enc(untyped) end end)
rep_codec("marshal_decode", "dynlog json_decode untyped", cj_text, function(n) for _ = 1, n do dec(cj_text) end end)
