-- The feed on DynamoDB Local: positions given once and dense, commits that
-- race (a stale head, events committed by another writer, an answer lost
-- after the commit), reads in feed order with filters and pages, events too
-- large to copy, a hole below the head, and the checks of the options.
local core = require "dynlog.core"
local ddb = require "spec.support.ddb"
local dynlog = require "dynlog"
local feed = require "dynlog.client.feed"
local support = require "spec.support.run"

local here, raised = support.here, support.raised

-- The events of the streams as feed.commit takes them (AttributeValues),
-- each stream in sort-key order, streams one after the other.
local function images(c, log, ids)
  local list = {}
  for _, id in ipairs(ids) do
    for ev in c:query(log, id) do
      local image = {}
      for k, v in pairs(ev) do image[k] = core.marshal(v) end
      list[#list + 1] = { image = image }
    end
  end
  return list
end

local function ready()
  local c = ddb.ready_client()
  assert(c:create_feed_table())
  return c
end

-- Every entry of the feed, read in pages of `size`.
local function read_everything(c, size, opts)
  local all, after = {}, 0
  while true do
    local o = { after = after, limit = size }
    for k, v in pairs(opts or {}) do o[k] = v end
    local events, last, head = assert(c:read_all(o))
    for _, ev in ipairs(events) do all[#all + 1] = ev end
    after = last
    if last == head then return all, head end
  end
end

describe("the feed", function()
  it("gives each event a position from 1, dense, in the order committed, and reads them back as query does", function()
    local c = ready()
    for i = 1, 3 do
      for n = 1, 25 do assert(c:append("users", "u" .. i, "signup", { n = n }, { meta = { i = i } })) end
    end
    local evs = images(c, "users", { "u1", "u2", "u3" })
    local positions = assert(feed.commit(c, evs))
    assert.equal(75, positions.added)
    for i = 1, 75 do assert.equal(i, positions[i]) end
    assert.equal(75, c:feed_head())

    local all = read_everything(c, 10)
    assert.equal(75, #all)
    local i = 0
    for _, id in ipairs({ "u1", "u2", "u3" }) do
      for ev in c:query("users", id) do
        i = i + 1
        local got = all[i]
        assert.equal(i, got.position)
        assert.equal(ev.pk, got.pk)
        assert.equal(ev.sk, got.sk)
        assert.equal(ev.type, got.type)
        assert.same(ev.payload, got.payload)
        assert.same(ev.meta, got.meta)
        assert.equal(ev.appended_at, got.appended_at)
        assert.is_nil(got.event_pk)
        assert.is_nil(got.indexed_at)
      end
    end
    assert.equal(i, 75)
    assert.equal(17, assert(c:feed_position(all[17].pk, all[17].sk)))
    assert.is_false(c:feed_position("users#nobody#stream", all[1].sk))
  end)

  it("gives an event committed again (a record delivered twice, a backfill) no second position", function()
    local c = ready()
    for n = 1, 60 do assert(c:append("orders", "o" .. (n % 4), "placed", { n = n })) end
    local evs = images(c, "orders", { "o0", "o1", "o2", "o3" })
    local first = assert(feed.commit(c, evs))
    -- The same events, in another order and twice within the call, from a
    -- writer whose head is stale.
    local again = {}
    for i = #evs, 1, -1 do again[#again + 1] = evs[i] end
    again[#again + 1] = evs[1]
    local second = assert(feed.commit(c, again, { head = 0 }))
    assert.equal(0, second.added)
    for i = 1, #evs do assert.equal(first[i], second[#evs - i + 1]) end
    assert.equal(first[1], second[#again])
    assert.equal(60, c:feed_head())
    assert.equal(60, #read_everything(c, 1000))
  end)

  it("lets writers race: the one with a stale head reads it again and commits after the other", function()
    local c = ready()
    for n = 1, 30 do assert(c:append("a", "x", "t", { n = n })) end
    for n = 1, 30 do assert(c:append("b", "y", "t", { n = n })) end
    local xs, ys = images(c, "a", { "x" }), images(c, "b", { "y" })
    local a_state, b_state = {}, {}
    -- Both know the empty head; b commits first, then a with its stale head,
    -- with ten of b's events among its own.
    assert(feed.commit(c, { xs[1] }, a_state))
    b_state.head = 1
    local bp = assert(feed.commit(c, ys, b_state))
    assert.equal(2, bp[1])
    local mixed = {}
    for i = 2, 30 do mixed[#mixed + 1] = xs[i] end
    for i = 1, 10 do mixed[#mixed + 1] = ys[i] end
    assert.equal(1, a_state.head) -- stale
    local ap = assert(feed.commit(c, mixed, a_state))
    assert.equal(29, ap.added)
    assert.equal(32, ap[1])
    for i = 1, 10 do assert.equal(bp[i], ap[29 + i]) end
    local all, head = read_everything(c, 7)
    assert.equal(60, head)
    assert.equal(60, #all)
    local seen = {}
    for i, ev in ipairs(all) do
      assert.equal(i, ev.position)
      local key = ev.pk .. "/" .. ev.sk
      assert.is_nil(seen[key])
      seen[key] = true
    end
  end)

  it("gives no second position when the answer to a commit that was applied is lost", function()
    local c = ready()
    for n = 1, 20 do assert(c:append("lost", "z", "t", { n = n })) end
    local evs = images(c, "lost", { "z" })
    local http = require("dynlog.transport.curl").new()
    local dropped = 0
    c.transport = { request = function(_, req)
      local res, err = http:request(req)
      if req.headers["X-Amz-Target"] == "DynamoDB_20120810.TransactWriteItems" and dropped == 0 and res
          and res.status == 200 then
        -- Applied, but the answer never arrives: and the client may not
        -- send it again under the same token either.
        dropped = dropped + 1
        return nil, dynlog.errors.new("timeout", "injected: the answer was lost", { retryable = false,
                                                                                    ambiguous = true })
      end
      return res, err
    end }
    local positions = assert(feed.commit(c, evs))
    assert.equal(1, dropped)
    for i = 1, 20 do assert.equal(i, positions[i]) end
    assert.equal(20, c:feed_head())
    assert.equal(20, #read_everything(c, 100))
  end)

  it("reads by log and type, returning the last position read so that a filtered read moves on", function()
    local c = ready()
    for n = 1, 12 do
      assert(c:append("users", "u", n % 3 == 0 and "rename" or "signup", { n = n }))
      assert(c:append("orders", "o", "placed", { n = n }))
    end
    local evs = {}
    local us, os_ = images(c, "users", { "u" }), images(c, "orders", { "o" })
    for i = 1, 12 do evs[#evs + 1] = us[i]; evs[#evs + 1] = os_[i] end
    assert(feed.commit(c, evs))

    local renames, last, head = assert(c:read_all{ types = { "rename" }, limit = 100 })
    assert.equal(4, #renames)
    assert.equal(24, last)
    assert.equal(24, head)
    for _, ev in ipairs(renames) do assert.equal("rename", ev.type) end
    assert.same({ 5, 11, 17, 23 }, { renames[1].position, renames[2].position, renames[3].position,
                                     renames[4].position })

    local two, l2 = assert(c:read_log("orders", { limit = 2 }))
    assert.equal(2, #two)
    assert.equal(4, l2)
    assert.same({ 2, 4 }, { two[1].position, two[2].position })
    local rest = assert(c:read_log("orders", { after = l2, limit = 100 }))
    assert.equal(10, #rest)
    assert.equal(6, rest[1].position)

    local none, l3 = assert(c:read_all{ logs = { "nothing" } })
    assert.equal(0, #none)
    assert.equal(24, l3)
    local empty, l4, h4 = assert(c:read_all{ after = 24 })
    assert.equal(0, #empty)
    assert.equal(24, l4)
    assert.equal(24, h4)
  end)

  it("reads an empty feed as empty, at position 0", function()
    local c = ready()
    local events, last, head = assert(c:read_all())
    assert.equal(0, #events)
    assert.equal(0, last)
    assert.equal(0, head)
  end)

  it("stores an event too large to copy as a reference and reads its payload from the log", function()
    local c = ready()
    local big = string.rep("x", 380 * 1024)
    assert(c:append("docs", "d", "uploaded", { body = big }))
    assert(c:append("docs", "d", "renamed", { name = "n" }))
    assert(feed.commit(c, images(c, "docs", { "d" })))
    local resp = assert(c:call("GetItem", { TableName = c.feed_table, Key = feed.entry_key(1) }))
    assert.same({ BOOL = true }, resp.Item.ref)
    assert.is_nil(resp.Item.payload)
    local events = assert(c:read_all())
    assert.equal(2, #events)
    assert.equal(big, events[1].payload.body)
    assert.is_nil(events[1].ref)
    assert.equal("n", events[2].payload.name)
  end)

  it("says so when an entry below the head is missing", function()
    local c = ready()
    for n = 1, 5 do assert(c:append("h", "h", "t", { n = n })) end
    assert(feed.commit(c, images(c, "h", { "h" })))
    assert(c:call("DeleteItem", { TableName = c.feed_table, Key = feed.entry_key(3) }))
    local events, err = c:read_all()
    assert.is_nil(events)
    assert.equal("bad_state", err.code)
    assert.matches("no entry at position 3", err.message)
  end)

  it("brings the events it reads to their latest schema with the client's upcasters", function()
    local c = ready()
    assert(c:append("users", "u", "signup", { name = "Ada" }))
    assert(feed.commit(c, images(c, "users", { "u" })))
    c:upcaster("signup", 1, function(p) return { full_name = p.name } end)
    local events = assert(c:read_all())
    assert.equal("Ada", events[1].payload.full_name)
    assert.is_nil(events[1].payload.name)
  end)

  it("raises at the caller's line on options it does not know or cannot take", function()
    local c = ddb.client()
    local at, msg = here(), raised(function() c:read_all{ afer = 1 } end)
    assert.matches(at .. 'read_all: unknown option "afer" (did you mean "after"?)', msg, 1, true)
    at, msg = here(), raised(function() c:read_all{ after = -1 } end)
    assert.matches(at .. "read_all: after must be a position", msg, 1, true)
    at, msg = here(), raised(function() c:read_all{ logs = "users" } end)
    assert.matches(at .. "read_all: logs must be a non-empty list of strings", msg, 1, true)
    at, msg = here(), raised(function() c:read_all{ limit = 0 } end)
    assert.matches(at .. "read_all: limit must be a positive integer", msg, 1, true)
    at, msg = here(), raised(function() c:read_log(nil) end)
    assert.matches(at .. "read_log: log must be a log name", msg, 1, true)
    at, msg = here(), raised(function() c:read_log("users", { logs = { "x" } }) end)
    assert.matches(at .. 'read_log: unknown option "logs"', msg, 1, true)
    msg = raised(function() ddb.client({ feed_table = "x" }) end)
    assert.matches("feed_table must be a table name", msg, 1, true)
    msg = raised(function() feed.commit(c, { { image = { pk = { S = "a" } } } }) end)
    assert.matches("events%[1%]%.image is not an event item", msg)
  end)
end)
