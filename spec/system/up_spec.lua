-- `dynlog up` runs the users example's description from the repository:
-- its tables, nginx with the consumer, the local bus and the receiver; an
-- event appended with `dynlog append` reaches the read model through them,
-- and SIGTERM stops everything it started.
local ddb = require "spec.support.ddb"
local env = require "spec.support.env"
local run = require "spec.support.run"
local socket = require "socket"

local EXAMPLE = "examples/users/pipeline.lua"

-- The credentials of spec.support.ddb's clients: DynamoDB Local keeps tables per access key.
local function up_env(extra)
  local e = run.lua_env({
    AWS_ENDPOINT_URL_DYNAMODB = env.dynamodb_endpoint(), AWS_REGION = "us-east-1",
    AWS_ACCESS_KEY_ID = "AKIDSPEC", AWS_SECRET_ACCESS_KEY = "spec-secret-key", AWS_EC2_METADATA_DISABLED = "true",
    DYNLOG_TABLE = "",
  })
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

local function running(pid)
  return pid and run.succeeded("kill -0 " .. pid .. " 2>/dev/null")
end

describe("dynlog up", function()
  -- nginx runs the C core built for LuaJIT.
  setup(function() assert(run.succeeded("make -s luajit >/dev/null"), "make luajit failed") end)

  local dir = os.tmpname()
  os.remove(dir)
  local p

  after_each(function()
    if p then p.cleanup() end
    p = nil
    os.execute("rm -rf " .. run.quote(dir))
  end)

  it("runs the users example end to end, prints the endpoints and stops on SIGTERM", function()
    local port = run.free_port()
    p = run.spawn("lua5.4 bin/dynlog up --description " .. EXAMPLE .. " --port " .. port .. " --dir " .. dir,
      up_env())
    assert.is_true(p.wait_for_stderr("dynlog: up;", 60), p.stderr() .. p.stdout())
    local out = p.stdout()
    assert.matches("pipeline users (" .. EXAMPLE .. ") is up", out, 1, true)
    assert.matches("http://127.0.0.1:" .. port .. "/bus (bus dynamodb-log)", out, 1, true)
    assert.matches("target users%-projection%s+http://127%.0%.0%.1:" .. port
      .. "/users %(rule users%-to%-core %-> users%-core%)", out)
    assert.matches("table read_models%.core%s+users%-core", out)

    -- An event appended to the description's log table is projected into its read model.
    local id = "up-" .. tostring(os.time())
    local status, aout = run.run("lua5.4 bin/dynlog --table users-events append users " .. id
      .. " signup '{\"name\":\"Ada\",\"email\":\"ada@example.com\"}'", up_env())
    assert.are.equal(0, status, aout)
    local c = ddb.client({ table = "users-core" })
    local item
    local deadline = socket.gettime() + 30
    repeat
      local resp = assert(c:call("GetItem", { TableName = "users-core", ConsistentRead = true,
                                              Key = { pk = { S = "users#" .. id }, sk = { S = "users#" .. id } } }))
      item = resp.Item
      if not item then socket.sleep(0.2) end
    until item or socket.gettime() > deadline
    assert.is_table(item, "not projected; nginx's log: " .. (run.read_file(dir .. "/nginx/logs/error.log") or ""))
    assert.equal("Ada", item.name.S)
    assert.equal("ada@example.com", item.email.S)

    -- The receiver refuses a delivery without this run's key.
    local http = require("dynlog.transport.curl").new({ timeout = 5 })
    local res = assert(http:request({ method = "POST", url = "http://127.0.0.1:" .. port .. "/users",
                                      headers = { ["content-type"] = "application/json", ["x-api-key"] = "guess" },
                                      body = "{}" }))
    assert.equal(401, res.status)

    local nginx_pid = assert(run.read_file(dir .. "/nginx/logs/nginx.pid")):match("%d+")
    assert.is_true(running(nginx_pid))
    p.kill("TERM")
    assert.are.equal(0, p.wait(30), p.stderr())
    assert.matches("dynlog: stopped by SIGTERM", p.stderr(), 1, true)
    assert.is_false(running(nginx_pid))
  end)

  it("makes every table of the description, the feed's included, and a receiver for a Lambda target", function()
    local file = os.tmpname()
    local suffix = tostring(os.time())
    run.write_file(file, (assert(run.read_file(EXAMPLE))
      :gsub('"users%-events"', '"up-events-' .. suffix .. '"')
      :gsub('"users%-core"', '"up-core-' .. suffix .. '"')
      :gsub('"users%-checkpoints"', '"up-checkpoints-' .. suffix .. '"')
      :gsub('  rules = {', '  feed = { table = "up-feed-' .. suffix .. '" },\n  rules = {', 1)
      :gsub('dead_letter = { retention_days = 14 },', 'dead_letter = { retention_days = 14 },\n        },\n'
        .. '        { name = "users-lambda", kind = "lambda", project = "examples.handler", read_model = "core",', 1)))
    local port = run.free_port()
    p = run.spawn("lua5.4 bin/dynlog up --description " .. file .. " --port " .. port .. " --dir " .. dir, up_env())
    local ready = p.wait_for_stderr("dynlog: up;", 60)
    os.remove(file)
    assert.is_true(ready, p.stderr() .. p.stdout())
    assert.matches("target users%-lambda%s+http://127%.0%.0%.1:" .. port .. "/targets/users%-lambda", p.stdout())
    local c = ddb.client()
    for _, name in ipairs({ "events", "core", "checkpoints", "feed" }) do
      local resp = c:call("DescribeTable", { TableName = "up-" .. name .. "-" .. suffix })
      assert.is_table(resp, name .. " was not made")
    end
    p.kill("TERM")
    assert.are.equal(0, p.wait(30), p.stderr())
  end)

  it("says which field of the description is wrong, and starts nothing", function()
    local bad = os.tmpname()
    run.write_file(bad, (assert(run.read_file(EXAMPLE)):gsub('kind = "consumer"', 'kind = "cron"')))
    local status, out = run.run("lua5.4 bin/dynlog up --description " .. bad .. " --dir " .. dir, up_env())
    os.remove(bad)
    assert.are.equal(1, status, out)
    assert.matches('trigger.kind: must be one of consumer, lambda, pipe, got "cron"', out, 1, true)
    assert.is_nil(run.read_file(dir .. "/nginx/nginx.conf"))
  end)
end)
