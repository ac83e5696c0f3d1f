--- promtool check metrics over a text: the real linter of the exposition
-- format (Debian package prometheus).
local run = require "spec.support.run"

local _M = {}

--- check(text) -> exit status, output of `promtool check metrics`.
function _M.check(text)
  local path = os.tmpname()
  run.write_file(path, text)
  local status, out = run.run("promtool check metrics < " .. run.quote(path))
  os.remove(path)
  return status, out
end

return _M
