-- dynlog.handler.project inside nginx, against DynamoDB Local: deliveries of
-- one read model that arrive together make one round, and a delivery after
-- it starts from the version the worker wrote.
local ddb = require "spec.support.ddb"
local env = require "spec.support.env"
local json = require "dynlog.json"
local nginx = require "spec.support.nginx"
local socket = require "socket"
local trigger = require "dynlog.trigger"

-- The EventBridge event the bus would deliver for an event item.
local function delivery(ev)
  return json.encode({ version = "0", id = "1", ["detail-type"] = "stream changes", source = "dynamodb-log",
    account = "000000000000", time = "2026-11-25T12:00:00Z", region = "us-east-1", resources = json.array(),
    detail = json.decode(trigger.detail(ev)) })
end

-- Sends every body on a connection of its own before reading any answer, so
-- that nginx has them all at once; returns the statuses.
local function post_together(url, bodies)
  local host, port, path = url:match("^http://([^:/]+):(%d+)(/.*)$")
  local conns = {}
  for i, body in ipairs(bodies) do
    local conn = assert(socket.tcp())
    conn:settimeout(30)
    assert(conn:connect(host, tonumber(port)))
    assert(conn:send(("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
      .. "Connection: close\r\n\r\n%s"):format(path, host, #body, body)))
    conns[i] = conn
  end
  local statuses = {}
  for i, conn in ipairs(conns) do
    local answer = conn:receive("*a")
    conn:close()
    statuses[i] = tonumber(answer and answer:match("^HTTP/1%.%d (%d+)"))
  end
  return statuses
end

describe("dynlog.handler.project inside nginx", function()
  local srv, c, core_table

  setup(function()
    c = ddb.ready_client()
    core_table = c.table .. "-core"
    assert(require("dynlog.handler").create_table(c, core_table))
    local client = ([[require("dynlog").new{ table = %q, endpoint = %q, region = "us-east-1",
        credentials = { access_key_id = "AKIDSPEC", secret_access_key = "spec-secret-key" } }]])
      :format(c.table, env.dynamodb_endpoint())
    srv = nginx.start({
      workers = 1,
      http = [[
        lua_shared_dict dynlog_metrics 1m;
      ]],
      server = [[
        location = /project { content_by_lua_block {
          local app = package.loaded["spec.handler_app"]
          if not app then
            local c = ]] .. client .. [[
            local handlers = {
              signup = function(_, ev) return { name = ev.payload.name } end,
              addPhoneNumber = function(u, ev) u.phoneNumber = ev.payload.phoneNumber return u end,
              verifyPhoneNumber = function(u) u.verifiedPhoneNumber = true return u end,
              addLocation = function(u, ev) u.location = { lat = ev.payload.lat, long = ev.payload.long } return u end,
            }
            app = { c = c, spec = { table = "]] .. core_table .. [[", handlers = handlers } }
            package.loaded["spec.handler_app"] = app
          end
          require("dynlog.ngx").receive({ handle = function(event)
            return require("dynlog.handler").project(app.c, event, app.spec)
          end })
        } }
        location = /ops { content_by_lua_block {
          -- The DynamoDB requests made so far, by operation.
          local out = {}
          for _, op in ipairs({ "GetItem", "Query", "PutItem" }) do
            out[op] = require("dynlog.metrics").value("dynlog_requests_total",
              { service = "dynamodb", operation = op })
          end
          ngx.say(require("cjson").encode(out))
        } }
      ]],
    })
  end)
  teardown(function() if srv then srv.stop() end end)

  local function ops()
    local body = assert(require("socket.http").request(srv.url .. "/ops"))
    local got = json.decode(body)
    local out = {}
    for k, v in pairs(got) do out[k] = v end
    return out
  end

  local function delta(before, after)
    local d = {}
    for k, v in pairs(after) do
      if v - (before[k] or 0) > 0 then d[k] = v - (before[k] or 0) end
    end
    return d
  end

  local function read_model(id)
    local resp = assert(c:call("GetItem", { TableName = core_table, ConsistentRead = true,
      Key = { pk = { S = "users#" .. id }, sk = { S = "users#" .. id } } }))
    return resp.Item
  end

  it("projects deliveries of one read model that arrive together in one round", function()
    local evs = {}
    local function add(t, p) evs[#evs + 1] = c:get("users", "n1", assert(c:append("users", "n1", t, p)).sk) end
    add("signup", { name = "Together" })
    add("addPhoneNumber", { phoneNumber = "+1" })
    add("verifyPhoneNumber", {})
    add("addLocation", { lat = 1, long = 2 })
    local before = ops()
    local bodies = {}
    for i = 1, 4 do bodies[i] = delivery(evs[i]) end
    assert.are.same({ 200, 200, 200, 200 }, post_together(srv.url .. "/project", bodies),
      srv.error_log():sub(-2000))
    -- One round (the read model, the log after it, one write), not one per delivery.
    assert.are.same({ GetItem = 1, Query = 1, PutItem = 1 }, delta(before, ops()))
    local item = read_model("n1")
    assert.are.equal(evs[4].sk, item.version.S)
    assert.are.same({ BOOL = true }, item.verifiedPhoneNumber)

    -- The next event starts from the version this worker wrote: no GetItem.
    local k5 = assert(c:append("users", "n1", "addPhoneNumber", { phoneNumber = "+2" }))
    before = ops()
    assert.are.same({ 200 }, post_together(srv.url .. "/project", { delivery(c:get("users", "n1", k5.sk)) }))
    assert.are.same({ Query = 1, PutItem = 1 }, delta(before, ops()))
    assert.are.equal(k5.sk, read_model("n1").version.S)
    assert.is_nil(srv.error_log():find("[error]", 1, true), srv.error_log():sub(-2000))
  end)
end)
