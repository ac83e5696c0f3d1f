-- The DynamoDB Streams primitives follow their pages: DescribeStream by
-- LastEvaluatedShardId, ListStreams by LastEvaluatedStreamArn. DynamoDB
-- Local answers in one page, so its real answers are cut into two here.
local ddb = require "spec.support.ddb"
local http = require "dynlog.transport.curl"
local json = require "dynlog.json"
local split_stream = require "spec.support.split_stream"

local PREFIX = "DynamoDBStreams_20120810."

-- A transport that answers the first call of `operation` with only the
-- first element of `list_field` and where the next page starts, and the
-- next call (which names that start) with the rest of the first answer.
local function two_pages(inner, operation, list_field, last_field, id_of)
  local calls, rest = {}, nil
  return { calls = calls, request = function(_, req)
    local res, err = inner:request(req)
    if req.headers["X-Amz-Target"] ~= PREFIX .. operation or not res or res.status ~= 200 then return res, err end
    local params = json.decode(req.body)
    calls[#calls + 1] = params
    local doc = json.decode(res.body)
    local holder = doc.StreamDescription or doc
    local page = json.array()
    if #calls == 1 then
      local list = holder[list_field]
      assert(#list >= 2, "two elements to page over")
      page[1], rest = list[1], {}
      for i = 2, #list do rest[#rest + 1] = list[i] end
      holder[last_field] = id_of(list[1])
    else
      for i, v in ipairs(rest) do page[i] = v end
      holder[last_field] = nil
    end
    holder[list_field] = page
    res.body = json.encode(doc)
    res.headers["x-amz-crc32"] = nil
    return res
  end }
end

-- ListStreams of a table answering with its streams and those of `second`
-- (DynamoDB Local keeps one stream a table).
local function two_tables(second)
  local real = http.new()
  return { request = function(_, req)
    if req.headers["X-Amz-Target"] == PREFIX .. "ListStreams" then
      local params = json.decode(req.body)
      local res, err = real:request(req)
      if not res or res.status ~= 200 then return res, err end
      local doc = json.decode(res.body)
      params.TableName = second.table
      req.body = json.encode(params)
      local more = json.decode(assert(real:request(req)).body)
      for _, s in ipairs(more.Streams) do doc.Streams[#doc.Streams + 1] = s end
      res.body = json.encode(doc)
      res.headers["x-amz-crc32"] = nil
      return res
    end
    return real:request(req)
  end }
end

describe("DynamoDB Streams primitives", function()
  it("describe_stream follows LastEvaluatedShardId, asking for at most 100 shards a page", function()
    local one, two = ddb.ready_client(), ddb.ready_client()
    local split = split_stream.new(one, two, { siblings = true })
    split.split()
    local paged = two_pages(split.transport, "DescribeStream", "Shards", "LastEvaluatedShardId",
      function(shard) return shard.ShardId end)
    local c = ddb.client({ table = one.table, transport = paged })
    local desc = assert(c:describe_stream(assert(c:latest_stream_arn())))
    assert.are.equal(2, #paged.calls)
    assert.are.equal(100, paged.calls[1].Limit)
    assert.are.equal(split.parent_shard, paged.calls[2].ExclusiveStartShardId)
    assert.are.same({ split.parent_shard, split.child_shard }, { desc.Shards[1].ShardId, desc.Shards[2].ShardId })
    assert.is_nil(desc.LastEvaluatedShardId)
  end)

  it("list_streams follows LastEvaluatedStreamArn", function()
    local c, other = ddb.ready_client(), ddb.ready_client()
    local paged = two_pages(two_tables(other), "ListStreams", "Streams", "LastEvaluatedStreamArn",
      function(s) return s.StreamArn end)
    local pc = ddb.client({ table = c.table, transport = paged })
    local streams = assert(pc:list_streams())
    assert.are.equal(2, #paged.calls)
    assert.are.equal(2, #streams)
    assert.are.equal(streams[1].StreamArn, paged.calls[2].ExclusiveStartStreamArn)
    assert.are_not.equal(streams[1].StreamArn, streams[2].StreamArn)
  end)

  it("describe_stream answers bad_response, not a Lua error, for an answer without a StreamDescription", function()
    local c = ddb.client({ transport = { request = function(_, req)
      assert.are.equal(PREFIX .. "DescribeStream", req.headers["X-Amz-Target"])
      return { status = 200, headers = {}, body = "{}" }
    end } })
    local desc, err = c:describe_stream("arn:aws:dynamodb:us-east-1:1:table/t/stream/x")
    assert.is_nil(desc)
    assert.are.equal("bad_response", err.code)
    assert.matches("StreamDescription", err.message, 1, true)
  end)
end)
