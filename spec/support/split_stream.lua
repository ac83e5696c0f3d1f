--- A shard split, made of two real streams of DynamoDB Local (which gives
-- every table one shard that never closes).
--
--   local split = require("spec.support.split_stream").new(parent_client, child_client)
--   local c = ddb.client({ table = parent_client.table, transport = split.transport })
--   split.split()        -- the stream now also lists the child shard, with its parent
--   split.close_parent() -- the parent's next empty page is its last
--   split.trim_parent()  -- the parent is gone from the stream, as after 24 hours
--
-- Every record comes from DynamoDB Local: the parent shard is the one of
-- the parent table's stream, the child shard the one of the child table's.
-- Only the topology is doctored: DescribeStream of the parent stream also
-- lists the child shard (its ParentShardId set), GetShardIterator for the
-- child goes to the child stream, and the parent can be closed or trimmed.
local http = require "dynlog.transport.curl"
local json = require "dynlog.json"

local _M = {}

local PREFIX = "DynamoDBStreams_20120810."
local AWS = "com.amazonaws.dynamodb.v20120810#"

local function only_shard(c)
  local arn = assert(c:latest_stream_arn())
  local desc = assert(c:describe_stream(arn))
  assert(#desc.Shards == 1, "DynamoDB Local gives a table one shard")
  return arn, desc.Shards[1].ShardId
end

-- A response whose body was rewritten: its checksum no longer holds.
local function rewritten(res, doc)
  res.body = json.encode(doc)
  res.headers["x-amz-crc32"] = nil
  return res
end

local function aws_error(name, message)
  return { status = 400, headers = {}, body = json.encode({ __type = AWS .. name, message = message }) }
end

--- new(parent_client, child_client [, opts]): opts.siblings = true lists
-- the second shard without a parent, for two shards worked side by side.
function _M.new(parent_client, child_client, opts)
  local real = http.new()
  local parent_arn, parent_shard = only_shard(parent_client)
  local child_arn, child_shard = only_shard(child_client)
  local state = { split = false, closed = false, trimmed = false, siblings = opts and opts.siblings }
  local parent_iterators = {} -- iterators of the parent shard we handed out

  local function describe(res)
    local doc = json.decode(res.body)
    local shards = json.array()
    if not state.trimmed then
      for _, s in ipairs(doc.StreamDescription.Shards) do
        -- A closed shard has an end (any number past its last record will do).
        if state.closed then s.SequenceNumberRange.EndingSequenceNumber = string.rep("9", 40) end
        shards[#shards + 1] = s
      end
    end
    if state.split then
      local child = assert(child_client:describe_stream(child_arn)).Shards[1]
      child.ParentShardId = not state.siblings and parent_shard or nil
      shards[#shards + 1] = child
    end
    doc.StreamDescription.Shards = shards
    return rewritten(res, doc)
  end

  local function shard_iterator(req)
    local params = json.decode(req.body)
    if params.ShardId == child_shard then
      params.StreamArn = child_arn
      req.body = json.encode(params)
      return real:request(req)
    end
    if params.ShardId == parent_shard and state.trimmed then
      return aws_error("ResourceNotFoundException", "Requested resource not found: Shard does not exist")
    end
    local res, err = real:request(req)
    if res and res.status == 200 and params.ShardId == parent_shard then
      parent_iterators[json.decode(res.body).ShardIterator] = true
    end
    return res, err
  end

  local function records(req)
    local iterator = json.decode(req.body).ShardIterator
    local res, err = real:request(req)
    if not (res and res.status == 200 and parent_iterators[iterator]) then return res, err end
    local doc = json.decode(res.body)
    if state.closed and #doc.Records == 0 then
      doc.NextShardIterator = nil -- read to its end
      return rewritten(res, doc)
    end
    if doc.NextShardIterator then parent_iterators[doc.NextShardIterator] = true end
    return res
  end

  local transport = { request = function(_, req)
    local target = req.headers["X-Amz-Target"] or ""
    if target == PREFIX .. "DescribeStream" and json.decode(req.body).StreamArn == parent_arn then
      local res, err = real:request(req)
      if not (res and res.status == 200) then return res, err end
      return describe(res)
    end
    if target == PREFIX .. "GetShardIterator" then return shard_iterator(req) end
    if target == PREFIX .. "GetRecords" then return records(req) end
    return real:request(req)
  end }

  return {
    transport = transport,
    parent_shard = parent_shard,
    child_shard = child_shard,
    split = function() state.split = true end,
    close_parent = function() state.closed = true end,
    trim_parent = function() state.trimmed = true end,
  }
end

return _M
