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

--- spawn(args, env) -> `dynlog args` in the background, as run.spawn
-- starts a command: {pid(), wait(seconds) -> status|nil, kill(signal),
-- stdout(), stderr(), wait_for_stderr(text, seconds), cleanup()}.
function _M.spawn(args, e)
  return run.spawn("lua5.4 bin/dynlog " .. args, e)
end

return _M
