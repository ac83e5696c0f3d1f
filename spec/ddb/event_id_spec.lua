-- Event ids: an append done once per event id and stream, however often it
-- is retried.
local core = require "dynlog.core"
local ddb = require "spec.support.ddb"
local env = require "spec.support.env"
local eventkey = require "dynlog.client.eventkey"
local json = require "dynlog.json"
local run = require "spec.support.run"
local server = require "spec.support.server"
local stream = require "spec.support.stream"
local trigger = require "dynlog.trigger"

-- Every item of the table, by a consistent Scan.
local function scan(c)
  local items, start = {}, nil
  repeat
    local resp = assert(c:_request("dynamodb", "Scan", { TableName = c.table, ConsistentRead = true,
                                                         ExclusiveStartKey = start }, true, "number"))
    for _, item in ipairs(resp.Items) do items[#items + 1] = item end
    start = resp.LastEvaluatedKey
  until not start
  return items
end

local function events_of(c, log, id)
  return assert(c:query(log, id, { consistent = true }):all())
end

for _, mode in ipairs({ "ulid", "version" }) do
  describe("event ids in " .. mode .. " mode", function()
    local c
    setup(function() c = ddb.ready_client({ sort_key = mode }) end)

    it("append: the same event id again returns the key written and writes nothing, minutes or days later",
      function()
        local key = assert(c:append("users", "1", "signup", { name = "Ada" }, { event_id = "cmd-1" }))
        assert.is_nil(key.existing)
        assert(c:append("users", "1", "renamed", { name = "Ada L." }))
        -- a restarted process: another client
        local later = ddb.client({ table = c.table, sort_key = mode })
        local again = assert(later:append("users", "1", "signup", { name = "Ada" }, { event_id = "cmd-1" }))
        assert.are.same({ pk = key.pk, sk = key.sk, existing = true }, again)
        local events = events_of(c, "users", "1")
        assert.are.equal(2, #events)
        assert.are.equal("cmd-1", events[1].event_id)
        assert.are.equal(key.sk, events[1].sk)
        assert.is_nil(events[2].event_id)
      end)

    it("keeps the event items as the original tools read them, and its guard out of the stream", function()
      local key = assert(c:append("guards", "1", "signup", { name = "Bo" }, { event_id = "g#1" }))
      local guard_pk = "guards#1#g#1#eventid"
      local found = {}
      for _, item in ipairs(scan(c)) do
        if item.pk == "guards#1#stream" then
          found.event = item
          assert.are.same({ "appended_at", "event_id", "log", "payload", "pk", "sk", "type" }, (function()
            local names = {}
            for k in pairs(item) do names[#names + 1] = k end
            table.sort(names)
            return names
          end)())
          assert.are.same({ id = "1", name = "Bo" }, item.payload)
        elseif item.pk == guard_pk then
          found.guard = item
        end
      end
      assert.is_truthy(found.event)
      assert.are.same({ pk = guard_pk, sk = mode == "ulid" and "eventid" or 0, event_id = "g#1", type = "signup",
                        key = key.sk }, found.guard)
      assert.is_true(eventkey.is_event(found.event))
      assert.is_false(eventkey.is_event(found.guard), "the trigger does not publish guards")
      assert.are.equal(1, #events_of(c, "guards", "1"))
      assert.is_nil((eventkey.parse(guard_pk)))
    end)

    it("the trigger publishes the event, never its guard, with the original detail", function()
      local t = ddb.ready_client({ sort_key = mode })
      local key = assert(t:append("users", "7", "signup", { name = "Eve" }, { event_id = "cmd-7" }))
      assert(t:append("users", "7", "signup", { name = "Eve" }, { event_id = "cmd-7" }))
      local records = stream.all_records(t)
      assert.are.equal(2, #records, "the event and its guard reach the DynamoDB Stream")
      local srv = server.start({ { method = "POST", path = "/", responses = { { putevents = true } } } })
      local tc = ddb.client({ table = t.table, sort_key = mode, events_endpoint = srv.url, sleep = function() end })
      local result = trigger.handle(tc, { Records = records })
      local entries = {}
      for _, req in ipairs(srv.requests()) do
        for _, e in ipairs(json.decode(req.body).Entries) do entries[#entries + 1] = e end
      end
      srv.stop()
      assert.are.same({}, result.batchItemFailures)
      assert.are.equal(1, #entries)
      local detail = json.decode(entries[1].Detail)
      assert.are.same({ pk = key.pk, sk = key.sk }, detail.key)
      assert.are.same({ "signup", "users", { id = "7", name = "Eve" } }, { detail.type, detail.log, detail.payload })
    end)

    it("another event under an event id already used is a conflict, and nothing is written", function()
      assert(c:append("users", "2", "signup", { name = "Cy" }, { event_id = "cmd-2" }))
      local none, err = c:append("users", "2", "signup", { name = "Di" }, { event_id = "cmd-2" })
      assert.is_nil(none)
      assert.are.equal("conflict", err.code)
      assert.matches('event id "cmd-2" is used already in users#2#stream', err.message, 1, true)
      -- found at once, whatever the version: the tombstone, the head, the transaction, the guard, the event
      local counting = ddb.client({ table = c.table, sort_key = mode })
      local real, requests = counting:_transport(), 0
      counting.transport = { request = function(_, req) requests = requests + 1 return real:request(req) end }
      none, err = counting:append("users", "2", "deleted", { name = "Cy" }, { event_id = "cmd-2" })
      assert.is_nil(none)
      assert.are.equal("conflict", err.code)
      assert.are.equal(mode == "version" and 5 or 4, requests)
      assert.are.equal(1, #events_of(c, "users", "2"))
      -- the same id in another stream is another event id
      assert.is_nil(assert(c:append("users", "3", "signup", { name = "Di" }, { event_id = "cmd-2" })).existing)
    end)

    it("rejects event ids that are no strings, empty, not UTF-8 or too long, before sending anything", function()
      -- raised at the caller's line
      local cases = {
        { function() local _ = c:append("users", "4", "t", {}, { event_id = 5 }) end,
          "event_id must be a string, got number" },
        { function() local _ = c:append_batch("users", "4", { { type = "t", event_id = 5 } }) end,
          "append_batch: events[1]: event_id must be a string, got number" },
        { function() local _ = c:append_many({ { log = "users", id = "4", type = "t", event_id = {} } }) end,
          "append_many: events[1]: event_id must be a string, got table" },
      }
      for _, case in ipairs(cases) do
        local ok, message = pcall(case[1])
        assert.is_false(ok)
        assert.are.equal(("spec/ddb/event_id_spec.lua:%d: %s"):format(debug.getinfo(case[1], "S").linedefined,
          case[2]), message)
      end
      cases = { [""] = "event_id must not be empty", ["\255"] = "not valid UTF-8",
                      [string.rep("x", 513)] = "at most 512" }
      for id, message in pairs(cases) do
        local none, err = c:append("users", "4", "t", {}, { event_id = id })
        assert.is_nil(none)
        assert.are.equal("invalid_argument", err.code)
        assert.matches(message, err.message, 1, true)
      end
      assert.are.equal(0, #events_of(c, "users", "4"))
    end)

    it("append_batch: a retried batch is recognised as a whole", function()
      local batch = {
        { type = "a", payload = { n = 1 }, event_id = "b-1" },
        { type = "b", payload = { n = 2 }, event_id = "b-2" },
      }
      local keys = assert(c:append_batch("orders", "1", batch))
      assert(c:append("orders", "1", "c", { n = 3 }))
      local again = assert(c:append_batch("orders", "1", batch))
      assert.are.same({ { pk = keys[1].pk, sk = keys[1].sk, existing = true },
                        { pk = keys[2].pk, sk = keys[2].sk, existing = true } }, again)
      assert.are.equal(3, #events_of(c, "orders", "1"))
      -- some of its event ids used, others not: a conflict, nothing written
      local none, err = c:append_batch("orders", "1", { batch[1], { type = "d", payload = {}, event_id = "b-9" } })
      assert.is_nil(none)
      assert.are.equal("conflict", err.code)
      assert.matches("is not: this is not the batch written under them", err.message, 1, true)
      none, err = c:append_batch("orders", "1", { { type = "d", payload = {}, event_id = "b-9" }, batch[2] })
      assert.is_nil(none)
      assert.are.equal("conflict", err.code)
      assert.are.equal(3, #events_of(c, "orders", "1"))
      -- another event under one of them
      none, err = c:append_batch("orders", "1", { batch[1], { type = "b", payload = { n = 0 }, event_id = "b-2" } })
      assert.is_nil(none)
      assert.are.equal("conflict", err.code)
      assert.matches("events[2]: event id \"b-2\" is used already", err.message, 1, true)
      assert.are.equal(3, #events_of(c, "orders", "1"))
    end)

    it("append_batch: every event has an event id or none, no two the same, at most 50", function()
      local none, err = c:append_batch("orders", "2", { { type = "a", event_id = "x" }, { type = "b" } })
      assert.is_nil(none)
      assert.are.equal("invalid_argument", err.code)
      assert.matches("1 of 2 events have an event_id", err.message, 1, true)
      none, err = c:append_batch("orders", "2", { { type = "a", event_id = "x" }, { type = "b", event_id = "x" } })
      assert.is_nil(none)
      assert.are.equal("invalid_argument", err.code)
      assert.matches('events[2]: event_id "x" is the one of events[1] too', err.message, 1, true)
      local many = {}
      for i = 1, 51 do many[i] = { type = "t", event_id = "m" .. i } end
      none, err = c:append_batch("orders", "2", many)
      assert.is_nil(none)
      assert.are.equal("too_large", err.code)
      many[51] = nil
      assert.are.equal(50, #assert(c:append_batch("orders", "2", many)))
      assert.are.equal(50, #events_of(c, "orders", "2"))
    end)

    it("append_many: the same list appended again writes nothing and returns the keys", function()
      local list = {}
      for i = 1, 6 do
        list[i] = { log = "many", id = "s" .. (i % 2), type = "t", payload = { i = i }, event_id = "m-" .. i }
      end
      local keys = assert(c:append_many(list, { concurrency = 2 }))
      local again = assert(c:append_many(list, { concurrency = 2 }))
      for i = 1, 6 do
        assert.is_nil(keys[i].existing)
        assert.are.same({ pk = keys[i].pk, sk = keys[i].sk, existing = true }, again[i])
      end
      assert.are.equal(3, #events_of(c, "many", "s0"))
      assert.are.equal(3, #events_of(c, "many", "s1"))
      -- and append recognises them too
      assert.are.same(again[1], assert(c:append("many", "s1", "t", { i = 1 }, { event_id = "m-1" })))
    end)

    if mode == "version" then
      it("with every expected_version: the event id is looked at before the version", function()
        local key = assert(c:append("acct", "1", "opened", {}, { event_id = "open", expected_version = "no_stream" }))
        assert.are.equal(1, key.sk)
        for _, expected in ipairs({ "no_stream", 0, "any", 5 }) do
          local again = assert(c:append("acct", "1", "opened", {}, { event_id = "open", expected_version = expected }))
          assert.are.same({ pk = key.pk, sk = 1, existing = true }, again)
        end
        assert(c:append("acct", "1", "deposited", { n = 1 }, { expected_version = 1 }))
        assert.are.same({ pk = key.pk, sk = 1, existing = true },
          assert(c:append("acct", "1", "opened", {}, { event_id = "open", expected_version = 0 })))
        -- a new event id at a version taken is the usual conflict
        local none, err = c:append("acct", "1", "x", {}, { event_id = "new", expected_version = 0 })
        assert.is_nil(none)
        assert.are.equal("conflict", err.code)
        assert.are.equal("an event with sort key 1 already exists in acct#1#stream", err.message)
        local batch = { { type = "a", event_id = "ba" }, { type = "b", event_id = "bb" } }
        local keys = assert(c:append_batch("acct", "1", batch, { expected_version = 2 }))
        assert.are.same({ 3, 4 }, { keys[1].sk, keys[2].sk })
        for _, expected in ipairs({ 2, 0, "any", "no_stream" }) do
          local again = assert(c:append_batch("acct", "1", batch, { expected_version = expected }))
          assert.are.same({ 3, 4, true, true }, { again[1].sk, again[2].sk, again[1].existing, again[2].existing })
        end
        local list = { { log = "acct", id = "1", type = "c", event_id = "mc", expected_version = 4 } }
        assert.are.equal(5, assert(c:append_many(list))[1].sk)
        list[1].expected_version = 1
        assert.are.same({ pk = key.pk, sk = 5, existing = true }, assert(c:append_many(list))[1])
        assert.are.equal(5, #events_of(c, "acct", "1"))
      end)
    end

    it("concurrent retries from several processes write one event, and every caller gets its key", function()
      local writers, count = 4, 10
      local pipes = {}
      for w = 1, writers do
        local vars = run.lua_env({ DYNLOG_TEST_ENDPOINT = env.dynamodb_endpoint() })
        local prefix = {}
        for k, v in pairs(vars) do prefix[#prefix + 1] = k .. "=" .. run.quote(v) end
        pipes[w] = assert(io.popen(("env %s lua5.4 spec/support/appender.lua %s %s w%d %d eventid 2>&1"):format(
          table.concat(prefix, " "), c.table, mode, w, count)))
      end
      local keys = {}
      for w, pipe in ipairs(pipes) do
        local lines = 0
        for line in pipe:lines() do
          lines = lines + 1
          local i, sk = line:match("^ok (%d+) (%S+)$")
          assert.is_truthy(i, "writer " .. w .. ": " .. line)
          i = tonumber(i)
          keys[i] = keys[i] or sk
          assert.are.equal(keys[i], sk, "event " .. i .. ": every caller gets the same key")
        end
        pipe:close()
        assert.are.equal(count, lines)
      end
      local events = events_of(c, "idem", "x")
      assert.are.equal(count, #events)
      local seen = {}
      for _, ev in ipairs(events) do
        assert.is_nil(seen[ev.event_id])
        seen[ev.event_id] = true
        assert.are.equal(keys[ev.payload.i], tostring(ev.sk))
        assert.are.equal("e" .. ev.payload.i, ev.event_id)
      end
    end)

    describe("after a lost answer", function()
      local proxy_pid, port_file
      -- the transaction first, on a fresh connection (curl sends a request
      -- again by itself only on a kept-alive one)
      local opts = mode == "version" and { expected_version = "no_stream" } or {}
      local function with_id(event_id)
        local o = { event_id = event_id }
        for k, v in pairs(opts) do o[k] = v end
        return o
      end

      -- The fault proxy of `make chaos`: it forwards the first request and
      -- resets the connection before the answer; the rest pass. Its clients
      -- skip the tombstone read, so that the first request is the write.
      local function proxy_client(sequence, client_opts)
        port_file = os.tmpname()
        os.remove(port_file)
        local upstream = env.dynamodb_endpoint():match("^http://([^/]+)")
        local pipe = assert(io.popen(("lua5.4 spec/support/chaos_proxy.lua --upstream %s --port-file %s"
          .. " --rate 0 --sequence %s --max-seconds 60 >/dev/null 2>&1 & echo $!")
          :format(upstream, port_file, sequence)))
        proxy_pid = pipe:read("*l")
        pipe:close()
        for _ = 1, 200 do
          local f = io.open(port_file)
          local port = f and f:read("*l")
          if f then f:close() end
          if port then
            local o = { table = c.table, sort_key = mode, endpoint = "http://127.0.0.1:" .. port }
            for k, v in pairs(client_opts or {}) do o[k] = v end
            return ddb.client(o)
          end
          core.sleep(0.025)
        end
        error("the fault proxy did not start")
      end

      after_each(function()
        if proxy_pid then os.execute("kill " .. proxy_pid .. " 2>/dev/null") end
        proxy_pid = nil
        if port_file then os.remove(port_file) end
      end)

      it("is read back: the event written is reported, not the failure", function()
        local lossy = proxy_client("reset_after", { max_attempts = 1, tombstones = false })
        local key = assert(lossy:append("lost", "0", "paid", { amount = 5 }, with_id("pay-0")))
        local events = events_of(c, "lost", "0")
        assert.are.equal(1, #events)
        assert.are.same({ pk = "lost#0#stream", sk = events[1].sk, existing = true }, key)
      end)

      it("the caller's retry with the same event id is one event", function()
        -- the answer lost, and the read that would tell refused
        local lossy = proxy_client("reset_after,reset_before", { max_attempts = 1, tombstones = false })
        local none, err = lossy:append("lost", "1", "paid", { amount = 5 }, with_id("pay-1"))
        assert.is_nil(none)
        assert.is_true(err.ambiguous)
        local events = events_of(c, "lost", "1")
        assert.are.equal(1, #events, "the lost attempt was applied")
        local key = assert(lossy:append("lost", "1", "paid", { amount = 5 }, with_id("pay-1")))
        assert.are.same({ pk = "lost#1#stream", sk = events[1].sk, existing = true }, key)
        assert.are.equal(1, #events_of(c, "lost", "1"))
      end)

      it("the client's own retry of a batch is one batch", function()
        local lossy = proxy_client("reset_after", { max_attempts = 3, tombstones = false })
        local batch = { { type = "a", event_id = "lb-1" }, { type = "b", event_id = "lb-2" } }
        local keys = assert(lossy:append_batch("lost", "2", batch, mode == "version" and opts or nil))
        local events = events_of(c, "lost", "2")
        assert.are.equal(2, #events)
        assert.are.same({ events[1].sk, events[2].sk }, { keys[1].sk, keys[2].sk })
      end)
    end)
  end)
end
