-- c:append_many: many appends in flight, each stream in its order.
local dynlog = require "dynlog"
local concurrent = require "dynlog.transport.concurrent"
local ddb = require "spec.support.ddb"
local server = require "spec.support.server"

-- events for `streams` streams, interleaved: event n goes to stream n % streams.
local function interleaved(count, streams, log)
  local events = {}
  for n = 1, count do
    events[n] = { log = log or "users", id = "u" .. (n % streams), type = "counted", payload = { n = n } }
  end
  return events
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- The events an append_failed error names: its list part.
local function count_failed(err)
  local n = 0
  for k in pairs(err) do if type(k) == "number" then n = n + 1 end end
  return n
end

describe("append_many", function()
  describe("in ulid mode", function()
    local c
    setup(function() c = ddb.ready_client() end)

    it("writes every event, each stream in the order of the list", function()
      local events = interleaved(240, 12)
      local results, errs = c:append_many(events, { concurrency = 8 })
      assert.is_nil(errs)
      assert.are.equal(240, count(results))
      for s = 0, 11 do
        local stored = assert(c:query("users", "u" .. s):all())
        assert.are.equal(20, #stored)
        local last = 0
        for _, e in ipairs(stored) do
          assert.is_true(e.payload.n > last, "stream u" .. s .. " in list order")
          last = e.payload.n
          assert.are.equal(results[e.payload.n].sk, e.sk)
          assert.are.equal("users#u" .. s .. "#stream", results[e.payload.n].pk)
        end
      end
    end)

    it("reports an invalid event by its index, never sends it, and writes the others", function()
      local events = interleaved(6, 2, "invalid")
      events[3].type = ""
      events[4].id = "a#b"
      local none, errs, results = c:append_many(events)
      assert.is_nil(none)
      assert.are.equal("append_failed", errs.code)
      assert.is_true(dynlog.errors.is(errs))
      assert.are.equal("2 of 6 events were not written (first: invalid_argument: events[3]: type must not be empty)",
        errs.message)
      assert.are.equal(results, errs.results)
      assert.are.equal(2, count_failed(errs))
      assert.are.equal("invalid_argument", errs[3].code)
      assert.matches("^events%[3%]: type must not be empty", errs[3].message)
      assert.are.equal(3, errs[3].index)
      assert.matches("^events%[4%]: id must not contain '#'", errs[4].message)
      assert.are.same({ 1, 2, 5, 6 }, (function()
        local written = {}
        for i = 1, 6 do if results[i] then written[#written + 1] = i end end
        return written
      end)())
      assert.are.equal(2, #assert(c:query("invalid", "u1"):all()))
      assert.are.equal(2, #assert(c:query("invalid", "u0"):all()))
    end)

    it("returns an empty result for an empty list", function()
      local results, errs = c:append_many({})
      assert.are.same({}, results)
      assert.is_nil(errs)
    end)

    it("raises on arguments of the wrong type", function()
      assert.has_error(function() c:append_many("events") end)
      assert.has_error(function() c:append_many({ "not an event" }) end)
      assert.has_error(function() c:append_many({ { log = "l", id = 42, type = "t" } }) end)
      assert.has_error(function() c:append_many({}, { concurrency = 0 }) end)
      assert.has_error(function() c:append_many({}, { concurrency = 1.5 }) end)
    end)

    it("names the event in every error about one event, raised or returned", function()
      local ok_event = { log = "l", id = "fine", type = "t" }
      for _, case in ipairs({
        { { log = "l", id = 42, type = "t" }, "events[2]: id must be a string" },
        { { log = 7, id = "x", type = "t" }, "events[2]: log must be a string" },
        { { log = "l", id = "x", type = false }, "events[2]: type must be a string" },
        { { log = "l", id = "x", type = "t", payload = "p" }, "events[2]: payload must be a table" },
        { { log = "l", id = "x", type = "t", expected_version = 1 }, "events[2]: expected_version applies" },
        { { log = "l", id = "x", type = "t", paylaod = {} }, 'append_many: events[2]: unknown option "paylaod"' },
      }) do
        local ok, msg = pcall(c.append_many, c, { ok_event, case[1] })
        assert.is_false(ok)
        assert.matches(case[2], tostring(msg), 1, true)
      end
      local _, errs, results = c:append_many({ ok_event, { log = "l", id = "x", type = "" },
                                               { log = "l", id = "x", type = "t", payload = { n = 0 / 0 } } })
      assert.is_table(results[1])
      assert.matches("^events%[2%]: type must not be empty", errs[2].message)
      assert.are.equal(2, errs[2].index)
      assert.matches("^events%[3%]: NaN", errs[3].message)
      assert.are.equal(3, errs[3].index)
    end)
  end)

  describe("in version mode", function()
    local c
    setup(function() c = ddb.ready_client({ sort_key = "version" }) end)

    it("numbers each stream's events from its head, in the order of the list", function()
      assert(c:append("orders", "u1", "opened", {}))
      local results, errs = c:append_many(interleaved(30, 3, "orders"), { concurrency = 3 })
      assert.is_nil(errs)
      for n = 1, 30 do
        local stream_index = math.floor((n - 1) / 3) + 1
        local offset = (n % 3 == 1) and 1 or 0 -- u1 already held version 1
        assert.are.equal(stream_index + offset, results[n].sk, "events[" .. n .. "]")
      end
      assert.are.equal(11, c:head("orders", "u1").sk)
    end)

    it("after a conflict, aborts the rest of that stream and goes on with the others", function()
      assert(c:append("carts", "a", "created", {}))
      local events = {
        { log = "carts", id = "a", type = "x", payload = {}, expected_version = 0 }, -- taken
        { log = "carts", id = "b", type = "x", payload = {}, expected_version = "no_stream" },
        { log = "carts", id = "a", type = "y", payload = {} },
        { log = "carts", id = "b", type = "y", payload = {} },
      }
      local _, errs, results = c:append_many(events)
      assert.are.equal("conflict", errs[1].code)
      assert.are.equal("aborted", errs[3].code)
      assert.matches("events%[1%]", errs[3].message)
      assert.are.equal(errs[1], errs[3].cause)
      assert.are.same({ 1, 2 }, { results[2].sk, results[4].sk })
      assert.are.equal(1, c:head("carts", "a").sk, "nothing written to the stream that failed")
    end)
  end)

  describe("in flight", function()
    local s
    after_each(function() if s then s.stop() s = nil end end)

    local function client_of(url, opts)
      local o = { table = "events", endpoint = url, region = "us-east-1", max_attempts = 1, timeout = 5,
                  credentials = { access_key_id = "AKID", secret_access_key = "secret" } }
      for k, v in pairs(opts or {}) do o[k] = v end
      return dynlog.new(o)
    end

    it("has `concurrency` requests out at once", function()
      -- The server answers the read of the tombstones (one request), then
      -- only when 6 requests wait at once.
      s = server.start({ { method = "POST", path = "/", responses = { { body = {} }, { together = 6, body = {} } } } })
      local results, errs = client_of(s.url):append_many(interleaved(12, 6), { concurrency = 6 })
      assert.is_nil(errs)
      assert.are.equal(12, count(results))
    end)

    it("has only one request of a stream out at a time", function()
      s = server.start({ { method = "POST", path = "/", responses = { { body = {} }, { together = 2, body = {} } } } })
      local _, errs = client_of(s.url, { timeout = 1 }):append_many(interleaved(4, 1), { concurrency = 4 })
      assert.are.equal("timeout", errs[1].code)
      for i = 2, 4 do assert.are.equal("aborted", errs[i].code) end
    end)

    it("reports a failure to connect on each stream's first event", function()
      local c = client_of("http://127.0.0.1:1")
      local none, errs, results = c:append_many(interleaved(6, 3))
      assert.is_nil(none)
      assert.are.same({}, results)
      for i = 1, 3 do assert.are.equal("connection", errs[i].code) end
      for i = 4, 6 do assert.are.equal("aborted", errs[i].code) end
    end)

    it("takes turns on a transport of the caller's", function()
      local seen, reads = 0, 0
      local transport = { request = function(_, req)
        -- The streams' tombstones are read together (one BatchGetItem, none
        -- there) before any append.
        if req.headers["X-Amz-Target"] == "DynamoDB_20120810.BatchGetItem" then
          assert.are.equal(0, seen)
          for i = 0, 4 do assert.matches("users#u" .. i .. "#tombstone", req.body, 1, true) end
          reads = reads + 1
          return { status = 200, headers = {}, body = "{}" }
        end
        seen = seen + 1
        assert.matches("PutItem", req.headers["X-Amz-Target"])
        return { status = 200, headers = {}, body = "{}" }
      end }
      local results, errs = client_of("http://127.0.0.1:1", { transport = transport })
        :append_many(interleaved(5, 5))
      assert.is_nil(errs)
      assert.are.equal(5, count(results))
      assert.are.equal(5, seen)
      assert.are.equal(1, reads)
    end)

    it("reads the tombstones of 250 streams 100 to a request, asks again for unprocessed keys, refuses a deleted one",
      function()
        local json = require("dynlog.core")
        local reads, unprocessed_sent, puts = {}, false, 0
        local transport = { request = function(_, req)
          local doc = json.json_decode(req.body)
          if req.headers["X-Amz-Target"] == "DynamoDB_20120810.BatchGetItem" then
            local keys = doc.RequestItems.events.Keys
            assert.is_true(doc.RequestItems.events.ConsistentRead)
            reads[#reads + 1] = #keys
            local answer = { Responses = { events = {} } }
            for _, key in ipairs(keys) do
              if key.pk.S == "users#u7#tombstone" then
                answer.Responses.events[1] = { pk = key.pk, sk = key.sk, state = { S = "deleted" } }
              end
            end
            if not unprocessed_sent then
              -- The first answer leaves its first key for later.
              unprocessed_sent = true
              answer.UnprocessedKeys = { events = { Keys = { keys[1] } } }
            end
            return { status = 200, headers = {}, body = json.json_encode(answer) }
          end
          puts = puts + 1
          return { status = 200, headers = {}, body = "{}" }
        end }
        local c = client_of("http://127.0.0.1:1", { transport = transport, base_delay = 0.001, max_attempts = 3 })
        local none, errs, results = c:append_many(interleaved(500, 250), { concurrency = 4 })
        assert.is_nil(none)
        table.sort(reads)
        assert.are.same({ 1, 50, 100, 100 }, reads)
        assert.are.equal(498, puts)
        assert.are.equal(498, count(results))
        assert.are.equal("stream_deleted", errs[7].code)
        assert.are.equal("deleted", errs[7].state)
        assert.are.equal("aborted", errs[257].code)
      end)
  end)
end)

describe("dynlog.transport.concurrent.run", function()
  it("raises a run's error after abandoning the requests in flight, and runs again afterwards", function()
    local c = ddb.ready_client()
    local calls = 0
    assert.has_error(function()
      concurrent.run(c, 3, function(view)
        calls = calls + 1
        if calls == 3 then error("boom") end
        view:head("users", "nobody")
      end)
    end)
    local heads = 0
    concurrent.run(c, 3, function(view)
      assert.is_nil(select(2, view:head("users", "nobody")))
      heads = heads + 1
    end)
    assert.are.equal(3, heads)
  end)

  it("lets sleeping runs overlap", function()
    local c = ddb.client()
    local monotonic = require("dynlog.core").monotonic
    local t0 = monotonic()
    concurrent.run(c, 10, function(view) view.sleep(0.2) end)
    assert.is_true(monotonic() - t0 < 1, "ten 0.2 s sleeps overlap")
  end)
end)
