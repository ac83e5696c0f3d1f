-- The stream consumer against DynamoDB Local's streams: in this process, and
-- as separate processes that crash and share the work.
local ddb = require "spec.support.ddb"
local http = require "dynlog.transport.curl"
local run = require "spec.support.run"
local stream = require "dynlog.consumer"
local socket = require "socket"

local function n_of(record)
  return tonumber(record.dynamodb.NewImage.payload.M.n.N)
end

-- Appends n events spread over `streams` streams; payload.n counts up.
local function append_events(c, n, streams)
  for i = 1, n do assert(c:append("l", tostring(i % (streams or 1)), "e", { n = i })) end
end

-- Polls until `done()` or `rounds` rounds have passed, pausing a little
-- after a round that handed nothing over (a retry may be waiting).
local function poll_until(consumer, done, rounds)
  for _ = 1, rounds or 300 do
    local n = assert(consumer:poll_once())
    if done() then return true end
    if n == 0 then socket.sleep(0.01) end
  end
  return false
end

local function consumer_for(c, handler, opts)
  local o = { client = c, checkpoint_table = opts and opts.checkpoint_table or ddb.table_name("cp"),
              handler = handler, batch_size = 10, retry_base_delay = 0.001, retry_max_delay = 0.002 }
  for k, v in pairs(opts or {}) do o[k] = v end
  local consumer = stream.new(o)
  assert(consumer:create_tables())
  return consumer
end

