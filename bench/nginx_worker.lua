-- What an nginx worker holds in memory once dynlog has done its work in it:
-- a private nginx (spec/support/nginx.lua, one worker, buildjit/) whose
-- worker appends events one by one and with append_many, and reads them back
-- with query, over cosockets against DynamoDB Local; then the worker's
-- resident size (VmRSS in /proc/PID/status), its proportional set size (Pss
-- in /proc/PID/smaps_rollup), the shared objects it maps and whether libcurl
-- is among them. The last line is the figures as JSON.
--
--   LUA_PATH='lua/?.lua;lua/?/init.lua;./?.lua;;' LUA_CPATH='build54/?.so;;' \
--     lua5.4 bench/nginx_worker.lua ENDPOINT [APPENDS]        (bench/memory.sh runs it)
local dynlog = require "dynlog"
local nginx = require "spec.support.nginx"
local socket_http = require "socket.http"

local endpoint = assert(arg[1], "usage: lua5.4 bench/nginx_worker.lua ENDPOINT [APPENDS]")
local appends = tonumber(arg[2] or "200")

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

local c = dynlog.new{ table = "nginx-worker-" .. dynlog.ulid():lower(), endpoint = endpoint, region = "us-east-1",
  credentials = { access_key_id = "AKIDBENCH", secret_access_key = "bench-secret-key" } }
assert(c:create_table())

local srv = nginx.start({
  workers = 1,
  server = ([[
    location = /work { content_by_lua_block {
      local c = require("dynlog").new{ table = %q, endpoint = %q, region = "us-east-1",
        credentials = { access_key_id = "AKIDBENCH", secret_access_key = "bench-secret-key" } }
      local n = tonumber(ngx.var.arg_n)
      for i = 1, n do assert(c:append("bench", tostring(i %% 10), "e", { n = i })) end
      local batch = {}
      for i = 1, n do batch[i] = { log = "bench", id = tostring(i %% 10), type = "e", payload = { n = i } } end
      assert(c:append_many(batch, { concurrency = 8 }))
      local read = 0
      for id = 0, 9 do
        local events = assert(c:query("bench", tostring(id)))
        for _ in events do read = read + 1 end
        assert(not events.err, tostring(events.err))
      end
      ngx.say(ngx.worker.pid(), " ", read)
    } }
  ]]):format(c.table, endpoint),
})

local ok, figures = pcall(function()
  local body, status = socket_http.request(srv.url .. "/work?n=" .. appends)
  assert(status == 200, ("/work answered %s: %s\n%s"):format(tostring(status), tostring(body),
    srv.error_log():sub(-2000)))
  local pid, read = body:match("^(%d+) (%d+)")
  assert(tonumber(read) == 2 * appends, "read back " .. tostring(read) .. " events, not " .. 2 * appends)
  local status_text = read_file("/proc/" .. pid .. "/status")
  local rollup = read_file("/proc/" .. pid .. "/smaps_rollup")
  local libs, curl = {}, false
  for path in read_file("/proc/" .. pid .. "/maps"):gmatch("%s(/%S+%.so[%.%d]*)\n") do
    libs[path] = true
    if path:find("libcurl", 1, true) then curl = true end
  end
  local count = 0
  for _ in pairs(libs) do count = count + 1 end
  return {
    appends = appends, events_read = tonumber(read),
    worker_vmrss_kib = tonumber(status_text:match("VmRSS:%s*(%d+)")),
    worker_vmsize_kib = tonumber(status_text:match("VmSize:%s*(%d+)")),
    worker_pss_kib = tonumber(rollup:match("\nPss:%s*(%d+)")),
    worker_shared_objects = count,
    worker_maps_libcurl = curl,
    worker_maps_dynlog_curl = libs[(io.popen("pwd"):read("*l")) .. "/buildjit/dynlog/curl.so"] or false,
  }
end)
srv.stop()
if not ok then error(figures, 0) end

print(("nginx worker after %d appends, %d in append_many and a query of each stream"):format(appends, appends))
print(("%-44s %10d"):format("resident (VmRSS), KiB", figures.worker_vmrss_kib))
print(("%-44s %10d"):format("proportional (Pss), KiB", figures.worker_pss_kib))
print(("%-44s %10d"):format("mapped (VmSize), KiB", figures.worker_vmsize_kib))
print(("%-44s %10d"):format("shared objects mapped", figures.worker_shared_objects))
print(("%-44s %10s"):format("libcurl mapped", tostring(figures.worker_maps_libcurl)))
print(dynlog.json.encode(figures))
