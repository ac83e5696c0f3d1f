-- The users example's handler: EventBridge events → the "core" read model,
-- one item per user with the version of the last event it reflects.
--
--   lua5.4 examples/handler.lua < events.jsonl     (one EventBridge event per line)
--
-- As a module, `require` it and call `project(event)` from your own host.
local dynlog = require "dynlog"
local handler = require "dynlog.handler"

local log_table = os.getenv("DYNLOG_TABLE") or "dynlog-example"
local core_table = os.getenv("DYNLOG_CORE_TABLE") or (log_table .. "-core")
local c = dynlog.new({ table = log_table })

-- Each handler gets the current state (nil before signup) and the event, and
-- returns the new state.
local users = {
  table = core_table,
  handlers = {
    signup = function(_, ev)
      return { type = "user", id = ev.payload.id, name = ev.payload.name, email = ev.payload.email }
    end,
    addPhoneNumber = function(user, ev)
      user.phoneNumber = ev.payload.phoneNumber
      return user
    end,
    verifyPhoneNumber = function(user)
      user.verifiedPhoneNumber = true
      return user
    end,
    addLocation = function(user, ev)
      user.location = { lat = ev.payload.lat, long = ev.payload.long }
      return user
    end,
  },
}

-- The spec, for `dynlog rebuild --spec examples.handler --into <table>`.
local M = { spec = users }

-- The handlers, for hosts that choose the read-model table themselves
-- (`dynlog up` runs them with the table of the description's read model).
M.handlers = users.handlers

function M.project(event)
  return handler.project(c, event, users)
end

if arg and arg[0] and arg[0]:match("handler%.lua$") then -- run as a script, not required
  assert(handler.create_table(c, core_table))
  for line in io.lines() do
    local result, err = M.project(assert(dynlog.json.decode(line)))
    if not result then
      io.stderr:write("handler.lua: ", tostring(err), "\n")
      os.exit(1)
    end
    if result.deleted ~= nil then
      -- A user's stream deleted (c:delete_stream): the read model goes too.
      print(result.deleted and "deleted the read model" or "no read model to delete")
    else
      print(("projected %d event(s); %s is at version %s"):format(result.applied, result.state.pk,
        tostring(result.version)))
    end
  end
end

return M
