-- dynlog.ngx.start_indexer: the indexer on nginx timers, against DynamoDB Local.
local cjson = require "cjson"
local ddb = require "spec.support.ddb"
local env = require "spec.support.env"
local nginx = require "spec.support.nginx"
local socket = require "socket"
local socket_http = require "socket.http"

local function wait_for(cond, seconds)
  local deadline = socket.gettime() + seconds
  while socket.gettime() < deadline do
    local v = cond()
    if v then return v end
    socket.sleep(0.05)
  end
  return nil
end

describe("dynlog.ngx.start_indexer", function()
  local srv, c

  setup(function()
    c = ddb.ready_client()
    local client = ([[require("dynlog").new{ table = %q, endpoint = %q, region = "us-east-1",
        credentials = { access_key_id = "AKIDSPEC", secret_access_key = "spec-secret-key" } }]])
      :format(c.table, env.dynamodb_endpoint())
    srv = nginx.start({
      workers = 2,
      http = [[
        lua_shared_dict rx 1m;
        init_worker_by_lua_block {
          local ngx_dynlog = require "dynlog.ngx"
          local c = ]] .. client .. [[
          package.loaded["spec.indexer"] = ngx_dynlog.start_indexer{ client = c, checkpoint_table = "]]
            .. c.table .. [[-cp", poll_interval = 0.05, discovery_interval = 0.2 }
          local ok, err = pcall(function()
            ngx_dynlog.start_indexer{ client = c, checkpoint_table = "x-cp", pol_interval = 1 } end)
          ngx.shared.rx:set("typo", tostring(ok) .. " " .. tostring(err))
        }
      ]],
      server = [[
        location = /stats { content_by_lua_block {
          local s = package.loaded["spec.indexer"]:stats()
          ngx.say(require("cjson").encode({ indexed = s.indexed, typo = ngx.shared.rx:get("typo") }))
        } }
      ]],
    })
  end)
  teardown(function() if srv then srv.stop() end end)

  it("fills the feed from every worker's share of the shards, and refuses an unknown option at the caller's line",
    function()
    for i = 1, 30 do assert(c:append("l", tostring(i % 4), "e", { n = i })) end
    assert.is_truthy(wait_for(function() return assert(c:feed_head()) >= 30 end, 60),
      "the feed reached 30; nginx error log:\n" .. srv.error_log():sub(-3000))
    local events = assert(c:read_all{ limit = 100 })
    assert.are.equal(30, #events)
    local last = {}
    for i, ev in ipairs(events) do
      assert.are.equal(i, ev.position)
      if last[ev.pk] then assert.is_true(last[ev.pk] < ev.sk) end
      last[ev.pk] = ev.sk
    end
    local body, code = socket_http.request(srv.url .. "/stats")
    assert.are.equal(200, code, tostring(body))
    local typo = cjson.decode(body).typo
    assert.matches('^false .*init_worker_by_lua.*start_indexer: unknown option "pol_interval" '
      .. '%(did you mean "poll_interval"%?%)', typo)
    assert.is_nil(srv.error_log():find("[error]", 1, true), srv.error_log():sub(-3000))
  end)
end)
