-- dynlog.ngx.start_subscription: a subscription of the feed on nginx
-- timers, in every worker, against DynamoDB Local; one worker delivers.
local ddb = require "spec.support.ddb"
local env = require "spec.support.env"
local feed = require "dynlog.client.feed"
local json = require "dynlog.json"
local nginx = require "spec.support.nginx"
local socket = require "socket"
local http = require "socket.http"

local function wait_for(cond, seconds)
  local deadline = socket.gettime() + seconds
  while socket.gettime() < deadline do
    local v = cond()
    if v then return v end
    socket.sleep(0.05)
  end
  return nil
end

-- Appends an event and commits it to the feed.
local function add(c, id)
  local key = assert(c:append("users", id, "signup", { name = "User " .. id }))
  local resp = assert(c:_request("dynamodb", "GetItem", {
    TableName = c.table, ConsistentRead = true, Key = { pk = { S = key.pk }, sk = { S = key.sk } },
  }, false))
  return assert(feed.commit(c, { { image = resp.Item } }))[1]
end

describe("dynlog.ngx.start_subscription", function()
  local srv, c

  setup(function()
    c = ddb.ready_client()
    assert(c:create_feed_table())
    for i = 1, 5 do add(c, "h" .. i) end
    srv = nginx.start({
      workers = 2,
      http = ([[
        lua_shared_dict got 1m;
        init_worker_by_lua_block {
          local dynlog = require "dynlog"
          local c = dynlog.new{ table = %q, endpoint = %q, region = "us-east-1",
            credentials = { access_key_id = "AKIDSPEC", secret_access_key = "spec-secret-key" } }
          SUB = require("dynlog.ngx").start_subscription{ client = c, name = "nginx", batch_size = 3,
            poll_interval = 0.05, lease_duration = 3,
            handler = function(events)
              local got = ngx.shared.got
              for _, ev in ipairs(events) do
                local n = got:incr("n", 1, 0)
                got:set("at" .. n, ev.position .. " " .. ev.payload.id .. " " .. ngx.worker.pid())
              end
              return true
            end }
        }
      ]]):format(c.table, env.dynamodb_endpoint()),
      server = [[
        location = /got { content_by_lua_block {
          local got, out = ngx.shared.got, {}
          for i = 1, got:get("n") or 0 do out[i] = got:get("at" .. i) end
          ngx.say(require("dynlog.json").encode(require("dynlog.json").array(out)))
        } }
        location = /stats { content_by_lua_block { ngx.say(require("dynlog.json").encode(SUB:stats())) } }
      ]],
    })
  end)

  teardown(function() if srv then srv.stop() end end)

  local function got()
    local body = assert(http.request(srv.url .. "/got"))
    return json.decode(body)
  end

  it("delivers the history, then events committed later, once each in feed order, from one worker", function()
    assert.is_truthy(wait_for(function() return #got() >= 5 end, 20), "the history was delivered")
    for i = 6, 10 do add(c, "l" .. i) end
    local all = wait_for(function() local g = got() return #g >= 10 and g end, 20)
    assert.is_truthy(all, "live events were delivered")
    socket.sleep(0.3) -- nothing more comes
    all = got()
    assert.are.equal(10, #all)
    local pids = {}
    for i, line in ipairs(all) do
      local position, id, pid = line:match("^(%d+) (%S+) (%d+)$")
      assert.are.equal(i, tonumber(position))
      assert.are.equal(i <= 5 and ("h" .. i) or ("l" .. i), id)
      pids[pid] = true
    end
    local workers = 0
    for _ in pairs(pids) do workers = workers + 1 end
    assert.are.equal(1, workers)
    local item = assert(c:_request("dynamodb", "GetItem", { TableName = c.feed_table, ConsistentRead = true,
                                                          Key = feed.named_key("sub", "nginx") }, true)).Item
    assert.are.equal(10, item.position)
    assert.is_string(item.owner)
  end)
end)
