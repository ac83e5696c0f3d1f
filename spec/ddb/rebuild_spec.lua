-- dynlog.rebuild on DynamoDB Local: the users example's read model projected
-- live, event by event, as the pipeline does, and rebuilt from the feed
-- (filled as the indexer fills it) into another table: item for item the
-- same, interrupted or not; the alias written once it has caught up.
local ddb = require "spec.support.ddb"
local dynlog = require "dynlog"
local fill_feed = require "spec.support.fill_feed"
local handler = require "dynlog.handler"
local trigger = require "dynlog.trigger"

-- The users example's handlers (examples/handler.lua), into a table of the spec's.
local HANDLERS = require("examples.handler").spec.handlers

local function spec_of(table_name)
  return { table = table_name, handlers = HANDLERS }
end

-- Every item of a table, as DynamoDB returns it (AttributeValues): { pk = item }.
local function items_of(c, table_name)
  local out, n = {}, 0
  local params = { TableName = table_name, ConsistentRead = true }
  repeat
    local resp = assert(c:call("Scan", params))
    for _, item in ipairs(resp.Items) do
      out[item.pk.S .. "/" .. item.sk.S] = item
      n = n + 1
    end
    params.ExclusiveStartKey = resp.LastEvaluatedKey
  until params.ExclusiveStartKey == nil
  return out, n
end

local USERS = 30

