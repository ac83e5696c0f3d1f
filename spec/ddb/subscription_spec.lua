-- Catch-up subscriptions on DynamoDB Local: the feed is filled by
-- feed.commit with the appended events' items, as the indexer would.
local ddb = require "spec.support.ddb"
local dynlog = require "dynlog"
local feed = require "dynlog.client.feed"
local subscription = require "dynlog.pipeline.subscription"
local start_subscription = require("dynlog.ngx.subscription").start_subscription
local run = require "spec.support.run"
local raised, here = run.raised, run.here

-- Appends an event and commits it to the feed; returns its position.
local function add(c, log, id, etype, payload)
  local key = assert(c:append(log, id, etype, payload or {}))
  local resp = assert(c:_request("dynamodb", "GetItem", {
    TableName = c.table, ConsistentRead = true, Key = { pk = { S = key.pk }, sk = { S = key.sk } },
  }, false))
  local positions = assert(feed.commit(c, { { image = resp.Item } }))
  return positions[1]
end

local function add_many(c, n, log, etype)
  local last
  for i = 1, n do last = add(c, log or "users", tostring(i), etype or "signup", { n = i }) end
  return last
end

local function ready()
  local c = ddb.ready_client()
  assert(c:create_feed_table())
  return c
end

local function positions_of(events)
  local out = {}
  for i, ev in ipairs(events) do out[i] = ev.position end
  return out
end

