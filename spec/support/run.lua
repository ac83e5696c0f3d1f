--- Runs a command the way a user would and returns its exit status and output.
local _M = {}

--- Quotes a string for sh.
function _M.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- run(cmd [, env]) -> status, output (stdout and stderr together).
-- env maps variable names to values, set for this command only.
function _M.run(cmd, env)
  local prefix = {}
  for name, value in pairs(env or {}) do
    prefix[#prefix + 1] = name .. "=" .. _M.quote(value)
  end
  local line = (#prefix > 0 and ("env " .. table.concat(prefix, " ") .. " ") or "") .. cmd
  local pipe = assert(io.popen(line .. " 2>&1; echo \"exit=$?\""))
  local out = pipe:read("*a")
  pipe:close()
  local status = tonumber(out:match("exit=(%d+)%s*$"))
  out = out:gsub("exit=%d+%s*$", "")
  require("spec.support.leakwatch").check(out, "the output of `" .. cmd:sub(1, 60) .. "`")
  return status, out
end

--- read_file(path) -> the file's bytes, or nil when it cannot be opened.
function _M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return text
end

--- write_file(path, text): raises when the file cannot be written.
function _M.write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

--- raised(f, ...) -> the message of the error f(...) raises; fails the spec
-- when it raises none.
function _M.raised(f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error")
  return tostring(err)
end

--- here() -> "<file>:<line>: " of the line that called it: how an error
-- raised at that line begins.
function _M.here()
  local info = debug.getinfo(2, "Sl")
  return info.short_src:match("[^/]+$") .. ":" .. info.currentline .. ": "
end

--- A loopback port whose listen queue is full, so that a connect to it
-- times out (the kernel drops further SYNs). Returns the port and a
-- function that closes it all.
function _M.full_listener()
  local socket = require "socket"
  local listener = assert(socket.bind("127.0.0.1", 0, 0))
  local _, port = listener:getsockname()
  local fillers = {}
  for i = 1, 3 do
    fillers[i] = socket.tcp()
    fillers[i]:settimeout(0)
    fillers[i]:connect("127.0.0.1", port)
  end
  return port, function()
    for _, s in ipairs(fillers) do s:close() end
    listener:close()
  end
end

--- A free loopback port, as the kernel picks one (nothing listens on it
-- once this returns; a caller racing another process retries).
function _M.free_port()
  local s = assert(require("socket").bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return port
end

--- succeeded(cmd) -> true when the shell command exits 0, on Lua 5.4
-- (os.execute gives true/nil) and on LuaJIT (it gives the status number).
function _M.succeeded(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

--- Environment for running a script of this repository under lua5.4 with
-- the freshly built module, as `make` leaves it.
function _M.lua_env(extra)
  local env = {
    LUA_PATH = "lua/?.lua;lua/?/init.lua;;",
    LUA_CPATH = "build54/?.so;;",
  }
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

local function socket() return require "socket" end

--- spawn(command, env) -> a command running in the background, as from a
-- terminal: {pid(), stdout(), stderr(), wait_for_stderr(text, seconds),
-- wait(seconds) -> status|nil, kill(signal), cleanup()}.
function _M.spawn(command, e)
  local out_file, err_file, rc_file, pid_file = os.tmpname(), os.tmpname(), os.tmpname(), os.tmpname()
  os.remove(rc_file)
  local prefix = {}
  for k, v in pairs(e) do prefix[#prefix + 1] = k .. "=" .. _M.quote(v) end
  -- As from a terminal: busted ignores SIGPIPE (LuaSocket does), which a
  -- child would inherit.
  local inner = ("env --default-signal=HUP,PIPE %s %s >%s 2>%s & echo $! >%s; wait $!; echo $? >%s")
    :format(table.concat(prefix, " "), command, out_file, err_file, pid_file, rc_file)
  local pipe = assert(io.popen("sh -c " .. _M.quote(inner) .. " </dev/null >/dev/null 2>&1 & echo $!"))
  pipe:read("*l")
  pipe:close()
  local h = {}
  function h.pid()
    local deadline = socket().gettime() + 10
    while socket().gettime() < deadline do
      local pid = tonumber(_M.read_file(pid_file) or "")
      if pid then return pid end
      socket().sleep(0.02)
    end
    error("the command did not start")
  end
  function h.stdout() return _M.read_file(out_file) or "" end
  function h.stderr() return _M.read_file(err_file) or "" end
  function h.wait_for_stderr(text, seconds)
    local deadline = socket().gettime() + seconds
    while socket().gettime() < deadline do
      if h.stderr():find(text, 1, true) then return true end
      if _M.read_file(rc_file) then return false end
      socket().sleep(0.05)
    end
    return false
  end
  function h.wait(seconds)
    local deadline = socket().gettime() + seconds
    while socket().gettime() < deadline do
      local status = tonumber(_M.read_file(rc_file) or "")
      if status then return status end
      socket().sleep(0.05)
    end
    return nil
  end
  function h.kill(signal)
    os.execute("kill -" .. signal .. " " .. h.pid() .. " 2>/dev/null")
  end
  function h.cleanup()
    if not _M.read_file(rc_file) then h.kill("KILL") h.wait(5) end
    for _, f in ipairs({ out_file, err_file, rc_file, pid_file }) do os.remove(f) end
  end
  return h
end

return _M
