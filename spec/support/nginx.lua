--- Starts a private nginx (with lua-nginx-module) for a spec.
--
--   local nginx = require "spec.support.nginx"
--   local srv = nginx.start{
--     http = "<directives inside http {}>",
--     server = "<directives inside the server {} on the test port>",
--     main = "<main-context directives>",
--     env = { "DYNLOG_TEST_ENDPOINT" },   -- `env NAME;` lines
--     workers = 1,
--   }
--   -- srv = { url = "http://127.0.0.1:PORT", port =, prefix =, pid =,
--   --         error_log = function() return text end, stop = function() end }
--
-- The prefix is a fresh temporary directory with conf/, logs/ and tmp/; the
-- Lua path is this repository's lua/ and root (so `spec.support.*` loads
-- inside nginx too), the C path its buildjit/ (`make luajit`). Specs run from
-- the repository root. nginx listens on 127.0.0.1 only, on a port picked by
-- the kernel. stop() sends QUIT (graceful), waits, then KILLs what is left,
-- and removes the prefix; error_log() still answers afterwards, with the log
-- as it was when nginx stopped.
local socket = require "socket"

local error, ipairs, tonumber, tostring, type = error, ipairs, tonumber, tostring, type
local io_open, io_popen, os_execute = io.open, io.popen, os.execute
local str_format = string.format
local tbl_concat = table.concat

local _M = {}

local STARTUP_SECONDS = 10
local STOP_SECONDS = 5
local MODULES = "/usr/lib/nginx/modules/"

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
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

local function command_output(command)
  local pipe = assert(io_popen(command, "r"))
  local out = pipe:read("*a")
  pipe:close()
  return (out:gsub("%s+$", ""))
end

local function nginx_binary()
  if read_all("/usr/sbin/nginx") ~= nil then return "/usr/sbin/nginx" end
  return "nginx"
end

local free_port = require("spec.support.run").free_port

-- A zombie counts as stopped: the master is reparented once its `sh` exits.
local function is_running(pid)
  local stat = read_all("/proc/" .. pid .. "/stat")
  if not stat then return false end
  local state = stat:match("^%d+ %b() (%a)")
  return state ~= "Z" and state ~= "X"
end

