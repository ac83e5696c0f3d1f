--- DynamoDB Streams primitives, as methods of the client: ListStreams,
-- DescribeStream (all shards, page by page), GetShardIterator, GetRecords.
-- Records come back as DynamoDB Streams sends them, typed images included:
-- the shape a Lambda trigger receives, so `dynlog.trigger.handle` takes
-- them as they are.
local errors = require "dynlog.errors"

local error, ipairs, type = error, ipairs, type
local str_upper = string.upper

local _M = {}

local ITERATOR_TYPES = {
  TRIM_HORIZON = false, LATEST = false, AT_SEQUENCE_NUMBER = true, AFTER_SEQUENCE_NUMBER = true,
}

--- list_streams() -> the streams of the client's table
-- ({StreamArn=, TableName=, StreamLabel=}, newest first), or nil, err.
function _M:list_streams()
  local streams, start = {}, nil
  repeat
    local resp, err = self:_request("streams", "ListStreams",
      { TableName = self.table, ExclusiveStartStreamArn = start })
    if not resp then return nil, err end
    for _, s in ipairs(resp.Streams or {}) do streams[#streams + 1] = s end
    start = resp.LastEvaluatedStreamArn
  until not start
  return streams
end

--- latest_stream_arn() -> the ARN of the table's current stream, or nil, err.
function _M:latest_stream_arn()
  local desc, err = self:describe_table()
  if not desc then return nil, err end
  if not desc.LatestStreamArn then
    return nil, errors.new("no_stream", "table " .. self.table .. " has no stream")
  end
  return desc.LatestStreamArn
end

--- describe_stream(arn) -> the StreamDescription with every shard (pages of
-- at most 100 followed through LastEvaluatedShardId), or nil, err.
function _M:describe_stream(arn)
  if type(arn) ~= "string" then error("describe_stream: arn must be a string", 2) end
  local desc
  local shards, start = {}, nil
  repeat
    local resp, err = self:_request("streams", "DescribeStream",
      { StreamArn = arn, Limit = 100, ExclusiveStartShardId = start })
    if not resp then return nil, err end
    desc = resp.StreamDescription
    if type(desc) ~= "table" then
      return nil, errors.new("bad_response", "DescribeStream answered without a StreamDescription")
    end
    for _, shard in ipairs(desc.Shards or {}) do shards[#shards + 1] = shard end
    start = desc.LastEvaluatedShardId
  until not start
  desc.Shards, desc.LastEvaluatedShardId = shards, nil
  return desc
end

--- get_shard_iterator(arn, shard_id, iterator_type [, sequence_number])
-- -> iterator, or nil, err. iterator_type: TRIM_HORIZON, LATEST,
-- AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER (any case).
function _M:get_shard_iterator(arn, shard_id, iterator_type, sequence_number)
  iterator_type = type(iterator_type) == "string" and str_upper(iterator_type) or iterator_type
  local needs_sequence = ITERATOR_TYPES[iterator_type]
  if needs_sequence == nil then
    error("get_shard_iterator: iterator_type must be TRIM_HORIZON, LATEST, AT_SEQUENCE_NUMBER"
      .. " or AFTER_SEQUENCE_NUMBER", 2)
  end
  if needs_sequence and type(sequence_number) ~= "string" then
    error("get_shard_iterator: " .. iterator_type .. " needs a sequence number (a string)", 2)
  end
  local resp, err = self:_request("streams", "GetShardIterator", {
    StreamArn = arn, ShardId = shard_id, ShardIteratorType = iterator_type,
    SequenceNumber = needs_sequence and sequence_number or nil,
  })
  if not resp then return nil, err end
  return resp.ShardIterator
end

--- get_records(iterator [, limit]) -> {records=, next_iterator=}, or nil, err.
-- next_iterator is nil once a closed shard has been read to its end.
function _M:get_records(iterator, limit)
  if type(iterator) ~= "string" then error("get_records: iterator must be a string", 2) end
  local resp, err = self:_request("streams", "GetRecords", { ShardIterator = iterator, Limit = limit })
  if not resp then return nil, err end
  return { records = resp.Records or {}, next_iterator = resp.NextShardIterator }
end

return _M
