-- `dynlog replay` in feed order: bin/dynlog as a subprocess against DynamoDB
-- Local (the feed filled as the indexer fills it) and a loopback EventBridge.
local cli = require "spec.support.cli"
local ddb = require "spec.support.ddb"
local fill_feed = require "spec.support.fill_feed"
local json = require "dynlog.json"
local server = require "spec.support.server"
local socket = require "socket"
local trigger = require "dynlog.trigger"

local dynlog, cli_env = cli.dynlog, cli.env

local function ok_server()
  return server.start({ { method = "POST", path = "/", responses = { { putevents = true } } } })
end

-- The entries of every PutEvents call the server got, in order, and the
-- calls' sizes.
local function published(srv)
  local entries, calls = {}, {}
  for _, req in ipairs(srv.requests()) do
    assert.are.equal("AWSEvents.PutEvents", req.headers["x-amz-target"])
    local list = json.decode(req.body).Entries
    calls[#calls + 1] = #list
    for _, entry in ipairs(list) do entries[#entries + 1] = entry end
  end
  return entries, calls
end

local function details(entries)
  local list = {}
  for i, entry in ipairs(entries) do list[i] = json.decode(entry.Detail) end
  return list
end

local function keys_of(list)
  local out = {}
  for i, d in ipairs(list) do out[i] = (d.key or d).pk .. "/" .. tostring((d.key or d).sk) end
  return out
end

describe("dynlog replay in feed order", function()
  local c, e, srv
  -- the events in the order the feed holds them
  local order = {}
  local mark_ms

  setup(function()
    c = ddb.ready_client()
    assert(c:create_feed_table())
    e = cli_env(c.table)
    -- Streams written in turn; the feed takes them in another order still,
    -- as an indexer that saw the shards in that order would.
    local written = {}
    for i = 1, 6 do
      written[#written + 1] = assert(c:append("users", "u" .. (i % 3), i <= 3 and "signup" or "rename",
        { name = "n" .. i }))
      written[#written + 1] = assert(c:append("orders", "o" .. (i % 2), i <= 2 and "created" or "paid",
        { total = i }))
      if i == 3 then
        socket.sleep(0.05)
        mark_ms = math.floor(socket.gettime() * 1000)
        socket.sleep(0.05)
      end
    end
    -- feed order: the orders log's events first, then the users log's, each
    -- stream's events in sort-key order
    local events = {}
    for _, key in ipairs(written) do
      if key.pk:find("^orders") then events[#events + 1] = key end
    end
    for _, key in ipairs(written) do
      if key.pk:find("^users") then events[#events + 1] = key end
    end
    for i, key in ipairs(events) do
      local log, id = key.pk:match("^([^#]+)#([^#]+)")
      events[i] = assert(c:get(log, id, key.sk, { numbers = "exact" }))
    end
    fill_feed.commit(c, events)
    order = events
  end)

  before_each(function() srv = ok_server() end)
  after_each(function() srv.stop() end)

  it("publishes the feed in its order, across streams, with the trigger's detail and the replay marker", function()
    local status, out, err = dynlog("replay --json --name all-1 --events-endpoint " .. srv.url, e)
    assert.are.equal(0, status, err)
    local summary = json.decode(out)
    assert.are.same({ published = 12, bus = "dynamodb-log", name = "all-1", first = 1, position = 12, head = 12,
                      complete = true }, summary)
    local entries = published(srv)
    assert.are.equal(12, #entries)
    for i, ev in ipairs(order) do
      local detail = json.decode(entries[i].Detail)
      -- every field of the trigger's detail, unchanged, and the marker
      local expected = json.decode(trigger.detail(ev))
      expected["replay-name"] = "all-1"
      assert.are.same(expected, detail)
      assert.are.equal("dynamodb-log", entries[i].Source)
      assert.are.equal("stream changes", entries[i].DetailType)
    end
    -- the marker is the detail's last field, after the trigger's own
    for _, entry in ipairs(entries) do
      assert.are.equal(',"replay-name":"all-1"}', entry.Detail:sub(-#',"replay-name":"all-1"}'))
    end
  end)

  it("without --name: a generated marker, and no position stored", function()
    local status, out, err = dynlog("replay --json --events-endpoint " .. srv.url, e)
    assert.are.equal(0, status, err)
    local summary = json.decode(out)
    assert.matches("^replay%-[0-9a-z]+$", summary.name)
    for _, d in ipairs(details(published(srv))) do assert.are.equal(summary.name, d["replay-name"]) end
    local resp = assert(c:call("GetItem", { TableName = c.feed_table, ConsistentRead = true,
      Key = require("dynlog.client.feed").named_key("replay", summary.name) }))
    assert.is_nil(resp.Item)
  end)

  it("--logs, --types, --since and --until filter, in feed order", function()
    local status, out, err = dynlog("replay --json --logs users --types rename --events-endpoint " .. srv.url, e)
    assert.are.equal(0, status, err)
    assert.are.equal(3, json.decode(out).published)
    local want = {}
    for _, ev in ipairs(order) do
      if ev.log == "users" and ev.type == "rename" then want[#want + 1] = ev end
    end
    assert.are.same(keys_of(want), keys_of(details(published(srv))))

    srv.stop()
    srv = ok_server()
    status, out, err = dynlog(("replay --json --logs orders,users --types created,signup --until %.3f"
      .. " --events-endpoint %s"):format(mark_ms / 1000, srv.url), e)
    assert.are.equal(0, status, err)
    -- before the mark: orders created (2), users signup (3)
    assert.are.equal(5, json.decode(out).published)
    want = {}
    for _, ev in ipairs(order) do
      if ev.type == "created" or ev.type == "signup" then want[#want + 1] = ev end
    end
    assert.are.same(keys_of(want), keys_of(details(published(srv))))

    srv.stop()
    srv = ok_server()
    status, out, err = dynlog(("replay --json --log orders --since %.3f --events-endpoint %s")
      :format(mark_ms / 1000, srv.url), e)
    assert.are.equal(0, status, err)
    assert.are.equal(3, json.decode(out).published)
    for _, d in ipairs(details(published(srv))) do assert.are.equal("paid", d.type) end
  end)

  it("--from starts at a position; --scan scans the table as before, without the marker", function()
    local status, out, err = dynlog("replay --json --from 11 --events-endpoint " .. srv.url, e)
    assert.are.equal(0, status, err)
    assert.are.equal(2, json.decode(out).published)
    assert.are.same(keys_of({ order[11], order[12] }), keys_of(details(published(srv))))

    srv.stop()
    srv = ok_server()
    status, out, err = dynlog("replay --json --scan --events-endpoint " .. srv.url, e)
    assert.are.equal(0, status, err)
    assert.are.same({ published = 12, scanned = 12, bus = "dynamodb-log" }, json.decode(out))
    for _, d in ipairs(details(published(srv))) do assert.is_nil(d["replay-name"]) end
  end)

  it("resumes a named replay after an interruption: each event published once", function()
    srv.stop()
    -- one call of 10 accepted, then EventBridge refuses the next
    srv = server.start({ { method = "POST", path = "/", responses = {
      { putevents = true },
      { status = 400, body = { __type = "ValidationException", message = "refused" } } } } })
    local status, _, err = dynlog("replay --name resume-1 --events-endpoint " .. srv.url, e)
    assert.are.equal(1, status, err)
    assert.matches("dynlog: replay stopped after publishing 10 event(s); run it again with --name resume-1 to"
      .. " continue", err, 1, true)
    -- the server saw two calls; it accepted the first only
    local sent, calls = published(srv)
    assert.are.same({ 10, 2 }, calls)
    local first = { (table.unpack or unpack)(sent, 1, 10) } -- luacheck: ignore 143
    -- its position: the last event EventBridge accepted
    local feed = require "dynlog.client.feed"
    local item = assert(c:call("GetItem", { TableName = c.feed_table, ConsistentRead = true,
      Key = feed.named_key("replay", "resume-1") })).Item
    assert.are.equal("10", item.position.N)

    srv.stop()
    srv = ok_server()
    local out
    status, out, err = dynlog("replay --json --name resume-1 --events-endpoint " .. srv.url, e)
    assert.are.equal(0, status, err)
    assert.are.equal(2, json.decode(out).published)
    local second = published(srv)
    local all = details(first)
    for _, d in ipairs(details(second)) do all[#all + 1] = d end
    assert.are.same(keys_of(order), keys_of(all))

    -- a third run has nothing left
    srv.stop()
    srv = ok_server()
    status, out, err = dynlog("replay --json --name resume-1 --events-endpoint " .. srv.url, e)
    assert.are.equal(0, status, err)
    assert.are.equal(0, json.decode(out).published)
    assert.are.equal(0, #published(srv))
  end)

  it("stops on SIGTERM after a call, its position stored; run again, it publishes the rest once", function()
    local h = cli.spawn("replay --rate 4 --name term-1 --events-endpoint " .. srv.url, e)
    local status, err
    local ok = pcall(function()
      local deadline = socket.gettime() + 20
      while #srv.requests() == 0 and socket.gettime() < deadline do socket.sleep(0.02) end
      h.kill("TERM")
      status = h.wait(20)
    end)
    err = h.stderr()
    h.cleanup()
    assert.is_true(ok)
    assert.are.equal(1, status, err)
    local at = tonumber(err:match("replay term%-1 interrupted by SIGTERM at position (%d+); run it again with"
      .. " %-%-name term%-1 to continue"))
    assert.is_number(at, err)
    local first = details(published(srv))
    assert.are.equal(at, #first)
    assert.is_true(at >= 4 and at < 12, err)

    srv.stop()
    srv = ok_server()
    local out
    status, out, err = dynlog("replay --json --name term-1 --events-endpoint " .. srv.url, e)
    assert.are.equal(0, status, err)
    assert.are.equal(12 - at, json.decode(out).published)
    for _, d in ipairs(details(published(srv))) do first[#first + 1] = d end
    assert.are.same(keys_of(order), keys_of(first))
  end)

  it("leaves out the events erased from the log since the feed took them", function()
    -- erase the entry at position 2 as the indexer does after a deletion
    local feed = require "dynlog.client.feed"
    assert(c:call("UpdateItem", { TableName = c.feed_table, Key = feed.entry_key(2),
      UpdateExpression = "REMOVE payload, meta SET erased = :t",
      ExpressionAttributeValues = { [":t"] = { BOOL = true } } }))
    local status, out, err = dynlog("replay --json --events-endpoint " .. srv.url, e)
    assert(c:call("UpdateItem", { TableName = c.feed_table, Key = feed.entry_key(2),
      UpdateExpression = "SET payload = :p REMOVE erased",
      ExpressionAttributeValues = { [":p"] = require("dynlog.core").marshal(order[2].payload) } }))
    assert.are.equal(0, status, err)
    assert.are.equal(11, json.decode(out).published)
    local want = {}
    for i, ev in ipairs(order) do if i ~= 2 then want[#want + 1] = ev end end
    assert.are.same(keys_of(want), keys_of(details(published(srv))))
  end)

  it("--rate paces the calls: never faster than N events a second", function()
    local started = socket.gettime()
    local status, out, err = dynlog("replay --json --rate 8 --events-endpoint " .. srv.url, e)
    local elapsed = socket.gettime() - started
    assert.are.equal(0, status, err)
    assert.are.equal(12, json.decode(out).published)
    local _, calls = published(srv)
    -- calls of at most 8 entries (a second's worth): the first burst of 8
    -- goes at once, the 4 left wait half a second
    assert.are.same({ 8, 4 }, calls)
    assert.is_true(elapsed >= 0.45, "12 events at 8/s took " .. elapsed .. " s")
  end)

  it("usage errors", function()
    for _, case in ipairs({
      { "replay --scan --name x", "--name and --from read the feed: leave out --scan" },
      { "replay --scan --feed", "--scan and --feed: give one of them" },
      { "replay --rate 0", "--rate must be a number above 0" },
      { "replay --from 0", "--from must be a feed position" },
      { "replay --logs a,,b", "--logs must be names separated by commas" },
      { "replay --name 'a#b'", "--name must be 1 to 200 characters without '#'" },
    }) do
      local status, _, err = dynlog(case[1], e)
      assert.are.equal(2, status, case[1])
      assert.matches(case[2], err, 1, true)
    end
  end)
end)

describe("dynlog replay without a feed", function()
  it("scans the table; --feed and --name say that there is no feed", function()
    local c = ddb.ready_client()
    local e = cli_env(c.table)
    assert(c:append("users", "1", "signup", { name = "Ada" }))
    local srv = ok_server()
    local status, out, err = dynlog("replay --json --events-endpoint " .. srv.url, e)
    assert.are.equal(0, status, err)
    assert.are.same({ published = 1, scanned = 1, bus = "dynamodb-log" }, json.decode(out))
    for _, args in ipairs({ "replay --feed", "replay --name x" }) do
      status, _, err = dynlog(args .. " --events-endpoint " .. srv.url, e)
      assert.are.equal(1, status, err)
      assert.matches("the table has no feed (" .. c.table .. "-feed)", err, 1, true)
    end
    srv.stop()
  end)
end)
