--- `dynlog up`: a pipeline's description run on this machine, as `make demo`
-- runs the users example: DynamoDB Local (unless an endpoint is given), the
-- tables, and nginx with the consumer (the trigger), the local bus with the
-- description's rules and a receiver for each target
-- (dynlog.ngx.pipeline). Prints the endpoints, then runs until Ctrl-C or
-- SIGTERM, and stops what it started.
--
-- It runs from a dynlog checkout (scripts/dynamodb-local, lua/, buildjit/
-- after `make luajit`); the targets' modules are found from the current
-- directory.
local cli_args = require "dynlog.cli.args"
local core = require "dynlog.core"
local deploy = require "dynlog.cli.deploy"
local errors = require "dynlog.errors"
local handler = require "dynlog.pipeline.handler"
local json = require "dynlog.json"
local leases = require "dynlog.pipeline.leases"
local output = require "dynlog.cli.output"
local pipeline = require "dynlog.ngx.pipeline"

local io_open, io_popen, ipairs, os_execute, pairs, tonumber, tostring =
  io.open, io.popen, ipairs, os.execute, pairs, tonumber, tostring
local str_format, str_gsub, str_match = string.format, string.gsub, string.match
local tbl_concat = table.concat
local check_count, new_client, positive_integer, usage_error =
  cli_args.check_count, cli_args.new_client, cli_args.positive_integer, cli_args.usage_error
local fail = output.fail

local _M = {}

local function quote(s) return "'" .. str_gsub(tostring(s), "'", "'\\''") .. "'" end

-- A shell command's status: true when it exited 0.
local function succeeded(command)
  local a, _, c = os_execute(command)
  return a == true or a == 0 or (a == nil and c == 0)
end

local function read_command(command)
  local p = io_popen(command)
  if not p then return nil end
  local text = p:read("*a")
  p:close()
  return text
end

local function exists(path)
  local f = io_open(path, "r")
  if not f then return false end
  f:close()
  return true
end

local function write(path, text)
  local f, err = io_open(path, "w")
  if not f then return nil, errors.new("io", "cannot write " .. path .. ": " .. tostring(err)) end
  f:write(text)
  f:close()
  return true
end

-- The checkout this dynlog runs from: the directory above lua/dynlog/cli/init.lua.
local function checkout()
  for pattern in package.path:gmatch("[^;]+") do
    local path = str_gsub(pattern, "%?", "dynlog/cli/init")
    if exists(path) then
      if path:sub(1, 1) ~= "/" then path = "./" .. path end
      local root = str_match(path, "^(.*)/lua/dynlog/cli/init%.lua$")
      if root then
        if root == "" or root == "." then root = os.getenv("PWD") or "." end
        if root:sub(1, 1) ~= "/" then root = (os.getenv("PWD") or ".") .. "/" .. root end
        return root
      end
    end
  end
  return nil
end

-- The load_module lines of the Debian packages, when nginx has them as dynamic modules.
local MODULES = { "/usr/lib/nginx/modules/ndk_http_module.so", "/usr/lib/nginx/modules/ngx_http_lua_module.so" }

-- A random secret for each target's receiver: made afresh by every run.
local function secrets_for(d)
  local out = {}
  for _, r in ipairs(d.rules) do
    for _, t in ipairs(r.targets) do
      out[t.name] = (str_gsub(core.random_bytes(24), ".", function(ch) return str_format("%02x", ch:byte()) end))
    end
  end
  return out
end

local function make_tables(c, d)
  local ok, err = c:create_table()
  if not ok then return nil, err end
  for _, t in ipairs(require("dynlog.deploy.description").tables(d)) do
    if t.path:find("^read_models%.") then
      ok, err = handler.create_table(c, t.table)
    elseif t.path == "checkpoints" then
      ok, err = leases.create_table(c, t.table)
    elseif t.path == "feed" then
      ok, err = c:create_feed_table()
    end
    if not ok then return nil, err end
  end
  return true
end

local function pid_alive(pid)
  return pid and succeeded("kill -0 " .. pid .. " 2>/dev/null")
end