local function range(a, b)
  local out = {}
  for i = a, b do out[#out + 1] = i end
  return out
end

-- Polls until f() is true or `rounds` rounds pass.
local function poll_until(sub, f, rounds)
  for _ = 1, rounds or 50 do
    if f() then return true end
    local n, err = sub:poll_once()
    if not n then return nil, err end
    if n == 0 then sub.client.sleep(0.002) end
  end
  return f()
end

local function fast(opts)
  local o = { poll_interval = 0, retry_base_delay = 0, retry_max_delay = 0, lease_duration = 5 }
  for k, v in pairs(opts) do o[k] = v end
  return o
end

describe("dynlog.subscribe", function()
  local c
  setup(function() c = ready() end)

  it("delivers the history, then events committed while it runs, each once and in feed order", function()
    local cc = ready()
    add_many(cc, 5)
    local got, calls = {}, 0
    local sub = dynlog.subscribe(fast{ client = cc, name = "all", batch_size = 2, handler = function(events)
      calls = calls + 1
      for _, ev in ipairs(events) do got[#got + 1] = ev end
      -- A writer goes on while the subscription reads the history.
      if calls <= 3 then add(cc, "users", "live" .. calls, "signup", { n = 100 + calls }) end
      return true
    end })
    assert.is_true(poll_until(sub, function() return #got >= 8 and sub:stats().lag_events == 0 end))
    assert.are.same(range(1, 8), positions_of(got))
    -- Caught up: live events come as they are committed, once.
    add(cc, "users", "later", "signup", {})
    assert.are.equal(1, sub:poll_once())
    assert.are.equal(0, sub:poll_once())
    assert.are.same(range(1, 9), positions_of(got))
    assert.are.equal("users", got[9].log)
    assert.are.equal("later", got[9].payload.id)
    local s = sub:stats()
    assert.are.equal(9, s.position)
    assert.are.equal(9, s.head)
    assert.are.equal(0, s.lag_events)
    assert.are.equal(0, s.lag_ms)
    assert.are.equal(9, s.delivered)
    assert.are.equal(sub.worker, s.owner)
    -- The checkpoint is in the feed table, under the name.
    local item = assert(subscription.read(cc, "all"))
    assert.are.equal(9, item.position)
    assert.are.equal(sub.worker, item.owner)
    assert.is_true(item.lease_expires_at > os.time() * 1000)
    assert.are.same({ "all" }, assert(subscription.names(cc)))
    assert.is_true(sub:release())
    assert.is_nil(assert(subscription.read(cc, "all")).owner)
  end)

  it("resumes after its checkpoint when started again", function()
    local cc = ready()
    add_many(cc, 5)
    local first = {}
    local sub = dynlog.subscribe(fast{ client = cc, name = "resume", batch_size = 3, handler = function(events)
      for _, ev in ipairs(events) do first[#first + 1] = ev.position end
      return true
    end })
    assert.are.equal(3, sub:poll_once())
    assert.is_true(sub:release())
    local second = {}
    local again = dynlog.subscribe(fast{ client = cc, name = "resume", batch_size = 3, handler = function(events)
      for _, ev in ipairs(events) do second[#second + 1] = ev.position end
      return true
    end })
    assert.are.equal(2, again:poll_once())
    assert.are.same({ 1, 2, 3 }, first)
    assert.are.same({ 4, 5 }, second)
  end)

  it("runs once per name: a second instance waits, and takes over on release or when the lease expires", function()
    local cc = ready()
    add_many(cc, 4)
    local by = {}
    local function instance(id, now)
      return dynlog.subscribe(fast{ client = cc, name = "once", batch_size = 1, worker_id = id, now = now,
        handler = function(events)
          for _, ev in ipairs(events) do by[#by + 1] = id .. ":" .. ev.position end
          return true
        end })
    end
    local a, b = instance("a"), instance("b")
    assert.are.equal(1, a:poll_once())
    assert.are.equal(0, b:poll_once())
    assert.are.equal(0, b:poll_once())
    assert.are.equal("a", b:stats().owner)
    assert.is_false(b:stats().held)
    assert.are.equal(1, a:poll_once())
    -- a stops: b takes over where a left off.
    assert.is_true(a:release())
    assert.are.equal(1, b:poll_once())
    assert.are.same({ "a:1", "a:2", "b:3" }, by)
    -- b dies (no release); a's clock runs past b's lease: a takes over.
    local skew = 0
    local a2 = instance("a", function() return os.time() + skew end)
    assert.are.equal(0, a2:poll_once())
    skew = 60
    assert.are.equal(1, a2:poll_once())
    assert.are.same({ "a:1", "a:2", "b:3", "a:4" }, by)
    -- b, still running on a lost lease, cannot move the checkpoint.
    add(cc, "users", "5", "signup", {})
    assert.are.equal(0, b:poll_once())
    assert.is_false(b:stats().held)
    assert.are.equal(4, assert(subscription.read(cc, "once")).position)
  end)

  it("reads only the logs and types asked for, and does not read the others again", function()
    local cc = ready()
    add(cc, "users", "1", "signup")
    add(cc, "orders", "1", "placed")
    add(cc, "users", "2", "renamed")
    add(cc, "orders", "2", "cancelled")
    add(cc, "users", "3", "signup")
    local got = {}
    local function collect(events)
      for _, ev in ipairs(events) do got[#got + 1] = ev.log .. "/" .. ev.type .. "@" .. ev.position end
      return true
    end
    local orders = dynlog.subscribe(fast{ client = cc, name = "orders", logs = { "orders" }, handler = collect })
    assert.are.equal(2, orders:poll_once())
    assert.are.same({ "orders/placed@2", "orders/cancelled@4" }, got)
    -- The checkpoint is the last position read, beyond the last order.
    assert.are.equal(5, orders:stats().position)
    got = {}
    local signups = dynlog.subscribe(fast{ client = cc, name = "signups", types = { "signup" }, handler = collect })
    assert.are.equal(2, signups:poll_once())
    assert.are.same({ "users/signup@1", "users/signup@5" }, got)
    add(cc, "users", "4", "renamed")
    assert.are.equal(0, signups:poll_once())
    assert.are.equal(6, assert(subscription.read(cc, "signups")).position)
  end)

  it("delivers a failing batch again, with backoff, until the handler succeeds", function()
    local cc = ready()
    add_many(cc, 3)
    local calls, seen = 0, {}
    local slept = {}
    local sub = dynlog.subscribe(fast{ client = cc, name = "retry", retry_base_delay = 0.01, retry_max_delay = 0.02,
      handler = function(events)
        calls = calls + 1
        seen[#seen + 1] = table.concat(positions_of(events), ",")
        if calls == 1 then return nil, "database down" end
        if calls == 2 then error("boom") end
        return true
      end, sleep = function(s) slept[#slept + 1] = s end })
    assert.are.equal(0, sub:poll_once())
    assert.are.equal(0, sub.position)
    assert.is_true(poll_until(sub, function() return calls >= 3 end, 200))
    assert.are.same({ "1,2,3", "1,2,3", "1,2,3" }, seen)
    local s = sub:stats()
    assert.are.equal(3, s.position)
    assert.are.equal(3, s.delivered)
    assert.are.equal(2, s.failures)
    assert.are.equal(2, s.retries)
    assert.are.equal(0, s.dead_lettered)
  end)

  local function poison_handler(log, accept)
    accept = accept or {}
    return function(events)
      if #events > 1 then
        for _, ev in ipairs(events) do
          if ev.type == "bad" then return nil, "batch has a bad one" end
        end
      end
      if events[1].type == "bad" and not accept.bad then return nil, "cannot take " .. events[1].payload.id end
      for _, ev in ipairs(events) do log[#log + 1] = ev.position end
      return true
    end
  end

  it("stops at a poison event with on_poison = stop, its checkpoint before it", function()
    local cc = ready()
    add(cc, "users", "1", "signup")
    add(cc, "users", "2", "bad")
    add(cc, "users", "3", "signup")
    local log = {}
    local sub = dynlog.subscribe(fast{ client = cc, name = "stopper", max_tries = 2,
      handler = poison_handler(log) })
    local n, err
    for _ = 1, 20 do
      n, err = sub:poll_once()
      if not n then break end
    end
    assert.is_nil(n)
    assert.are.equal("poison_event", err.code)
    assert.are.equal(2, err.position)
    assert.matches("cannot take 2", err.message)
    assert.are.same({ 1 }, log)
    assert.are.equal(1, assert(subscription.read(cc, "stopper")).position)
    -- It stays stopped; run() says why and gives the lease back.
    local again, rerr = sub:poll_once()
    assert.is_nil(again)
    assert.are.equal("poison_event", rerr.code)
  end)

  it("parks a poison event as a dead letter and moves on; a resubmitted one is delivered again", function()
    local cc = ready()
    add(cc, "users", "1", "signup")
    add(cc, "users", "2", "bad")
    add(cc, "users", "3", "signup")
    local log, accept = {}, {}
    local sub = dynlog.subscribe(fast{ client = cc, name = "parker", max_tries = 2, on_poison = "dead_letter",
      handler = poison_handler(log, accept) })
    assert.is_true(poll_until(sub, function() return #log == 2 end))
    assert.are.same({ 1, 3 }, log)
    assert.are.equal(3, assert(subscription.read(cc, "parker")).position)
    assert.are.equal(1, sub:stats().dead_lettered)
    local key = subscription.dead_key("parker", 2)
    local letter = assert(cc:_request("dynamodb", "GetItem", { TableName = cc.feed_table, Key = key,
                                                               ConsistentRead = true }, true)).Item
    assert.are.equal("parked", letter.status)
    assert.are.equal(2, letter.tries)
    assert.are.equal(2, letter.position)
    assert.are.equal("bad", letter.type)
    assert.are.equal("users#2#stream", letter.stream)
    assert.matches("cannot take 2", letter.error)
    assert.are.equal("bad", letter.event.type)
    assert.are.equal("2", letter.event.payload.id)
    assert.is_number(letter.parked_at)
    -- Parked letters are not delivered again.
    assert.are.equal(0, sub:poll_once())
    local function resubmit()
      assert(cc:_request("dynamodb", "UpdateItem", { TableName = cc.feed_table, Key = key,
        UpdateExpression = "SET #s = :r", ExpressionAttributeNames = { ["#s"] = "status" },
        ExpressionAttributeValues = { [":r"] = { S = "resubmitted" } } }, false))
    end
    -- Resubmitted and failing again: parked again, one try more.
    resubmit()
    assert.are.equal(0, sub:poll_once())
    letter = assert(cc:_request("dynamodb", "GetItem", { TableName = cc.feed_table, Key = key,
                                                         ConsistentRead = true }, true)).Item
    assert.are.equal("parked", letter.status)
    assert.are.equal(3, letter.tries)
    -- Resubmitted once the handler takes it: delivered before new events, and gone.
    add(cc, "users", "4", "signup")
    accept.bad = true
    resubmit()
    assert.are.equal(2, sub:poll_once())
    assert.are.same({ 1, 3, 2, 4 }, log)
    assert.is_nil(assert(cc:_request("dynamodb", "GetItem", { TableName = cc.feed_table, Key = key,
                                                               ConsistentRead = true }, true)).Item)
  end)

  it("starts a new name at the head with from = end, or after a given position", function()
    local cc = ready()
    add_many(cc, 3)
    local got = {}
    local function collect(events)
      for _, ev in ipairs(events) do got[#got + 1] = ev.position end
      return true
    end
    local tail = dynlog.subscribe(fast{ client = cc, name = "tail", from = "end", handler = collect })
    assert.are.equal(0, tail:poll_once())
    add(cc, "users", "4", "signup")
    assert.are.equal(1, tail:poll_once())
    assert.are.same({ 4 }, got)
    got = {}
    local mid = dynlog.subscribe(fast{ client = cc, name = "mid", from = 2, handler = collect })
    assert.are.equal(2, mid:poll_once())
    assert.are.same({ 3, 4 }, got)
    -- from applies only to a name without a checkpoint.
    assert(mid:release())
    got = {}
    local again = dynlog.subscribe(fast{ client = cc, name = "mid", from = "start", handler = collect })
    assert.are.equal(0, again:poll_once())
    assert.are.same({}, got)
  end)

  it("run() delivers until stop(), then gives the lease back", function()
    local cc = ready()
    add_many(cc, 3)
    local got = {}
    local sub
    sub = dynlog.subscribe{ client = cc, name = "runner", poll_interval = 0.01, handler = function(events)
      for _, ev in ipairs(events) do got[#got + 1] = ev.position end
      if #got >= 3 then sub:stop() end
      return true
    end }
    assert.is_true(sub:run())
    assert.are.same({ 1, 2, 3 }, got)
    assert.is_false(sub:stats().running)
    assert.is_nil(assert(subscription.read(cc, "runner")).owner)
  end)

  it("works for a client that reads numbers as strings", function()
    local cc = ready()
    add_many(cc, 3)
    local strings = ddb.client{ table = cc.table, numbers = "string" }
    -- The feed's positions are numbers whatever the client does with N.
    local read, last, head = assert(strings:read_all{ after = 1 })
    assert.are.same({ 2, 3 }, positions_of(read))
    assert.are.equal("2", read[1].payload.n)
    assert.are.equal(3, last)
    assert.are.equal(3, head)
    local got = {}
    local sub = dynlog.subscribe(fast{ client = strings, name = "strings", batch_size = 2, handler = function(events)
      for _, ev in ipairs(events) do got[#got + 1] = tonumber(ev.position) end
      return true
    end })
    assert.is_true(poll_until(sub, function() return #got == 3 end))
    assert.are.same({ 1, 2, 3 }, got)
    assert.are.equal(3, assert(subscription.read(cc, "strings")).position)
  end)

  it("raises at the caller's line on bad options", function()
    local h = function() return true end
    local cases = {
      { { client = c, name = "x", handler = h, batchsize = 5 }, 'unknown option "batchsize"' },
      { { client = c, name = "", handler = h }, "name must be" },
      { { client = c, name = "x" }, "handler must be" },
      { { name = "x", handler = h }, "client is required" },
      { { client = c, name = "x", handler = h, from = "middle" }, "from must be" },
      { { client = c, name = "x", handler = h, from = -1 }, "from must be" },
      { { client = c, name = "x", handler = h, logs = {} }, "logs must be" },
      { { client = c, name = "x", handler = h, types = { 1 } }, "types must be" },
      { { client = c, name = "x", handler = h, batch_size = 0 }, "batch_size must be" },
      { { client = c, name = "x", handler = h, max_tries = 0.5 }, "max_tries must be" },
      { { client = c, name = "x", handler = h, lease_duration = 0 }, "lease_duration must be" },
      { { client = c, name = "x", handler = h, poll_interval = -1 }, "poll_interval must be" },
      { { client = c, name = "x", handler = h, on_poison = "ignore" }, "on_poison must be" },
      { { client = c, name = "x", handler = h, dead_letter_table = c.table }, "dead_letter_table must not" },
      { { client = c, name = "x", handler = h, now = 5 }, "now must be" },
    }
    for _, case in ipairs(cases) do
      local at, msg = here(), raised(function() dynlog.subscribe(case[1]) end)
      assert.matches(at, msg, 1, true)
      assert.matches(case[2], msg, 1, true)
      at, msg = here(), raised(function() subscription.new(case[1]) end)
      assert.matches(at, msg, 1, true)
      at, msg = here(), raised(function() start_subscription(case[1]) end)
      assert.matches(at, msg, 1, true)
      assert.matches("start_subscription: ", msg, 1, true)
    end
    local at, msg = here(), raised(function() dynlog.subscribe("x") end)
    assert.matches(at, msg, 1, true)
  end)
end)
