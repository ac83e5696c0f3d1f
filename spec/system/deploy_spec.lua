-- `dynlog deploy --template`: the users example's CloudFormation template,
-- checked by scripts/cfn-check.js against the AWS CDK's resource database
-- (fetched by scripts/deps.sh), and templates broken on purpose, which the
-- checker must refuse, naming what is wrong.
local json = require "dynlog.json"
local run = require "spec.support.run"

local read_file, write_file = run.read_file, run.write_file
local EXAMPLE = "examples/users/pipeline.lua"

local function dynlog(args)
  return run.run("lua5.4 bin/dynlog " .. args, run.lua_env({ DYNLOG_TABLE = "" }))
end

local function check(path)
  return run.run("node scripts/cfn-check.js " .. run.quote(path))
end

describe("dynlog deploy --template", function()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. run.quote(dir)))
  local out_path = dir .. "/users.json"

  teardown(function() os.execute("rm -rf " .. run.quote(dir)) end)

  it("writes the users example's template, and only that: no table, no AWS", function()
    local status, out = dynlog("deploy --description " .. EXAMPLE .. " --template " .. out_path)
    assert.are.equal(0, status, out)
    assert.matches("^wrote " .. out_path:gsub("%p", "%%%0") .. ": %d+ resources\n$", out)
    local t = assert(json.decode(assert(read_file(out_path))))
    assert.equal("AWS::DynamoDB::Table", t.Resources.LogTable.Type)
  end)

  it("passes the CloudFormation check", function()
    local status, out = check(out_path)
    assert.are.equal(0, status, out)
    assert.are.equal("ok " .. out_path .. "\n", out)
  end)

  it("passes it with a Lambda trigger and target, and with a Pipe", function()
    for _, kind in ipairs({ "lambda", "pipe" }) do
      local d = assert(loadfile(EXAMPLE))()
      d.trigger = { kind = kind }
      d.rules[1].targets[2] = { name = "users-lambda", kind = "lambda", project = "examples.handler",
                                read_model = "core" }
      d.rules[1].targets[1].auth = { kind = "basic", user = "eventbridge",
                                     secret = { parameter = "ReceiverPassword" } }
      local template = require "dynlog.deploy.template"
      local path = dir .. "/" .. kind .. ".json"
      write_file(path, template.encode(assert(template.build(d))))
      local status, out = check(path)
      assert.are.equal(0, status, out)
    end
  end)

  -- The users template with one change; the checker must say `expected`.
  local function refused(change, expected)
    local t = json.decode(assert(read_file(out_path)))
    change(t)
    local path = dir .. "/broken.json"
    write_file(path, json.encode(t))
    local status, out = check(path)
    assert.are.equal(1, status, out)
    assert.matches(expected, out, 1, true)
  end

  it("refuses an unknown resource type or property, a wrong type, a missing required property", function()
    refused(function(t) t.Resources.Bus.Type = "AWS::Events::EventBuss" end,
      'Resources.Bus.Type: no resource type "AWS::Events::EventBuss"')
    refused(function(t) t.Resources.LogTable.Properties.StreamSpecifcation = { StreamViewType = "NEW_IMAGE" } end,
      "Resources.LogTable.Properties.StreamSpecifcation: AWS::DynamoDB::Table has no property StreamSpecifcation")
    refused(function(t)
      t.Resources.LogTable.Properties.PointInTimeRecoverySpecification.PointInTimeRecoveryEnabled = { yes = 1 }
    end, "PointInTimeRecoverySpecification.PointInTimeRecoveryEnabled: must be a boolean")
    refused(function(t) t.Resources.LogTable.Properties.StreamSpecification.StreamViewType = nil end,
      "Resources.LogTable.Properties.StreamSpecification: StreamSpecification requires StreamViewType")
    refused(function(t) t.Resources.RuleUsersToCore.Properties.Targets[1].RetryPolicy.MaximumRetryAttempts = "many" end,
      "RetryPolicy.MaximumRetryAttempts: must be an integer")
    refused(function(t) t.Resources.UsersProjectionApiDestination.Properties.InvocationEndpoint = nil end,
      "Resources.UsersProjectionApiDestination.Properties: AWS::Events::ApiDestination requires InvocationEndpoint")
    refused(function(t) t.Resources.LogTable.Properties.SSESpecification.SSEType = nil
      t.Resources.LogTable.Properties.SSESpecification.SSEEnabled = nil end,
      "SSESpecification: SSESpecification requires SSEEnabled")
  end)

  it("refuses a Ref or Fn::GetAtt to nothing, and an attribute the type does not have", function()
    refused(function(t) t.Outputs.BusName.Value = { Ref = "Buss" } end,
      'Outputs.BusName.Value: Ref "Buss" names no resource')
    refused(function(t) t.Outputs.LogStreamArn.Value = { ["Fn::GetAtt"] = { "LogTable", "StreamARN" } } end,
      'AWS::DynamoDB::Table has no attribute "StreamARN" (it has Arn, StreamArn)')
    refused(function(t) t.Resources.BusArchive.Properties.SourceArn = { ["Fn::GetAtt"] = { "Nope", "Arn" } } end,
      'Resources.BusArchive.Properties.SourceArn: Fn::GetAtt names no resource: "Nope"')
  end)

  it("refuses policies wider than the template", function()
    refused(function(t) t.Resources.ConsumerPolicy.Properties.PolicyDocument.Statement[1].Resource = { "*" } end,
      'Resource "*" for dynamodb:DescribeTable')
    refused(function(t)
      t.Resources.ConsumerPolicy.Properties.PolicyDocument.Statement[1].Action = { "s3:GetObject" }
    end, "action s3:GetObject: the template makes no s3 resource")
    refused(function(t) t.Resources.ConsumerPolicy.Properties.PolicyDocument.Statement[1].Action = { "dynamodb:*" } end,
      'action "dynamodb:*": name actions one by one')
    refused(function(t)
      t.Resources.ConsumerPolicy.Properties.PolicyDocument.Statement[1].Resource =
        { "arn:aws:dynamodb:eu-west-1:123456789012:table/other" }
    end, "name the template's resources")
  end)

  it("says what is wrong with a description, with its path", function()
    local bad = dir .. "/bad.lua"
    write_file(bad, (assert(read_file(EXAMPLE)):gsub("attempts = 185", "attempts = 500")))
    local status, out = dynlog("deploy --description " .. bad .. " --template " .. dir .. "/never.json")
    assert.are.equal(1, status, out)
    assert.matches("dynlog: invalid_description: " .. bad
      .. ": rules[1].targets[1].retry.attempts: must be from 0 to 185", out, 1, true)
    assert.is_nil(read_file(dir .. "/never.json"))
  end)

  it("without --template, says that this dynlog writes templates only (unless it can deploy)", function()
    local has_cfn = read_file("lua/dynlog/deploy/cloudformation.lua") ~= nil
    if has_cfn then return end
    local status, out = dynlog("deploy --description " .. EXAMPLE)
    assert.are.equal(2, status, out)
    assert.matches("pass --template FILE", out, 1, true)
  end)
end)
