-- The trigger, fed real records from DynamoDB Local's stream after real
-- appends, publishing to a loopback PutEvents endpoint.
local core = require "dynlog.core"
local ddb = require "spec.support.ddb"
local dynlog = require "dynlog"
local json = require "dynlog.json"
local server = require "spec.support.server"
local stream = require "spec.support.stream"
local trigger = require "dynlog.trigger"

local function published(srv)
  local out = {}
  for _, req in ipairs(srv.requests()) do
    for _, e in ipairs(json.decode(req.body).Entries) do out[#out + 1] = e end
  end
  return out
end

describe("dynlog.trigger", function()
  local c, records, srv
  local big = string.rep("b", 11000)

  setup(function()
    c = ddb.ready_client()
    assert(c:append("users", "1", "signup", { name = "Ada" }))
    assert(c:append("orders", "9", "created", { total = 3 }))
    assert(c:append("users", "1", "addPhoneNumber", { phoneNumber = "+1 555" }))
    assert(c:append("users", "2", "signup", { name = "Grace", bio = big }))
    -- Not an event: no "#stream" suffix. And a REMOVE of one.
    assert(c:call("PutItem", { TableName = c.table, Item = { pk = { S = "meta#x" }, sk = { S = "1" } } }))
    local doomed = assert(c:append("users", "3", "signup", {}))
    assert(c:call("DeleteItem", { TableName = c.table, Key = { pk = { S = doomed.pk }, sk = { S = doomed.sk } } }))
    records = stream.all_records(c)
  end)

  after_each(function() if srv then srv.stop() end srv = nil end)

  local function with_bus(responses)
    srv = server.start({ { method = "POST", path = "/", responses = responses or { { putevents = true } } } })
    return ddb.client({ table = c.table, events_endpoint = srv.url, sleep = function() end })
  end

  it("reads real INSERT and REMOVE records from the stream", function()
    local names = {}
    for _, r in ipairs(records) do names[#names + 1] = r.eventName end
    assert.are.same({ "INSERT", "INSERT", "INSERT", "INSERT", "INSERT", "INSERT", "REMOVE" }, names)
  end)

  it("publishes event items grouped by log, in order, with the original contract", function()
    local tc = with_bus()
    local result = trigger.handle(tc, { Records = records })
    assert.are.same({}, result.batchItemFailures)
    local entries = published(srv)
    assert.are.equal(5, #entries)
    local seen = {}
    for _, e in ipairs(entries) do
      assert.are.equal("dynamodb-log", e.EventBusName)
      assert.are.equal("dynamodb-log", e.Source)
      assert.are.equal("stream changes", e.DetailType)
      local d = json.decode(e.Detail)
      seen[#seen + 1] = d.log .. ":" .. d.type
      assert.are.equal(d.log .. "#", d.key.pk:sub(1, #d.log + 1))
      assert.is_string(d.key.sk)
    end
    -- users first (it appears first), in their order; then orders.
    assert.are.same({ "users:signup", "users:addPhoneNumber", "users:signup", "users:signup", "orders:created" },
      seen)
    local first = json.decode(entries[1].Detail)
    assert.are.same({ id = "1", name = "Ada" }, first.payload)
    assert.is_nil(first.partial)
    -- The fields always in the original detail's order, so equal events give equal bytes.
    assert.matches('^{"log":"users","key":{"pk":"users#1#stream","sk":"%w+"},"type":"signup","payload":{',
      entries[1].Detail)
  end)

  it("takes the partial form's id from the key for an item without payload.id", function()
    local item = { pk = "users#77#stream", sk = 5, type = "imported", payload = { blob = string.rep("z", 100) } }
    assert.are.equal('{"log":"users","key":{"pk":"users#77#stream","sk":5},"type":"imported","partial":true,'
      .. '"payload":{"id":"77"}}', trigger.detail(item, 50))
  end)

  it("ends a replayed event's detail with the replay marker, in every form, within the limit", function()
    local item = { pk = "users#77#stream", sk = 5, type = "renamed", log = "users", appended_at = 1796040000123,
                   payload = { id = "77", name = "Ada" }, meta = { trace_id = string.rep("t", 40) } }
    local live = trigger.detail(item)
    assert.are.equal(live:sub(1, -2) .. ',"replay-name":"r1"}', trigger.detail(item, nil, "r1"))
    assert.are.equal(live:sub(1, -2) .. ',"replay-name":"r1"}', trigger.entry(item, { replay_name = "r1" }).detail)
    assert.are.equal(live, trigger.entry(item).detail)
    -- partial with meta, partial without: the marker stays, the limit holds
    local whole = #trigger.detail(item, nil, "r1")
    local least = #trigger.detail(item, 1, "r1") -- the partial form without meta
    assert.is_true(least < whole - 40)
    for _, max in ipairs({ whole - 1, least }) do
      local text = trigger.detail(item, max, "r1")
      local d = json.decode(text)
      assert.is_true(d.partial)
      assert.are.equal("r1", d["replay-name"])
      assert.is_true(#text <= max, #text .. " > " .. max)
    end
    -- a deletion's detail too
    local tomb = { pk = "users#77#tombstone", sk = "tombstone", log = "users", id = "77",
                   stream = "users#77#stream", last = 5, state = "deleted" }
    assert.are.equal(trigger.deletion_detail(tomb):sub(1, -2) .. ',"replay-name":"r1"}',
      trigger.entry(tomb, { replay_name = "r1" }).detail)
  end)

  it("sends the partial form when the detail would exceed 10240 bytes", function()
    local tc = with_bus()
    trigger.handle(tc, { Records = records })
    local partial
    for _, e in ipairs(published(srv)) do
      local d = json.decode(e.Detail)
      if d.key.pk == "users#2#stream" then partial = { text = e.Detail, detail = d } end
    end
    assert.is_true(partial.detail.partial)
    assert.are.same({ id = "2" }, partial.detail.payload)
    assert.are.equal("signup", partial.detail.type)
    assert.is_true(#partial.text < 10240)
  end)

  it("takes bus, source, detail type and the detail limit as options", function()
    local tc = with_bus()
    trigger.handle(tc, { Records = records }, { bus = "b", source = "s", detail_type = "t", max_detail_bytes = 20 })
    for _, e in ipairs(published(srv)) do
      assert.are.same({ "b", "s", "t" }, { e.EventBusName, e.Source, e.DetailType })
      assert.is_true(json.decode(e.Detail).partial)
    end
  end)

  it("names the first record that failed and every record after it", function()
    -- The first call carries the users (4 entries); its third fails for good.
    local tc = with_bus({ { putevents = true, fail = { { index = 3, code = "MalformedDetail" } } },
                          { putevents = true } })
    local logged = {}
    local result = trigger.handle(tc, { Records = records },
      { log = function(level, message) logged[#logged + 1] = level .. " " .. message end })
    assert.matches("^error trigger: publish_failed: 1 of 4 entries", logged[1])
    local ids = {}
    for _, f in ipairs(result.batchItemFailures) do ids[#ids + 1] = f.itemIdentifier end
    -- The third users entry is the fourth record (users#2 signup): it and
    -- every record after it, whatever their log, are to be retried.
    local expected = {}
    for i = 4, #records do expected[#expected + 1] = records[i].dynamodb.SequenceNumber end
    assert.are.same(expected, ids)
  end)

  it("names the earliest record of a log whose publish raised, even after a later failure", function()
    -- users: records 1, 3, 4; orders: record 2. The users call fails at its
    -- second entry (record 3); publishing orders raises.
    local tc = with_bus({ { putevents = true, fail = { { index = 2, code = "MalformedDetail" } } } })
    local real_publish = tc.publish
    tc.publish = function(self, entries, opts)
      if entries[1].detail:find('"log":"orders"', 1, true) then error("publish blew up") end
      return real_publish(self, entries, opts)
    end
    local result = trigger.handle(tc, { Records = records }, { log = function() end })
    assert.are.equal(records[2].dynamodb.SequenceNumber, result.batchItemFailures[1].itemIdentifier)
    assert.are.equal(#records - 1, #result.batchItemFailures)
  end)

  it("keeps a detail of exactly max_detail_bytes whole, and shortens one a byte longer", function()
    local item = { pk = "users#5#stream", sk = "s", type = "t", log = "users", payload = { id = "5", pad = "" } }
    local bare = #trigger.detail(item)
    item.payload.pad = string.rep("x", 10240 - bare)
    assert.are.equal(10240, #trigger.detail(item))
    assert.is_nil(json.decode(trigger.detail(item)).partial)
    item.payload.pad = item.payload.pad .. "x"
    assert.is_true(json.decode(trigger.detail(item)).partial)
  end)

  it("warns, once per batch, when records come without their new image", function()
    local tc = with_bus()
    local lines = {}
    local keys_only = {}
    for i, r in ipairs(records) do
      keys_only[i] = { eventName = r.eventName, dynamodb = { Keys = r.dynamodb.Keys, StreamViewType = "KEYS_ONLY",
                                                             SequenceNumber = r.dynamodb.SequenceNumber } }
    end
    local result = trigger.handle(tc, { Records = keys_only },
      { log = function(level, message) lines[#lines + 1] = level .. " " .. message end })
    assert.are.same({}, result.batchItemFailures)
    assert.are.equal(0, #srv.requests())
    assert.are.equal(1, #lines)
    assert.matches("warn trigger: stream records carry no NewImage .*KEYS_ONLY", lines[1])
  end)

  it("returns an empty list for a batch with nothing to publish, an array in JSON", function()
    local tc = with_bus()
    local result = trigger.handle(tc, { Records = {} })
    assert.are.same({ batchItemFailures = {} }, result)
    -- Lambda takes {"batchItemFailures": {}} for a malformed response.
    assert.are.equal('{"batchItemFailures":[]}', json.encode(result))
    assert.are.equal(0, #srv.requests())
  end)

  it("publishes a MODIFY record with the item's new image", function()
    local own = ddb.ready_client()
    local key = assert(own:append("users", "4", "signup", { name = "Old" }))
    assert(own:call("UpdateItem", { TableName = own.table,
      Key = { pk = { S = key.pk }, sk = { S = key.sk } },
      UpdateExpression = "SET payload.#n = :n", ExpressionAttributeNames = { ["#n"] = "name" },
      ExpressionAttributeValues = { [":n"] = { S = "New" } } }))
    local own_records = stream.all_records(own)
    assert.are.same({ "INSERT", "MODIFY" }, { own_records[1].eventName, own_records[2].eventName })
    local tc = with_bus()
    assert.are.equal(0, #trigger.handle(tc, { Records = { own_records[2] } }).batchItemFailures)
    local entries = published(srv)
    assert.are.equal(1, #entries)
    local d = json.decode(entries[1].Detail)
    assert.are.same({ pk = key.pk, sk = key.sk }, d.key)
    assert.are.same({ id = "4", name = "New" }, d.payload)
  end)

  it("writes every N of the new image as its exact digits in the detail, in Lua 5.4 and LuaJIT", function()
    local own = ddb.ready_client()
    local numbers = {
      big = "123456789012345678901234567890",     -- beyond 64 bits
      over53 = "9007199254740993",                -- 2^53 + 1: no double holds it
      precise = "0.1000000000000000055511151231257827",
      price = "19.99", count = "3", negative = "-12345678901234567890.5",
    }
    local payload = { id = { S = "1" } }
    for name, text in pairs(numbers) do payload[name] = { N = text } end
    assert(own:call("PutItem", { TableName = own.table, Item = {
      pk = { S = "ledger#1#stream" }, sk = { S = dynlog.ulid() }, type = { S = "posted" }, log = { S = "ledger" },
      payload = { M = payload } } }))
    local tc = with_bus()
    assert.are.same({}, trigger.handle(tc, { Records = stream.all_records(own) }).batchItemFailures)
    local text = published(srv)[1].Detail
    for name, digits in pairs(numbers) do
      local found = text:match('"' .. name .. '":([^,}]+)')
      assert.are.equal(digits, found, name .. " in " .. text)
    end
    local exact = assert(core.json_decode(text)).payload
    assert.are.equal(3, exact.count)
  end)

  it("raises at the caller's line on an unknown option, naming the nearest known one", function()
    local tc = with_bus()
    local ok, message = pcall(function()
      local result = trigger.handle(tc, { Records = records }, { max_detail_byte = 20 })
      return result
    end)
    assert.is_false(ok)
    assert.matches('^spec/ddb/trigger_spec%.lua:%d+: trigger.handle: unknown option "max_detail_byte" '
      .. '%(did you mean "max_detail_bytes"%?%)', message)
    assert.are.equal(debug.getinfo(1, "l").currentline - 6, tonumber(message:match(":(%d+):")))
    assert.are.equal(0, #srv.requests(), "nothing published")
  end)

  it("names a record whose new image cannot be read, and logs why, rather than skip it", function()
    local tc = with_bus()
    local broken = { eventName = "INSERT", dynamodb = { SequenceNumber = "broken-1", NewImage = {
      pk = { S = "users#9#stream" }, sk = { S = "x" }, payload = { M = { n = { N = "not a number" } } } } } }
    local batch = { records[1], broken, records[2] }
    local lines = {}
    local result = trigger.handle(tc, { Records = batch },
      { log = function(level, message) lines[#lines + 1] = level .. " " .. message end })
    assert.are.same({ "broken-1", records[2].dynamodb.SequenceNumber },
      { result.batchItemFailures[1].itemIdentifier, result.batchItemFailures[2].itemIdentifier })
    assert.are.equal(2, #result.batchItemFailures)
    assert.matches('error trigger: record broken%-1 has a NewImage that cannot be read: .*not a DynamoDB number',
      lines[1])
  end)

  it("publishes a log's calls one after the other, and nothing after a call that failed", function()
    -- 12 events of one log: two calls. The first fails for good, so the
    -- second is never sent, and every record from the failed one is named.
    local own = ddb.ready_client()
    for i = 1, 12 do assert(own:append("users", "5", "step", { n = i })) end
    local own_records = stream.all_records(own)
    local tc = with_bus({ { putevents = true, fail = { { index = 4, code = "MalformedDetail" } } },
                          { putevents = true } })
    local result = trigger.handle(tc, { Records = own_records }, { log = function() end })
    assert.are.equal(1, #srv.requests())
    assert.are.equal(9, #result.batchItemFailures)
    assert.are.equal(own_records[4].dynamodb.SequenceNumber, result.batchItemFailures[1].itemIdentifier)
  end)
end)
