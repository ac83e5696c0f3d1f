-- Loaded by busted before any spec (see .busted): watch for leaked secrets,
-- and say how much was watched when the suite ends.
local busted = require "busted"
local leakwatch = require "spec.support.leakwatch"

leakwatch.install()
busted.subscribe({ "suite", "end" }, function()
  io.stdout:write(("\nsecrets watch: %d texts checked, %d leak(s)\n"):format(leakwatch.checked, #leakwatch.leaks))
  return nil, true
end)
