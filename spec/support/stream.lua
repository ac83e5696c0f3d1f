--- Reads a table's DynamoDB Local stream for specs: every record so far.
local _M = {}

--- all_records(c) -> the records of every shard, from the start, in shard order.
function _M.all_records(c)
  local stream = assert(c:describe_stream(assert(c:latest_stream_arn())))
  local records = {}
  for _, shard in ipairs(stream.Shards) do
    local iterator = assert(c:get_shard_iterator(stream.StreamArn, shard.ShardId, "trim_horizon"))
    while iterator do
      local page = assert(c:get_records(iterator))
      if #page.records == 0 then break end
      for _, r in ipairs(page.records) do records[#records + 1] = r end
      iterator = page.next_iterator
    end
  end
  return records
end

return _M
