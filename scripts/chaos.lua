--- The chaos run (`make chaos`, through scripts/chaos.sh): dynlog under injected
-- faults and crashes, then every event accounted for.
--
--   lua5.4 scripts/chaos.lua run WORKDIR DYNAMODB_PORT    the run (scripts/chaos.sh starts it)
--   lua5.4 scripts/chaos.lua writer CONFIG.json N          one writer process (started by the run)
--   require("scripts.chaos")  inside nginx                 the pipeline of examples/nginx.conf
--
-- The run puts spec/support/chaos_proxy.lua between dynlog and DynamoDB Local
-- (proxy "ddb") and between the consumer and the local bus, and the bus and
-- the receiver (proxy "bus"). Writer processes append in ulid and version mode
-- (append, append_many, append_batch, appends with an exact expected version)
-- and query, through the ddb proxy with short timeouts, logging each outcome.
-- Two nginx run examples/nginx.conf with this file as its pipeline: one
-- (the "consumer" nginx, 2 workers) runs the stream consumers of both tables,
-- whose handler is the trigger, publishing to the other (the "bus" nginx),
-- whose local bus delivers every event to its receiver, which projects it into
-- a read model. The consumer nginx is killed with SIGKILL (master and workers)
-- several times and restarted. A worker of the bus nginx is killed with
-- SIGKILL several times too, its master left to start another in its place:
-- the local bus keeps its deliveries in a lua_shared_dict, and the new worker
-- must deliver what the dead one had accepted. (The whole bus nginx is never
-- killed: the dict lives as long as nginx, as a development stand-in for
-- EventBridge.)
--
-- Afterwards everything is read back directly from DynamoDB Local (not through
-- a proxy) and checked: every acknowledged append in the log exactly once, at
-- the key it was acknowledged with; no append reported failed in the log unless
-- the failure was ambiguous or a later read by the writer found it; every event
-- projected exactly once (a read-model item records every event it applied),
-- published at least once; checkpoints never ahead of their shard. The run
-- exits 1 when an invariant breaks.
--
-- Settings (environment): CHAOS_SEED (1), CHAOS_RATE (0.2), CHAOS_KINDS (all,
-- or a comma-separated list of the proxy's fault kinds), CHAOS_WRITERS (4),
-- CHAOS_OPS (operations per writer, 100), CHAOS_KILLS (3), CHAOS_BUS_KILLS (3),
-- CHAOS_DRAIN (seconds to wait for the pipeline to catch up, 120).
--
-- The file is read by LuaJIT too (inside nginx): Lua 5.1 syntax only.

local LOGS = { ulid = "ulid", version = "ver" }      -- the log name used in each table
local MODES = { "ulid", "version" }
local API_KEY = "chaos-key"
local CREDENTIALS = { access_key_id = "chaoskey", secret_access_key = "chaos-secret" }
-- The proxy's --tag: the uid of the events a DynamoDB request carries.
local UID_TAG = '"uid":{"S":"([^"]+)"}'


local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return text
end

local function write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function load_config(path)
  local json = require "dynlog.json"
  return assert(json.decode(assert(read_file(path), "no config at " .. tostring(path))))
end

-- The read model's handler: each event appends its uid, so that the item
-- shows every event it applied, in order, and how many.
local function project_spec(core_table)
  local function apply(state, ev)
    state = state or { n = 0 }
    state.n = (state.n or 0) + 1
    state.uids = (state.uids and (state.uids .. ",") or "") .. tostring(ev.payload.uid)
    return state
  end
  return { table = core_table, handlers = { one = apply, many = apply, batch = apply, exact = apply } }
end

---------------------------------------------------------------------------
-- Inside nginx: the pipeline (the role of examples/pipeline.lua)
---------------------------------------------------------------------------

local function nginx_pipeline()
  local dynlog = require "dynlog"
  local handler = require "dynlog.handler"
  local trigger = require "dynlog.trigger"
  local ngx = ngx -- luacheck: ignore

  local cfg = load_config(os.getenv("CHAOS_CONFIG"))
  local role = os.getenv("CHAOS_ROLE")
  local bus_url = os.getenv("DYNLOG_NGINX_URL")      -- the bus proxy, in front of the bus nginx
  local M = {}

  local out
  local function record(line)
    if not out then
      out = assert(io.open(cfg.dir .. "/pipeline.log", "a"))
      out:setvbuf("line")
    end
    out:write(line, "\n")
  end

  local clients, specs = {}, {}
  for _, mode in ipairs(MODES) do
    clients[LOGS[mode]] = dynlog.new({
      table = cfg.tables[mode], sort_key = mode, events_endpoint = bus_url .. "/bus",
      timeout = cfg.timeout, connect_timeout = cfg.timeout, max_attempts = cfg.max_attempts,
      base_delay = 0.02, max_delay = 0.5,
    })
    specs[LOGS[mode]] = project_spec(cfg.core_tables[mode])
  end

  local function consumer_opts(mode)
    local c = clients[LOGS[mode]]
    return {
      client = c, checkpoint_table = cfg.checkpoint_tables[mode], batch_size = 25, lease_duration = 6,
      poll_interval = 0.1, retry_base_delay = 0.2, retry_max_delay = 2,
      handler = function(batch, shard)
        local result = trigger.handle(c, batch)
        local failed = {}
        for _, f in ipairs(result.batchItemFailures) do failed[tostring(f.itemIdentifier)] = true end
        local published = 0
        for _, r in ipairs(batch.Records) do
          local seq = r.dynamodb.SequenceNumber
          if not failed[seq] then
            local keys = r.dynamodb.Keys
            record(("pub %s %s %s %s %s"):format(mode, keys.pk.S, keys.sk.S or keys.sk.N, seq, shard))
            published = published + 1
          end
        end
        local stats = ngx.shared.dynlog_stats
        if stats and published > 0 then stats:incr("published", published, 0) end
        return result
      end,
    }
  end

  function M.init_worker()
    if role ~= "consumer" then return end
    local ngx_dynlog = require "dynlog.ngx"
    for _, mode in ipairs(MODES) do ngx_dynlog.start_consumer(consumer_opts(mode)) end
  end

  M.bus = {
    name = "dynamodb-log", max_attempts = 12, retry_base_delay = 0.05, retry_max_delay = 1,
    rules = {
      { name = "chaos", pattern = { source = { "dynamodb-log" }, ["detail-type"] = { "stream changes" } },
        targets = { { url = bus_url .. "/users", headers = { ["x-api-key"] = API_KEY },
                      timeout = cfg.delivery_timeout } } },
    },
  }

  M.receiver = {
    auth = { header = "x-api-key", value = API_KEY },
    handle = function(event)
      local detail = event.detail
      local log = type(detail) == "table" and detail.log
      local c = clients[log]
      if not c then return nil, dynlog.errors.new("invalid_argument", "no log " .. tostring(log)) end
      local result, err = handler.project(c, event, specs[log])
      if result then
        record(("rx %s %s %s %d"):format(log, detail.key.pk, tostring(detail.key.sk), result.applied))
        local stats = ngx.shared.dynlog_stats
        if stats then stats:incr("deliveries", 1, 0) end
      end
      return result, err
    end,
  }

  function M.stats()
    local stats = ngx.shared.dynlog_stats
    ngx.header["Content-Type"] = "application/json"
    ngx.say(dynlog.json.encode({ published = stats:get("published") or 0, deliveries = stats:get("deliveries") or 0 }))
  end

  return M
end

if rawget(_G, "ngx") and type(ngx) == "table" and ngx.worker then -- luacheck: ignore
  return nginx_pipeline()
end

---------------------------------------------------------------------------
-- A writer process
---------------------------------------------------------------------------

local function writer(config_path, w)
  local dynlog = require "dynlog"
  local retry = require "dynlog.aws.retry"
  local cfg = load_config(config_path)
  math.randomseed(cfg.seed * 1000 + w)

  -- Every retry of a request goes through retry.delay: count them.
  local retries, delay = 0, retry.delay
  retry.delay = function(...)
    retries = retries + 1
    return delay(...)
  end

  local clients = {}
  for _, mode in ipairs(MODES) do
    clients[mode] = dynlog.new({
      table = cfg.tables[mode], sort_key = mode, endpoint = cfg.ddb_proxy, region = "us-east-1",
      credentials = CREDENTIALS, timeout = cfg.timeout, connect_timeout = cfg.timeout,
      -- Odd writers give up early, so that appends also fail (some ambiguously).
      max_attempts = w % 2 == 1 and cfg.few_attempts or cfg.max_attempts, base_delay = 0.02, max_delay = 0.4,
    })
  end
  local out = assert(io.open(("%s/writer%d.log"):format(cfg.dir, w), "w"))
  out:setvbuf("line")

  local seq = 0
  local function new_uid()
    seq = seq + 1
    return ("w%d-%d"):format(w, seq)
  end
  local acked = {}       -- "<mode> <log> <id>" → list of uids this writer had acknowledged there
  local exact = {}       -- id of an exclusive version-mode stream → its version as this writer knows it

  local function acknowledge(mode, log, id, uid, key, how)
    out:write(("ack %s %s %s#%s#stream %s %s\n"):format(uid, mode, log, id, tostring(key.sk), how))
    local k = mode .. " " .. log .. " " .. id
    acked[k] = acked[k] or {}
    table.insert(acked[k], uid)
  end
  local function failure(mode, log, id, uid, err, how)
    out:write(("fail %s %s %s#%s#stream %s %d %s %s\n"):format(uid, mode, log, id, tostring(err.code),
      err.ambiguous and 1 or 0, tostring(err.attempts or "-"), how))
  end

  local function own_ulid_stream() return "w" .. w .. "s" .. math.random(1, 4) end
  local function shared_stream() return "s" .. math.random(1, 4) end

  -- An append with an exact expected version failed: read the head (the
  -- stream is this writer's alone) to learn whether it landed.
  local function resolve(id, uid)
    local c = clients.version
    for _ = 1, 30 do
      local head, err = c:head(LOGS.version, id)
      if head or not err then
        local present = head ~= nil and head.payload.uid == uid
        out:write(("resolve %s %s\n"):format(uid, present and "present" or "absent"))
        exact[id] = head and head.sk or 0
        return
      end
    end
    out:write(("resolve %s unknown\n"):format(uid))
    exact[id] = nil
  end

  local ops = {}
  local function weight(n, f) for _ = 1, n do ops[#ops + 1] = f end end

  -- One append, its outcome written to the writer's log; the key, or nil.
  local function append_reported(mode, id, uid, event_type, via, opts)
    local key, err = clients[mode]:append(LOGS[mode], id, event_type, { uid = uid, writer = w }, opts)
    if key then
      acknowledge(mode, LOGS[mode], id, uid, key, via)
    else
      failure(mode, LOGS[mode], id, uid, err, via)
    end
    return key
  end

  weight(15, function() -- one append, ulid mode, a stream of this writer's
    local id, uid = own_ulid_stream(), new_uid()
    append_reported("ulid", id, uid, "one", "append")
  end)

  weight(15, function() -- one append, version mode, a stream every writer appends to ("any")
    local id, uid = shared_stream(), new_uid()
    append_reported("version", id, uid, "one", "append")
  end)

  weight(15, function() -- version mode, an exact expected version, on a stream of this writer's
    local id, uid = "w" .. w .. "x" .. math.random(1, 2), new_uid()
    if exact[id] == nil then resolve(id, "-") end
    if exact[id] == nil then return end
    local key = append_reported("version", id, uid, "exact", "exact", { expected_version = exact[id] })
    if key then exact[id] = key.sk else resolve(id, uid) end
  end)

  weight(25, function() -- append_many over several streams
    local mode = math.random(1, 2) == 1 and "ulid" or "version"
    local log = LOGS[mode]
    local events = {}
    for i = 1, math.random(6, 10) do
      events[i] = { log = log, id = mode == "ulid" and own_ulid_stream() or shared_stream(), type = "many",
                    payload = { uid = new_uid(), writer = w } }
    end
    local results, errs, partial = clients[mode]:append_many(events, { concurrency = 4 })
    results = results or partial
    for i, ev in ipairs(events) do
      if results[i] then
        acknowledge(mode, log, ev.id, ev.payload.uid, results[i], "append_many")
      else
        failure(mode, log, ev.id, ev.payload.uid, errs[i], "append_many")
      end
    end
  end)

  weight(10, function() -- append_batch: 2 or 3 events in one transaction
    local mode = math.random(1, 2) == 1 and "ulid" or "version"
    local log = LOGS[mode]
    local id = mode == "ulid" and own_ulid_stream() or shared_stream()
    local events = {}
    for i = 1, math.random(2, 3) do events[i] = { type = "batch", payload = { uid = new_uid(), writer = w } } end
    local keys, err = clients[mode]:append_batch(log, id, events)
    for i, ev in ipairs(events) do
      if keys then acknowledge(mode, log, id, ev.payload.uid, keys[i], "append_batch")
      else failure(mode, log, id, ev.payload.uid, err, "append_batch") end
    end
  end)

  weight(20, function() -- a consistent query must show what this writer was acknowledged, once
    local keys = {}
    for k in pairs(acked) do keys[#keys + 1] = k end
    if #keys == 0 then return end
    table.sort(keys)
    local k = keys[math.random(1, #keys)]
    local mode, log, id = k:match("^(%S+) (%S+) (%S+)$")
    local events = clients[mode]:query(log, id, { consistent = true })
    local seen, n = {}, 0
    for ev in events do
      n = n + 1
      seen[ev.payload.uid] = (seen[ev.payload.uid] or 0) + 1
    end
    if events.err then
      out:write(("query %s %s#%s#stream err %s\n"):format(mode, log, id, tostring(events.err.code)))
      return
    end
    out:write(("query %s %s#%s#stream ok %d\n"):format(mode, log, id, n))
    for _, uid in ipairs(acked[k]) do
      if (seen[uid] or 0) ~= 1 then
        out:write(("qbad %s %s %s#%s#stream seen %d times\n"):format(uid, mode, log, id, seen[uid] or 0))
      end
    end
  end)

  local deadline = os.time() + cfg.writer_seconds
  local done = 0
  for _ = 1, cfg.ops do
    if os.time() > deadline then break end
    ops[math.random(1, #ops)]()
    done = done + 1
  end
  out:write(("done ops=%d retries=%d\n"):format(done, retries))
  out:close()
end

---------------------------------------------------------------------------
-- The run
---------------------------------------------------------------------------

local socket_ok, socket = pcall(require, "socket")
local now = socket_ok and socket.gettime or os.time
local function sleep(s) if socket_ok then socket.sleep(s) else os.execute("sleep " .. s) end end

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function output_of(cmd)
  local p = assert(io.popen(cmd, "r"))
  local text = p:read("*a")
  p:close()
  return (text:gsub("%s+$", ""))
end

local function is_running(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  if not stat then return false end
  local state = stat:match("^%d+ %b() (%a)")
  return state ~= "Z" and state ~= "X"
end

local function children_of(pid)
  local list = {}
  for entry in output_of("ls /proc"):gmatch("%d+") do
    local stat = read_file("/proc/" .. entry .. "/stat")
    local ppid = stat and stat:match("^%d+ %b() %a (%d+)")
    if ppid and tonumber(ppid) == pid then list[#list + 1] = tonumber(entry) end
  end
  return list
end

local function wait_gone(pids, seconds)
  local deadline = now() + seconds
  while now() < deadline do
    local alive = false
    for _, pid in ipairs(pids) do if is_running(pid) then alive = true end end
    if not alive then return true end
    sleep(0.05)
  end
  return false
end

local function compare_sequence(a, b) -- decimal strings: -1, 0, 1
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end

local function run(work, ddb_port)
  local dynlog = require "dynlog"
  local json = require "dynlog.json"
  local leases = require "dynlog.pipeline.leases"
  local unmarshal_item = require("dynlog.marshal").unmarshal_item

  local started = now()
  local function elapsed() return now() - started end
  local function say(fmt, ...)
    io.stdout:write(("[%6.1fs] " .. fmt .. "\n"):format(elapsed(), ...))
    io.stdout:flush()
  end

  local env = function(name, default) local v = os.getenv(name) if v and v ~= "" then return v end return default end
  local cfg = {
    dir = work, seed = tonumber(env("CHAOS_SEED", "1")), rate = tonumber(env("CHAOS_RATE", "0.2")),
    kinds = env("CHAOS_KINDS", "all"), writers = tonumber(env("CHAOS_WRITERS", "4")),
    ops = tonumber(env("CHAOS_OPS", "100")), kills = tonumber(env("CHAOS_KILLS", "3")),
    bus_kills = tonumber(env("CHAOS_BUS_KILLS", "3")),
    drain = tonumber(env("CHAOS_DRAIN", "120")), writer_seconds = 150,
    timeout = 1, max_attempts = 10, few_attempts = 3, delivery_timeout = 3,
    tables = { ulid = "chaos-ulid", version = "chaos-version" },
    core_tables = { ulid = "chaos-ulid-core", version = "chaos-version-core" },
    checkpoint_tables = { ulid = "chaos-ulid-checkpoints", version = "chaos-version-checkpoints" },
  }
  local rng_seed = cfg.seed
  math.randomseed(rng_seed)
  local repo = output_of("pwd")
  local pids_file = assert(io.open(work .. "/pids", "a"))
  pids_file:setvbuf("line")
  local function remember(pid) pids_file:write(pid, "\n") end
  remember(require("dynlog.core").getpid())

  say("chaos: seed %d (CHAOS_SEED=%d replays it), fault rate %.2f, fault kinds: %s", cfg.seed, cfg.seed, cfg.rate,
    cfg.kinds)
  say("%d writers x %d operations (timeout %ss, max_attempts %d for odd writers, %d for even ones), %d SIGKILLs"
    .. " of the consumer nginx, %d of a bus nginx worker; work directory %s", cfg.writers, cfg.ops,
    tostring(cfg.timeout), cfg.few_attempts, cfg.max_attempts, cfg.kills, cfg.bus_kills, work)

  -- Tables, created directly.
  local direct = {}
  local ddb_url = "http://127.0.0.1:" .. ddb_port
  for _, mode in ipairs(MODES) do
    direct[mode] = dynlog.new({ table = cfg.tables[mode], sort_key = mode, endpoint = ddb_url, region = "us-east-1",
                                credentials = CREDENTIALS, base_delay = 0.01, max_delay = 0.2 })
    assert(direct[mode]:create_table())
    assert(require("dynlog.handler").create_table(direct[mode], cfg.core_tables[mode]))
  end

  -- Proxies.
  local function free_port()
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    return port
  end
  local function spawn(cmd, log)
    local pid = tonumber(output_of(cmd .. " </dev/null >>" .. quote(log) .. " 2>&1 & echo $!"))
    assert(pid, "could not start: " .. cmd)
    remember(pid)
    return pid
  end
  local proxies = {}
  local function start_proxy(name, upstream_port, seed, stall)
    local port_file = work .. "/" .. name .. ".port"
    local stats_file = work .. "/" .. name .. "-stats.json"
    local requests_file = work .. "/" .. name .. "-requests.log"
    local pid = spawn(("LUA_CPATH=%s lua5.4 spec/support/chaos_proxy.lua --upstream 127.0.0.1:%d --port-file %s"
      .. " --stats %s --seed %d --rate %s --kinds %s --stall %s --trickle %s --name %s --max-seconds 900"
      .. " --log %s --tag %s")
      :format(quote(repo .. "/build54/?.so;;"), upstream_port, quote(port_file), quote(stats_file), seed,
        tostring(cfg.rate), quote(cfg.kinds), tostring(stall), tostring(cfg.timeout * 0.4), name,
        quote(requests_file), quote(UID_TAG)),
      work .. "/" .. name .. ".log")
    local deadline = now() + 5
    while not read_file(port_file) do
      assert(now() < deadline and is_running(pid), "proxy " .. name .. " did not start")
      sleep(0.02)
    end
    proxies[name] = { pid = pid, port = tonumber(read_file(port_file)), stats = stats_file, requests = requests_file }
    return proxies[name]
  end
  local bus_port = free_port()
  local pddb = start_proxy("ddb", tonumber(ddb_port), cfg.seed * 10 + 1, cfg.timeout + 0.6)
  local pbus = start_proxy("bus", bus_port, cfg.seed * 10 + 2, cfg.delivery_timeout + 0.5)
  cfg.ddb_proxy = "http://127.0.0.1:" .. pddb.port
  cfg.bus_proxy = "http://127.0.0.1:" .. pbus.port
  local config_path = work .. "/config.json"
  write_file(config_path, json.encode(cfg))

  -- The two nginx, from examples/nginx.conf with this file as the pipeline.
  local template = assert(read_file("examples/nginx.conf"))
  local function substitute(text, from, to)
    local s, e = text:find(from, 1, true)
    assert(s, "examples/nginx.conf has changed: no " .. from)
    return text:sub(1, s - 1) .. to .. text:sub(e + 1)
  end
  local as_root = output_of("id -u") == "0"
  local nginxes = {}
  local function prepare_nginx(name, port, role)
    local prefix = work .. "/nginx-" .. name
    assert(os.execute(("mkdir -p %s/logs %s/tmp"):format(quote(prefix), quote(prefix))))
    for _, dir in ipairs({ "lua", "buildjit", "examples", "scripts" }) do
      os.execute(("ln -sfn %s %s"):format(quote(repo .. "/" .. dir), quote(prefix .. "/" .. dir)))
    end
    local conf = template
    conf = substitute(conf, "listen 127.0.0.1:8088;", "listen 127.0.0.1:" .. port .. ";")
    conf = substitute(conf, 'require("dynlog.ngx").start_consumer(require("examples.pipeline").consumer)',
      'require("scripts.chaos").init_worker()')
    conf = conf:gsub('require%("examples%.pipeline"%)', 'require("scripts.chaos")')
    conf = substitute(conf, "env DYNLOG_NGINX_URL;", "env DYNLOG_NGINX_URL;\nenv CHAOS_CONFIG;\nenv CHAOS_ROLE;")
    if as_root then conf = "user root;\n" .. conf end
    write_file(prefix .. "/nginx.conf", conf)
    nginxes[name] = { prefix = prefix, port = port, role = role, pids = {} }
    return nginxes[name]
  end
  local function start_nginx(n)
    os.remove(n.prefix .. "/logs/nginx.pid")
    local vars = {
      AWS_REGION = "us-east-1", AWS_ACCESS_KEY_ID = CREDENTIALS.access_key_id,
      AWS_SECRET_ACCESS_KEY = CREDENTIALS.secret_access_key, AWS_ENDPOINT_URL_DYNAMODB = cfg.ddb_proxy,
      AWS_EC2_METADATA_DISABLED = "true", DYNLOG_TABLE = cfg.tables.ulid, DYNLOG_API_KEY = API_KEY,
      DYNLOG_NGINX_URL = cfg.bus_proxy, CHAOS_CONFIG = config_path, CHAOS_ROLE = n.role,
    }
    local prefix_vars = {}
    for k, v in pairs(vars) do prefix_vars[#prefix_vars + 1] = k .. "=" .. quote(v) end
    local out = output_of(("env %s nginx -p %s -c nginx.conf 2>&1; echo rc=$?"):format(table.concat(prefix_vars, " "),
      quote(n.prefix)))
    assert(out:match("rc=0$"), "nginx " .. n.role .. " did not start: " .. out)
    local deadline = now() + 10
    local master
    while not master do
      master = tonumber((read_file(n.prefix .. "/logs/nginx.pid") or ""):match("%d+"))
      assert(master or now() < deadline, "nginx " .. n.role .. " wrote no pid")
      if not master then sleep(0.05) end
    end
    remember(master)
    local workers = {}
    while #workers < 2 and now() < deadline do
      workers = children_of(master)
      if #workers < 2 then sleep(0.05) end
    end
    for _, pid in ipairs(workers) do remember(pid) end
    n.pids = { master }
    for _, pid in ipairs(workers) do n.pids[#n.pids + 1] = pid end
    return n.pids
  end
  local function kill_nginx(n, signal)
    local pids = { n.pids[1] }
    for _, pid in ipairs(children_of(n.pids[1])) do pids[#pids + 1] = pid end
    for _, pid in ipairs(n.pids) do
      local known = false
      for _, p in ipairs(pids) do if p == pid then known = true end end
      if not known then pids[#pids + 1] = pid end
    end
    if signal == "QUIT" then
      os.execute("kill -QUIT " .. n.pids[1] .. " 2>/dev/null")
      if not wait_gone(pids, 10) then signal = "KILL" end
    end
    if signal == "KILL" then
      for _, pid in ipairs(pids) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
      wait_gone(pids, 5)
    end
    return pids
  end

  start_nginx(prepare_nginx("bus", bus_port, "bus"))
  local consumer_nginx = prepare_nginx("consumer", free_port(), "consumer")
  start_nginx(consumer_nginx)
  say("DynamoDB Local :%s, ddb proxy :%d, bus proxy :%d -> bus nginx :%d, consumer nginx :%d (pids %s)",
    ddb_port, pddb.port, pbus.port, bus_port, consumer_nginx.port, table.concat(consumer_nginx.pids, " "))

  -- Writers.
  local writers = {}
  for w = 1, cfg.writers do
    writers[w] = spawn(("LUA_PATH=%s LUA_CPATH=%s AWS_EC2_METADATA_DISABLED=true lua5.4 scripts/chaos.lua writer %s %d")
      :format(quote("lua/?.lua;lua/?/init.lua;;"), quote("build54/?.so;;"), quote(config_path), w),
      work .. "/writer" .. w .. ".out")
  end
  say("%d writers started", cfg.writers)

  -- SIGKILLs at random points while the writers run and while the consumer catches up.
  local kill_at = {}
  for i = 1, cfg.kills do kill_at[i] = 4 + math.random() * 32 end
  table.sort(kill_at)
  local kills_done, kill_log = 0, {}
  local function due_kill()
    if kills_done < #kill_at and elapsed() >= kill_at[kills_done + 1] then
      kills_done = kills_done + 1
      local pids = kill_nginx(consumer_nginx, "KILL")
      local pause = 0.2 + math.random() * 1.5
      sleep(pause)
      start_nginx(consumer_nginx)
      kill_log[#kill_log + 1] = ("%.1fs"):format(kill_at[kills_done])
      say("SIGKILL %d/%d: consumer nginx (pids %s) killed, restarted %.1fs later (pids %s)", kills_done, #kill_at,
        table.concat(pids, " "), pause, table.concat(consumer_nginx.pids, " "))
    end
  end

  -- SIGKILLs of one bus nginx worker (the master starts another), at random points too.
  local bus_kill_at = {}
  for i = 1, cfg.bus_kills do bus_kill_at[i] = 3 + math.random() * 34 end
  table.sort(bus_kill_at)
  local bus_kills_done, bus_kill_log = 0, {}
  local function due_bus_kill()
    if bus_kills_done < #bus_kill_at and elapsed() >= bus_kill_at[bus_kills_done + 1] then
      bus_kills_done = bus_kills_done + 1
      local master = nginxes.bus.pids[1]
      local workers = children_of(master)
      local victim = workers[math.random(#workers)]
      os.execute("kill -9 " .. victim .. " 2>/dev/null")
      wait_gone({ victim }, 5)
      -- Until the master has started another (the dead one may linger as a zombie a moment).
      local deadline = now() + 10
      local replaced = {}
      while now() < deadline do
        replaced = {}
        for _, pid in ipairs(children_of(master)) do
          if pid ~= victim and is_running(pid) then replaced[#replaced + 1] = pid end
        end
        if #replaced >= #workers then break end
        sleep(0.05)
      end
      for _, pid in ipairs(replaced) do remember(pid) end
      bus_kill_log[#bus_kill_log + 1] = ("%.1fs"):format(bus_kill_at[bus_kills_done])
      say("SIGKILL %d/%d: bus nginx worker %d killed; its master runs workers %s", bus_kills_done, #bus_kill_at,
        victim, table.concat(replaced, " "))
    end
  end

  local writers_done = false
  while not writers_done do
    due_kill()
    due_bus_kill()
    writers_done = true
    for _, pid in ipairs(writers) do if is_running(pid) then writers_done = false end end
    if not writers_done then sleep(0.2) end
  end
  say("writers done")

  -- The expected state of each stream, from the log itself (read directly).
  local function scan(mode)
    local c, items, start = direct[mode], {}, nil
    repeat
      local resp = assert(c:call("Scan", { TableName = cfg.tables[mode], ExclusiveStartKey = start,
                                           ConsistentRead = true }))
      for _, raw in ipairs(resp.Items) do items[#items + 1] = unmarshal_item(raw) end
      start = resp.LastEvaluatedKey
    until not start
    return items
  end
  local function streams_of(items)
    local streams = {}
    for _, item in ipairs(items) do
      local s = streams[item.pk]
      if not s then s = {} streams[item.pk] = s end
      s[#s + 1] = item
    end
    for _, list in pairs(streams) do table.sort(list, function(a, b) return a.sk < b.sk end) end
    return streams
  end
  local function read_model(mode, pk)
    local key = pk:match("^(.*)#stream$")
    local resp = assert(direct[mode]:call("GetItem", { TableName = cfg.core_tables[mode], ConsistentRead = true,
      Key = { pk = { S = key }, sk = { S = key } } }))
    return resp.Item and unmarshal_item(resp.Item)
  end
  local function lagging()
    local behind, total = 0, 0
    for _, mode in ipairs(MODES) do
      for pk, list in pairs(streams_of(scan(mode))) do
        total = total + 1
        local rm = read_model(mode, pk)
        if not rm or rm.version ~= list[#list].sk then behind = behind + 1 end
      end
    end
    return behind, total
  end

  -- Let the pipeline catch up (the remaining kills land meanwhile).
  local drain_deadline = now() + cfg.drain
  local behind, total
  local last_report = 0
  repeat
    due_kill()
    due_bus_kill()
    behind, total = lagging()
    if behind == 0 and kills_done == #kill_at and bus_kills_done == #bus_kill_at then break end
    if now() - last_report > 10 then
      say("waiting for the pipeline: %d of %d streams' read models behind", behind, total)
      last_report = now()
    end
    sleep(1)
  until now() > drain_deadline
  say("pipeline %s: %d of %d streams' read models behind", behind == 0 and "caught up" or "did NOT catch up",
    behind, total)
  -- The consumer checkpoints after the handler returns: give it a moment.
  sleep(2)

  -- Stop: the consumer nginx, the bus nginx, the proxies (which write their counts on SIGTERM).
  kill_nginx(consumer_nginx, "QUIT")
  kill_nginx(nginxes.bus, "QUIT")
  for _, p in pairs(proxies) do os.execute("kill -TERM " .. p.pid .. " 2>/dev/null") end
  wait_gone({ pddb.pid, pbus.pid }, 5)

  ---------------------------------------------------------------------------
  -- Accounting
  ---------------------------------------------------------------------------
  local problems, notes = {}, {}
  local flagged = {}       -- uid → true: show what the ddb proxy saw of it
  local function add(where, kind, uid, fmt, ...)
    where[kind] = where[kind] or {}
    table.insert(where[kind], { text = (fmt):format(...), uid = uid })
    if uid then flagged[uid] = true end
  end
  local function problem(kind, uid, fmt, ...) add(problems, kind, uid, fmt, ...) end
  local function note(kind, uid, fmt, ...) add(notes, kind, uid, fmt, ...) end

  -- Writers' outcomes.
  local outcomes = {}      -- uid → {ack=, fail=, resolved=}
  local ws = { acked = 0, by_mode = { ulid = 0, version = 0 }, failed = 0, ambiguous = 0, codes = {},
               queries = 0, query_errors = 0, retries = 0, ops = 0 }
  for w = 1, cfg.writers do
    local finished = false
    for line in (read_file(("%s/writer%d.log"):format(work, w)) or ""):gmatch("[^\n]+") do
      local kind = line:match("^(%S+)")
      if kind == "ack" then
        local uid, mode, pk, sk, how = line:match("^ack (%S+) (%S+) (%S+) (%S+) (%S+)$")
        outcomes[uid] = outcomes[uid] or {}
        outcomes[uid].ack = { mode = mode, pk = pk, sk = sk, how = how }
        ws.acked = ws.acked + 1
        ws.by_mode[mode] = ws.by_mode[mode] + 1
      elseif kind == "fail" then
        local uid, mode, pk, code, amb, attempts, how = line:match("^fail (%S+) (%S+) (%S+) (%S+) (%d) (%S+) (%S+)$")
        outcomes[uid] = outcomes[uid] or {}
        outcomes[uid].fail = { mode = mode, pk = pk, code = code, ambiguous = amb == "1", attempts = attempts,
                               how = how }
        ws.failed = ws.failed + 1
        if amb == "1" then ws.ambiguous = ws.ambiguous + 1 end
        ws.codes[code] = (ws.codes[code] or 0) + 1
      elseif kind == "resolve" then
        local uid, what = line:match("^resolve (%S+) (%S+)$")
        if uid ~= "-" then
          outcomes[uid] = outcomes[uid] or {}
          outcomes[uid].resolved = what
        end
      elseif kind == "query" then
        ws.queries = ws.queries + 1
        if line:match(" err ") then ws.query_errors = ws.query_errors + 1 end
      elseif kind == "qbad" then
        problem("queries that missed or repeated an acknowledged event", line:match("^qbad (%S+)"),
          "writer %d: %s", w, line)
      elseif kind == "done" then
        finished = true
        ws.ops = ws.ops + tonumber(line:match("ops=(%d+)"))
        ws.retries = ws.retries + tonumber(line:match("retries=(%d+)"))
      end
    end
    if not finished then
      problem("writers that crashed", nil, "writer %d did not finish: %s", w,
        (read_file(("%s/writer%d.out"):format(work, w)) or ""):sub(-800))
    end
  end

  -- The log, read directly.
  local in_log = {}        -- uid → list of {mode, pk, sk}
  local log_events = 0
  local all_streams = {}
  for _, mode in ipairs(MODES) do
    local items = scan(mode)
    log_events = log_events + #items
    for _, item in ipairs(items) do
      local uid = item.payload and item.payload.uid or "?"
      in_log[uid] = in_log[uid] or {}
      table.insert(in_log[uid], { mode = mode, pk = item.pk, sk = tostring(item.sk) })
    end
    all_streams[mode] = streams_of(items)
  end

  local lost, duplicates, failed_present, landed = 0, 0, 0, 0
  for uid, places in pairs(in_log) do
    local o = outcomes[uid]
    if #places > 1 then
      duplicates = duplicates + #places - 1
      local where = {}
      for _, p in ipairs(places) do where[#where + 1] = p.pk .. " sk " .. p.sk end
      problem("duplicate events in the log", uid, "%s stored %d times (%s); the writer was told %s", uid, #places,
        table.concat(where, ", "), o and o.ack and ("ok, sk " .. o.ack.sk .. " (" .. o.ack.how .. ")")
          or (o and o.fail and (o.fail.code .. " (" .. o.fail.how .. ")")) or "nothing")
    end
    if not o then problem("events in the log that no writer appended", uid, "%s at %s", uid, places[1].pk) end
  end
  for uid, o in pairs(outcomes) do
    local places = in_log[uid]
    if o.ack then
      if not places then
        lost = lost + 1
        problem("acknowledged events lost", uid, "%s (%s, acknowledged at %s sk %s by %s)", uid, o.ack.mode,
          o.ack.pk, o.ack.sk, o.ack.how)
      else
        local found = false
        for _, p in ipairs(places) do if p.pk == o.ack.pk and p.sk == o.ack.sk then found = true end end
        if not found then
          problem("acknowledged events stored under another key", uid,
            "%s acknowledged at %s sk %s, stored at %s sk %s", uid, o.ack.pk, o.ack.sk, places[1].pk, places[1].sk)
        end
      end
    elseif o.fail and places then
      landed = landed + 1
      local f = o.fail
      local where = places[1].pk .. " sk " .. places[1].sk
      -- With err.ambiguous it may have been applied: allowed.
      if not f.ambiguous and o.resolved == "present" then
        note("appends reported failed without err.ambiguous, found in the log by the writer's re-read", uid,
          "%s: %s from %s (attempts %s), stored at %s", uid, f.code, f.how, f.attempts, where)
      elseif not f.ambiguous then
        failed_present = failed_present + 1
        problem("appends reported failed (not ambiguous) that are in the log", uid,
          "%s: %s from %s (attempts %s), stored at %s", uid, f.code, f.how, f.attempts, where)
      end
    end
  end

  -- The read models.
  local not_projected, projected_twice, streams_total = 0, 0, 0
  for _, mode in ipairs(MODES) do
    for pk, list in pairs(all_streams[mode]) do
      streams_total = streams_total + 1
      local rm = read_model(mode, pk)
      local uids = {}
      for i, item in ipairs(list) do uids[i] = tostring(item.payload.uid) end
      if not rm then
        not_projected = not_projected + #list
        problem("streams with no read model", nil, "%s (%d events)", pk, #list)
      elseif rm.version ~= list[#list].sk or rm.uids ~= table.concat(uids, ",") or rm.n ~= #list then
        local applied = {}
        for u in tostring(rm.uids):gmatch("[^,]+") do applied[u] = (applied[u] or 0) + 1 end
        local missing, twice = 0, 0
        for _, u in ipairs(uids) do
          if not applied[u] then missing = missing + 1 elseif applied[u] > 1 then twice = twice + applied[u] - 1 end
        end
        not_projected, projected_twice = not_projected + missing, projected_twice + twice
        problem("read models that differ from their stream", nil, "%s: version %s (last event %s), %s events applied"
          .. " of %d (%d missing, %d applied twice)", pk, tostring(rm.version), tostring(list[#list].sk),
          tostring(rm.n), #list, missing, twice)
      end
    end
  end

  -- Published and delivered, from the pipeline's own log.
  local published, deliveries = {}, {}
  local pub_lines, rx_lines = 0, 0
  for line in (read_file(work .. "/pipeline.log") or ""):gmatch("[^\n]+") do
    local kind, pk, sk = line:match("^(%S+) %S+ (%S+) (%S+)")
    local k = pk and (pk .. " " .. sk)
    if kind == "pub" then
      pub_lines = pub_lines + 1
      published[k] = (published[k] or 0) + 1
    elseif kind == "rx" then
      rx_lines = rx_lines + 1
      deliveries[k] = (deliveries[k] or 0) + 1
    end
  end
  local never_published, republished, delivery_dupes, never_delivered = 0, 0, 0, 0
  for _, mode in ipairs(MODES) do
    for _, list in pairs(all_streams[mode]) do
      for _, item in ipairs(list) do
        local k = item.pk .. " " .. tostring(item.sk)
        local p, d = published[k] or 0, deliveries[k] or 0
        if p == 0 then
          never_published = never_published + 1
          problem("events never published", item.payload.uid, "%s sk %s (%s)", item.pk, tostring(item.sk),
            tostring(item.payload.uid))
        end
        if p > 1 then republished = republished + p - 1 end
        if d > 1 then delivery_dupes = delivery_dupes + d - 1 end
        if d == 0 then never_delivered = never_delivered + 1 end
      end
    end
  end

  -- Checkpoints against the shards (read directly).
  local shards_total, caught_up, ahead, stream_records = 0, 0, 0, 0
  for _, mode in ipairs(MODES) do
    local c = direct[mode]
    local arn = assert(c:latest_stream_arn())
    local desc = assert(c:describe_stream(arn))
    local all = assert(leases.read_all(c, cfg.checkpoint_tables[mode], cfg.tables[mode]))
    for _, shard in ipairs(desc.Shards) do
      shards_total = shards_total + 1
      local last
      local it = assert(c:get_shard_iterator(arn, shard.ShardId, "TRIM_HORIZON"))
      while it do
        local page = assert(c:get_records(it, 1000))
        if #page.records == 0 then break end
        for _, r in ipairs(page.records) do last = r.dynamodb.SequenceNumber end
        stream_records = stream_records + #page.records
        it = page.next_iterator
      end
      local lease = all[shard.ShardId]
      local cp = lease and lease.checkpoint
      if cp == leases.SHARD_END or (cp == nil and last == nil) then
        caught_up = caught_up + 1
      elseif cp ~= nil then
        if last == nil or compare_sequence(cp, last) > 0 then
          ahead = ahead + 1
          problem("checkpoints ahead of their shard", nil, "%s shard %s: checkpoint %s, last record %s", mode,
            shard.ShardId, tostring(cp), tostring(last))
        elseif compare_sequence(cp, last) == 0 then
          caught_up = caught_up + 1
        end
      end
    end
  end

  -- What the ddb proxy saw of each flagged event: every request that carried it.
  local seen_by_proxy = {}
  if next(flagged) then
    for line in (read_file(proxies.ddb.requests) or ""):gmatch("[^\n]+") do
      local t, conn, n, op, fault, tags = line:match("^(%S+) conn (%d+) req (%d+) (%S+) (%S+) ?(%S*)$")
      for uid in (tags or ""):gmatch("[^,]+") do
        if flagged[uid] then
          seen_by_proxy[uid] = seen_by_proxy[uid] or {}
          table.insert(seen_by_proxy[uid], ("%.1fs %s %s on connection %s (its request %s)"):format(
            tonumber(t) - started, op, fault == "-" and "forwarded" or fault, conn, n))
        end
      end
    end
  end

  -- Proxy counts.
  local function proxy_line(name)
    local s = json.decode(read_file(proxies[name].stats) or "{}") or {}
    local faults, injected = {}, 0
    local names = {}
    for k in pairs(s.faults or {}) do names[#names + 1] = k end
    table.sort(names)
    for _, k in ipairs(names) do
      faults[#faults + 1] = k .. " " .. s.faults[k]
      injected = injected + s.faults[k]
    end
    local ops = {}
    for op, o in pairs(s.by_operation or {}) do ops[#ops + 1] = { op = op, n = o.requests, f = o.faults } end
    table.sort(ops, function(a, b) return a.n > b.n end)
    local top = {}
    for i = 1, math.min(7, #ops) do top[i] = ("%s %d/%d"):format(ops[i].op, ops[i].f, ops[i].n) end
    return ("%d requests, %d faults (%s)\n               faults/requests by operation: %s"):format(s.requests or 0,
      injected, table.concat(faults, ", "), table.concat(top, ", "))
  end

  local codes = {}
  for code, n in pairs(ws.codes) do codes[#codes + 1] = code .. " " .. n end
  table.sort(codes)
  print("")
  print(("chaos: seed %d, fault rate %.2f, kinds %s, %.0f s"):format(cfg.seed, cfg.rate, cfg.kinds, elapsed()))
  print("  ddb proxy:   " .. proxy_line("ddb"))
  print("  bus proxy:   " .. proxy_line("bus"))
  print(("  writers:     %d operations; appends acknowledged %d (ulid %d, version %d), failed %d (%s), %d of them"
    .. " with err.ambiguous;"):format(ws.ops, ws.acked, ws.by_mode.ulid, ws.by_mode.version, ws.failed,
    #codes > 0 and table.concat(codes, ", ") or "none", ws.ambiguous))
  print(("               %d queries (%d failed); %d retries by the writers' clients"):format(ws.queries,
    ws.query_errors, ws.retries))
  print(("  log:         %d events in %d streams, %d stream records; %d appends reported failed are in the log")
    :format(log_events, streams_total, stream_records, landed))
  print(("  consumer:    nginx SIGKILLed %d times (at %s); %d events published, %d publications repeated")
    :format(#kill_log, table.concat(kill_log, ", "), pub_lines - republished, republished))
  print(("  bus:         a worker SIGKILLed %d times (at %s), replaced by its master"):format(#bus_kill_log,
    table.concat(bus_kill_log, ", ")))
  print(("  receiver:    %d deliveries handled, %d of them duplicates; %d events never delivered themselves"
    .. " (projected with a later one)"):format(rx_lines, delivery_dupes, never_delivered))
  print(("  checkpoints: %d shards, %d caught up, %d ahead of their shard"):format(shards_total, caught_up, ahead))
  print("")
  print(("  events lost (acknowledged, not in the log):    %d"):format(lost))
  print(("  duplicate events in the log:                   %d"):format(duplicates))
  print(("  appends reported failed (not ambiguous) in it: %d"):format(failed_present))
  print(("  events not projected / projected twice:        %d / %d"):format(not_projected, projected_twice))
  print(("  events never published:                        %d"):format(never_published))
  print(("  checkpoints ahead of their shard:              %d"):format(ahead))

  local function list(title, set)
    local kinds = {}
    for kind in pairs(set) do kinds[#kinds + 1] = kind end
    table.sort(kinds)
    if #kinds > 0 then print("\n" .. title) end
    for _, kind in ipairs(kinds) do
      local entries = set[kind]
      print(("  %s: %d"):format(kind, #entries))
      for i = 1, math.min(6, #entries) do
        local e = entries[i]
        print("    " .. e.text)
        for _, s in ipairs(e.uid and seen_by_proxy[e.uid] or {}) do print("        ddb proxy: " .. s) end
      end
      if #entries > 6 then print(("    ... and %d more"):format(#entries - 6)) end
    end
    return #kinds
  end
  list("notes (allowed by the invariants):", notes)
  if list("chaos: FAIL", problems) == 0 then
    print("\nchaos: PASS (every invariant held)")
    return 0
  end
  print(("\nreplay with: CHAOS_SEED=%d CHAOS_RATE=%s CHAOS_KINDS=%s bash scripts/chaos.sh"):format(cfg.seed,
    tostring(cfg.rate), cfg.kinds))
  return 1
end

local role = arg and arg[1]
if role == "writer" then
  writer(arg[2], tonumber(arg[3]))
elseif role == "run" then
  local ok, rc = xpcall(run, debug.traceback, arg[2], arg[3])
  if not ok then
    io.stderr:write("chaos: the run itself failed: ", tostring(rc), "\n")
    os.exit(2)
  end
  os.exit(rc)
else
  io.stderr:write("usage: lua5.4 scripts/chaos.lua run WORKDIR DYNAMODB_PORT | writer CONFIG.json N\n")
  os.exit(2)
end
