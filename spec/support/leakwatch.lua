--- Secrets never leak: while the specs run, every error value's text, every
-- log line, every subprocess's output read through spec/support/run.lua and
-- every nginx error log is checked for the suite's test secrets.
--
-- .busted loads spec/support/leakwatch_helper.lua into every busted run,
-- which calls install(). A leak raises where it happens (so the spec in
-- question fails) and is also appended to $DYNLOG_LEAK_FILE, in case the
-- raise is swallowed; scripts/run-specs.sh fails the run when that file is
-- not empty and also greps busted's own output for the secrets.
local error, getmetatable, ipairs, tostring, type = error, getmetatable, ipairs, tostring, type

local _M = { checked = 0, leaks = {} }

-- The secret keys and tokens the specs hand to dynlog (see spec/support/ddb.lua,
-- spec/loopback/credentials_spec.lua and the nginx specs).
_M.SECRETS = {
  "spec-secret-key",
  "ngx-secret-key",
  "publish-secret-key",
  "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzSECRETKEY",
  "IQoJb3JpZ2luX2VjSESSIONTOKENzz",
  "Basic-containerAUTHTOKEN",
  "AQAEAimdsTOKENzz==",
}

--- The first secret found in text, or nil.
function _M.find(text)
  for _, secret in ipairs(_M.SECRETS) do
    if text:find(secret, 1, true) then return secret end
  end
end

local function record(where, text)
  local line = where .. ": " .. text:sub(1, 300):gsub("%c", " ")
  if _M.rehearsal then return end -- spec/unit/leakwatch_spec.lua trying the watch itself
  _M.leaks[#_M.leaks + 1] = line
  local path = os.getenv("DYNLOG_LEAK_FILE")
  local f = path and io.open(path, "a")
  if f then
    f:write(line, "\n")
    f:close()
  end
end

--- check(text, where) -> text; raises when text holds a test secret.
function _M.check(text, where)
  if type(text) ~= "string" then return text end
  _M.checked = _M.checked + 1
  if _M.find(text) then
    record(where, text)
    error("a test secret leaked into " .. where, 2)
  end
  return text
end

--- Wraps dynlog's error values and log lines, once per process.
function _M.install()
  if _M.installed then return end
  _M.installed = true
  local errors = require "dynlog.errors"
  local mt = getmetatable(errors.new("probe", "probe"))
  local to_text = mt.__tostring
  mt.__tostring = function(err) return _M.check(to_text(err), "tostring of an error") end
  local new = errors.new
  errors.new = function(code, message, fields)
    _M.check(tostring(message), "an error message (" .. tostring(code) .. ")")
    return new(code, message, fields)
  end
  local logger = require "dynlog.logger"
  local log = logger.log
  logger.log = function(level, message)
    _M.check(tostring(message), "a log line")
    return log(level, message)
  end
end

return _M
