-- dynlog.pipeline.shard_reader: reading DynamoDB Local's streams without
-- leases, over expired and trimmed iterators, and a whole stream's shards.
local ddb = require "spec.support.ddb"
local http = require "dynlog.transport.curl"
local shard_reader = require "dynlog.pipeline.shard_reader"
local split_stream = require "spec.support.split_stream"

local function n_of(record)
  return tonumber(record.dynamodb.NewImage.payload.M.n.N)
end

local function append_events(c, from, to)
  for i = from, to do assert(c:append("l", "1", "e", { n = i })) end
end

local function only_shard(c)
  local arn = assert(c:latest_stream_arn())
  return arn, assert(c:describe_stream(arn)).Shards[1].ShardId
end

-- Reads until `n` records came (or 50 pages); the n's of what was read.
local function read_n(r, n, limit)
  local seen = {}
  for _ = 1, 50 do
    local records = assert(r:read(limit or 1000))
    for _, record in ipairs(records) do seen[#seen + 1] = n_of(record) end
    if #seen >= n then break end
  end
  return seen
end

local function range(from, to)
  local out = {}
  for i = from, to do out[#out + 1] = i end
  return out
end

local AWS = "com.amazonaws.dynamodb.v20120810#"
local function aws_error(name)
  return { status = 400, headers = {}, body = '{"__type":"' .. AWS .. name .. '","message":"doctored"}' }
end

-- A transport that answers the calls of operation `op` numbered in `which`
-- (a set of call counts) with `answer`; every other request goes through.
local function doctored(op, which, answer)
  local real, calls = http.new(), 0
  return { request = function(_, req)
    if req.headers["X-Amz-Target"] == "DynamoDBStreams_20120810." .. op then
      calls = calls + 1
      if which[calls] then return answer end
    end
    return real:request(req)
  end }
end

describe("dynlog.pipeline.shard_reader", function()
  describe("one shard", function()
    it("reads from TRIM_HORIZON page by page, to the records that come later", function()
      local c = ddb.ready_client()
      append_events(c, 1, 5)
      local arn, shard = only_shard(c)
      local r = shard_reader.new(c, arn, shard)
      assert.are.same(range(1, 5), read_n(r, 5, 2))
      append_events(c, 6, 7)
      assert.are.same({ 6, 7 }, read_n(r, 2))
      assert.is_false(r.closed, "DynamoDB Local's shard never closes")
    end)

    it("from LATEST, opened before the read: what comes after open", function()
      local c = ddb.ready_client()
      append_events(c, 1, 3)
      local arn, shard = only_shard(c)
      local r = shard_reader.new(c, arn, shard, { start = "LATEST" })
      assert(r:open())
      append_events(c, 4, 5)
      assert.are.same({ 4, 5 }, read_n(r, 2))
    end)

    it("opens an expired iterator again after the last record read: nothing lost, nothing twice", function()
      local c = ddb.ready_client()
      append_events(c, 1, 6)
      local arn, shard = only_shard(c)
      local fc = ddb.client({ table = c.table, transport = doctored("GetRecords", { [2] = true },
        aws_error("ExpiredIteratorException")) })
      local r = shard_reader.new(fc, arn, shard)
      assert.are.same({ 1, 2 }, read_n(r, 2, 2))
      assert.are.same({}, assert(r:read(2)), "the expired page reads nothing")
      assert.is_nil(r.iterator)
      assert.are.same(range(3, 6), read_n(r, 4, 2))
    end)

    it("asks the caller's position whenever an iterator opens", function()
      local c = ddb.ready_client()
      append_events(c, 1, 6)
      local arn, shard = only_shard(c)
      local all = read_n(shard_reader.new(c, arn, shard), 6)
      assert.are.same(range(1, 6), all)
      local records = assert(shard_reader.new(c, arn, shard):read(1000))
      local asked = 0
      local r = shard_reader.new(c, arn, shard, { position = function()
        asked = asked + 1
        return "AFTER_SEQUENCE_NUMBER", records[4].dynamodb.SequenceNumber
      end })
      assert.are.same({ 5, 6 }, read_n(r, 2))
      assert.are.equal(1, asked)
      r = shard_reader.new(c, arn, shard, { position = function()
        return "AT_SEQUENCE_NUMBER", records[2].dynamodb.SequenceNumber
      end })
      assert.are.same(range(2, 6), read_n(r, 5))
    end)

    it("resumes a trimmed iterator at the oldest record kept, and says what the trim passed over", function()
      local c = ddb.ready_client()
      append_events(c, 1, 6)
      local arn, shard = only_shard(c)
      local fc = ddb.client({ table = c.table, transport = doctored("GetRecords", { [2] = true },
        aws_error("TrimmedDataAccessException")) })
      local given
      local r = shard_reader.new(fc, arn, shard, { on_trimmed = function(records, trimmed)
        given = { n = #records, trimmed = trimmed }
        local kept = {}
        for _, record in ipairs(records) do if n_of(record) > 2 then kept[#kept + 1] = record end end
        return kept
      end })
      local first = assert(r:read(2))
      assert.are.same({ 1, 2 }, { n_of(first[1]), n_of(first[2]) })
      assert.are.same({}, assert(r:read(2)), "the trimmed page reads nothing")
      assert.is_nil(given)
      -- the next page starts at the horizon (here: record 1), judged by on_trimmed
      assert.are.same({ 3, 4, 5, 6 }, read_n(r, 4))
      assert.are.same({ n = 6, trimmed = { after = first[2].dynamodb.SequenceNumber } }, given)
    end)

    it("reads the page after a trim as it is without on_trimmed, and from TRIM_HORIZON when opened again", function()
      local c = ddb.ready_client()
      append_events(c, 1, 4)
      local arn, shard = only_shard(c)
      local fc = ddb.client({ table = c.table, transport = doctored("GetRecords", { [2] = true, [4] = true },
        aws_error("TrimmedDataAccessException")) })
      local r = shard_reader.new(fc, arn, shard)
      assert.are.same({ 1, 2 }, read_n(r, 2, 2))
      assert.are.same({}, assert(r:read(2)))
      assert.are.same({ 1, 2 }, read_n(r, 2, 2), "from the horizon: this stream keeps every record")
      assert.are.same({}, assert(r:read(2)))
      r.iterator = nil -- as after an expiry: a new iterator at the position, now the horizon
      assert.are.same(range(1, 4), read_n(r, 4))
    end)

    it("keeps the page after a trim unread when on_trimmed fails", function()
      local c = ddb.ready_client()
      append_events(c, 1, 3)
      local arn, shard = only_shard(c)
      local fc = ddb.client({ table = c.table, transport = doctored("GetShardIterator", { [1] = true },
        aws_error("TrimmedDataAccessException")) })
      local fail = true
      local r = shard_reader.new(fc, arn, shard, { on_trimmed = function(records, trimmed)
        assert.are.same({}, trimmed, "opened at a start: no position passed over")
        if fail then return nil, "no judge" end
        return records
      end })
      local ok, how = r:open()
      assert.is_true(ok)
      assert.are.equal("trimmed", how)
      local records, err = r:read(1000)
      assert.is_nil(records)
      assert.are.equal("no judge", err)
      fail = false
      assert.are.same({ 1, 2, 3 }, read_n(r, 3))
    end)

    it("returns the other errors of the stream", function()
      local c = ddb.ready_client()
      local arn, shard = only_shard(c)
      local r = shard_reader.new(c, arn, "shardId-not-there")
      local records, err = r:read(10)
      assert.is_nil(records)
      assert.are.equal("ResourceNotFoundException", err.code)
      assert.is_nil(r.iterator)
      assert.is_truthy(shard)
    end)

    it("refuses options it does not know, and a start that is no start", function()
      assert.has_error(function() shard_reader.new({}, "arn", "s", { strat = "LATEST" }) end)
      assert.has_error(function() shard_reader.new({}, "arn", "s", { start = "latest" }) end,
        'shard_reader.new: start must be "TRIM_HORIZON" or "LATEST"')
      assert.has_error(function() shard_reader.new({}, "arn", "s", { position = "LATEST" }) end,
        "shard_reader.new: position must be a function")
    end)
  end)

  describe("shards", function()
    it("puts every parent before its children", function()
      local ordered = shard_reader.parents_first({
        { ShardId = "c", ParentShardId = "b" }, { ShardId = "x" }, { ShardId = "b", ParentShardId = "a" },
        { ShardId = "a", ParentShardId = "gone" },
      })
      local ids = {}
      for i, s in ipairs(ordered) do ids[i] = s.ShardId end
      assert.are.same({ "a", "b", "c", "x" }, ids)
    end)

    it("knows a closed shard by the end of its range", function()
      assert.is_false(shard_reader.is_closed({ SequenceNumberRange = { StartingSequenceNumber = "1" } }))
      assert.is_false(shard_reader.is_closed({}))
      assert.is_true(shard_reader.is_closed({ SequenceNumberRange = { EndingSequenceNumber = "9" } }))
    end)

    it("lists the shards not known yet, with the stream's description", function()
      local c = ddb.ready_client()
      local arn, shard = only_shard(c)
      local found, desc = assert(shard_reader.new_shards(c, arn, {}))
      assert.are.equal(shard, found[1].ShardId)
      assert.is_table(desc.Shards)
      found = assert(shard_reader.new_shards(c, arn, { [shard] = true }))
      assert.are.same({}, found)
    end)
  end)

  describe("follow", function()
    it("reads a child shard from its start once its parent is read to its end", function()
      local parent, child = ddb.ready_client(), ddb.ready_client()
      local split = split_stream.new(parent, child)
      local fc = ddb.client({ table = parent.table, transport = split.transport })
      assert(parent:append("l", "0", "e", { n = 0 })) -- before the follower: not from LATEST
      local f = shard_reader.follow(fc, assert(fc:latest_stream_arn()), false)
      assert(f:discover())
      assert(f:open())
      local seen = {}
      local function poll()
        assert(f:poll(function(record) seen[#seen + 1] = n_of(record) end))
      end
      assert(parent:append("l", "0", "e", { n = 1 }))
      poll()
      assert.are.same({ 1 }, seen)
      split.split()
      assert(child:append("l", "0", "e", { n = 3 }))
      assert(f:discover())
      poll()
      assert.are.same({ 1 }, seen, "the child waits for its parent")
      assert(parent:append("l", "0", "e", { n = 2 }))
      split.close_parent()
      for _ = 1, 5 do poll() end
      assert.are.same({ 1, 2, 3 }, seen)
    end)

    it("reads every shard from its oldest record with from_start, stopping where on_record says", function()
      local c = ddb.ready_client()
      append_events(c, 1, 4)
      local f = shard_reader.follow(c, assert(c:latest_stream_arn()), true)
      assert(f:discover())
      assert(f:open())
      local seen = {}
      local n = assert(f:poll(function(record)
        seen[#seen + 1] = n_of(record)
        return #seen < 3
      end))
      assert.are.equal(3, n)
      assert.are.same({ 1, 2, 3 }, seen)
    end)
  end)
end)