-- The master's children (its workers), by their parent pid in /proc.
local function children(pid)
  local list = {}
  local out = command_output("ls /proc 2>/dev/null")
  for entry in out:gmatch("%d+") do
    local stat = read_all("/proc/" .. entry .. "/stat")
    local ppid = stat and stat:match("^%d+ %b() %a (%d+)")
    if ppid and tonumber(ppid) == pid then list[#list + 1] = tonumber(entry) end
  end
  return list
end

local function kill(pid, signal)
  os_execute("kill -" .. signal .. " " .. pid .. " 2>/dev/null")
end

local function wait_gone(pids, seconds)
  local waited = 0
  while waited < seconds do
    local alive = false
    for _, pid in ipairs(pids) do
      if is_running(pid) then alive = true end
    end
    if not alive then return true end
    socket.sleep(0.05)
    waited = waited + 0.05
  end
  return false
end

local function tail(text, lines)
  local all = {}
  for line in (text or ""):gmatch("[^\n]+") do all[#all + 1] = line end
  local from = #all - lines + 1
  if from < 1 then from = 1 end
  return tbl_concat(all, "\n", from, #all)
end

local function accepts(port)
  local c = socket.tcp()
  c:settimeout(0.2)
  local ok = c:connect("127.0.0.1", port)
  c:close()
  return ok ~= nil
end

local function conf_text(opts, repo, port, as_root)
  local lines = {
    "load_module " .. MODULES .. "ndk_http_module.so;",       -- NDK first
    "load_module " .. MODULES .. "ngx_http_lua_module.so;",
    "daemon off;",
    "master_process on;",
    "worker_processes " .. tostring(opts.workers or 1) .. ";",
    "pid logs/nginx.pid;",
    "error_log logs/error.log info;",
    as_root and "user root;" or "",                             -- else workers run as nobody
    "thread_pool default threads=2;",
  }
  for _, name in ipairs(opts.env or {}) do
    lines[#lines + 1] = "env " .. name .. ";"
  end
  lines[#lines + 1] = opts.main or ""
  lines[#lines + 1] = "events { worker_connections 256; }"
  lines[#lines + 1] = "http {"
  lines[#lines + 1] = "    client_body_temp_path tmp/body; proxy_temp_path tmp/proxy;"
  lines[#lines + 1] = "    fastcgi_temp_path tmp/fastcgi; uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;"
  lines[#lines + 1] = "    access_log off;"
  -- ';;' keeps the default path, where Debian's resty.core lives: without it nginx won't start.
  lines[#lines + 1] = str_format('    lua_package_path "%s/lua/?.lua;%s/lua/?/init.lua;%s/?.lua;;";', repo, repo, repo)
  lines[#lines + 1] = str_format('    lua_package_cpath "%s/buildjit/?.so;;";', repo)
  lines[#lines + 1] = opts.http or ""
  lines[#lines + 1] = "    server {"
  lines[#lines + 1] = "        listen 127.0.0.1:" .. port .. ";"
  lines[#lines + 1] = opts.server or ""
  lines[#lines + 1] = "    }"
  lines[#lines + 1] = "}"
  return tbl_concat(lines, "\n") .. "\n"
end

-- One try at a port: the handle, or nil, why, output when nginx didn't come up.
local function launch(opts, repo, prefix, as_root)
  local port = free_port()
  write_all(prefix .. "/conf/nginx.conf", conf_text(opts, repo, port, as_root))
  local error_log_path = prefix .. "/logs/error.log"
  local stdout_path = prefix .. "/logs/stdout.log"
  os.remove(error_log_path)
  local command = nginx_binary() .. " -p " .. shell_quote(prefix) .. " -c conf/nginx.conf"
    .. " </dev/null >" .. shell_quote(stdout_path) .. " 2>&1 & echo $!"
  local pid = tonumber(command_output(command))
  if not pid then error("spec.support.nginx: could not start nginx", 3) end

  local handle = { port = port, url = "http://127.0.0.1:" .. port, prefix = prefix, pid = pid }
  local last_log

  function handle.error_log()
    return read_all(error_log_path) or last_log or ""
  end

  -- Stops this nginx; keep_prefix for a retry on another port.
  local stopped = false
  local function halt(keep_prefix)
    if stopped then return end
    stopped = true
    local workers = children(pid)
    kill(pid, "QUIT")
    if not wait_gone({ pid }, STOP_SECONDS) then kill(pid, "KILL") end
    -- Workers outlive a KILLed master: they go by pid too.
    for _, w in ipairs(workers) do kill(w, "KILL") end
    wait_gone(workers, 1)
    last_log = read_all(error_log_path) or ""
    if not keep_prefix then os_execute("rm -rf " .. shell_quote(prefix)) end
    require("spec.support.leakwatch").check(last_log, "nginx's error log")
  end
  function handle.stop() halt(false) end

  local deadline = socket.gettime() + STARTUP_SECONDS
  while not accepts(port) do
    local running = is_running(pid)
    if not running or socket.gettime() > deadline then
      local output = (read_all(stdout_path) or "") .. "\n" .. (read_all(error_log_path) or "")
      halt(true)
      return nil, running and ("not listening after " .. STARTUP_SECONDS .. " s") or "exited", output
    end
    socket.sleep(0.05)
  end
  return handle
end

--- Starts nginx; raises, with the end of its logs, when it doesn't come up
-- within STARTUP_SECONDS. A port taken between picking and binding it is
-- replaced by another, up to three times.
function _M.start(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("spec.support.nginx: start expects a table", 2) end
  local repo = command_output("pwd")
  local prefix = command_output("mktemp -d /tmp/dynlog-nginx.XXXXXX")
  if prefix == "" then error("spec.support.nginx: mktemp failed", 2) end
  assert(os_execute("mkdir -p " .. shell_quote(prefix .. "/conf") .. " " .. shell_quote(prefix .. "/logs")
    .. " " .. shell_quote(prefix .. "/tmp")))
  local as_root = command_output("id -u") == "0"
  local why, output
  for _ = 1, 3 do
    local handle
    handle, why, output = launch(opts, repo, prefix, as_root)
    if handle then return handle end
    if not output:find("Address already in use", 1, true) then break end
  end
  os_execute("rm -rf " .. shell_quote(prefix))
  error("spec.support.nginx: nginx did not start (" .. why .. "); its logs end with:\n" .. tail(output, 20), 2)
end

return _M
