--- Fills a client's feed without the indexer: events (as c:query, c:get or
-- c:read_all return them) committed in the order given, as the indexer
-- commits the stream's records.
--
--   local fill_feed = require "spec.support.fill_feed"
--   assert(c:create_feed_table())
--   local positions = fill_feed.commit(c, { ev1, ev2, ... })
local core = require "dynlog.core"
local feed = require "dynlog.client.feed"

local _M = {}

-- The attributes of an event item, without what reading added.
local READ_ONLY = { position = true }

--- image(ev) -> the event item of ev as AttributeValues.
function _M.image(ev)
  local image = {}
  for name, value in pairs(ev) do
    if not READ_ONLY[name] then image[name] = core.marshal(value) end
  end
  return image
end

--- commit(c, events) -> positions (asserted): events in the feed, in order.
function _M.commit(c, events)
  local list = {}
  for i, ev in ipairs(events) do list[i] = { image = _M.image(ev) } end
  return assert(feed.commit(c, list))
end

--- all(c, log, id) -> the events of a stream, read exactly (numbers =
-- "exact"), as a list.
function _M.stream(c, log, id)
  return assert(assert(c:query(log, id, { consistent = true, numbers = "exact" })):all())
end

return _M
