-- dynlog.deploy.cloudformation against a loopback CloudFormation
-- (spec/support/cloudformation_server.lua: a simulation of its query API,
-- there being no local CloudFormation) that records every request.
local cfn = require "dynlog.deploy.cloudformation"
local dynlog = require "dynlog"
local run = require "spec.support.run"
local server = require "spec.support.server"
local sigv4 = require "dynlog.sigv4"
local timeutil = require "dynlog.base.timeutil"

local KEY = { access_key_id = "AKIDDEPLOY", secret_access_key = "deploy-secret-key" }

local function start(config)
  return server.start({ { method = "POST", path = "/", responses = { { cloudformation = config or {} } } } })
end

local function client_for(srv)
  return dynlog.new{ table = "events", region = "eu-west-1", endpoint = "http://127.0.0.1:1", credentials = KEY,
    sleep = function() end,
    getenv = function(name)
      if name == "AWS_ENDPOINT_URL_CLOUDFORMATION" then return srv.url end
      if name:find("^AWS_ENDPOINT_URL") then return nil end
      return os.getenv(name)
    end }
end

local function form(body)
  local p = {}
  for pair in body:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    local function dec(s)
      return (s:gsub("%+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
    end
    p[dec(k)] = dec(v)
  end
  return p
end

local function actions(srv)
  local list = {}
  for _, req in ipairs(srv.requests()) do list[#list + 1] = form(req.body).Action end
  return list
end

local function count(list, x)
  local n = 0
  for _, v in ipairs(list) do if v == x then n = n + 1 end end
  return n
end

local function template(extra)
  local t = {
    AWSTemplateFormatVersion = "2010-09-09",
    Parameters = { Env = { Type = "String" } },
    Resources = {
      Events = { Type = "AWS::DynamoDB::Table", Properties = { TableName = "events" } },
      Bus = { Type = "AWS::Events::EventBus", Properties = { Name = "dynamodb-log" } },
    },
    Outputs = {
      TableName = { Value = { Ref = "Events" } },
      BusArn = { Value = { ["Fn::GetAtt"] = { "Bus", "Arn" } } },
      Env = { Value = { Ref = "Env" } },
    },
  }
  for k, v in pairs(extra or {}) do t.Resources[k] = v end
  return t
end

-- A clock that the injected sleep moves on.
local function clock()
  local t, delays = 1000, {}
  return {
    now = function() return t end,
    sleep = function(s) delays[#delays + 1] = s t = t + s end,
    delays = delays,
  }
end

local function deploy(srv, opts)
  local clk = clock()
  local events = {}
  local o = { client = client_for(srv), stack = "app", template = template(), parameters = { Env = "prod" },
              capabilities = { "CAPABILITY_NAMED_IAM" }, on_event = function(ev) events[#events + 1] = ev end,
              now = clk.now, sleep = clk.sleep }
  for k, v in pairs(opts or {}) do o[k] = v end
  local result, err = cfn.deploy(o)
  return result, err, events, clk
end

local function remove(srv, opts)
  local clk = clock()
  local events = {}
  local o = { client = client_for(srv), stack = "app", on_event = function(ev) events[#events + 1] = ev end,
              now = clk.now, sleep = clk.sleep }
  for k, v in pairs(opts or {}) do o[k] = v end
  local result, err = cfn.remove(o)
  return result, err, events
end

local function statuses(events)
  local out = {}
  for i, ev in ipairs(events) do out[i] = ev.logical_id .. " " .. ev.status end
  return out
end

describe("cloudformation.deploy", function()
  local srv
  after_each(function() if srv then srv.stop() end srv = nil end)

  it("creates a stack through a change set and returns its outputs", function()
    srv = start()
    local result, err, events, clk = deploy(srv)
    assert.is_nil(err)
    assert.are.equal("CREATE_COMPLETE", result.status)
    assert.is_false(result.unchanged)
    assert.matches("^arn:aws:cloudformation:us%-east%-1:123456789012:stack/app/", result.stack_id)
    assert.are.same({ TableName = "Events-app", Env = "prod",
                      BusArn = "arn:aws:loopback:us-east-1:123456789012:Bus-app/Arn" }, result.outputs)
    -- Every event of the deployment, once, oldest first; none of before it.
    assert.are.same({
      "app CREATE_IN_PROGRESS", "Bus CREATE_IN_PROGRESS", "Bus CREATE_COMPLETE", "Events CREATE_IN_PROGRESS",
      "Events CREATE_COMPLETE", "app CREATE_COMPLETE",
    }, statuses(events))
    assert.are.equal("User Initiated", events[1].reason)
    assert.are.equal("AWS::CloudFormation::Stack", events[1].type)
    assert.are.equal("AWS::Events::EventBus", events[2].type)
    for i = 2, #events do assert.is_true(events[i - 1].timestamp < events[i].timestamp) end
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", events[1].timestamp)
    -- Polls paced by the injected sleep, growing and capped.
    assert.is_true(#clk.delays >= 2)
    assert.are.equal(2, clk.delays[1])
    for i = 2, #clk.delays do assert.is_true(clk.delays[i] >= clk.delays[i - 1] and clk.delays[i] <= 10) end

    local sent = actions(srv)
    assert.are.equal("DescribeStacks", sent[1])
    assert.are.equal("CreateChangeSet", sent[2])
    assert.are.equal(1, count(sent, "ExecuteChangeSet"))
    local create = form(srv.requests()[2].body)
    assert.are.equal("CREATE", create.ChangeSetType)
    assert.are.equal("app", create.StackName)
    assert.matches("^dynlog%-%w+$", create.ChangeSetName)
    assert.are.equal("CAPABILITY_NAMED_IAM", create["Capabilities.member.1"])
    assert.are.equal("Env", create["Parameters.member.1.ParameterKey"])
    assert.are.equal("prod", create["Parameters.member.1.ParameterValue"])
    assert.are.same(template(), dynlog.json.decode(create.TemplateBody))
  end)

  it("signs every request for service cloudformation, in the query protocol's form", function()
    srv = start()
    assert(deploy(srv))
    local requests = srv.requests()
    assert.is_true(#requests > 5)
    for _, req in ipairs(requests) do
      assert.are.equal("POST", req.method)
      assert.matches("^application/x%-www%-form%-urlencoded", req.headers["content-type"])
      assert.are.equal("2010-05-15", form(req.body).Version)
      assert.matches("/eu%-west%-1/cloudformation/aws4_request", req.headers.authorization)
      -- The signature, recomputed from what arrived.
      local y, mo, d, h, mi, s = req.headers["x-amz-date"]:match("^(%d%d%d%d)(%d%d)(%d%d)T(%d%d)(%d%d)(%d%d)Z$")
      local time = timeutil.days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400 + h * 3600 + mi * 60 + s
      local expected = sigv4.sign({ method = "POST", url = srv.url .. "/", body = req.body, region = "eu-west-1",
        service = "cloudformation", credentials = KEY, time = time,
        headers = { ["Content-Type"] = req.headers["content-type"] } })
      assert.are.equal(expected.Authorization, req.headers.authorization)
    end
  end)

  it("updates an existing stack with a change set of type UPDATE", function()
    srv = start()
    assert(deploy(srv))
    local before = #srv.requests()
    local t = template({ Queue = { Type = "AWS::SQS::Queue", Properties = {} } })
    t.Resources.Bus = nil
    t.Outputs.BusArn = nil
    local result, err, events = deploy(srv, { template = t, parameters = { Env = "staging" } })
    assert.is_nil(err)
    assert.are.equal("UPDATE_COMPLETE", result.status)
    assert.is_false(result.unchanged)
    assert.are.same({ TableName = "Events-app", Env = "staging" }, result.outputs)
    assert.are.same({ "app UPDATE_IN_PROGRESS", "Queue CREATE_IN_PROGRESS", "Queue CREATE_COMPLETE",
                      "app UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", "Bus DELETE_IN_PROGRESS", "Bus DELETE_COMPLETE",
                      "app UPDATE_COMPLETE" }, statuses(events))
    assert.are.equal("UPDATE", form(srv.requests()[before + 2].body).ChangeSetType)
  end)

  it("does nothing for an update without changes: the change set is deleted, the stack as it was", function()
    srv = start()
    assert(deploy(srv))
    local before = #srv.requests()
    local result, err, events = deploy(srv)
    assert.is_nil(err)
    assert.is_true(result.unchanged)
    assert.are.equal("CREATE_COMPLETE", result.status)
    assert.are.equal("prod", result.outputs.Env)
    assert.are.same({}, events)
    local sent = { table.unpack(actions(srv), before + 1) }
    assert.are.equal(0, count(sent, "ExecuteChangeSet"))
    assert.are.equal(1, count(sent, "DeleteChangeSet"))
  end)

  it("reports a failed create with the failing resources' reasons", function()
    srv = start({ fail = { Events = "Resource handler returned message: \"Table already exists: events\"" } })
    local result, err, events = deploy(srv)
    assert.is_nil(result)
    assert.are.equal("deploy_failed", err.code)
    assert.are.equal("ROLLBACK_COMPLETE", err.status)
    assert.are.equal("app", err.stack)
    assert.matches("stack app ended in ROLLBACK_COMPLETE", err.message, 1, true)
    assert.matches('Events (AWS::DynamoDB::Table) CREATE_FAILED: Resource handler returned message: "Table already'
      .. ' exists: events"', err.message, 1, true)
    assert.are.equal(1, #err.reasons)
    assert.are.equal("Events", err.reasons[1].logical_id)
    assert.matches("failed to create: %[Events%]", err.stack_reason)
    assert.are.equal("app ROLLBACK_COMPLETE", statuses(events)[#events])
    assert.is_true(dynlog.errors.CODES[err.code])

    -- A stack that failed its creation cannot be updated: it says so.
    local _, again = deploy(srv)
    assert.are.equal("bad_state", again.code)
    assert.matches("ROLLBACK_COMPLETE and cannot be updated: remove it (dynlog remove --stack app)", again.message,
      1, true)
    -- Removed, it deploys again.
    assert(remove(srv))
  end)

  it("reports a failed update as UPDATE_ROLLBACK_COMPLETE", function()
    srv = start({ fail = { Broken = "Invalid request provided: queue name" } })
    assert(deploy(srv))
    local _, err = deploy(srv, { template = template({ Broken = { Type = "AWS::SQS::Queue" } }) })
    assert.are.equal("deploy_failed", err.code)
    assert.are.equal("UPDATE_ROLLBACK_COMPLETE", err.status)
    assert.matches("Broken (AWS::SQS::Queue) CREATE_FAILED: Invalid request provided: queue name", err.message, 1, true)
  end)

  it("reads every new event across DescribeStackEvents pages, in order", function()
    srv = start({ page = 2, step = 5 })
    local extra = {}
    for i = 1, 6 do extra["Queue" .. i] = { Type = "AWS::SQS::Queue" } end
    local result, err, events = deploy(srv, { template = template(extra) })
    assert.is_nil(err)
    assert.are.equal("CREATE_COMPLETE", result.status)
    assert.are.equal(2 + 2 * 8, #events)
    local ids = {}
    for i, ev in ipairs(events) do
      assert.is_nil(ids[ev.event_id], "event " .. i .. " twice")
      ids[ev.event_id] = true
      if i > 1 then assert.is_true(events[i - 1].timestamp < ev.timestamp) end
    end
    local tokens = 0
    for _, req in ipairs(srv.requests()) do if form(req.body).NextToken then tokens = tokens + 1 end end
    assert.is_true(tokens > 0)
  end)

  it("refuses a template over 51,200 bytes before sending anything", function()
    srv = start()
    local big = template()
    big.Description = string.rep("x", 51200)
    local result, err = deploy(srv, { template = big })
    assert.is_nil(result)
    assert.are.equal("too_large", err.code)
    assert.matches("at most 51200 bytes", err.message, 1, true)
    assert.matches("S3", err.message, 1, true)
    assert.are.same({}, srv.requests())
  end)

  it("creates a stack that only a change set made (REVIEW_IN_PROGRESS) with a change set of type CREATE", function()
    srv = start()
    local c = client_for(srv)
    assert(require("dynlog.aws.query").call(c, "cloudformation", "CreateChangeSet", { StackName = "app",
      ChangeSetName = "by-hand", ChangeSetType = "CREATE", TemplateBody = dynlog.json.encode(template()) }))
    local before = #srv.requests()
    local result, err, events = deploy(srv)
    assert.is_nil(err)
    assert.are.equal("CREATE_COMPLETE", result.status)
    assert.are.equal("CREATE", form(srv.requests()[before + 2].body).ChangeSetType)
    -- The stack's REVIEW_IN_PROGRESS event came before the deployment: not handed over.
    assert.are.equal("app CREATE_IN_PROGRESS", statuses(events)[1])
  end)

  it("takes the template as JSON text too", function()
    srv = start()
    local text = dynlog.json.encode(template())
    local result = assert(deploy(srv, { template = text }))
    assert.are.equal("CREATE_COMPLETE", result.status)
    assert.are.equal(text, form(srv.requests()[2].body).TemplateBody)
  end)

  it("passes CloudFormation's refusals on as they come", function()
    srv = start()
    local _, err = deploy(srv, { template = template({ Role = { Type = "AWS::IAM::Role" } }), capabilities = {} })
    assert.are.equal("InsufficientCapabilitiesException", err.code)
    assert.matches("CAPABILITY_NAMED_IAM", err.message, 1, true)
  end)

  it("gives up waiting after `wait` seconds, saying where the stack is", function()
    srv = start({ step = 1 })
    local _, err = deploy(srv, { wait = 5 })
    assert.are.equal("deploy_timeout", err.code)
    assert.is_true(err.retryable)
    assert.matches("stack app is still CREATE_IN_PROGRESS after 5 s", err.message, 1, true)
    assert.are.equal("CREATE_IN_PROGRESS", err.status)
  end)

  it("raises on a bad argument at the caller's line", function()
    srv = start()
    local c = client_for(srv)
    local message = run.raised(cfn.deploy, { client = c, stack = "app", template = {}, wiat = 5 })
    assert.matches("wiat", message, 1, true)
    assert.matches("wait", message, 1, true)
    assert.matches("stack name", run.raised(cfn.deploy, { client = c, stack = "my_stack", template = {} }), 1, true)
    local where, ok, err = run.here(), pcall(function() cfn.deploy{ client = c, stack = "9", template = {} } end)
    assert.is_false(ok)
    assert.matches(where, tostring(err), 1, true)
    assert.are.same({}, srv.requests())
  end)
end)

describe("cloudformation.remove", function()
  local srv
  after_each(function() if srv then srv.stop() end srv = nil end)

  it("deletes a stack and waits for DELETE_COMPLETE, handing its events over in order", function()
    srv = start()
    assert(deploy(srv))
    local result, err, events = remove(srv)
    assert.is_nil(err)
    assert.are.equal("DELETE_COMPLETE", result.status)
    assert.is_false(result.unchanged)
    assert.are.same({ "app DELETE_IN_PROGRESS", "Bus DELETE_IN_PROGRESS", "Bus DELETE_COMPLETE",
                      "Events DELETE_IN_PROGRESS", "Events DELETE_COMPLETE", "app DELETE_COMPLETE" }, statuses(events))
    -- Gone: another remove has nothing to do, a deploy creates it again.
    local again = assert(remove(srv))
    assert.is_true(again.unchanged)
    local created = assert(deploy(srv))
    assert.are.equal("CREATE_COMPLETE", created.status)
  end)

  it("has nothing to do for a stack that does not exist", function()
    srv = start()
    local result, err, events = remove(srv, { stack = "never-made" })
    assert.is_nil(err)
    assert.is_true(result.unchanged)
    assert.are.equal("DELETE_COMPLETE", result.status)
    assert.are.same({}, events)
    assert.are.same({ "DescribeStacks" }, actions(srv))
  end)
end)