describe("dynlog.consumer consumer", function()
  -- The consumer logs each failed batch; these specs fail batches on purpose.
  local logger = require "dynlog.logger"
  setup(function() logger.set_handler(function() end) end)
  teardown(function() logger.set_handler(nil) end)

  it("raises on invalid options", function()
    local c = ddb.client()
    assert.error_matches(function() stream.new({ client = c, checkpoint_table = "t" }) end, "handler")
    assert.error_matches(function()
      stream.new({ client = c, handler = print, checkpoint_table = "t", start = "middle" })
    end, "start")
    assert.error_matches(function()
      stream.new({ client = c, handler = print, checkpoint_table = "t", batch_size = 5000 })
    end, "batch_size")
    assert.error_matches(function()
      stream.new({ client = c, handler = print, checkpoint_table = "t", lease_duration = 0 })
    end, "lease_duration must be a number of seconds > 0")
  end)

  it("raises at the caller's line on an unknown option, naming the nearest known one", function()
    local c = ddb.client()
    local misspelt = { client = c, handler = print, checkpoint_table = "t", batch_sise = 5 }
    local line = debug.getinfo(1, "l").currentline + 1
    local ok, err = pcall(function() stream.new(misspelt) end)
    assert.is_false(ok)
    assert.matches("stream_spec.lua:" .. line
      .. ': stream.new: unknown option "batch_sise" (did you mean "batch_size"?)', err, 1, true)
    -- start_consumer takes the same options, and blames its own caller.
    local ngx_mod = require "dynlog.ngx"
    misspelt = { client = c, handler = print, checkpoint_table = "t", leas_duration = 1 }
    line = debug.getinfo(1, "l").currentline + 1
    ok, err = pcall(function() ngx_mod.start_consumer(misspelt) end)
    assert.is_false(ok)
    assert.matches("stream_spec.lua:" .. line .. ': start_consumer: unknown option "leas_duration" '
      .. '(did you mean "lease_duration"?)', err, 1, true)
    local bad_start = { client = c, handler = print, checkpoint_table = "t", start = 1 }
    line = debug.getinfo(1, "l").currentline + 1
    ok, err = pcall(function() ngx_mod.start_consumer(bad_start) end)
    assert.is_false(ok)
    assert.matches("stream_spec.lua:" .. line .. ": start_consumer: start must be", err, 1, true)
  end)

  it("refuses the log table as its checkpoint table", function()
    local c = ddb.client()
    local line = debug.getinfo(1, "l").currentline + 1
    local ok, err = pcall(function() stream.new({ client = c, handler = print, checkpoint_table = c.table }) end)
    assert.is_false(ok)
    assert.matches("stream_spec.lua:" .. line .. ": stream.new: checkpoint_table must not be the log table",
      err, 1, true)
  end)

  it("hands every event over exactly once, in per-stream order, in the Lambda shape", function()
    local c = ddb.ready_client()
    append_events(c, 60, 4)
    local seen, per_stream, shapes_ok = {}, {}, true
    local consumer = consumer_for(c, function(batch)
      for _, r in ipairs(batch.Records) do
        shapes_ok = shapes_ok and r.eventName == "INSERT" and r.eventSourceARN ~= nil and r.dynamodb.SequenceNumber
        local n = n_of(r)
        seen[n] = (seen[n] or 0) + 1
        local pk = r.dynamodb.Keys.pk.S
        assert.is_true((per_stream[pk] or 0) < n, "order within " .. pk)
        per_stream[pk] = n
      end
    end)
    assert.is_true(poll_until(consumer, function() return seen[60] ~= nil end))
    for i = 1, 60 do assert.are.equal(1, seen[i], "event " .. i) end
    assert.is_truthy(shapes_ok)
    local total = 0
    for _, s in pairs(consumer:stats().shards) do
      total = total + s.records
      assert.is_true(s.batches >= 6)
      assert.is_string(s.last_sequence)
      assert.is_number(s.lag_ms)
    end
    assert.are.equal(60, total)
  end)

  it("plugs dynlog.trigger.handle in as it is", function()
    local server = require "spec.support.server"
    local srv = server.start({ { method = "POST", path = "/", responses = { { putevents = true } } } })
    local c = ddb.ready_client()
    append_events(c, 12, 3)
    local tc = ddb.client({ table = c.table, events_endpoint = srv.url })
    local trigger = require "dynlog.trigger"
    local consumer = consumer_for(tc, function(batch) return trigger.handle(tc, batch) end)
    local published = 0
    poll_until(consumer, function()
      published = 0
      for _, req in ipairs(srv.requests()) do
        published = published + #require("dynlog.json").decode(req.body).Entries
      end
      return published >= 12
    end)
    srv.stop()
    assert.are.equal(12, published)
  end)

  it("resumes after its checkpoint when started again", function()
    local c = ddb.ready_client()
    append_events(c, 30)
    local cp = ddb.table_name("cp")
    local first = {}
    local a = consumer_for(c, function(batch)
      for _, r in ipairs(batch.Records) do first[#first + 1] = n_of(r) end
    end, { checkpoint_table = cp, worker_id = "a" })
    poll_until(a, function() return #first >= 20 end)
    a:release()
    local second = {}
    local b = consumer_for(c, function(batch)
      for _, r in ipairs(batch.Records) do second[#second + 1] = n_of(r) end
    end, { checkpoint_table = cp, worker_id = "b" })
    assert.is_true(poll_until(b, function() return second[#second] == 30 end))
    assert.are.equal(#first + 1, second[1], "b starts right after a's checkpoint")
    assert.are.equal(30, #first + #second)
  end)

  it("takes up its own leases again after a restart under the same worker_id", function()
    local c = ddb.ready_client()
    append_events(c, 20)
    local cp = ddb.table_name("cp")
    local first, second = 0, {}
    local a = consumer_for(c, function(batch) first = first + #batch.Records end,
      { checkpoint_table = cp, worker_id = "fixed-name", batch_size = 10, lease_duration = 60 })
    assert(a:poll_once())
    assert.are.equal(10, first)
    -- a is gone without handing its lease back; its successor has its name.
    local b = consumer_for(c, function(batch)
      for _, r in ipairs(batch.Records) do second[#second + 1] = n_of(r) end
    end, { checkpoint_table = cp, worker_id = "fixed-name", batch_size = 10, lease_duration = 60 })
    assert.is_true(poll_until(b, function() return second[#second] == 20 end, 20),
      "the successor works the shard at once, without waiting for the lease to expire")
    assert.are.equal(11, second[1])
  end)

  it("says loudly when two consumers run under the same worker_id, and leaves the shard to one of them", function()
    local c = ddb.ready_client()
    append_events(c, 20)
    local cp = ddb.table_name("cp")
    local seen, by = {}, { a = 0, b = 0 }
    local function handler_of(name)
      return function(batch)
        for _, r in ipairs(batch.Records) do
          local n = n_of(r)
          seen[n] = (seen[n] or 0) + 1
          by[name] = by[name] + 1
        end
      end
    end
    local errors_logged = {}
    logger.set_handler(function(level, msg) if level == "error" then errors_logged[#errors_logged + 1] = msg end end)
    local a = consumer_for(c, handler_of("a"), { checkpoint_table = cp, worker_id = "twin", lease_duration = 60 })
    local b = consumer_for(c, handler_of("b"), { checkpoint_table = cp, worker_id = "twin", lease_duration = 60 })
    -- Both heartbeat every round, taking turns.
    for round = 1, 30 do
      if round == 10 then
        for i = 21, 40 do assert(c:append("l", "0", "e", { n = i })) end
      end
      a.next_sync = 0
      assert(a:poll_once())
      b.next_sync = 0
      assert(b:poll_once())
    end
    logger.set_handler(function() end)
    for i = 1, 40 do assert.are.equal(1, seen[i], "event " .. i .. " handed over once") end
    assert.are.equal(1, a:stats().worker_conflicts)
    assert.are.equal(0, b:stats().worker_conflicts)
    assert.are.equal(1, #errors_logged)
    assert.matches("worker_id twin is used by two consumers at once", errors_logged[1], 1, true)
    assert.are.equal(10, by.a)
    assert.are.equal(30, by.b)
  end)

  it("follows the table to a new stream: disabled and enabled again, or the table made again", function()
    local c = ddb.ready_client()
    local n = 0
    local function append(count)
      for _ = 1, count do n = n + 1 assert(c:append("l", "0", "e", { n = n })) end
    end
    append(5)
    local seen, warnings = {}, {}
    logger.set_handler(function(level, msg) if level == "warn" then warnings[#warnings + 1] = msg end end)
    local consumer = consumer_for(c, function(batch)
      for _, r in ipairs(batch.Records) do seen[#seen + 1] = n_of(r) end
    end, { discovery_interval = 0.05 })
    assert.is_true(poll_until(consumer, function() return #seen == 5 end))
    local first_arn = assert(c:latest_stream_arn())
    assert.are.equal(first_arn, consumer:stats().stream_arn)
    append(2) -- left in the first stream, unread when it is replaced
    assert(c:call("UpdateTable", { TableName = c.table, StreamSpecification = { StreamEnabled = false } }))
    assert(c:call("UpdateTable", { TableName = c.table,
      StreamSpecification = { StreamEnabled = true, StreamViewType = "NEW_AND_OLD_IMAGES" } }))
    local second_arn = assert(c:latest_stream_arn())
    assert.are_not.equal(first_arn, second_arn)
    append(3)
    assert.is_true(poll_until(consumer, function() return #seen == 10 end), "seen: " .. table.concat(seen, ","))
    assert.are.equal(second_arn, consumer:stats().stream_arn)
    assert.are.equal(1, consumer:stats().stream_changes)
    -- The table deleted and made again: a third stream.
    append(1)
    assert(c:call("DeleteTable", { TableName = c.table }))
    assert(c:create_table())
    append(2)
    assert.is_true(poll_until(consumer, function() return #seen == 13 end), "seen: " .. table.concat(seen, ","))
    logger.set_handler(function() end)
    local expected = {}
    for i = 1, 13 do expected[i] = i end
    assert.are.same(expected, seen, "every event once, each stream read to its end before the next")
    assert.are.equal(2, consumer:stats().stream_changes)
    assert.are.equal(assert(c:latest_stream_arn()), consumer:stats().stream_arn)
    local said = 0
    for _, msg in ipairs(warnings) do
      if msg:find("stream of table " .. c.table .. " changed from", 1, true) then said = said + 1 end
    end
    assert.are.equal(2, said)
  end)

  it("with start = \"latest\", reads a stream that replaced the one it read from its oldest record", function()
    local c = ddb.ready_client()
    local seen = {}
    local consumer = consumer_for(c, function(batch)
      for _, r in ipairs(batch.Records) do seen[#seen + 1] = n_of(r) end
    end, { start = "latest", discovery_interval = 0.05 })
    assert(consumer:poll_once())
    assert(c:append("l", "0", "e", { n = 1 }))
    assert.is_true(poll_until(consumer, function() return #seen == 1 end))
    assert(c:call("UpdateTable", { TableName = c.table, StreamSpecification = { StreamEnabled = false } }))
    assert(c:call("UpdateTable", { TableName = c.table,
      StreamSpecification = { StreamEnabled = true, StreamViewType = "NEW_AND_OLD_IMAGES" } }))
    -- Written before the consumer looks again: "latest" would pass them by.
    for i = 2, 3 do assert(c:append("l", "0", "e", { n = i })) end
    assert.is_true(poll_until(consumer, function() return #seen == 3 end), "seen: " .. table.concat(seen, ","))
    assert.are.same({ 1, 2, 3 }, seen)
  end)

  it("hands a failing batch over again, and nothing after it, until it succeeds", function()
    local c = ddb.ready_client()
    append_events(c, 25)
    local deliveries, failures = {}, 0
    local consumer = consumer_for(c, function(batch)
      local first_n = n_of(batch.Records[1])
      deliveries[#deliveries + 1] = first_n
      if first_n == 11 and failures < 2 then
        failures = failures + 1
        error("downstream is down")
      end
    end)
    poll_until(consumer, function() return deliveries[#deliveries] == 21 end)
    assert.are.same({ 1, 11, 11, 11, 21 }, deliveries)
    local s = next(consumer:stats().shards) and select(2, next(consumer:stats().shards))
    assert.are.equal(2, s.retries)
  end)

  it("checkpoints just before the first item a handler reports failed", function()
    local c = ddb.ready_client()
    append_events(c, 10)
    local deliveries, reported = {}, false
    local consumer = consumer_for(c, function(batch)
      local ns = {}
      for _, r in ipairs(batch.Records) do ns[#ns + 1] = n_of(r) end
      deliveries[#deliveries + 1] = table.concat(ns, ",")
      if not reported then
        reported = true
        return { batchItemFailures = { { itemIdentifier = batch.Records[7].dynamodb.SequenceNumber },
                                       { itemIdentifier = batch.Records[9].dynamodb.SequenceNumber } } }
      end
      return { batchItemFailures = {} }
    end)
    poll_until(consumer, function() return #deliveries >= 2 end)
    assert.are.same({ "1,2,3,4,5,6,7,8,9,10", "7,8,9,10" }, deliveries)
  end)

  it("bisects a failing batch and gives up on a poison record after max_retries", function()
    local c = ddb.ready_client()
    append_events(c, 16)
    local handled, poisoned = {}, {}
    local consumer = consumer_for(c, function(batch)
      for _, r in ipairs(batch.Records) do
        if n_of(r) == 6 then error("poison") end
      end
      for _, r in ipairs(batch.Records) do handled[#handled + 1] = n_of(r) end
    end, { bisect_on_error = true, max_retries = 5, batch_size = 16,
           on_failure = function(batch, err) poisoned[#poisoned + 1] = { batch = batch, err = err } end })
    poll_until(consumer, function() return handled[#handled] == 16 end)
    assert.are.equal(1, #poisoned)
    assert.are.equal(1, #poisoned[1].batch.Records)
    assert.are.equal(6, n_of(poisoned[1].batch.Records[1]))
    assert.matches("poison", tostring(poisoned[1].err))
    local expected = {}
    for i = 1, 16 do if i ~= 6 then expected[#expected + 1] = i end end
    assert.are.same(expected, handled)
  end)

  it("writes its lease once per batch while busy (the checkpoint), renewing only a lease gone quiet", function()
    local c = ddb.ready_client()
    append_events(c, 50)
    local real, writes = http.new(), { UpdateItem = 0 }
    local cp_table = ddb.table_name("cp")
    local transport = { request = function(_, req)
      local op = req.headers["X-Amz-Target"]:match("%.(%a+)$")
      if op == "UpdateItem" and req.body:find(cp_table, 1, true) then writes.UpdateItem = writes.UpdateItem + 1 end
      return real:request(req)
    end }
    local fc = ddb.client({ table = c.table, transport = transport })
    local seen = 0
    local consumer = consumer_for(fc, function(batch) seen = seen + #batch.Records end,
      { checkpoint_table = cp_table, lease_duration = 30 })
    assert.is_true(poll_until(consumer, function() return seen == 50 end))
    local batches = 0
    for _, st in pairs(consumer:stats().shards) do batches = batches + st.batches end
    assert.are.equal(5, batches)
    -- the take, then one checkpoint per batch, and no renewal between them
    assert.are.equal(1 + 5, writes.UpdateItem)
    -- a lease not written for a third of lease_duration is renewed before the next batch
    local quiet = stream.new({ client = fc, checkpoint_table = cp_table, handler = function() end,
                               lease_duration = 0.3, batch_size = 10 })
    -- the same worker with its shards, and no heartbeat round
    quiet.worker, quiet.me, quiet.owned, quiet.next_sync = consumer.worker, consumer.me, consumer.owned, math.huge
    for _, st in pairs(quiet.owned) do st.renewed_at = st.renewed_at - 1 end
    append_events(c, 1)
    writes.UpdateItem = 0
    assert.is_true(poll_until(quiet, function() return writes.UpdateItem >= 2 end, 300),
      "writes: " .. writes.UpdateItem)
    assert.are.equal(2, writes.UpdateItem, "a renewal, then the checkpoint")
  end)

  it("gets a new iterator from the checkpoint when one has expired", function()
    local c = ddb.ready_client()
    append_events(c, 20)
    -- A transport that answers the second GetRecords as an expired iterator.
    local real, calls = http.new(), 0
    local transport = { request = function(_, req)
      if req.headers["X-Amz-Target"] == "DynamoDBStreams_20120810.GetRecords" then
        calls = calls + 1
        if calls == 2 then
          return { status = 400, headers = {}, body =
            '{"__type":"com.amazonaws.dynamodb.v20120810#ExpiredIteratorException","message":"expired"}' }
        end
      end
      return real:request(req)
    end }
    local fc = ddb.client({ table = c.table, transport = transport })
    local seen = {}
    local consumer = consumer_for(fc, function(batch)
      for _, r in ipairs(batch.Records) do seen[#seen + 1] = n_of(r) end
    end)
    poll_until(consumer, function() return seen[#seen] == 20 end)
    local expected = {}
    for i = 1, 20 do expected[i] = i end
    assert.are.same(expected, seen)
    assert.is_true(calls >= 3)
  end)

  -- A transport that changes the answer to the n-th GetRecords.
  local function doctored_get_records(n, change)
    local real, calls = http.new(), 0
    return { request = function(_, req)
      local res, err = real:request(req)
      if res and req.headers["X-Amz-Target"] == "DynamoDBStreams_20120810.GetRecords" then
        calls = calls + 1
        if calls == n then return change(res) end
      end
      return res, err
    end }
  end

  local TRIMMED = { status = 400, headers = {}, body =
    '{"__type":"com.amazonaws.dynamodb.v20120810#TrimmedDataAccessException","message":"trimmed"}' }

  -- A transport that plays a stream made two days ago (DescribeStream says
  -- so), whose requests for which trim(op, body) is true are answered
  -- TrimmedDataAccessException; with `horizon`, the records up to
  -- payload.n = horizon are gone (trimmed) from then on.
  local function old_stream(trim, horizon)
    local json = require "dynlog.json"
    local real, trimmed_once = http.new(), false
    return { request = function(_, req)
      local op = req.headers["X-Amz-Target"]:match("%.(%a+)$")
      if trim(op, req.body) then
        trimmed_once = true
        return TRIMMED
      end
      local res, err = real:request(req)
      if not res or res.status ~= 200 then return res, err end
      local doc
      if op == "DescribeStream" then
        doc = json.decode(res.body)
        doc.StreamDescription.CreationRequestDateTime = doc.StreamDescription.CreationRequestDateTime - 2 * 86400
      elseif op == "GetRecords" and trimmed_once and horizon then
        doc = json.decode(res.body)
        local kept = {}
        for _, r in ipairs(doc.Records) do if n_of(r) > horizon then kept[#kept + 1] = r end end
        doc.Records = json.array(kept)
      end
      if doc then
        res.body = json.encode(doc)
        res.headers["x-amz-crc32"] = nil
      end
      return res
    end }
  end

  -- The n-th GetRecords, and no other.
  local function nth_get_records(n)
    local calls = 0
    return function(op)
      if op ~= "GetRecords" then return false end
      calls = calls + 1
      return calls == n
    end
  end

  it("loses nothing to a TrimmedDataAccessException that cannot mean a trim: no gap, no error, no repeat", function()
    local errors_logged = {}
    logger.set_handler(function(level, msg) if level == "error" then errors_logged[#errors_logged + 1] = msg end end)
    -- DynamoDB Local answers so on a brand-new stream: one younger than 24
    -- hours has no record old enough to be trimmed.
    local c = ddb.ready_client()
    append_events(c, 8)
    local fc = ddb.client({ table = c.table, transport = doctored_get_records(2, function() return TRIMMED end) })
    local seen = {}
    local consumer = consumer_for(fc, function(batch)
      for _, r in ipairs(batch.Records) do seen[#seen + 1] = n_of(r) end
    end, { batch_size = 4 })
    poll_until(consumer, function() return #seen >= 12 end, 40)
    assert.are.same({ 1, 2, 3, 4, 5, 6, 7, 8 }, seen)
    local _, s = next(consumer:stats().shards)
    assert.is_nil(s.gaps)
    -- An older stream whose oldest record kept is still before the checkpoint: nothing after it went.
    local old = ddb.client({ table = c.table, transport = old_stream(nth_get_records(2)) })
    seen = {}
    consumer = consumer_for(old, function(batch)
      for _, r in ipairs(batch.Records) do seen[#seen + 1] = n_of(r) end
    end, { batch_size = 4 })
    poll_until(consumer, function() return #seen >= 12 end, 40)
    assert.are.same({ 1, 2, 3, 4, 5, 6, 7, 8 }, seen)
    _, s = next(consumer:stats().shards)
    assert.is_nil(s.gaps)
    logger.set_handler(function() end)
    assert.are.same({}, errors_logged)
  end)

  it("reports a real gap: records trimmed from a stream older than 24 hours before they were read", function()
    local errors_logged = {}
    logger.set_handler(function(level, msg) if level == "error" then errors_logged[#errors_logged + 1] = msg end end)
    local c = ddb.ready_client()
    append_events(c, 8)
    -- After the first batch (1-4) the stream trims 5 and 6.
    local fc = ddb.client({ table = c.table, transport = old_stream(nth_get_records(2), 6) })
    local seen = {}
    local consumer = consumer_for(fc, function(batch)
      for _, r in ipairs(batch.Records) do seen[#seen + 1] = n_of(r) end
    end, { batch_size = 4 })
    poll_until(consumer, function() return #seen >= 12 end, 40)
    logger.set_handler(function() end)
    assert.are.same({ 1, 2, 3, 4, 7, 8 }, seen)
    local _, s = next(consumer:stats().shards)
    assert.are.equal(1, s.gaps)
    assert.are.equal(1, require("dynlog.metrics").value("dynlog_consumer_gaps_total", { group = c.table }))
    assert.are.equal(1, #errors_logged)
    assert.matches("were trimmed", errors_logged[1], 1, true)
  end)

  it("marks a closed shard read to its end as finished and hands its lease back", function()
    local c = ddb.ready_client()
    append_events(c, 5)
    -- The first page is the shard's last: no NextShardIterator.
    local json = require "dynlog.json"
    local fc = ddb.client({ table = c.table, transport = doctored_get_records(1, function(res)
      local doc = json.decode(res.body)
      doc.NextShardIterator = nil
      res.body = json.encode(doc)
      res.headers["x-amz-crc32"] = nil
      return res
    end) })
    local seen = 0
    local cp = ddb.table_name("cp")
    local consumer = consumer_for(fc, function(batch) seen = seen + #batch.Records end,
      { checkpoint_table = cp, batch_size = 10 })
    for _ = 1, 5 do assert(consumer:poll_once()) end
    assert.are.equal(5, seen)
    local leases = require "dynlog.pipeline.leases"
    local all = assert(leases.read_all(c, cp, c.table))
    local _, lease = next(all)
    assert.are.equal(leases.SHARD_END, lease.checkpoint)
    assert.is_nil(lease.owner)
  end)

  it("bisects down to the poison record alone: with max_retries = 0 no good record goes to on_failure", function()
    local c = ddb.ready_client()
    append_events(c, 16)
    local handled, poisoned, calls = {}, {}, {}
    local consumer = consumer_for(c, function(batch)
      calls[#calls + 1] = #batch.Records
      for _, r in ipairs(batch.Records) do
        if n_of(r) == 6 then error("poison") end
      end
      for _, r in ipairs(batch.Records) do handled[#handled + 1] = n_of(r) end
    end, { bisect_on_error = true, max_retries = 0, batch_size = 16,
           on_failure = function(batch)
             for _, r in ipairs(batch.Records) do poisoned[#poisoned + 1] = n_of(r) end
           end })
    assert.is_true(poll_until(consumer, function() return handled[#handled] == 16 end))
    assert.are.same({ 6 }, poisoned)
    local expected = {}
    for i = 1, 16 do if i ~= 6 then expected[#expected + 1] = i end end
    assert.are.same(expected, handled)
    -- As Lambda's halves: 16 fails, 1-8 fails, 1-4 passes, 5-8 fails, 5-6
    -- fails, 5 passes, 6 fails and is given up on, then 7-8 and 9-16 as
    -- the halves they were; batches of full size after that.
    assert.are.same({ 16, 8, 4, 4, 2, 1, 1, 2, 8 }, calls)
    for i = 101, 110 do assert(c:append("l", "0", "e", { n = i })) end
    assert.is_true(poll_until(consumer, function() return #handled == 25 end))
    assert.are.same({ 16, 8, 4, 4, 2, 1, 1, 2, 8, 10 }, calls)
  end)

  it("takes a failure list that names no record as a failure of the whole batch", function()
    local c = ddb.ready_client()
    append_events(c, 3)
    local calls = 0
    local consumer = consumer_for(c, function(batch)
      calls = calls + 1
      if calls == 1 then return { batchItemFailures = { "oops", 7 } } end
      assert(#batch.Records == 3)
    end)
    assert.is_true(poll_until(consumer, function() return calls == 2 end))
    local _, s = next(consumer:stats().shards)
    assert.are.equal(1, s.retries)
    assert.are.equal(3, s.records)
  end)

  it("logs every batch at debug level", function()
    local c = ddb.ready_client()
    append_events(c, 3)
    local lines = {}
    logger.set_handler(function(level, message) lines[#lines + 1] = level .. " " .. message end)
    logger.set_level("debug")
    local handed = 0
    local consumer = consumer_for(c, function(batch) handed = handed + #batch.Records end, { batch_size = 2 })
    local ok = poll_until(consumer, function() return handed == 3 end)
    logger.set_level("warn")
    logger.set_handler(function() end)
    assert.is_true(ok)
    local batches = {}
    for _, line in ipairs(lines) do
      if line:match("^debug stream: shard %S+: %d+ record%(s%) from %d+$") then batches[#batches + 1] = line end
    end
    assert.are.equal(2, #batches, table.concat(lines, "\n"))
  end)

  it("keeps lag_ms current: growing while a batch keeps failing, 0 once caught up", function()
    local c = ddb.ready_client()
    append_events(c, 3)
    local clock_offset, failing = 0, true
    local consumer = consumer_for(c, function() if failing then error("down") end end,
      { now = function() return socket.gettime() + clock_offset end })
    local function lag()
      local _, s = next(consumer:stats().shards)
      return s and s.lag_ms
    end
    assert(consumer:poll_once())
    local first = assert(lag())
    clock_offset = 60
    assert(consumer:poll_once())
    assert.is_true(lag() >= first + 59000, ("lag went from %s to %s ms"):format(first, lag()))
    failing = false
    assert.is_true(poll_until(consumer, function() return lag() == 0 end, 20))
  end)

  it("resumes at the oldest record when its checkpoint is older than the stream keeps", function()
    local c = ddb.ready_client()
    append_events(c, 8)
    local cp = ddb.table_name("cp")
    local seen = 0
    local first = consumer_for(c, function(batch) seen = seen + #batch.Records end,
      { checkpoint_table = cp, batch_size = 4 })
    assert.is_true(poll_until(first, function() return seen == 4 end))
    first:release()
    -- A checkpoint past the stream's 24 hours: GetShardIterator itself
    -- refuses it, and the oldest record kept is 7.
    local fc = ddb.client({ table = c.table, transport = old_stream(function(op, body)
      return op == "GetShardIterator" and body:find("AFTER_SEQUENCE_NUMBER", 1, true) ~= nil
    end, 6) })
    local again = {}
    local second = consumer_for(fc, function(batch)
      for _, r in ipairs(batch.Records) do again[#again + 1] = n_of(r) end
    end, { checkpoint_table = cp, batch_size = 4 })
    assert.is_true(poll_until(second, function() return #again == 2 end))
    assert.are.same({ 7, 8 }, again)
    local _, s = next(second:stats().shards)
    assert.are.equal(1, s.gaps)
  end)

  it("with start = \"latest\", hands over to the next worker the records the first could not finish", function()
    local c = ddb.ready_client()
    append_events(c, 2) -- before the group starts: not for "latest"
    local cp = ddb.table_name("cp")
    local first = consumer_for(c, function() error("down") end, { checkpoint_table = cp, start = "latest" })
    assert(first:poll_once()) -- takes the shard, and its iterator at LATEST
    for i = 11, 13 do assert(c:append("l", "0", "e", { n = i })) end
    for _ = 1, 5 do first:poll_once() socket.sleep(0.01) end
    first:release() -- handed over before any checkpoint
    local seen = {}
    local second = consumer_for(c, function(batch)
      for _, r in ipairs(batch.Records) do seen[#seen + 1] = n_of(r) end
    end, { checkpoint_table = cp, start = "latest" })
    assert.is_true(poll_until(second, function() return #seen >= 3 end))
    assert.are.same({ 11, 12, 13 }, seen)
  end)

  describe("across a shard split", function()
    local split_stream = require "spec.support.split_stream"

    it("decides where a new shard starts from the shard tree, whoever made the other leases", function()
      local one, two = ddb.ready_client(), ddb.ready_client()
      local split = split_stream.new(one, two, { siblings = true })
      split.split()
      local fc = ddb.client({ table = one.table, transport = split.transport })
      local cp = ddb.table_name("cp")
      local leases = require "dynlog.pipeline.leases"
      assert(leases.create_table(one, cp))
      -- Another worker of a "latest" group got to the first shard first.
      assert(leases.ensure(one, cp, one.table, { ShardId = split.parent_shard }, "LATEST"))
      local consumer = consumer_for(fc, function() end, { checkpoint_table = cp, start = "latest" })
      assert(consumer:poll_once())
      local all = assert(leases.read_all(one, cp, one.table))
      assert.are.equal("LATEST", all[split.child_shard].start, "a sibling is no child: it starts at latest too")
    end)

    it("with start = \"latest\", finishes a shard that was closed before the group started", function()
      local parent, child = ddb.ready_client(), ddb.ready_client()
      local split = split_stream.new(parent, child)
      for i = 1, 2 do assert(parent:append("l", "0", "e", { n = i })) end
      split.split()
      split.close_parent()
      assert(child:append("l", "0", "e", { n = 3 })) -- all history when the group starts
      local fc = ddb.client({ table = parent.table, transport = split.transport })
      local seen = {}
      local consumer = consumer_for(fc, function(batch)
        for _, r in ipairs(batch.Records) do seen[#seen + 1] = n_of(r) end
      end, { start = "latest", lease_duration = 0.3, discovery_interval = 0.05 })
      for _ = 1, 5 do assert(consumer:poll_once()) socket.sleep(0.01) end
      assert(child:append("l", "0", "e", { n = 4 }))
      assert.is_true(poll_until(consumer, function() return #seen >= 1 end, 500))
      assert.are.same({ 4 }, seen)
    end)

    it("reads the child from its start once the parent is done, also with start = \"latest\"", function()
      local parent, child = ddb.ready_client(), ddb.ready_client()
      local split = split_stream.new(parent, child)
      local fc = ddb.client({ table = parent.table, transport = split.transport })
      assert(parent:append("l", "0", "e", { n = 0 })) -- before the consumer: not for "latest"
      local seen = {}
      local consumer = consumer_for(fc, function(batch, shard)
        for _, r in ipairs(batch.Records) do seen[#seen + 1] = { n = n_of(r), shard = shard } end
      end, { start = "latest", lease_duration = 0.3, discovery_interval = 0.05 })
      assert(consumer:poll_once()) -- takes the shard, and its iterator at LATEST
      for i = 1, 5 do assert(parent:append("l", "0", "e", { n = i })) end
      split.split()
      split.close_parent()
      -- Written to the child after the split, before the consumer knows of it.
      for i = 6, 8 do assert(child:append("l", "0", "e", { n = i })) end
      assert.is_true(poll_until(consumer, function() return #seen >= 8 end, 500), #seen .. " records seen")
      local ns = {}
      for i, r in ipairs(seen) do
        ns[i] = r.n
        assert.are.equal(r.n <= 5 and split.parent_shard or split.child_shard, r.shard)
      end
      assert.are.same({ 1, 2, 3, 4, 5, 6, 7, 8 }, ns)
    end)

    it("spreads shards evenly: a worker that joins is handed its share by the busy one", function()
      local one, two = ddb.ready_client(), ddb.ready_client()
      local split = split_stream.new(one, two, { siblings = true })
      split.split() -- two shards side by side
      local fc = ddb.client({ table = one.table, transport = split.transport })
      local clock = 1000
      local cp = ddb.table_name("cp")
      local workers_of, handled = {}, 0
      local function consumer(name)
        return consumer_for(fc, function(batch, shard)
          workers_of[shard] = workers_of[shard] or {}
          workers_of[shard][name] = true
          handled = handled + #batch.Records
        end, { checkpoint_table = cp, worker_id = name, lease_duration = 3, now = function() return clock end })
      end
      local function owned(c)
        local n = 0
        for _, s in pairs(c:stats().shards) do if s.owned then n = n + 1 end end
        return n
      end
      local a = consumer("a")
      assert(a:poll_once())
      assert.are.equal(2, owned(a), "alone, a works both shards")
      local b = consumer("b")
      for _ = 1, 4 do
        clock = clock + 1.1 -- past a heartbeat (lease_duration / 3), well before expiry
        assert(b:poll_once())
        assert(a:poll_once())
      end
      assert.are.same({ 1, 1 }, { owned(a), owned(b) })
      local leases = require "dynlog.pipeline.leases"
      local owners = {}
      for _, lease in pairs(assert(leases.read_all(one, cp, one.table))) do owners[#owners + 1] = lease.owner end
      table.sort(owners)
      assert.are.same({ "a", "b" }, owners)
      for i = 1, 5 do
        assert(one:append("l", "x", "e", { n = i }))
        assert(two:append("l", "y", "e", { n = i }))
      end
      for _ = 1, 300 do
        if handled >= 10 then break end
        clock = clock + 0.3
        assert(a:poll_once())
        assert(b:poll_once())
        socket.sleep(0.005)
      end
      assert.are.equal(10, handled)
      for shard, workers in pairs(workers_of) do
        local names = {}
        for name in pairs(workers) do names[#names + 1] = name end
        assert.are.equal(1, #names, shard .. " was worked by " .. table.concat(names, " and "))
      end
    end)

    it("finishes a parent trimmed away before its checkpoint, reports the gap, and starts the child", function()
      local parent, child = ddb.ready_client(), ddb.ready_client()
      local split = split_stream.new(parent, child)
      local fc = ddb.client({ table = parent.table, transport = split.transport })
      for i = 1, 3 do assert(parent:append("l", "0", "e", { n = i })) end
      local cp = ddb.table_name("cp")
      local seen = {}
      local handler = function(batch) for _, r in ipairs(batch.Records) do seen[#seen + 1] = n_of(r) end end
      local first = consumer_for(fc, handler, { checkpoint_table = cp, batch_size = 2, lease_duration = 0.3 })
      assert.is_true(poll_until(first, function() return #seen == 2 end))
      first:release()
      -- Long after: the parent, closed, has been trimmed away with record 3.
      split.split()
      split.trim_parent()
      for i = 4, 5 do assert(child:append("l", "0", "e", { n = i })) end
      seen = {}
      local second = consumer_for(fc, handler, { checkpoint_table = cp, batch_size = 2, lease_duration = 0.3,
                                                 discovery_interval = 0.05 })
      assert.is_true(poll_until(second, function() return #seen == 2 end, 500), #seen .. " records seen")
      assert.are.same({ 4, 5 }, seen)
      assert.are.equal(1, second:stats().shards[split.parent_shard].gaps)
      local leases = require "dynlog.pipeline.leases"
      local all = assert(leases.read_all(parent, cp, parent.table))
      assert.are.equal(leases.SHARD_END, all[split.parent_shard].checkpoint)
    end)
  end)

  it("lets one of two consumers work a shard, and the other take it once the lease expires", function()
    local c = ddb.ready_client()
    append_events(c, 10)
    local clock = 1000
    local now = function() return clock end
    local cp = ddb.table_name("cp")
    local by = {}
    local function handler_of(name)
      return function(batch) for _ = 1, #batch.Records do by[name] = (by[name] or 0) + 1 end end
    end
    local a = consumer_for(c, handler_of("a"), { checkpoint_table = cp, worker_id = "a", now = now,
                                                 lease_duration = 10, batch_size = 5 })
    local b = consumer_for(c, handler_of("b"), { checkpoint_table = cp, worker_id = "b", now = now,
                                                 lease_duration = 10, batch_size = 5 })
    assert(a:poll_once())
    assert(b:poll_once())
    assert.are.equal(5, by.a)
    assert.is_nil(by.b, "b waits while a holds the lease")
    -- a dies without handing its lease back; b's clock sees it stand still.
    for _ = 1, 3 do clock = clock + 4 assert(b:poll_once()) end
    assert.are.equal(5, by.b, "b took over from a's checkpoint")
  end)
end)

---------------------------------------------------------------------------
-- Separate processes
---------------------------------------------------------------------------

local function start_consumer(c, cp, worker, out, lease, batch, delay, label)
  local env = run.lua_env({ DYNLOG_TEST_ENDPOINT = os.getenv("DYNLOG_TEST_ENDPOINT") })
  local prefix = {}
  for k, v in pairs(env) do prefix[#prefix + 1] = k .. "=" .. run.quote(v) end
  local pipe = assert(io.popen(("env %s lua5.4 spec/support/consumer.lua %s %s %s %s %s %s %s %s "
    .. ">>%s.stderr 2>&1 & echo $!"):format(table.concat(prefix, " "), c.table, cp, worker, out,
    lease, batch, delay, label or worker, out)))
  local pid = assert(tonumber(pipe:read("*l")))
  pipe:close()
  return pid
end

local function read_lines(path)
  local lines = {}
  local f = io.open(path, "r")
  if not f then return lines end
  for line in f:lines() do lines[#lines + 1] = line end
  f:close()
  return lines
end

local function records_in(path)
  local count, per_key = 0, {}
  for _, line in ipairs(read_lines(path)) do
    local pk, sk = line:match("^record %S+ %S+ %S+ (%S+) (%S+)$")
    if pk then
      count = count + 1
      per_key[pk .. "/" .. sk] = (per_key[pk .. "/" .. sk] or 0) + 1
    end
  end
  return count, per_key
end

local function wait_for(cond, seconds, interval)
  local deadline = socket.gettime() + seconds
  while socket.gettime() < deadline do
    if cond() then return true end
    socket.sleep(interval or 0.1)
  end
  return false
end

local function distinct(per_key)
  local n = 0
  for _ in pairs(per_key) do n = n + 1 end
  return n
end

describe("dynlog.consumer consumer processes", function()
  local pids = {}
  after_each(function()
    for _, pid in ipairs(pids) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
    pids = {}
  end)

  it("loses nothing when killed with SIGKILL mid-batch, and hands over again that batch and nothing else", function()
    local c = ddb.ready_client()
    local N, BATCH = 120, 10
    append_events(c, N, 6)
    local cp, out = ddb.table_name("cp"), os.tmpname()
    -- Slow batches, whose records are logged as they start: kill the
    -- process as soon as one has started, so that it dies inside it.
    pids[1] = start_consumer(c, cp, "first", out, 2, BATCH, 0.5)
    assert.is_true(wait_for(function()
      local lines = read_lines(out)
      return (records_in(out)) >= 30 and lines[#lines]:match("^record first ") ~= nil
    end, 60, 0.01), "first consumer made progress")
    os.execute("kill -9 " .. pids[1])
    -- The batch it died in: its records after its last finished batch.
    local unfinished = {}
    for _, line in ipairs(read_lines(out)) do
      if line:match("^batch first ") then unfinished = {} end
      local pk, sk = line:match("^record first %S+ %S+ (%S+) (%S+)$")
      if pk then unfinished[pk .. "/" .. sk] = true end
    end
    assert.are.equal(BATCH, distinct(unfinished))
    pids[2] = start_consumer(c, cp, "second", out, 2, BATCH, 0)
    assert.is_true(wait_for(function()
      local _, per_key = records_in(out)
      return distinct(per_key) == N
    end, 60), "every event was handed over after the restart")
    local _, per_key = records_in(out)
    assert.are.equal(N, distinct(per_key))
    local duplicated = {}
    for key, n in pairs(per_key) do
      if n > 1 then
        assert.are.equal(2, n, key)
        duplicated[key] = true
      end
    end
    assert.are.same(unfinished, duplicated)
    os.remove(out)
  end)

  it("shares the work between two consumers: nothing lost, no shard worked by both at once, "
    .. "a stopped worker's shard taken over", function()
    local c = ddb.ready_client()
    local N = 80
    append_events(c, N, 4)
    local cp, out = ddb.table_name("cp"), os.tmpname()
    pids[1] = start_consumer(c, cp, "w1", out, 2, 5, 0.05)
    pids[2] = start_consumer(c, cp, "w2", out, 2, 5, 0.05)
    assert.is_true(wait_for(function() return (records_in(out)) >= 30 end, 30))
    -- Kill whichever worker holds the shard now; the other must take over.
    local holder
    for _, line in ipairs(read_lines(out)) do holder = line:match("^batch (%S+)") or holder end
    local victim = holder == "w1" and pids[1] or pids[2]
    os.execute("kill -9 " .. victim)
    assert.is_true(wait_for(function()
      local _, per_key = records_in(out)
      return distinct(per_key) == N
    end, 60), "all events handed over")
    -- From the handlers' own log: per shard, batch intervals of different
    -- workers never overlap.
    local intervals = {}
    for _, line in ipairs(read_lines(out)) do
      local w, shard, s, e = line:match("^batch (%S+) (%S+) (%d+) (%d+)$")
      if w then
        intervals[shard] = intervals[shard] or {}
        table.insert(intervals[shard], { w = w, s = tonumber(s), e = tonumber(e) })
      end
    end
    local workers = {}
    for _, list in pairs(intervals) do
      for i = 1, #list do
        workers[list[i].w] = true
        for j = i + 1, #list do
          local a, b = list[i], list[j]
          if a.w ~= b.w then
            assert.is_true(a.e <= b.s or b.e <= a.s, ("%s and %s overlap on a shard"):format(a.w, b.w))
          end
        end
      end
    end
    assert.is_true(workers.w1 and workers.w2, "both workers handled batches")
    os.remove(out)
  end)

  it("says at error level when two processes run under one worker_id, and lets only one work the shard", function()
    local c = ddb.ready_client()
    local N = 60
    append_events(c, N)
    local cp, out = ddb.table_name("cp"), os.tmpname()
    pids[1] = start_consumer(c, cp, "twin", out, 1.5, 5, 0.05, "first")
    assert.is_true(wait_for(function() return (records_in(out)) >= 10 end, 30))
    pids[2] = start_consumer(c, cp, "twin", out, 1.5, 5, 0.05, "second")
    assert.is_true(wait_for(function()
      local _, per_key = records_in(out)
      return distinct(per_key) == N
    end, 60), "all events handed over")
    socket.sleep(1.5) -- a few more heartbeats of both
    local said = false
    for _, line in ipairs(read_lines(out .. ".stderr")) do
      if line:find("worker_id twin is used by two consumers at once", 1, true) then said = true end
    end
    assert.is_true(said, "the conflict is logged at error")
    -- At most the batch in hand when the second took the shard over is handed over twice.
    local _, per_key = records_in(out)
    local twice = 0
    for _, n in pairs(per_key) do
      assert.is_true(n <= 2)
      if n == 2 then twice = twice + 1 end
    end
    assert.is_true(twice <= 5, twice .. " events handed over twice")
    os.remove(out)
    os.remove(out .. ".stderr")
  end)

  it("hands its leases back on SIGTERM", function()
    local c = ddb.ready_client()
    append_events(c, 5)
    local cp, out = ddb.table_name("cp"), os.tmpname()
    pids[1] = start_consumer(c, cp, "polite", out, 30, 5, 0)
    assert.is_true(wait_for(function() return (records_in(out)) >= 5 end, 30))
    os.execute("kill -TERM " .. pids[1])
    assert.is_true(wait_for(function()
      for _, line in ipairs(read_lines(out)) do if line == "stopped polite" then return true end end
    end, 10), "run() returned on SIGTERM")
    local leases = require "dynlog.pipeline.leases"
    local all = assert(leases.read_all(c, cp, c.table))
    for _, lease in pairs(all) do assert.is_nil(lease.owner) end
    os.remove(out)
  end)
end)

