--- The loopback Runtime API (spec/support/lambda_runtime_api.lua) and a Lambda
-- runtime run against it, as separate processes, for specs and benchmarks.
--
--   local lambda = require "spec.support.lambda"
--   local api = lambda.start_api({ { id = "a", event = {...}, deadline_in_ms = 3000 } })
--   local rt = lambda.start_runtime(command, env)   -- AWS_LAMBDA_RUNTIME_API is set
--   local outcomes = api.wait_outcomes(1)           -- the posts of responses and errors
--   rt.stop(); api.stop()
local cjson = require "cjson"

local _M = {}

local HERE = debug.getinfo(1, "S").source:match("^@(.*)lambda%.lua$") or "spec/support/"
local SERVER = HERE .. "lambda_runtime_api.lua"

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function read_all(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return text
end

local function sleep(s) require("socket").sleep(s) end

local function running(pid)
  local stat = read_all("/proc/" .. pid .. "/stat")
  if not stat then return false end
  local state = stat:match("^%d+ %b() (%a)")
  return state ~= "Z" and state ~= "X"
end

local function stop_pid(pid)
  os.execute("kill -TERM " .. pid .. " 2>/dev/null")
  for _ = 1, 150 do
    if not running(pid) then return end
    sleep(0.02)
  end
  os.execute("kill -KILL " .. pid .. " 2>/dev/null")
end

-- Starts `command` in the background with its output in `out`: its pid.
local function spawn(command, env, out)
  local prefix = {}
  for name, value in pairs(env or {}) do prefix[#prefix + 1] = name .. "=" .. quote(value) end
  local line = "exec " .. (#prefix > 0 and ("env " .. table.concat(prefix, " ") .. " ") or "") .. command
  local pipe = assert(io.popen("sh -c " .. quote(line) .. " </dev/null >" .. quote(out) .. " 2>&1 & echo $!"))
  local pid = tonumber(pipe:read("*l"))
  pipe:close()
  return assert(pid, "could not start " .. command)
end

--- start_api(invocations) -> { api = "127.0.0.1:PORT", requests(), outcomes(), wait_outcomes(n [, seconds]),
-- wait_request(path_pattern [, seconds]), stop() }
function _M.start_api(invocations)
  local inv_file, log_file, port_file, out_file = os.tmpname(), os.tmpname(), os.tmpname(), os.tmpname()
  os.remove(port_file)
  local f = assert(io.open(inv_file, "wb"))
  f:write(#invocations == 0 and "[]" or cjson.encode(invocations))
  f:close()
  local pid = spawn("lua5.4 " .. quote(SERVER) .. " " .. quote(inv_file) .. " " .. quote(log_file) .. " "
    .. quote(port_file), nil, out_file)
  local port
  for _ = 1, 250 do
    port = tonumber(read_all(port_file) or "")
    if port or not running(pid) then break end
    sleep(0.02)
  end
  if not port then
    stop_pid(pid)
    error("the loopback Runtime API did not start: " .. tostring(read_all(out_file)))
  end
  local h = { api = "127.0.0.1:" .. port, pid = pid }
  function h.requests()
    local list = {}
    for line in (read_all(log_file) or ""):gmatch("[^\n]+") do list[#list + 1] = cjson.decode(line) end
    return list
  end
  --- The posts of responses and errors so far: {id=, kind="response"|"error", body=, headers=}.
  function h.outcomes()
    local list = {}
    for _, r in ipairs(h.requests()) do
      local id, kind = r.path:match("/runtime/invocation/([^/]+)/(%a+)$")
      if r.method == "POST" and id then
        list[#list + 1] = { id = id, kind = kind, body = r.body, headers = r.headers }
      end
    end
    return list
  end
  function h.wait_outcomes(n, seconds)
    local waited = 0
    while waited < (seconds or 30) do
      local list = h.outcomes()
      if #list >= n then return list end
      sleep(0.02)
      waited = waited + 0.02
    end
    return h.outcomes()
  end
  function h.stop()
    stop_pid(pid)
    for _, p in ipairs({ inv_file, log_file, port_file, out_file }) do os.remove(p) end
  end
  return h
end

--- start_runtime(command, env) -> { pid, running(), wait_exit([seconds]) -> bool, output(), stop() }
function _M.start_runtime(command, env)
  local out = os.tmpname()
  local pid = spawn(command, env, out)
  local h = { pid = pid }
  function h.running() return running(pid) end
  function h.wait_exit(seconds)
    local waited = 0
    while running(pid) and waited < (seconds or 30) do
      sleep(0.02)
      waited = waited + 0.02
    end
    return not running(pid)
  end
  function h.output() return read_all(out) or "" end
  function h.stop()
    stop_pid(pid)
    os.remove(out)
  end
  return h
end

return _M