_M.up = {
  usage = "up",
  summary = "run the pipeline's description on this machine (DynamoDB Local, nginx, bus, receivers)",
  options = { description = "value", port = "value", dir = "value" },
  table = false,
  help = [[
Runs the pipeline's description (see docs/deploying.md) on this machine:
DynamoDB Local (its data kept in DIR/dynamodb, so a second run sees the
first run's events) unless --endpoint or AWS_ENDPOINT_URL_DYNAMODB names a
DynamoDB already; the description's tables; nginx on 127.0.0.1:PORT with the
consumer running the trigger, the local bus with the description's rules,
and, for each target, a receiver at its endpoint's path that projects into
its read model (a Lambda target's receiver is at /targets/<name>). Each
receiver checks a random key made for this run. Prints the endpoints, then
runs until Ctrl-C or SIGTERM and stops what it started. Runs from a dynlog
checkout (after `make luajit`); targets' modules are found from the current
directory.

options:
  --description FILE   the description (default ./pipeline.lua)
  --port N             nginx's port (default 8088)
  --dir DIR            where nginx's prefix and DynamoDB Local's data go
                       (default .dynlog/<name>)]],
  run = function(ctx, args)
    check_count(args, 0, 0, ctx)
    local port = positive_integer(ctx.opts, "port") or 8088
    if port > 65535 then usage_error("--port must be at most 65535") end
    local d = deploy.load_description(ctx)
    if not d then return 1 end
    local root = checkout()
    if not root or not exists(root .. "/scripts/dynamodb-local") then
      return fail(ctx, errors.new("config", "dynlog up runs from a dynlog checkout: no scripts/dynamodb-local"),
        "run bin/dynlog from the checkout, with its lua/ on LUA_PATH")
    end
    if not exists(root .. "/buildjit/dynlog/core.so") then
      return fail(ctx, errors.new("config", "no " .. root .. "/buildjit/dynlog/core.so"), "run `make luajit` first")
    end
    local cwd = os.getenv("PWD") or "."
    local dir = ctx.opts.dir or (".dynlog/" .. d.name)
    if dir:sub(1, 1) ~= "/" then dir = cwd .. "/" .. dir end
    local prefix = dir .. "/nginx"
    if not succeeded("mkdir -p " .. quote(prefix .. "/logs") .. " " .. quote(prefix .. "/tmp")) then
      return fail(ctx, errors.new("io", "cannot make " .. prefix))
    end

    -- The environment of everything started here.
    local env = {}
    local base_getenv = ctx.getenv
    local function getenv(name)
      if env[name] ~= nil then return env[name] end
      return base_getenv(name)
    end
    ctx.getenv = getenv
    local ddb_state
    local endpoint = ctx.opts.endpoint or getenv("AWS_ENDPOINT_URL_DYNAMODB")
    local stopped = false
    local nginx_pid
    local function stop_all()
      if stopped then return end
      stopped = true
      if nginx_pid and pid_alive(nginx_pid) then
        os_execute("kill -QUIT " .. nginx_pid .. " 2>/dev/null")
        for _ = 1, 50 do
          if not pid_alive(nginx_pid) then break end
          core.sleep(0.1)
        end
      end
      if ddb_state then os_execute(quote(root .. "/scripts/dynamodb-local") .. " stop " .. quote(ddb_state)) end
    end

    core.signal_catch()
    local status = (function()
      if not endpoint then
        ddb_state = dir .. "/dynamodb-state"
        ctx.err:write("dynlog: starting DynamoDB Local (data in ", dir, "/dynamodb) ...\n")
        ctx.err:flush()
        local out = read_command(quote(root .. "/scripts/dynamodb-local") .. " start " .. quote(ddb_state) .. " "
          .. quote(dir .. "/dynamodb"))
        local ddb_port = tonumber(str_match(out or "", "(%d+)%s*$"))
        if not ddb_port then return fail(ctx, errors.new("connection", "DynamoDB Local did not start")) end
        endpoint = "http://127.0.0.1:" .. ddb_port
        -- DynamoDB Local takes any credentials; keep the user's if set.
        if not getenv("AWS_ACCESS_KEY_ID") then
          env.AWS_ACCESS_KEY_ID, env.AWS_SECRET_ACCESS_KEY = "local", "local-secret"
        end
      end
      env.AWS_ENDPOINT_URL_DYNAMODB = endpoint
      if not getenv("AWS_REGION") and not getenv("AWS_DEFAULT_REGION") then env.AWS_REGION = "us-east-1" end
      env.AWS_EC2_METADATA_DISABLED = getenv("AWS_EC2_METADATA_DISABLED") or "true"
      ctx.opts.endpoint = endpoint
      if d.feed then ctx.opts["feed-table"] = d.feed.table end
      ctx.table, ctx.sort_key = d.log.table, d.log.sort_key
      local c, cerr = new_client(ctx)
      if not c then return fail(ctx, cerr) end
      local ok, terr = make_tables(c, d)
      if not ok then return fail(ctx, terr) end

      -- nginx
      for name, target in pairs({ lua = root .. "/lua", buildjit = root .. "/buildjit", app = cwd }) do
        os_execute("ln -sfn " .. quote(target) .. " " .. quote(prefix .. "/" .. name))
      end
      local modules = {}
      for _, m in ipairs(MODULES) do
        if exists(m) then modules[#modules + 1] = m end
      end
      local uid = str_match(read_command("id -u") or "", "%d+")
      local conf = pipeline.nginx_conf(d, { port = port, as_root = uid == "0", modules = modules })
      ok, terr = write(prefix .. "/nginx.conf", conf)
      if not ok then return fail(ctx, terr) end
      local base_url = "http://127.0.0.1:" .. port
      local desc_path = d.file:sub(1, 1) == "/" and d.file or (cwd .. "/" .. d.file)
      env.DYNLOG_UP_DESCRIPTION, env.DYNLOG_UP_URL = desc_path, base_url
      env.DYNLOG_UP_SECRETS = json.encode(secrets_for(d))
      env.DYNLOG_TABLE = d.log.table
      local first = d.rules[1] and d.rules[1].targets[1]
      env.DYNLOG_CORE_TABLE = first and d.read_models[first.read_model].table or nil
      local assignments = {}
      for _, name in ipairs(pipeline.ENV) do
        local v = getenv(name)
        if v then assignments[#assignments + 1] = name .. "=" .. quote(v) end
      end
      os.remove(prefix .. "/logs/nginx.pid")
      local started = read_command("env " .. tbl_concat(assignments, " ") .. " nginx -p " .. quote(prefix)
        .. " -c nginx.conf 2>&1; echo \"exit=$?\"")
      if not started or not str_match(started, "exit=0%s*$") then
        return fail(ctx, errors.new("io", "nginx did not start: " .. str_gsub(started or "", "%s*exit=%d+%s*$", "")))
      end
      for _ = 1, 50 do
        local f = io_open(prefix .. "/logs/nginx.pid", "r")
        if f then
          nginx_pid = str_match(f:read("*a") or "", "%d+")
          f:close()
          if nginx_pid then break end
        end
        core.sleep(0.1)
      end
      if not nginx_pid then return fail(ctx, errors.new("io", "nginx wrote no pid; see " .. prefix .. "/logs")) end

      -- The endpoints.
      local w = ctx.out
      w:write("pipeline ", d.name, " (", d.file, ") is up\n")
      w:write(str_format("  %-22s %s\n", "DynamoDB", endpoint))
      for _, t in ipairs(require("dynlog.deploy.description").tables(d)) do
        w:write(str_format("  %-22s %s\n", "table " .. t.path, t.table))
      end
      w:write(str_format("  %-22s %s/bus (bus %s)\n", "EventBridge (local)", base_url, d.bus.name))
      for _, r in ipairs(d.rules) do
        for _, t in ipairs(r.targets) do
          w:write(str_format("  %-22s %s%s (rule %s -> %s)\n", "target " .. t.name, base_url, pipeline.local_path(t),
            r.name, d.read_models[t.read_model].table))
        end
      end
      w:write(str_format("  %-22s %s/stats\n", "stats", base_url))
      w:write(str_format("  %-22s %s/logs/error.log\n", "nginx log", prefix))
      w:write("Append with: dynlog --table ", d.log.table, " --endpoint ", endpoint, " append LOG ID TYPE JSON\n")
      w:flush()
      ctx.err:write("dynlog: up; stop with Ctrl-C\n")
      ctx.err:flush()

      while not core.signal_caught() do
        if not pid_alive(nginx_pid) then
          return fail(ctx, errors.new("io", "nginx stopped; see " .. prefix .. "/logs/error.log"))
        end
        core.sleep(0.2)
      end
      return 0
    end)()
    local signal = core.signal_caught()
    stop_all()
    core.signal_restore()
    if signal then ctx.err:write("dynlog: stopped by SIG", signal, "\n") end
    return status
  end,
}

return _M