describe("dynlog.rebuild", function()
  local c, live, appended

  -- Appends events of many users, interleaved, projects each live as the
  -- pipeline does (one handler.project per event) and commits them to the
  -- feed in the order they were appended.
  local function append_and_project(list)
    local events = {}
    for _, e in ipairs(list) do
      local key = assert(c:append("users", e[1], e[2], e[3]))
      local ev = assert(c:get("users", e[1], key.sk, { consistent = true, numbers = "exact" }))
      assert(handler.project(c, { detail = trigger.detail(ev) }, spec_of(live)))
      events[#events + 1] = ev
      appended[#appended + 1] = ev
    end
    fill_feed.commit(c, events)
  end

  setup(function()
    c = ddb.ready_client()
    assert(c:create_feed_table())
    live = c.table .. "-core"
    assert(handler.create_table(c, live))
    appended = {}
    local list = {}
    -- round by round, so that the users' streams interleave in the feed
    for round = 1, 4 do
      for u = 1, USERS do
        local id = "user-" .. u
        if round == 1 then
          list[#list + 1] = { id, "signup", { name = "User " .. u, email = id .. "@example.com" } }
        elseif round == 2 and u % 2 == 0 then
          list[#list + 1] = { id, "addPhoneNumber", { phoneNumber = "+44 20 7946 " .. (1000 + u) } }
        elseif round == 3 and u % 4 == 0 then
          list[#list + 1] = { id, "verifyPhoneNumber", {} }
        elseif round == 4 and u % 3 ~= 1 then
          list[#list + 1] = { id, "addLocation", { lat = 51.5072 + u / 1000, long = -0.1276 - u / 7 } }
        end
      end
    end
    -- an event of another log, which the users read model's rule leaves out
    list[#list + 1] = { "user-1", "addPhoneNumber", { phoneNumber = "+1 555 0100" } }
    append_and_project(list)
    local orders = assert(c:append("orders", "o-1", "created", { total = 5 }))
    fill_feed.commit(c, { assert(c:get("orders", "o-1", orders.sk, { numbers = "exact" })) })
  end)

  it("a rebuild of the users read model equals the live one item for item", function()
    local target = live .. "-v2"
    local seen_progress = {}
    local summary = assert(dynlog.rebuild({
      client = c, spec = spec_of(target), logs = { "users" }, batch_size = 25, alias = live,
      progress = function(p) seen_progress[#seen_progress + 1] = p end,
    }))
    local head = assert(c:feed_head())
    assert.are.equal(#appended + 1, head)
    assert.are.equal(head, summary.position)
    assert.is_true(summary.caught_up)
    assert.are.equal(#appended, summary.done)
    -- one projection per stream and page, not per event
    assert.is_true(summary.projected < summary.done, summary.projected .. " projections for " .. summary.done)
    assert.are.equal(#appended, summary.applied)

    local want, n = items_of(c, live)
    local got, m = items_of(c, target)
    assert.are.equal(USERS, n)
    assert.are.equal(n, m)
    for key, item in pairs(want) do assert.are.same(item, got[key], key) end

    -- progress: positions rising to the head, an ETA of 0 at the end
    local last = seen_progress[#seen_progress]
    assert.are.same({ head, head, #appended }, { last.position, last.head, last.done })
    assert.are.equal(0, last.eta_seconds)
    assert.is_number(last.rate)
    for i = 2, #seen_progress do
      assert.is_true(seen_progress[i].position > seen_progress[i - 1].position)
    end
    assert.are.equal(3, #seen_progress) -- 73 events, 25 a page
    -- the switch-over
    assert.are.equal(target, c:read_model_table(live))
    assert.are.equal(live, summary.alias)
    local alias = assert(require("dynlog.client.readmodels").alias(c, live))
    assert.are.same({ target, head }, { alias.table, alias.at })
  end)

  it("an interrupted rebuild, run again, continues where it stopped and gives the same read model", function()
    local target = live .. "-v3"
    local alias = live .. "-alias3"
    local pages = 0
    local function stop_after(n) return function() pages = pages + 1 return pages > n end end
    -- the alias never before the rebuild has caught up
    local function no_alias_yet()
      assert.are.equal(alias, c:read_model_table(alias))
    end
    local first = assert(dynlog.rebuild({
      client = c, spec = spec_of(target), logs = { "users" }, batch_size = 20, alias = alias,
      stop = stop_after(2), progress = no_alias_yet,
    }))
    assert.is_true(first.stopped)
    assert.is_false(first.caught_up)
    assert.are.equal(40, first.done)
    assert.is_nil(first.alias)
    no_alias_yet()
    -- its position: the checkpoint of its subscription, whose lease it gave back
    local stored = assert(require("dynlog.pipeline.subscription").read(c, "rebuild:" .. target))
    assert.are.equal(first.position, stored.position)
    assert.is_nil(stored.owner)
    assert.is_true(first.position < first.head)

    -- run again: from the stored position, to the end
    local positions = {}
    local second = assert(dynlog.rebuild({
      client = c, spec = spec_of(target), logs = { "users" }, batch_size = 20, alias = alias,
      progress = function(p)
        positions[#positions + 1] = p.position
        if p.position < p.head then no_alias_yet() end
      end,
    }))
    assert.is_true(second.caught_up)
    assert.are.equal(#appended - 40, second.done)
    assert.is_true(positions[1] > first.position)
    local want = items_of(c, live)
    local got = items_of(c, target)
    for key, item in pairs(want) do assert.are.same(item, got[key], key) end
    for key in pairs(got) do assert.is_truthy(want[key], key) end
    assert.are.equal(target, c:read_model_table(alias))

    -- and a third run has nothing left to do
    local third = assert(dynlog.rebuild({ client = c, spec = spec_of(target), logs = { "users" } }))
    assert.are.same({ 0, 0, true }, { third.done, third.projected, third.caught_up })
  end)

  it("rebuilds into the read model's own table: nothing changes, each stream read once", function()
    local before = items_of(c, live)
    local summary = assert(dynlog.rebuild({ client = c, spec = spec_of(live), logs = { "users" } }))
    assert.are.equal(0, summary.applied)
    assert.are.same(before, (items_of(c, live)))
  end)

  it("--follow: after the switch-over, new events are projected as the feed takes them", function()
    local target = live .. "-v4"
    local alias = live .. "-alias4"
    local added, new_head = false, nil
    local summary = assert(dynlog.rebuild({
      client = c, spec = spec_of(target), logs = { "users" }, alias = alias, follow = true, poll_interval = 0.05,
      progress = function(p)
        if p.position == p.head and not added then
          added = true
          -- switched over already
          assert.are.equal(target, c:read_model_table(alias))
          append_and_project({ { "user-2", "addLocation", { lat = 1.25, long = 2.5 } },
                               { "user-99", "signup", { name = "Late", email = "late@example.com" } } })
          new_head = assert(c:feed_head())
        end
      end,
      stop = function() return new_head ~= nil and (c:feed_head()) == new_head
        and assert(require("dynlog.pipeline.subscription").read(c, "rebuild:" .. target)).position == new_head end,
    }))
    assert.is_true(summary.stopped)
    assert.are.equal(new_head, summary.position)
    local want = items_of(c, live)
    local got = items_of(c, target)
    assert.are.equal("Late", got["users#user-99/users#user-99"].name.S)
    for key, item in pairs(want) do assert.are.same(item, got[key], key) end
  end)

  it("a stream's deletion in the feed deletes its read model, as the live pipeline does", function()
    local target = live .. "-v5"
    assert(c:delete_stream("users", "user-3"))
    -- the indexer erases the entries of the events deleted
    local erased = 0
    for _, ev in ipairs(appended) do
      if ev.pk == "users#user-3#stream" then
        local pos = assert(c:feed_position(ev.pk, ev.sk))
        assert(c:call("UpdateItem", { TableName = c.feed_table, Key = require("dynlog.client.feed").entry_key(pos),
          UpdateExpression = "REMOVE payload, meta SET erased = :t",
          ExpressionAttributeValues = { [":t"] = { BOOL = true } } }))
        erased = erased + 1
      end
    end
    assert.is_true(erased >= 1)
    local tomb = assert(c:call("GetItem", { TableName = c.table, ConsistentRead = true,
      Key = { pk = { S = "users#user-3#tombstone" }, sk = { S = "tombstone" } } })).Item
    local item = assert(require("dynlog.marshal").unmarshal_item(tomb, "exact"))
    -- live: the deletion's detail, as the trigger publishes it
    assert(handler.project(c, { detail = trigger.deletion_detail(item) }, spec_of(live)))
    fill_feed.commit(c, { item })
    assert(dynlog.rebuild({ client = c, spec = spec_of(target), logs = { "users" } }))
    local want = items_of(c, live)
    local got = items_of(c, target)
    assert.is_nil(want["users#user-3/users#user-3"])
    assert.is_nil(got["users#user-3/users#user-3"])
    for key, it_ in pairs(want) do assert.are.same(it_, got[key], key) end
  end)

  it("rate: never faster than `rate` events a second, on the client's clock", function()
    -- a client whose sleeps are counted, not slept: its clock moves on by them
    local slept, sleeps = 0, {}
    local socket = require "socket"
    local paced = ddb.client({ table = c.table, now = function() return socket.gettime() + slept end,
                               sleep = function(s) sleeps[#sleeps + 1] = s slept = slept + s end })
    local target = live .. "-v6"
    local counts = {}
    local started, real_start = paced.now(), socket.gettime()
    local summary = assert(dynlog.rebuild({
      client = paced, spec = spec_of(target), logs = { "users" }, rate = 20,
      progress = function(p) counts[#counts + 1] = { p.done, paced.now() - started } end,
    }))
    local total = summary.done
    assert.is_true(total >= #appended)
    -- pages of a second's events; after the first 20, 20 a second at most
    for _, seen in ipairs(counts) do
      assert.is_true(seen[1] <= 20 + 20 * seen[2] + 1e-6, seen[1] .. " events in " .. seen[2] .. " s")
    end
    -- the time it took: what it slept, and what the requests took
    assert.is_true(slept + (socket.gettime() - real_start) >= (total - 20) / 20 - 1e-6)
    assert.is_true(#sleeps >= 3)
    local want = items_of(c, live)
    for key, item in pairs(want) do assert.are.same(item, (items_of(c, target))[key], key) end
  end)

  it("a handler that raises stops the rebuild at its event (poison_event); fixed, it goes on from there", function()
    -- sleeps counted, not slept: the retries' backoff costs no time
    local slept = 0
    local socket = require "socket"
    local quick = ddb.client({ table = c.table, now = function() return socket.gettime() + slept end,
                               sleep = function(s) slept = slept + s end })
    local target = live .. "-v7"
    local broken = {}
    for k, f in pairs(HANDLERS) do broken[k] = f end
    broken.verifyPhoneNumber = function(user, ev)
      if ev.pk == "users#user-8#stream" then error("no phone for user-8") end
      return HANDLERS.verifyPhoneNumber(user, ev)
    end
    local summary, err = dynlog.rebuild({ client = quick, spec = { table = target, handlers = broken },
                                          logs = { "users" }, alias = live .. "-alias7" })
    assert.is_nil(summary)
    assert.are.equal("poison_event", err.code)
    assert.matches("no phone for user-8", tostring(err.cause), 1, true)
    local stopped_at = assert(require("dynlog.pipeline.subscription").read(c, "rebuild:" .. target))
    assert.are.equal(err.position - 1, stopped_at.position)
    assert.is_nil(stopped_at.owner) -- the lease given back
    assert.are.equal(live .. "-alias7", c:read_model_table(live .. "-alias7"))

    summary = assert(dynlog.rebuild({ client = quick, spec = spec_of(target), logs = { "users" },
                                      alias = live .. "-alias7" }))
    assert.is_true(summary.caught_up)
    local want = items_of(c, live)
    local got = items_of(c, target)
    for key, item in pairs(want) do assert.are.same(item, got[key], key) end
    assert.are.equal(target, c:read_model_table(live .. "-alias7"))
  end)

  it("read_model_table: the name itself without an alias, and without a feed table", function()
    assert.are.equal("some-read-model", c:read_model_table("some-read-model"))
    local plain = ddb.client()
    assert.are.equal("users", plain:read_model_table("users"))
    assert.has_error(function() c:read_model_table("") end)
    assert.has_error(function() require("dynlog.client.readmodels").set_alias(c, "users", "x") end)
  end)

  it("refuses options it does not know, at the caller's line", function()
    local ok, err = pcall(function() dynlog.rebuild({ client = c, spec = spec_of("x-v9"), rates = 5 }) end)
    assert.is_false(ok)
    assert.matches('rebuild_spec.lua:%d+: rebuild: unknown option "rates" %(did you mean "rate"%?%)', err)
    assert.has_error(function() dynlog.rebuild({ client = c, spec = { handlers = HANDLERS } }) end)
    ok, err = pcall(function()
      dynlog.rebuild({ client = c, spec = { table = "x-v9", handlers = HANDLERS, key = "pk" } })
    end)
    assert.is_false(ok)
    assert.matches("rebuild_spec.lua:%d+: rebuild: project: spec.key must be a function", err)
    ok, err = pcall(function()
      dynlog.rebuild({ client = c, spec = { table = "x-v9", handlers = HANDLERS, keys = print } })
    end)
    assert.is_false(ok)
    assert.matches('unknown option "keys"', err, 1, true)
    assert.has_error(function() dynlog.rebuild({ client = c, spec = spec_of("x-v9"), rate = 0 }) end)
    assert.has_error(function() dynlog.rebuild({ client = c, spec = spec_of("x-v9"), logs = "users" }) end)
  end)
end)
