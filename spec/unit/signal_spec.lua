-- dynlog.core's signal catching for the long-running loops (consumer:run(),
-- dynlog import and tail), seen from a child lua5.4 that signals itself.
local run = require "spec.support.run"

-- Runs a Lua chunk in a child that starts with SIGHUP and SIGPIPE ignored
-- (`ignored`) or at their defaults, whatever busted has (LuaSocket, loaded
-- by specs, ignores SIGPIPE, and children inherit that).
local function child(chunk, ignored)
  local signals = (ignored and "--ignore-signal" or "--default-signal") .. "=HUP,PIPE"
  return run.run("env " .. signals .. " lua5.4 -e " .. run.quote(chunk), run.lua_env({}))
end

local SIGNAL_SELF = [[
  local core = require "dynlog.core"
  core.signal_catch()
  for _, name in ipairs({ "HUP", "PIPE" }) do
    os.execute("kill -" .. name .. " " .. core.getpid())
    print(name, core.signal_caught() or "none")
  end
  os.execute("kill -TERM " .. core.getpid())
  print("TERM", core.signal_caught() or "none")
]]

describe("dynlog.core signal_catch", function()
  it("turns SIGHUP, SIGPIPE and SIGTERM into a flag the loop reads", function()
    local status, out = child(SIGNAL_SELF)
    assert.are.equal(0, status, out)
    assert.are.equal("HUP\tHUP\nPIPE\tPIPE\nTERM\tTERM\n", out)
  end)

  it("leaves a SIGHUP or SIGPIPE that the process ignores ignored (nohup, LuaSocket)", function()
    local status, out = child(SIGNAL_SELF, true)
    assert.are.equal(0, status, out)
    assert.are.equal("HUP\tnone\nPIPE\tnone\nTERM\tTERM\n", out)
  end)
end)
