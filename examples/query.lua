-- Reads a user's events back: all of them in order, the latest one, and the
-- stream page by page with cursors as an HTTP API would hand them out.
--
--   lua5.4 examples/query.lua USER_ID
--
-- Same configuration as examples/append.lua.
local dynlog = require "dynlog"

local user = assert(arg[1], "usage: lua5.4 examples/query.lua USER_ID")
local c = dynlog.new({ table = os.getenv("DYNLOG_TABLE") or "dynlog-example" })

local events = c:query("users", user)
for ev in events do
  print(ev.sk, ev.type, dynlog.json.encode(ev.payload))
end
if events.err then
  io.stderr:write("query.lua: ", tostring(events.err), "\n")
  os.exit(1)
end

local head = c:head("users", user)
print("latest: " .. (head and head.type or "none"))

local cursor, page_number = nil, 0
repeat
  local page, err = c:query_page("users", user, { page_size = 2, cursor = cursor, reverse = true })
  if not page then
    io.stderr:write("query.lua: ", tostring(err), "\n")
    os.exit(1)
  end
  page_number = page_number + 1
  for _, ev in ipairs(page.items) do print("page " .. page_number, ev.type) end
  cursor = page.cursor
until not cursor
