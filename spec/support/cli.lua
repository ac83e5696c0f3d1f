--- The `dynlog` command run as a user runs it: bin/dynlog under lua5.4 as a
-- subprocess, against DynamoDB Local.
--
--   local cli = require "spec.support.cli"
--   local status, out, err = cli.dynlog("replay --json", cli.env(c.table, { AWS_ENDPOINT_URL_EVENTBRIDGE = url }))
local env = require "spec.support.env"
local run = require "spec.support.run"

local _M = {}

-- The credentials of spec.support.ddb's clients.
_M.ACCESS_KEY, _M.SECRET_KEY = "AKIDSPEC", "spec-secret-key"

--- env(table_name [, extra]) -> the environment of a command run against
-- DynamoDB Local: variables set to "" count as unset for dynlog.
function _M.env(table_name, extra)
  local e = run.lua_env({
    AWS_ENDPOINT_URL_DYNAMODB = env.dynamodb_endpoint(), AWS_REGION = "us-east-1",
    AWS_ACCESS_KEY_ID = _M.ACCESS_KEY, AWS_SECRET_ACCESS_KEY = _M.SECRET_KEY, AWS_SESSION_TOKEN = "",
    AWS_PROFILE = "", AWS_ENDPOINT_URL = "", AWS_ENDPOINT_URL_EVENTBRIDGE = "",
    AWS_EC2_METADATA_DISABLED = "true", DYNLOG_TABLE = table_name or "", DYNLOG_SORT_KEY = "",
  })
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

--- dynlog(args, env [, stdin_text]) -> status, stdout, stderr
function _M.dynlog(args, e, stdin_text)
  local err_file = os.tmpname()
  local line = "lua5.4 bin/dynlog " .. args .. " 2>" .. err_file
  if stdin_text then line = "printf '%s' " .. run.quote(stdin_text) .. " | " .. line end
  local status, out = run.run("sh -c " .. run.quote(line), e)
  local err = run.read_file(err_file) or ""
  os.remove(err_file)
  require("spec.support.leakwatch").check(err, "the stderr of `dynlog " .. args:sub(1, 40) .. "`")
  return status, out, err
end

--- spawn(args, env) -> the command in the background: {pid(), wait(seconds) ->
-- status|nil, kill(signal), stdout(), stderr(), wait_for_stderr(text, seconds),
-- cleanup()}.
function _M.spawn(args, e)
  local socket = require "socket"
  local out_file, err_file, rc_file, pid_file = os.tmpname(), os.tmpname(), os.tmpname(), os.tmpname()
  os.remove(rc_file)
  local prefix = {}
  for k, v in pairs(e) do prefix[#prefix + 1] = k .. "=" .. run.quote(v) end
  -- As from a terminal: busted ignores SIGPIPE (LuaSocket does), which a
  -- child would inherit.
  local inner = ("env --default-signal=HUP,PIPE %s lua5.4 bin/dynlog %s >%s 2>%s & echo $! >%s; wait $!; echo $? >%s")
    :format(table.concat(prefix, " "), args, out_file, err_file, pid_file, rc_file)
  local pipe = assert(io.popen("sh -c " .. run.quote(inner) .. " </dev/null >/dev/null 2>&1 & echo $!"))
  pipe:read("*l")
  pipe:close()
  local h = {}
  function h.pid()
    local deadline = socket.gettime() + 10
    while socket.gettime() < deadline do
      local pid = tonumber(run.read_file(pid_file) or "")
      if pid then return pid end
      socket.sleep(0.02)
    end
    error("the command did not start")
  end
  function h.stdout() return run.read_file(out_file) or "" end
  function h.stderr() return run.read_file(err_file) or "" end
  function h.wait_for_stderr(text, seconds)
    local deadline = socket.gettime() + seconds
    while socket.gettime() < deadline do
      if h.stderr():find(text, 1, true) then return true end
      if run.read_file(rc_file) then return false end
      socket.sleep(0.05)
    end
    return false
  end
  function h.wait(seconds)
    local deadline = socket.gettime() + seconds
    while socket.gettime() < deadline do
      local status = tonumber(run.read_file(rc_file) or "")
      if status then return status end
      socket.sleep(0.05)
    end
    return nil
  end
  function h.kill(signal)
    os.execute("kill -" .. signal .. " " .. h.pid() .. " 2>/dev/null")
  end
  function h.cleanup()
    if not run.read_file(rc_file) then h.kill("KILL") h.wait(5) end
    for _, f in ipairs({ out_file, err_file, rc_file, pid_file }) do os.remove(f) end
  end
  return h
end

return _M
