--- Starts spec/support/httpd.lua as a separate process for a spec.
--
--   local server = require("support.server")
--   local s = server.start({
--     { method = "GET", path = "/creds", responses = { { status = 200, body = {...} } } },
--   })
--   ... s.url .. "/creds" ...
--   local requests = s.requests()  -- { {method=, path=, headers=, body=}, ... }
--   s.stop()
--
-- The server listens on 127.0.0.1 only. It is run under lua5.4 (LuaSocket and
-- cjson are test-only dependencies) whatever interpreter runs the specs.
local cjson = require("cjson")

local ipairs, error, tonumber = ipairs, error, tonumber
local io_open, os_execute, os_remove, os_tmpname = io.open, os.execute, os.remove, os.tmpname

local _M = {}

local STARTUP_SECONDS = 5
local STOP_SECONDS = 3

local HERE = debug.getinfo(1, "S").source:match("^@(.*)server%.lua$") or "spec/support/"
local HTTPD = HERE .. "httpd.lua"

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function read_all(path)
  local f = io_open(path, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return text
end

local function write_all(path, text)
  local f = assert(io_open(path, "wb"))
  f:write(text)
  f:close()
end

-- os.execute returns true/0 depending on the Lua version.
local function succeeded(a, _, c)
  return a == true or a == 0 or (a == nil and c == 0)
end

local sleep
do
  local ok, socket = pcall(require, "socket")
  if ok then
    sleep = socket.sleep
  else
    sleep = function(s) os_execute("sleep " .. s) end
  end
end

local HAS_PROC = read_all("/proc/self/stat") ~= nil

-- The server is reparented to pid 1 once its `sh` exits, and pid 1 may take
-- its time to reap it: a zombie counts as stopped. /proc tells the state
-- on Linux; elsewhere `kill -0` is the fallback.
local function is_running(pid)
  local stat = read_all("/proc/" .. pid .. "/stat")
  if stat then
    local state = stat:match("^%d+ %b() (%a)")
    return state ~= "Z" and state ~= "X"
  end
  if HAS_PROC then return false end
  return succeeded(os_execute("kill -0 " .. pid .. " 2>/dev/null"))
end

local function kill(pid, signal)
  os_execute("kill -" .. signal .. " " .. pid .. " 2>/dev/null")
end

-- Stops by pid: TERM, a bounded wait, then KILL.
local function stop_process(pid)
  kill(pid, "TERM")
  local waited = 0
  while is_running(pid) and waited < STOP_SECONDS do
    sleep(0.02)
    waited = waited + 0.02
  end
  if is_running(pid) then kill(pid, "KILL") end
end

local function wait_for_port(port_file, pid)
  local waited = 0
  while waited < STARTUP_SECONDS do
    local text = read_all(port_file)
    local port = text and tonumber(text)
    if port then return port end
    if not is_running(pid) then return nil, "exited" end
    sleep(0.02)
    waited = waited + 0.02
  end
  return nil, "no port after " .. STARTUP_SECONDS .. " s"
end

local function remove_files(files)
  for _, path in ipairs(files) do os_remove(path) end
end

--- Starts a server with the given routes (see httpd.lua for their shape).
-- @return { url = "http://127.0.0.1:PORT", port =, requests = fn, stop = fn }
function _M.start(routes)
  local routes_file, log_file, port_file, err_file =
    os_tmpname(), os_tmpname(), os_tmpname(), os_tmpname()
  os_remove(port_file) -- its appearance is the "ready" signal
  write_all(routes_file, cjson.encode(routes))
  write_all(log_file, "")

  -- The background process must not hold popen's pipe, or reading the pid
  -- would wait for it to exit: its output goes to files.
  local command = "lua5.4 " .. shell_quote(HTTPD) .. " " .. shell_quote(routes_file)
    .. " " .. shell_quote(log_file) .. " " .. shell_quote(port_file)
    .. " </dev/null >/dev/null 2>" .. shell_quote(err_file) .. " & echo $!"
  local pipe = assert(io.popen(command, "r"))
  local pid = tonumber(pipe:read("*l"))
  pipe:close()
  if not pid then error("support.server: could not start " .. HTTPD) end

  local files = { routes_file, log_file, port_file, err_file }
  local port, why = wait_for_port(port_file, pid)
  if not port then
    stop_process(pid)
    local stderr = read_all(err_file) or ""
    remove_files(files)
    error("support.server: httpd did not start (" .. why .. "): " .. stderr)
  end

  local handle = { port = port, url = "http://127.0.0.1:" .. port, pid = pid }

  --- Every request received so far, in order.
  function handle.requests()
    local list = {}
    for line in (read_all(log_file) or ""):gmatch("[^\n]+") do
      list[#list + 1] = cjson.decode(line)
    end
    return list
  end

  local stopped = false
  function handle.stop()
    if stopped then return end
    stopped = true
    stop_process(pid)
    remove_files(files)
  end

  return handle
end

return _M
