-- What an event carries beside type and payload: appended_at and meta, on
-- DynamoDB Local, from the append through the stream and the trigger to a
-- read model.
local core = require "dynlog.core"
local ddb = require "spec.support.ddb"
local dynlog = require "dynlog"
local handler = require "dynlog.handler"
local json = require "dynlog.json"
local server = require "spec.support.server"
local stream = require "spec.support.stream"
local trigger = require "dynlog.trigger"

local function now_ms() return math.floor(core.now() * 1000) end

-- A moment between two appends, and clear of both by a few milliseconds.
local function mark()
  core.sleep(0.02)
  local t = now_ms()
  core.sleep(0.02)
  return t
end

local function types(list)
  local out = {}
  for i, ev in ipairs(list) do out[i] = ev.payload.n end
  return out
end

-- Every event of a query_page run, page after page.
local function all_pages(c, opts)
  local out, pages = {}, 0
  local cursor
  repeat
    local o = { cursor = cursor }
    for k, v in pairs(opts) do o[k] = v end
    local page = assert(c:query_page("t", "1", o))
    pages = pages + 1
    for _, ev in ipairs(page.items) do out[#out + 1] = ev end
    cursor = page.cursor
  until not cursor
  return out, pages
end

for _, mode in ipairs({ "ulid", "version" }) do
  describe("event time, " .. mode .. " mode", function()
    local c, t1, t2, t0, t3

    setup(function()
      c = ddb.ready_client({ sort_key = mode })
      t0 = now_ms()
      for n = 1, 3 do assert(c:append("t", "1", "e", { n = n })) end
      t1 = mark()
      assert(c:append_batch("t", "1", { { type = "e", payload = { n = 4 } }, { type = "e", payload = { n = 5 } } }))
      assert(c:append_many({ { log = "t", id = "1", type = "e", payload = { n = 6 } } }))
      t2 = mark()
      for n = 7, 9 do assert(c:append("t", "1", "e", { n = n })) end
      t3 = now_ms()
    end)

    it("records appended_at, milliseconds of the wall clock, in every append path", function()
      local evs = assert(assert(c:query("t", "1")):all())
      assert.are.equal(9, #evs)
      for i, ev in ipairs(evs) do
        assert.is_number(ev.appended_at)
        assert.is_true(ev.appended_at >= t0 and ev.appended_at <= t3, "event " .. i)
        if i > 1 then assert.is_true(ev.appended_at >= evs[i - 1].appended_at) end
      end
      assert.are.equal(evs[4].appended_at, evs[5].appended_at) -- one batch, one time
      assert.are.same(evs[9], assert(c:head("t", "1")))
    end)

    it("query takes since (inclusive) and till (exclusive), in ms or RFC 3339", function()
      assert.are.same({ 4, 5, 6 }, types(assert(c:query("t", "1", { since = t1, till = t2 })):all()))
      assert.are.same({ 7, 8, 9 }, types(assert(c:query("t", "1", { since = t2 })):all()))
      assert.are.same({ 1, 2, 3 }, types(assert(c:query("t", "1", { till = t1 })):all()))
      assert.are.same({ 6, 5, 4 }, types(assert(c:query("t", "1", { since = t1, till = t2, reverse = true })):all()))
      assert.are.same({ 4, 5 }, types(assert(c:query("t", "1", { since = t1, till = t2, limit = 2 })):all()))
      local text = os.date("!%Y-%m-%dT%H:%M:%S", math.floor(t1 / 1000)) .. string.format(".%03dZ", t1 % 1000)
      assert.are.same({ 4, 5, 6, 7, 8, 9 }, types(assert(c:query("t", "1", { since = text })):all()))
      -- with sort-key bounds too, the narrower of each wins
      local all = assert(c:query("t", "1")):all()
      assert.are.same({ 5, 6 }, types(assert(c:query("t", "1", { since = t1, till = t2, after = all[4].sk })):all()))
      assert.are.same({ 4 }, types(assert(c:query("t", "1", { since = t1, before = all[5].sk })):all()))
      -- empty ranges are empty
      assert.are.same({}, assert(c:query("t", "1", { since = t2, till = t1 })):all())
      assert.are.same({}, assert(c:query("t", "1", { since = t3 + 60000 })):all())
    end)

    it("query_page pages across the edges of a time range, one event a page", function()
      local evs, pages = all_pages(c, { since = t1, till = t2, page_size = 1 })
      assert.are.same({ 4, 5, 6 }, types(evs))
      assert.are.equal(3, pages)
      evs = all_pages(c, { since = t1, till = t2, page_size = 2, reverse = true })
      assert.are.same({ 6, 5, 4 }, types(evs))
      evs = all_pages(c, { since = t2, page_size = 2 })
      assert.are.same({ 7, 8, 9 }, types(evs))
      -- the iterator over small DynamoDB pages, some of them empty after the filter
      assert.are.same({ 4, 5, 6 }, types(assert(c:query("t", "1", { since = t1, till = t2, page_size = 1 })):all()))
    end)

    it("raises for a time that is neither ms nor RFC 3339, at the caller's line", function()
      local line = debug.getinfo(1, "l").currentline + 1
      local ok, err = pcall(function() local _ = c:query("t", "1", { since = "yesterday" }) end)
      assert.is_false(ok)
      assert.matches("envelope_spec.lua:" .. line .. ": since must be milliseconds since the epoch or an RFC 3339",
        err, 1, true)
      assert.error_matches(function() return c:query_page("t", "1", { till = {} }) end, "till must be")
    end)
  end)
end

describe("event time of kept sort keys", function()
  it("a kept ULID gives appended_at its own time; a kept version gives none", function()
    local c = ddb.ready_client()
    local sk = core.ulid_encode(1700000000123, string.rep("\1", 10))
    assert(c:append_many({ { log = "t", id = "1", type = "e", sk = sk } }))
    assert.are.equal(1700000000123, assert(c:get("t", "1", sk)).appended_at)
    -- the same list again: the identical event is there already
    local keys = assert(c:append_many({ { log = "t", id = "1", type = "e", sk = sk } }))
    assert.is_true(keys[1].existing)
    local v = ddb.ready_client({ sort_key = "version" })
    assert(v:append_many({ { log = "t", id = "1", type = "e", sk = 1 } }))
    assert.is_nil(assert(v:get("t", "1", 1)).appended_at)
    assert.is_true(assert(v:append_many({ { log = "t", id = "1", type = "e", sk = 1 } }))[1].existing)
    -- outside every time range in version mode, found by its ULID in ulid mode
    assert.are.same({}, assert(v:query("t", "1", { since = 0 })):all())
    assert.are.equal(1, #assert(c:query("t", "1", { since = 1700000000123, till = 1700000000124 })):all())
    -- a restore keeps the time it is given, and only with the sort key
    assert(v:append_many({ { log = "t", id = "1", type = "e", sk = 2, appended_at = 1600000000000 } }))
    assert.are.equal(1600000000000, assert(v:get("t", "1", 2)).appended_at)
    assert.are.equal(2, assert(v:query("t", "1", { till = 1600000000001 }):all())[1].sk)
    assert.error_matches(function()
      local _ = v:append_many({ { log = "t", id = "1", type = "e", appended_at = 1 } })
    end, "events%[1%]: appended_at is kept only with sk")
    local _, err = v:append_many({ { log = "t", id = "1", type = "e", sk = 3, appended_at = -1 } })
    assert.matches("appended_at must be milliseconds since the epoch", err[1].message)
  end)
end)

describe("event metadata", function()
  local c, v
  setup(function()
    c = ddb.ready_client()
    v = ddb.ready_client({ sort_key = "version" })
  end)

  it("is stored by append, append_batch and append_many and returned by query, get and head", function()
    for _, cl in ipairs({ c, v }) do
      local meta = { correlation_id = "req-1", causation_id = "cmd-7", schema_version = 2, trace_id = "Root=1-x",
                     user = { name = "ops", roles = { "a", "b" } }, dry = false }
      local k1 = assert(cl:append("m", "1", "e", { x = 1 }, { meta = meta }))
      assert(cl:append_batch("m", "1", { { type = "e", meta = { correlation_id = "req-2" } }, { type = "e" } }))
      assert(cl:append_many({ { log = "m", id = "1", type = "e", meta = { schema_version = 3 } } }))
      local evs = assert(cl:query("m", "1"):all())
      assert.are.same(meta, evs[1].meta)
      assert.are.same({ correlation_id = "req-2" }, evs[2].meta)
      assert.is_nil(evs[3].meta) -- none given, none stored
      assert.are.same({ schema_version = 3 }, evs[4].meta)
      assert.are.same(meta, assert(cl:get("m", "1", k1.sk)).meta)
      assert.are.same({ schema_version = 3 }, assert(cl:head("m", "1")).meta)
    end
  end)

  it("leaves pk, sk, type, log and payload as the original tools read them", function()
    local key = assert(c:append("py", "7", "signup", { name = "Ada" }, { meta = { correlation_id = "c" } }))
    -- GetItem as the original Python handler makes it: boto3's typed JSON.
    local resp = assert(c:call("GetItem", { TableName = c.table,
      Key = { pk = { S = "py#7#stream" }, sk = { S = key.sk } } }))
    local item = resp.Item
    assert.are.same({ S = "py#7#stream" }, item.pk)
    assert.are.same({ S = key.sk }, item.sk)
    assert.are.same({ S = "signup" }, item.type)
    assert.are.same({ S = "py" }, item.log)
    assert.are.same({ M = { id = { S = "7" }, name = { S = "Ada" } } }, item.payload)
    assert.matches("^%d+$", item.appended_at.N)
    assert.are.same({ M = { correlation_id = { S = "c" } } }, item.meta)
    local names = {}
    for k in pairs(item) do names[#names + 1] = k end
    table.sort(names)
    assert.are.same({ "appended_at", "log", "meta", "payload", "pk", "sk", "type" }, names)
  end)

  it("is checked: known keys by type, free keys JSON-like; nothing is written on a refusal", function()
    local bad = {
      { { correlation_id = 5 }, "meta.correlation_id must be a non%-empty string" },
      { { causation_id = "" }, "meta.causation_id must be a non%-empty string" },
      { { schema_version = 1.5 }, "meta.schema_version must be a positive integer" },
      { { schema_version = 0 }, "meta.schema_version must be a positive integer" },
      { { trace_id = string.rep("r", 501) }, "meta.trace_id is 501 bytes" },
      { { f = dynlog.binary("x") }, "meta.f is a binary or set, not a JSON value" },
      { { f = { g = print } }, "meta.f.g is a function, not a JSON value" },
      { { [1] = "x" }, "meta keys must be non%-empty strings" },
    }
    for i, case in ipairs(bad) do
      local key, err = c:append("bad", "1", "e", {}, { meta = case[1] })
      assert.is_nil(key, "case " .. i)
      assert.are.equal("invalid_argument", err.code)
      assert.matches(case[2], err.message)
      local _, berr = c:append_batch("bad", "1", { { type = "e" }, { type = "e", meta = case[1] } })
      assert.matches("^events%[2%]: " .. case[2], berr.message)
      local _, merr = c:append_many({ { log = "bad", id = "1", type = "e", meta = case[1] } })
      assert.matches("^events%[1%]: " .. case[2], merr[1].message)
    end
    assert.are.same({}, assert(c:query("bad", "1")):all())
    assert.error_matches(function() return c:append("bad", "1", "e", {}, { meta = "x" }) end,
      "meta must be a table, got string")
    assert.error_matches(function() return c:append("bad", "1", "e", {}, { metadata = {} }) end,
      'append: unknown option "metadata"')
  end)

  it("counts toward the 400 KB item size", function()
    local payload = { blob = string.rep("p", 300 * 1024) }
    assert(c:append("big", "1", "e", payload))
    local meta = { blob = string.rep("m", 120 * 1024) }
    local key, err = c:append("big", "1", "e", payload, { meta = meta })
    assert.is_nil(key)
    assert.are.equal("too_large", err.code)
    local _, verr = v:append("big", "1", "e", payload, { meta = meta })
    assert.are.equal("too_large", verr.code)
    local _, berr = c:append_batch("big", "1", { { type = "e", payload = payload, meta = meta } })
    assert.are.equal("too_large", berr.code)
    assert.are.equal(1, #assert(c:query("big", "1")):all())
  end)

  it("caused_by: the metadata of a follow-up event", function()
    local ev = { pk = "orders#9#stream", sk = "01JD0000000000000000000000",
                 meta = { correlation_id = "req-1", trace_id = "Root=1-a", user = "x" } }
    assert.are.same({ causation_id = "orders#9#stream/01JD0000000000000000000000", correlation_id = "req-1",
                      trace_id = "Root=1-a", schema_version = 2 }, dynlog.caused_by(ev, { schema_version = 2 }))
    -- the first event of a conversation correlates with itself
    assert.are.same({ causation_id = "orders#9#stream/3", correlation_id = "orders#9#stream/3" },
      dynlog.caused_by({ pk = "orders#9#stream", sk = 3 }))
    assert.error_matches(function() dynlog.caused_by({}) end, "caused_by: ev must be an event")
  end)
end)

describe("the envelope through the pipeline", function()
  local c, srv
  after_each(function() if srv then srv.stop() end srv = nil end)

  local function published()
    local out = {}
    for _, req in ipairs(srv.requests()) do
      for _, e in ipairs(json.decode(req.body).Entries) do out[#out + 1] = e end
    end
    return out
  end

  it("carries time and meta in the detail, Time and TraceHeader, to a handler that follows up", function()
    c = ddb.ready_client()
    local core_table = c.table .. "-core"
    assert(handler.create_table(c, core_table))
    local t0 = now_ms()
    assert(c:append("orders", "9", "placed", { total = 3 },
      { meta = { correlation_id = "req-1", trace_id = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
                 schema_version = 2 } }))
    assert(c:append("orders", "10", "placed", { blob = string.rep("b", 11000) },
      { meta = { correlation_id = "req-2" } }))
    srv = server.start({ { method = "POST", path = "/", responses = { { putevents = true } } } })
    local tc = ddb.client({ table = c.table, events_endpoint = srv.url, sleep = function() end })
    assert.are.same({}, trigger.handle(tc, { Records = stream.all_records(c) }).batchItemFailures)
    local entries = published()
    assert.are.equal(2, #entries)
    local e = entries[1]
    -- the original fields first, in their order; then appended_at and meta
    assert.matches('^{"log":"orders","key":{"pk":"orders#9#stream","sk":"%w+"},"type":"placed",'
      .. '"payload":{[^}]*},"appended_at":%d+,"meta":{', e.Detail)
    local d = json.decode(e.Detail)
    assert.is_true(d.appended_at >= t0 and d.appended_at <= now_ms())
    assert.are.same({ correlation_id = "req-1", trace_id = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
                      schema_version = 2 }, d.meta)
    assert.are.equal(d.appended_at / 1000, e.Time)
    assert.are.equal("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1", e.TraceHeader)
    -- too large: the partial form, with appended_at and meta after it
    local p = entries[2]
    assert.matches('^{"log":"orders","key":{[^}]*},"type":"placed","partial":true,"payload":{"id":"10"},'
      .. '"appended_at":%d+,"meta":{"correlation_id":"req%-2"}}$', p.Detail)
    assert.is_nil(p.TraceHeader)

    -- the handler sees ev.meta, and appends a follow-up caused by the event
    local seen
    local spec = { table = core_table, handlers = {
      placed = function(state, ev)
        seen = ev
        assert(c:append("shipments", "9", "requested", { order = "9" }, { meta = dynlog.caused_by(ev) }))
        state = state or {}
        state.total, state.correlation = ev.payload.total, ev.meta.correlation_id
        return state
      end,
    } }
    local event = { version = "0", id = "1", ["detail-type"] = e.DetailType, source = e.Source,
                    time = "2026-11-25T12:00:00Z", detail = d }
    assert(handler.project(c, event, spec))
    assert.are.equal("req-1", seen.meta.correlation_id)
    local model = assert(c:call("GetItem", { TableName = core_table, ConsistentRead = true,
      Key = { pk = { S = "orders#9" }, sk = { S = "orders#9" } } })).Item
    assert.are.equal("req-1", model.correlation.S)
    local follow = assert(c:head("shipments", "9"))
    assert.are.same({ causation_id = "orders#9#stream/" .. d.key.sk, correlation_id = "req-1",
                      trace_id = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1" }, follow.meta)
  end)

  it("trigger.entry: Time from appended_at, else from the ULID of an older event", function()
    local sk = core.ulid_encode(1700000000123, string.rep("\1", 10))
    local older = { pk = "o#1#stream", sk = sk, type = "t", log = "o", payload = { id = "1" } }
    assert.are.equal(1700000000.123, trigger.entry(older).time)
    assert.is_nil(trigger.entry(older).trace_header)
    older.appended_at, older.meta = 1700000005000, { trace_id = "Root=1-b" }
    local entry = trigger.entry(older, { bus = "b" })
    assert.are.same({ 1700000005, "Root=1-b", "b", "dynamodb-log" },
      { entry.time, entry.trace_header, entry.bus, entry.source })
    assert.is_nil(trigger.entry({ pk = "o#1#stream", sk = 3, type = "t", payload = { id = "1" } }).time)
  end)

  it("keeps meta out of a partial detail it would not fit in", function()
    local item = { pk = "o#1#stream", sk = 1, type = "t", log = "o", payload = { id = "1", b = string.rep("x", 300) },
                   appended_at = 1796040000123, meta = { note = string.rep("n", 300) } }
    assert.are.equal('{"log":"o","key":{"pk":"o#1#stream","sk":1},"type":"t","partial":true,"payload":{"id":"1"},'
      .. '"appended_at":1796040000123}', trigger.detail(item, 200))
  end)
end)
