--- A pipeline's description run inside nginx, as `dynlog up` runs it: the
-- trigger on the consumer's timers publishing to the local bus, the bus with
-- the description's rules, and a receiver for each API-destination target
-- (and, locally, each Lambda target too) that projects into its read model.
--
-- The nginx.conf `dynlog up` writes calls, from init_worker_by_lua*,
-- `start()`, and from its locations `bus()`, `receive(target_name)` and
-- `stats()`. Everything comes from the environment (nginx's `env` lines):
--   DYNLOG_UP_DESCRIPTION  the description's file
--   DYNLOG_UP_URL          where this nginx listens (http://127.0.0.1:PORT)
--   DYNLOG_UP_SECRETS      JSON {target name: the secret its receiver checks},
--                          made afresh by each `dynlog up`
-- and the usual AWS_* variables (AWS_ENDPOINT_URL_DYNAMODB for DynamoDB Local).
--
-- A target's `project` module is required here: when it has `handlers` (the
-- handlers of dynlog.pipeline.handler.project), the receiver projects with
-- them into the target's read-model table; otherwise its `project(event)`
-- is called.
local core = require "dynlog.core"
local description = require "dynlog.deploy.description"
local dynlog = require "dynlog"
local handler = require "dynlog.pipeline.handler"
local ngx_api = require "dynlog.ngx"
local trigger = require "dynlog.pipeline.trigger"

local assert, error, ipairs, os_getenv, pairs, require, tostring, type =
  assert, error, ipairs, os.getenv, pairs, require, tostring, type
local str_format = string.format
local tbl_concat = table.concat
local json = dynlog.json

local ngx = ngx -- luacheck: ignore

local _M = {}

-- Counters the workers share (lua_shared_dict dynlog_stats), for stats().
local function count(name, n)
  local stats = ngx.shared.dynlog_stats
  if stats and n > 0 then stats:incr(name, n, 0) end
end

--- auth_of(target, secret) -> the receiver's `auth` and the headers the bus
-- sends it: an API key in its header, or basic credentials.
function _M.auth_of(t, secret)
  if t.kind == "api_destination" and t.auth.kind == "basic" then
    return { basic = { user = t.auth.user, password = secret } },
      { Authorization = "Basic " .. core.base64_encode(t.auth.user .. ":" .. secret) }
  end
  local header = t.kind == "api_destination" and t.auth.header or "x-api-key"
  return { header = header, value = secret }, { [header] = secret }
end

--- local_path(target) -> the location of its receiver on this nginx: the
-- endpoint's path, or /targets/<name> for a Lambda target.
function _M.local_path(t)
  return t.path or ("/targets/" .. t.name)
end

-- The pipeline of this worker, made on first use.
local P

local function pipeline()
  if P then return P end
  local path = os_getenv("DYNLOG_UP_DESCRIPTION")
  local base_url = os_getenv("DYNLOG_UP_URL")
  if not path or not base_url then
    error("dynlog.ngx.pipeline: DYNLOG_UP_DESCRIPTION and DYNLOG_UP_URL are needed", 2)
  end
  local d = assert(description.load(path))
  local secrets = json.decode(os_getenv("DYNLOG_UP_SECRETS") or "{}") or {}
  local client = dynlog.new({ table = d.log.table, sort_key = d.log.sort_key, events_endpoint = base_url .. "/bus" })
  local p = { d = d, client = client, receivers = {} }
  p.consumer = {
    client = client,
    poll_interval = 0.1,
    checkpoint_table = d.checkpoints and d.checkpoints.table or (d.log.table .. "-checkpoints"),
    handler = function(batch)
      local result = trigger.handle(client, batch)
      count("published", #batch.Records - #result.batchItemFailures)
      return result
    end,
  }
  local rules = {}
  for i, r in ipairs(d.rules) do
    local targets = {}
    for j, t in ipairs(r.targets) do
      local secret = secrets[t.name]
      if type(secret) ~= "string" then error("dynlog.ngx.pipeline: no secret for target " .. t.name, 2) end
      local auth, headers = _M.auth_of(t, secret)
      targets[j] = { url = base_url .. _M.local_path(t), headers = headers }
      local model_table = d.read_models[t.read_model].table
      local mod = require(t.project)
      local handle
      if type(mod.handlers) == "table" then
        local spec = { table = model_table, handlers = mod.handlers }
        handle = function(event) return handler.project(client, event, spec) end
      elseif type(mod.project) == "function" then
        handle = mod.project
      else
        error("dynlog.ngx.pipeline: module " .. t.project .. " has neither handlers nor project", 2)
      end
      p.receivers[t.name] = {
        auth = auth,
        handle = function(event)
          local result, err = handle(event)
          if result then count("deliveries", 1) end
          return result, err
        end,
      }
    end
    rules[i] = { name = r.name, pattern = r.pattern, targets = targets }
  end
  -- Deliveries of a read model being projected wait for it, holding
  -- their place: room for more of them at once than the bus's default.
  p.bus = { name = d.bus.name, rules = rules, max_in_flight = 32 }
  P = p
  return p
end

--- start() in init_worker_by_lua*: the bus's deliveries and the consumer.
function _M.start()
  local p = pipeline()
  ngx_api.start_bus(p.bus)
  ngx_api.start_consumer(p.consumer)
end

--- bus() in the /bus location: the local EventBridge.
function _M.bus()
  ngx_api.bus(pipeline().bus)
end

--- receive(target_name) in a target's location.
function _M.receive(name)
  local spec = pipeline().receivers[name]
  if not spec then error("dynlog.ngx.pipeline: no target " .. tostring(name), 2) end
  ngx_api.receive(spec)
end

-- The variables nginx passes to its workers (it clears the rest).
_M.ENV = { "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
           "AWS_ENDPOINT_URL_DYNAMODB", "AWS_EC2_METADATA_DISABLED", "DYNLOG_TABLE", "DYNLOG_CORE_TABLE",
           "DYNLOG_UP_DESCRIPTION", "DYNLOG_UP_URL", "DYNLOG_UP_SECRETS" }

--- nginx_conf(d, opts) -> the nginx.conf that runs description `d` from a
-- prefix holding (or linking to) lua/, buildjit/ and app/ (the directory of
-- the targets' modules). opts: port, as_root (workers run as root, to read
-- the checkout), modules (load_module lines: the Debian packages' paths).
function _M.nginx_conf(d, opts)
  local lines = {}
  local function add(...) lines[#lines + 1] = tbl_concat({ ... }) end
  add("# Written by `dynlog up` for the pipeline ", d.name, " (", d.file or "?", "); rewritten on every run.")
  if opts.as_root then add("user root;") end
  for _, m in ipairs(opts.modules or {}) do add("load_module ", m, ";") end
  add("worker_processes ", d.trigger.workers or 1, ";")
  add("error_log logs/error.log info;")
  add("pid logs/nginx.pid;")
  for _, name in ipairs(_M.ENV) do add("env ", name, ";") end
  add("events { worker_connections 1024; }")
  add("http {")
  add("    access_log off;")
  for _, t in ipairs({ "client_body", "proxy", "fastcgi", "uwsgi", "scgi" }) do
    add("    ", t, "_temp_path tmp/", t, ";")
  end
  add('    lua_package_path "$prefix/lua/?.lua;$prefix/lua/?/init.lua;$prefix/app/?.lua;$prefix/app/?/init.lua;;";')
  add('    lua_package_cpath "$prefix/buildjit/?.so;;";')
  add("    lua_shared_dict dynlog_stats 1m;")
  add("    lua_shared_dict dynlog_bus 64m;")
  add('    init_worker_by_lua_block { require("dynlog.ngx.pipeline").start() }')
  add("    server {")
  add(str_format("        listen 127.0.0.1:%d;", opts.port))
  add("        client_max_body_size 2m;")
  add("        location = /bus {")
  add("            allow 127.0.0.1;")
  add("            deny all;")
  add('            content_by_lua_block { require("dynlog.ngx.pipeline").bus() }')
  add("        }")
  add('        location = /stats { content_by_lua_block { require("dynlog.ngx.pipeline").stats() } }')
  for _, r in ipairs(d.rules) do
    for _, t in ipairs(r.targets) do
      add("        location = ", _M.local_path(t), " {")
      add(str_format('            content_by_lua_block { require("dynlog.ngx.pipeline").receive(%q) }', t.name))
      add("        }")
    end
  end
  add("    }")
  add("}")
  return tbl_concat(lines, "\n") .. "\n"
end

--- stats() in the /stats location: {published, deliveries} as JSON.
function _M.stats()
  local stats = ngx.shared.dynlog_stats
  ngx.header["Content-Type"] = "application/json"
  local out = {}
  for _, name in pairs({ "published", "deliveries" }) do out[name] = stats and stats:get(name) or 0 end
  ngx.say(json.encode(out))
end

return _M
