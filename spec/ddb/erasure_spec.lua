-- Erasure on DynamoDB Local: delete_stream (tombstone, batches, resume after
-- a failure, appends refused or a new stream), the trigger's deletion event
-- and the handler removing the read model, truncate, max_age with TTL.
local ddb = require "spec.support.ddb"
local dynlog = require "dynlog"
local handler = require "dynlog.handler"
local json = require "dynlog.json"
local stream = require "spec.support.stream"
local trigger = require "dynlog.trigger"

-- A transport that forwards to DynamoDB Local, answers PutEvents itself
-- (recording the entries, as EventBridge would receive them) and can fail
-- the n-th BatchWriteItem with a non-retryable error.
local function stand_in()
  local http = require("dynlog.transport.curl").new()
  local t = { entries = {}, batch_writes = 0, fail_batch = nil }
  function t.request(_, req)
    local target = req.headers["X-Amz-Target"]
    if target == "AWSEvents.PutEvents" then
      local answers = json.array()
      for i, e in ipairs(json.decode(req.body).Entries) do
        t.entries[#t.entries + 1] = e
        answers[i] = { EventId = tostring(#t.entries) }
      end
      return { status = 200, headers = {}, body = json.encode({ FailedEntryCount = 0, Entries = answers }) }
    end
    if target == "DynamoDB_20120810.BatchWriteItem" then
      t.batch_writes = t.batch_writes + 1
      if t.batch_writes == t.fail_batch then
        return { status = 400, headers = { ["content-type"] = "application/x-amz-json-1.0" },
                 body = json.encode({ __type = "com.amazon.coral.validate#ValidationException",
                                      message = "injected failure" }) }
      end
      -- As DynamoDB under load: the last `unprocess` deletions are not
      -- applied and come back as UnprocessedItems (`unprocess_times` times).
      if t.unprocess and (t.unprocess_times or 0) > 0 then
        t.unprocess_times = t.unprocess_times - 1
        local body = json.decode(req.body)
        local name, requests = next(body.RequestItems)
        local keep, left = json.array(), json.array()
        for i, r in ipairs(requests) do
          if i > #requests - t.unprocess then left[#left + 1] = r else keep[#keep + 1] = r end
        end
        if #keep > 0 then
          body.RequestItems[name] = keep
          local copy = {}
          for k, v in pairs(req) do copy[k] = v end
          copy.body = json.encode(body)
          -- Its signature no longer matches the body: DynamoDB Local does not check it.
          local res = assert(http:request(copy))
          assert(res.status == 200, res.body)
        end
        return { status = 200, headers = {},
                 body = json.encode({ UnprocessedItems = { [name] = left } }) }
      end
    end
    return http:request(req)
  end
  return t
end

local function count_events(c, log, id)
  return #assert(assert(c:query(log, id, { consistent = true })):all())
end

local function raw_items(c, pk)
  local resp = assert(c:call("Query", { TableName = c.table, KeyConditionExpression = "pk = :pk",
    ExpressionAttributeValues = { [":pk"] = { S = pk } }, ConsistentRead = true }))
  return resp.Items
end

for _, mode in ipairs({ "ulid", "version" }) do
  describe("erasure (" .. mode .. " mode)", function()
    local c, t

    before_each(function()
      t = stand_in()
      c = ddb.ready_client({ sort_key = mode, transport = t })
    end)

    it("deletes a stream of more than 25 events in several batches and leaves a tombstone", function()
      local events = {}
      for i = 1, 60 do events[i] = { type = "tick", payload = { n = i } } end
      assert(c:append_batch("users", "a", { table.unpack(events, 1, 30) }))
      assert(c:append_batch("users", "a", { table.unpack(events, 31, 60) }))
      assert(c:append("users", "b", "signup", { name = "Bea" }))
      local result = assert(c:delete_stream("users", "a"))
      assert.are.same({ deleted = 60, state = "deleted" }, result)
      assert.is_true(t.batch_writes >= 3, "25 deletions per BatchWriteItem")
      assert.are.equal(0, count_events(c, "users", "a"))
      assert.are.equal(1, count_events(c, "users", "b"), "other streams are untouched")
      -- The stream's pk holds nothing: the original tools' Query finds no event.
      assert.are.equal(0, #raw_items(c, "users#a#stream"))
      local tomb = raw_items(c, "users#a#tombstone")
      assert.are.equal(1, #tomb)
      assert.are.equal("deleted", tomb[1].state.S)
      assert.are.equal("users#a#stream", tomb[1].stream.S)
      -- Again: nothing left to do, same answer.
      assert.are.same({ deleted = 0, state = "deleted" }, assert(c:delete_stream("users", "a")))
    end)

    it("refuses appends to a deleted stream with stream_deleted, in every append path", function()
      assert(c:append("users", "a", "signup", { name = "Ada" }))
      assert(c:delete_stream("users", "a"))
      local key, err = c:append("users", "a", "rename", { name = "Ann" })
      assert.is_nil(key)
      assert.are.equal("stream_deleted", err.code)
      assert.are.equal("deleted", err.state)
      key, err = c:append_batch("users", "a", { { type = "rename", payload = {} } })
      assert.is_nil(key)
      assert.are.equal("stream_deleted", err.code)
      local keys
      keys, err = c:append_many({ { log = "users", id = "a", type = "x" }, { log = "users", id = "a", type = "y" },
                                  { log = "users", id = "b", type = "signup" } })
      assert.is_nil(keys)
      assert.are.equal("stream_deleted", err[1].code)
      assert.are.equal("aborted", err[2].code)
      assert.is_nil(err[3])
      assert.is_table(err.results[3])
      assert.are.equal(0, count_events(c, "users", "a"))
    end)

    it("lets a client made with tombstones = false append without reading the tombstone", function()
      assert(c:append("users", "a", "signup", {}))
      assert(c:delete_stream("users", "a"))
      local blind = ddb.client({ table = c.table, sort_key = mode, tombstones = false })
      assert(blind:append("users", "a", "signup", {}))
      assert.are.equal(1, count_events(c, "users", "a"))
      -- delete_stream again removes what such a writer left.
      assert.are.same({ deleted = 1, state = "deleted" }, assert(c:delete_stream("users", "a")))
      assert.has_error(function() ddb.client({ tombstones = "no" }) end,
        "dynlog.new: tombstones must be a boolean, got string")
    end)

    it("sends unprocessed deletions again with backoff, and says throttled when they never go", function()
      local events = {}
      for i = 1, 30 do events[i] = { type = "tick", payload = { n = i } } end
      assert(c:append_batch("users", "a", events))
      t.unprocess, t.unprocess_times = 5, 2
      assert.are.same({ deleted = 30, state = "deleted" }, assert(c:delete_stream("users", "a")))
      assert.are.equal(0, count_events(c, "users", "a"))
      assert(c:append_batch("users", "b", events))
      t.unprocess, t.unprocess_times = 30, 1000
      local result, err = c:truncate("users", "b", { before = mode == "ulid" and "Z" or 1000 })
      assert.is_nil(result)
      assert.are.equal("throttled", err.code)
      assert.is_true(err.retryable)
      assert.are.equal(30, count_events(c, "users", "b"))
      t.unprocess_times = 0
      assert.are.same({ deleted = 30 }, assert(c:truncate("users", "b", { before = mode == "ulid" and "Z" or 1000 })))
    end)

    it("resumes a deletion that failed half-way, refusing appends meanwhile", function()
      local events = {}
      for i = 1, 60 do events[i] = { type = "tick", payload = { n = i } } end
      assert(c:append_batch("users", "a", { table.unpack(events, 1, 60) }))
      t.fail_batch = 2
      local result, err = c:delete_stream("users", "a")
      assert.is_nil(result)
      assert.are.equal("ValidationException", err.code)
      assert.are.equal(35, count_events(c, "users", "a"), "one batch of 25 went before the failure")
      assert.are.equal("deleting", raw_items(c, "users#a#tombstone")[1].state.S)
      local key, aerr = c:append("users", "a", "tick", {})
      assert.is_nil(key)
      assert.are.equal("stream_deleted", aerr.code)
      assert.are.equal("deleting", aerr.state)
      result = assert(c:delete_stream("users", "a"))
      assert.are.same({ deleted = 35, state = "deleted" }, result)
      assert.are.equal(0, count_events(c, "users", "a"))
      assert.are.equal("deleted", raw_items(c, "users#a#tombstone")[1].state.S)
    end)

    it("reopens a deleted stream: appends start a new stream" .. (mode == "version" and " at version 1" or ""),
      function()
        assert(c:append("users", "a", "signup", { name = "Ada" }))
        assert(c:append("users", "a", "rename", { name = "Ann" }))
        assert(c:delete_stream("users", "a"))
        assert.are.same({ deleted = 0, state = "reopened" }, assert(c:delete_stream("users", "a", { reopen = true })))
        assert.are.equal(0, #raw_items(c, "users#a#tombstone"))
        local key = assert(c:append("users", "a", "signup", { name = "Bo" }))
        if mode == "version" then assert.are.equal(1, key.sk) end
        local all = assert(assert(c:query("users", "a")):all())
        assert.are.equal(1, #all)
        assert.are.equal("Bo", all[1].payload.name)
        -- reopen in one call: delete and open again
        assert.are.same({ deleted = 1, state = "reopened" }, assert(c:delete_stream("users", "a", { reopen = true })))
        assert(c:append("users", "a", "signup", { name = "Cy" }))
      end)

    it("deletes the guards of events appended with an event id: the id appends anew in a reopened stream", function()
      assert(c:append("users", "g", "signup", { name = "Ada" }, { event_id = "cmd-1" }))
      assert(c:append_many({ { log = "users", id = "g", type = "rename", payload = { name = "Ann" },
                               event_id = "cmd-2" } }))
      assert.are.equal(1, #raw_items(c, "users#g#cmd-1#eventid"))
      assert.are.same({ deleted = 2, state = "reopened" }, assert(c:delete_stream("users", "g", { reopen = true })))
      assert.are.equal(0, #raw_items(c, "users#g#cmd-1#eventid"))
      assert.are.equal(0, #raw_items(c, "users#g#cmd-2#eventid"))
      -- Not a conflict with an event no longer there: a new event of the new stream.
      local key = assert(c:append("users", "g", "signup", { name = "Bo" }, { event_id = "cmd-1" }))
      assert.is_nil(key.existing)
      assert.are.equal("Bo", assert(c:get("users", "g", key.sk, { consistent = true })).payload.name)
    end)

    it("publishes the deletion from the tombstone's INSERT, and the handler deletes the read model", function()
      local core_table = ddb.table_name("core")
      assert(handler.create_table(c, core_table))
      local spec = { table = core_table, handlers = {
        signup = function(_, ev) return { name = ev.payload.name } end,
      } }
      local function read_model(id)
        local resp = assert(c:call("GetItem", { TableName = core_table, ConsistentRead = true,
          Key = { pk = { S = "users#" .. id }, sk = { S = "users#" .. id } } }))
        return resp.Item
      end
      local last = assert(c:append("users", "a", "signup", { name = "Ada" }))
      assert(c:append("users", "b", "signup", { name = "Bea" }))
      local function deliver(from)
        for i = from, #t.entries do
          local e = t.entries[i]
          local event = { source = e.Source, ["detail-type"] = e.DetailType, detail = json.decode(e.Detail) }
          assert(handler.project(c, event, spec))
        end
      end
      assert.are.equal(0, #trigger.handle(c, { Records = stream.all_records(c) }).batchItemFailures)
      assert.are.equal(2, #t.entries)
      deliver(1)
      assert.are.equal("Ada", read_model("a").name.S)
      assert(c:delete_stream("users", "a"))
      -- The trigger: the records since (tombstone INSERT and MODIFY, the
      -- REMOVEs of the deletion); only the INSERT is published.
      local records = stream.all_records(c)
      assert.is_true(#records >= 5)
      assert.are.equal(0, #trigger.handle(c, { Records = { table.unpack(records, 3) } }).batchItemFailures)
      assert.are.equal(3, #t.entries, "one deletion")
      local deletion = t.entries[3]
      assert.are.equal("stream changes", deletion.DetailType)
      local detail = json.decode(deletion.Detail)
      assert.are.same({ log = "users", key = { pk = "users#a#stream", sk = last.sk }, payload = { id = "a" },
                        deleted = true }, detail)
      assert.matches('"deleted":true}$', deletion.Detail)
      deliver(3)
      assert.is_nil(read_model("a"), "the read model of the deleted stream is gone")
      assert.are.equal("Bea", read_model("b").name.S)
      -- A duplicate delivery of the deletion is harmless.
      local result = assert(handler.project(c, { detail = detail }, spec))
      assert.is_false(result.deleted)
    end)

    if mode == "ulid" then
      it("leaves a read model that reflects an event after the deleted ones (a stream opened again)", function()
        local core_table = ddb.table_name("core")
        assert(handler.create_table(c, core_table))
        local spec = { table = core_table,
                       handlers = { signup = function(_, ev) return { name = ev.payload.name } end } }
        local old = assert(c:append("users", "a", "signup", { name = "Ada" }))
        assert(c:delete_stream("users", "a", { reopen = true }))
        local new = assert(c:append("users", "a", "signup", { name = "Bo" }))
        local ev = assert(c:get("users", "a", new.sk))
        assert(handler.project(c, { detail = json.decode(trigger.detail(ev)) }, spec))
        local detail = { log = "users", key = { pk = "users#a#stream", sk = old.sk }, payload = { id = "a" },
                         deleted = true }
        local result = assert(handler.project(c, { detail = detail }, spec))
        assert.is_false(result.deleted)
        assert.are.equal(new.sk, result.version)
      end)
    end

    if mode == "ulid" then
      it("projects a stream opened again onto the state spec.deleted kept, whatever another process cached",
        function()
        local core_table = ddb.table_name("core")
        assert(handler.create_table(c, core_table))
        local spec = { table = core_table,
          handlers = { signup = function(_, ev) return { name = ev.payload.name } end,
                       rename = function(u, ev) u.name = ev.payload.name return u end },
          deleted = function(state) return { name = state.name, gone = true } end }
        local other = ddb.client({ table = c.table, sort_key = mode }) -- another process
        local key = assert(c:append("users", "a", "signup", { name = "Ada" }))
        assert(handler.project(c, { detail = json.decode(trigger.detail(assert(c:get("users", "a", key.sk)))) },
          spec))
        local detail = { log = "users", key = { pk = "users#a#stream", sk = key.sk }, payload = { id = "a" },
                         deleted = true }
        assert(handler.project(other, { detail = detail }, spec))
        assert(c:delete_stream("users", "a", { reopen = true }))
        local again = assert(c:append("users", "a", "rename", { name = "Bo" }))
        assert(handler.project(c, { detail = json.decode(trigger.detail(assert(c:get("users", "a", again.sk)))) },
          spec))
        local resp = assert(c:call("GetItem", { TableName = core_table, ConsistentRead = true,
          Key = { pk = { S = "users#a" }, sk = { S = "users#a" } } }))
        assert.are.equal("Bo", resp.Item.name.S)
        assert.is_true(resp.Item.gone and resp.Item.gone.BOOL, "the state spec.deleted kept")
        assert.are.equal(again.sk, resp.Item.version.S)
      end)
    end

    it("lets spec.deleted keep a read model in another shape", function()
      local core_table = ddb.table_name("core")
      assert(handler.create_table(c, core_table))
      local spec = { table = core_table,
        handlers = { signup = function(_, ev) return { name = ev.payload.name } end },
        deleted = function(state) return { name = state.name, gone = true } end }
      local key = assert(c:append("users", "a", "signup", { name = "Ada" }))
      local ev = assert(c:get("users", "a", key.sk))
      assert(handler.project(c, { detail = json.decode(trigger.detail(ev)) }, spec))
      local detail = { log = "users", key = { pk = "users#a#stream", sk = key.sk }, payload = { id = "a" },
                       deleted = true }
      local result = assert(handler.project(c, { detail = detail }, spec))
      assert.is_false(result.deleted)
      local resp = assert(c:call("GetItem", { TableName = core_table, ConsistentRead = true,
        Key = { pk = { S = "users#a" }, sk = { S = "users#a" } } }))
      assert.is_true(resp.Item.gone.BOOL)
      assert.are.equal("Ada", resp.Item.name.S)
    end)

    it("truncates the events before a sort key and keeps the rest", function()
      local keys = {}
      for i = 1, 30 do keys[i] = assert(c:append("users", "a", "tick", { n = i })).sk end
      assert.are.same({ deleted = 27 }, assert(c:truncate("users", "a", { before = keys[28] })))
      local left = assert(assert(c:query("users", "a", { consistent = true })):all())
      assert.are.equal(3, #left)
      assert.are.equal(28, left[1].payload.n)
      assert.are.same({ deleted = 0 }, assert(c:truncate("users", "a", { before = keys[28] })))
      -- The stream goes on.
      assert(c:append("users", "a", "tick", { n = 31 }))
      -- Truncation's REMOVE records are not published.
      assert.are.equal(0, #trigger.handle(c, { Records = stream.all_records(c) }).batchItemFailures)
      assert.are.equal(31, #t.entries)
    end)

    it("refuses bad arguments at the caller's line", function()
      assert.has_error(function() c:truncate("users", "a") end, "truncate: opts.before (a sort key) is required")
      local ok, message = pcall(function() local r = c:truncate("users", "a", { before = true }) return r end)
      assert.is_false(ok)
      assert.matches("^spec/ddb/erasure_spec%.lua:%d+: truncate: before must be a ", message)
      assert.has_error(function() c:delete_stream("users", "a", { reopn = true }) end)
      ok, message = pcall(function() local r = c:delete_stream("users", 42) return r end)
      assert.is_false(ok)
      assert.matches("^spec/ddb/erasure_spec%.lua:%d+: id must be a string, got number", message)
      local result, err = c:delete_stream("users", "a#b")
      assert.is_nil(result)
      assert.are.equal("invalid_argument", err.code)
    end)
  end)
end

describe("max_age", function()
  it("writes expires_at on the events of a log with a max_age, and create_table enables TTL on it", function()
    local c = ddb.client({ max_age = { sessions = 3600 }, now = function() return 1000000.5 end })
    assert(c:create_table())
    local ttl = assert(c:call("DescribeTimeToLive", { TableName = c.table })).TimeToLiveDescription
    assert.are.equal("expires_at", ttl.AttributeName)
    assert.are.equal("ENABLED", ttl.TimeToLiveStatus)
    assert(c:create_table(), "again: TTL is on already")
    local key = assert(c:append("sessions", "s1", "opened", {}))
    assert(c:append_batch("sessions", "s2", { { type = "opened" } }))
    assert(c:append_many({ { log = "sessions", id = "s3", type = "opened" } }))
    assert(c:append("users", "u1", "signup", {}))
    assert.are.equal(1003600, assert(c:get("sessions", "s1", key.sk)).expires_at)
    for _, id in ipairs({ "s2", "s3" }) do
      assert.are.equal(1003600, assert(assert(c:query("sessions", id)):all())[1].expires_at)
    end
    assert.is_nil(assert(assert(c:query("users", "u1")):all())[1].expires_at)
  end)

  it("refuses a max_age that is not whole seconds per log", function()
    assert.has_error(function() ddb.client({ max_age = 3600 }) end,
      "dynlog.new: max_age must be a table {[log] = seconds}")
    assert.has_error(function() ddb.client({ max_age = { users = -1 } }) end,
      "dynlog.new: max_age[users] must be a positive whole number of seconds")
  end)
end)

describe("erasure and dynlog.new", function()
  it("are methods of every client", function()
    local c = dynlog.new({ table = "abc", region = "us-east-1" })
    assert.is_function(c.delete_stream)
    assert.is_function(c.truncate)
  end)
end)
