-- An nginx worker maps dynlog.core and no libcurl: its requests go over
-- cosockets, and the libcurl transport is a module of its own (dynlog.curl),
-- which nothing an nginx worker runs loads. The worker does real work first
-- (appends, append_many over light threads, a query) against DynamoDB Local,
-- then reads its own /proc/self/maps.
--
-- Needs nginx with libnginx-mod-http-lua, `make luajit` (buildjit/) and
-- DynamoDB Local (`make test`).
local cjson = require "cjson"
local ddb = require "spec.support.ddb"
local env = require "spec.support.env"
local nginx = require "spec.support.nginx"
local socket_http = require "socket.http"

describe("an nginx worker that appends and queries through dynlog", function()
  local srv, c

  setup(function()
    assert(io.open("buildjit/dynlog/core.so"), "buildjit/dynlog/core.so is missing: run `make luajit`")
    c = ddb.ready_client()
    srv = nginx.start({
      server = ([[
        location = /work { content_by_lua_block {
          local c = require("dynlog").new{ table = %q, endpoint = %q, region = "us-east-1",
            credentials = { access_key_id = "AKIDSPEC", secret_access_key = "spec-secret-key" } }
          local key = assert(c:append("maps", "1", "started", { n = 1 }))
          assert(c:append_many({ { log = "maps", id = "2", type = "e" }, { log = "maps", id = "3", type = "e" },
                                 { log = "maps", id = "1", type = "e" } }, { concurrency = 3 }))
          local read = {}
          for ev in assert(c:query("maps", "1")) do read[#read + 1] = ev.type end
          local maps, libs = {}, {}
          for line in io.lines("/proc/self/maps") do
            local path = line:match("%%s(/%%S+)$")
            if path and path:find("%%.so") and not maps[path] then
              maps[path] = true
              libs[#libs + 1] = path
            end
          end
          ngx.say(require("cjson").encode({
            sk = key.sk, read = read, libs = libs,
            cosocket = package.loaded["dynlog.transport.cosocket"] ~= nil,
            curl_loaded = package.loaded["dynlog.curl"] ~= nil,
          }))
        } }
      ]]):format(c.table, env.dynamodb_endpoint()),
    })
  end)

  teardown(function() if srv then srv.stop() end end)

  it("maps dynlog/core.so and neither dynlog/curl.so nor libcurl", function()
    local body, code = socket_http.request(srv.url .. "/work")
    assert.are.equal(200, code, tostring(body) .. "\n" .. srv.error_log():sub(-3000))
    local r = cjson.decode(body)
    -- The work was done, over cosockets, and is in DynamoDB Local.
    assert.are.same({ "started", "e" }, r.read)
    assert.is_true(r.cosocket)
    assert.are.equal("started", assert(c:get("maps", "1", r.sk)).type)

    local core, curl, libcurl = false, false, {}
    for _, path in ipairs(r.libs) do
      if path:find("/buildjit/dynlog/core%.so$") then core = true end
      if path:find("/dynlog/curl%.so$") then curl = true end
      if path:find("libcurl", 1, true) then libcurl[#libcurl + 1] = path end
    end
    assert.is_true(core, "dynlog/core.so is not mapped:\n" .. table.concat(r.libs, "\n"))
    assert.is_false(curl, "dynlog/curl.so is mapped")
    assert.are.same({}, libcurl)
    assert.is_false(r.curl_loaded)
  end)
end)
