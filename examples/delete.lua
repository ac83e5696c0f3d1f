-- Deletes a user's stream: every event goes, a tombstone stays, and appends
-- to the stream are refused from then on (stream_deleted). The trigger
-- publishes the deletion, and examples/handler.lua deletes the read model.
--
--   lua5.4 examples/delete.lua USER_ID [--reopen]
--
-- Same configuration as examples/append.lua. Safe to run again: a deletion
-- cut short (throttling, a crash) is finished by the next run.
local dynlog = require "dynlog"

local user = assert(arg[1], "usage: lua5.4 examples/delete.lua USER_ID [--reopen]")
local c = dynlog.new({ table = os.getenv("DYNLOG_TABLE") or "dynlog-example" })

local result, err = c:delete_stream("users", user, { reopen = arg[2] == "--reopen" })
if not result then
  io.stderr:write("delete.lua: ", tostring(err), " (run it again to finish)\n")
  os.exit(1)
end
print(("users#%s: %d event(s) deleted; the stream is %s"):format(user, result.deleted, result.state))

local _, aerr = c:append("users", user, "signup", { name = "again" })
if aerr then print("an append now gets: " .. tostring(aerr)) else print("an append now starts a new stream") end
