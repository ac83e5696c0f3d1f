--- Where dynlog's own log lines go. By default, warnings and errors go to
-- stderr (inside nginx, to its error log through ngx.log); set_handler
-- replaces the destination, set_level the threshold.
local io_stderr, os_date, tostring = io.stderr, os.date, tostring

local _M = {}

local LEVELS = { debug = 1, info = 2, warn = 3, error = 4 }
local threshold = LEVELS.warn

local function default_handler(level, message)
  local ngx = rawget(_G, "ngx")
  if ngx and ngx.log then
    local ngx_level = ({ debug = ngx.DEBUG, info = ngx.INFO, warn = ngx.WARN, error = ngx.ERR })[level]
    ngx.log(ngx_level, message)
    return
  end
  io_stderr:write(os_date("!%Y-%m-%dT%H:%M:%SZ"), " [", level, "] ", message, "\n")
end

local handler = default_handler

--- log(level, message): level is "debug", "info", "warn" or "error".
function _M.log(level, message)
  local rank = LEVELS[level]
  if not rank then error("log: unknown level " .. tostring(level), 2) end
  if rank >= threshold then handler(level, tostring(message)) end
end

--- set_handler(function(level, message)), or nil for the default.
function _M.set_handler(f)
  handler = f or default_handler
end

--- set_level("debug" | "info" | "warn" | "error")
function _M.set_level(level)
  threshold = LEVELS[level] or error("set_level: unknown level " .. tostring(level), 2)
end

return _M
