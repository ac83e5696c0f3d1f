-- `dynlog deploy --stack` and `dynlog remove` as a user runs them: bin/dynlog
-- under lua5.4 against a loopback CloudFormation
-- (spec/support/cloudformation_server.lua, a simulation of its query API).
local json = require "dynlog.json"
local run = require "spec.support.run"
local server = require "spec.support.server"

local DESCRIPTION = "examples/users/pipeline.lua"

local function start(config)
  return server.start({ { method = "POST", path = "/", responses = { { cloudformation = config or {} } } } })
end

local function env_for(srv)
  return run.lua_env({
    AWS_ENDPOINT_URL_CLOUDFORMATION = srv.url, AWS_REGION = "eu-west-1",
    AWS_ACCESS_KEY_ID = "AKIDCLIDEPLOY", AWS_SECRET_ACCESS_KEY = "cli-deploy-secret", AWS_SESSION_TOKEN = "",
    AWS_PROFILE = "", AWS_ENDPOINT_URL = "", AWS_EC2_METADATA_DISABLED = "true", DYNLOG_TABLE = "",
  })
end

--- dynlog(args, env) -> status, stdout, stderr
local function dynlog(args, e)
  local err_file = os.tmpname()
  local status, out = run.run("sh -c " .. run.quote("lua5.4 bin/dynlog " .. args .. " 2>" .. err_file), e)
  local err = run.read_file(err_file) or ""
  os.remove(err_file)
  return status, out, err
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

local function progress_lines(err)
  local lines = {}
  for line in err:gmatch("[^\n]+") do
    if line:find("^%d%d%d%d%-") then lines[#lines + 1] = line end
  end
  return lines
end

describe("dynlog deploy --stack and dynlog remove", function()
  local srv
  after_each(function() if srv then srv.stop() end srv = nil end)

  it("deploys the description's template, progress on stderr and outputs on stdout", function()
    srv = start()
    local status, out, err = dynlog("deploy --description " .. DESCRIPTION .. " --stack users-prod --poll 0.01"
      .. " --parameter Stage=prod", env_for(srv))
    assert.are.equal(0, status, err)
    assert.matches("stack    users-prod\nstatus   CREATE_COMPLETE\noutputs\n", out, 1, true)
    assert.matches("\n  LogTableName +[^\n]+\n", out)
    local lines = progress_lines(err)
    assert.matches("users%-prod +AWS::CloudFormation::Stack +CREATE_IN_PROGRESS +User Initiated$", lines[1])
    assert.matches("users%-prod +AWS::CloudFormation::Stack +CREATE_COMPLETE$", lines[#lines])
    for i = 2, #lines do assert.is_true(lines[i - 1] < lines[i], "progress lines out of order") end

    -- What went out: the template of the description, signed for cloudformation.
    local requests = srv.requests()
    local create
    for _, req in ipairs(requests) do
      assert.matches("/eu%-west%-1/cloudformation/aws4_request", req.headers.authorization)
      local p = form(req.body)
      if p.Action == "CreateChangeSet" then create = p end
    end
    assert.are.equal("CREATE", create.ChangeSetType)
    assert.are.equal("CAPABILITY_NAMED_IAM", create["Capabilities.member.1"])
    assert.are.equal("Stage", create["Parameters.member.1.ParameterKey"])
    assert.are.equal("prod", create["Parameters.member.1.ParameterValue"])
    local d = assert(require("dynlog.deploy.description").load(DESCRIPTION))
    assert.are.same(json.decode(json.encode(assert(require("dynlog.deploy.template").build(d)))),
      json.decode(create.TemplateBody))

    -- Again: nothing to do, said on stdout; with --json, one object.
    status, out, err = dynlog("deploy --description " .. DESCRIPTION .. " --stack users-prod --poll 0.01"
      .. " --parameter Stage=prod --json", env_for(srv))
    assert.are.equal(0, status, err)
    local result = assert(json.decode(out))
    assert.are.equal("users-prod", result.stack)
    assert.are.equal("CREATE_COMPLETE", result.status)
    assert.is_true(result.unchanged)
    assert.is_string(result.outputs.LogTableName)
    assert.are.same({}, progress_lines(err))

    -- Removed, with its events; removed again: nothing to do.
    status, out, err = dynlog("remove --stack users-prod --poll 0.01", env_for(srv))
    assert.are.equal(0, status, err)
    assert.are.equal("stack    users-prod\nstatus   DELETE_COMPLETE\n", out)
    lines = progress_lines(err)
    assert.matches("users%-prod +AWS::CloudFormation::Stack +DELETE_COMPLETE$", lines[#lines])
    status, out = dynlog("remove --stack users-prod --json", env_for(srv))
    assert.are.equal(0, status)
    assert.are.same({ stack = "users-prod", status = "DELETE_COMPLETE", unchanged = true }, json.decode(out))
  end)

  it("exits 1 with the failed resources' reasons when the stack rolls back", function()
    srv = start({ fail = { LogTable = "Resource handler returned message: \"users-events already exists\"" } })
    local status, out, err = dynlog("deploy --description " .. DESCRIPTION .. " --stack users --poll 0.01",
      env_for(srv))
    assert.are.equal(1, status)
    assert.are.equal("", out)
    assert.matches("dynlog: deploy_failed: stack users ended in ROLLBACK_COMPLETE: LogTable"
      .. " (AWS::DynamoDB::Table) CREATE_FAILED: Resource handler returned message: \"users-events already exists\"",
      err, 1, true)
    assert.matches("LogTable +AWS::DynamoDB::Table +CREATE_FAILED +Resource handler", err)
    assert.matches("hint: the reasons above say which resources failed and why; `dynlog remove --stack users`",
      err, 1, true)
  end)

  it("are listed by --help, and need no event table", function()
    srv = start()
    local status, out = dynlog("--help", env_for(srv))
    assert.are.equal(0, status)
    assert.matches("\n  deploy [--description FILE] (--stack NAME | --template FILE)", out, 1, true)
    assert.matches("\n  remove --stack NAME", out, 1, true)
    status, out = dynlog("deploy --help", env_for(srv))
    assert.are.equal(0, status)
    assert.matches("--parameter K=V", out, 1, true)
  end)

  it("refuses bad arguments as usage errors", function()
    srv = start()
    local e = env_for(srv)
    local status, _, err = dynlog("deploy --description " .. DESCRIPTION, e)
    assert.are.equal(2, status)
    assert.matches("no stack: pass --stack NAME to deploy, or --template FILE to write the template", err, 1, true)
    status, _, err = dynlog("deploy --stack my_stack", e)
    assert.are.equal(2, status)
    assert.matches("--stack: a stack name is a letter", err, 1, true)
    status, _, err = dynlog("deploy --stack s --description " .. DESCRIPTION .. " --parameter novalue", e)
    assert.are.equal(2, status)
    assert.matches("--parameter must be KEY=VALUE", err, 1, true)
    status, _, err = dynlog("deploy --stack s --template out.json", e)
    assert.are.equal(2, status)
    assert.matches("pass one of them", err, 1, true)
    status, _, err = dynlog("remove", e)
    assert.are.equal(2, status)
    assert.matches("no stack", err, 1, true)
    assert.are.same({}, srv.requests())
  end)
end)
