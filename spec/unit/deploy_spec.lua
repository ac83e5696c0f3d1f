-- A pipeline's description (dynlog.deploy.description) and its CloudFormation
-- template (dynlog.deploy.template), read back from JSON.
local description = require "dynlog.deploy.description"
local json = require "dynlog.json"
local template = require "dynlog.deploy.template"

local EXAMPLE = "examples/users/pipeline.lua"

local function example()
  return assert(loadfile(EXAMPLE))()
end

local function bad(mutate)
  local d = example()
  mutate(d)
  local ok, err = description.check(d)
  assert.is_nil(ok)
  assert.equal("invalid_description", err.code)
  return err.message
end

-- The template as CloudFormation reads it: through its JSON.
local function built(d)
  local t = assert(template.build(d))
  return json.decode(json.encode(t))
end

local function of_type(t, type_name)
  local found = {}
  for id, r in pairs(t.Resources) do
    if r.Type == type_name then found[id] = r end
  end
  return found
end

local function count(map)
  local n = 0
  for _ in pairs(map) do n = n + 1 end
  return n
end

-- Every statement of every policy in the template (roles, managed policies, queue policies).
local function statements(t)
  local list = {}
  local function add(doc, owner)
    for _, s in ipairs(doc.Statement) do list[#list + 1] = { owner = owner, s = s } end
  end
  for id, r in pairs(t.Resources) do
    if r.Type == "AWS::IAM::Role" then
      for _, p in ipairs(r.Properties.Policies) do add(p.PolicyDocument, id) end
    elseif r.Type == "AWS::IAM::ManagedPolicy" or r.Type == "AWS::SQS::QueuePolicy" then
      add(r.Properties.PolicyDocument, id)
    end
  end
  return list
end

local function as_list(v)
  if type(v) == "table" and v[1] ~= nil then return v end
  return { v }
end

describe("dynlog.deploy.description", function()
  it("loads the users example with its defaults", function()
    local d = assert(description.load(EXAMPLE))
    assert.equal("users", d.name)
    assert.equal("users-events", d.log.table)
    assert.equal("ulid", d.log.sort_key)
    assert.is_true(d.log.pitr)
    assert.equal("consumer", d.trigger.kind)
    assert.equal("dynamodb-log", d.bus.name)
    assert.equal(30, d.bus.archive.retention_days)
    assert.equal("/users", d.rules[1].targets[1].path)
    assert.is_true(description.is_checked(d))
  end)

  it("names the path of an unknown field, and the nearest known one", function()
    assert.matches('^rules%[1%]%.targets%[1%]%.retry%.atempts: unknown field %(did you mean "attempts"%?%)$',
      bad(function(d) d.rules[1].targets[1].retry.atempts = 3 end))
    assert.matches("^log%.tabel: unknown field", bad(function(d) d.log.tabel = "x" end))
    assert.matches("^colour: unknown field %(known: ", bad(function(d) d.colour = "red" end))
  end)

  it("names the path of a bad value", function()
    assert.matches("^rules%[1%]%.targets%[1%]%.retry%.attempts: must be from 0 to 185, got 200$",
      bad(function(d) d.rules[1].targets[1].retry.attempts = 200 end))
    assert.matches("^log%.sse: must be ", bad(function(d) d.log.sse = "arn:aws:kms:eu-west-1:1:alias/x" end))
    assert.matches("^log%.table: ", bad(function(d) d.log.table = "a b" end))
    assert.matches("^read_models%.core%.table: is required", bad(function(d) d.read_models.core.table = nil end))
    assert.matches("^bus%.archive%.retention_days: must be an integer",
      bad(function(d) d.bus.archive.retention_days = 1.5 end))
    assert.matches("^rules%[1%]%.targets%[1%]%.endpoint: .* is not an https URL",
      bad(function(d) d.rules[1].targets[1].endpoint = "http://app.example.com/users" end))
    assert.matches('^rules%[1%]%.targets%[1%]%.read_model: "nope" is not one of read_models',
      bad(function(d) d.rules[1].targets[1].read_model = "nope" end))
    assert.matches("^checkpoints: is required with trigger%.kind = \"consumer\"",
      bad(function(d) d.checkpoints = nil end))
    assert.matches("^read_models%.core%.table: \"users%-events\" is also log's table",
      bad(function(d) d.read_models.core.table = "users-events" end))
    assert.matches("^trigger%.kind: a pipe cannot give the detail of a version%-mode log",
      bad(function(d) d.log.sort_key = "version"; d.trigger = { kind = "pipe" } end))
  end)

  it("checks rules' patterns as EventBridge does", function()
    assert.matches("^rules%[1%]%.pattern: .*detail%.log",
      bad(function(d) d.rules[1].pattern.detail.log = "users" end))
  end)

  it("never takes a secret's value", function()
    assert.matches("^rules%[1%]%.targets%[1%]%.auth%.secret%.value: secrets are never written",
      bad(function(d) d.rules[1].targets[1].auth.secret = { value = "hunter2" } end))
    assert.matches("^rules%[1%]%.targets%[1%]%.auth%.secret: needs one of secrets_manager or parameter",
      bad(function(d) d.rules[1].targets[1].auth.secret = {} end))
  end)

  it("says which file failed to load, and why", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write("return { name = 'x', log = { table = 'abc' }, lg = 1 }")
    f:close()
    local ok, err = description.load(path)
    assert.is_nil(ok)
    assert.equal(path .. ": lg: unknown field (did you mean \"log\"?)", err.message)
    f = assert(io.open(path, "w"))
    f:write("return {")
    f:close()
    ok, err = description.load(path)
    assert.is_nil(ok)
    assert.equal("invalid_description", err.code)
    assert.matches(path, err.message, 1, true)
    os.remove(path)
  end)
end)

describe("dynlog.deploy.template", function()
  local t = built(assert(description.load(EXAMPLE)))

  it("turns point-in-time recovery and encryption on for every table", function()
    local tables = of_type(t, "AWS::DynamoDB::Table")
    assert.equal(3, count(tables))
    for id, r in pairs(tables) do
      assert.is_true(r.Properties.PointInTimeRecoverySpecification.PointInTimeRecoveryEnabled, id)
      assert.is_true(r.Properties.SSESpecification.SSEEnabled, id)
    end
    local log = t.Resources.LogTable.Properties
    assert.equal("NEW_AND_OLD_IMAGES", log.StreamSpecification.StreamViewType)
    assert.same({ AttributeName = "expires_at", Enabled = true }, log.TimeToLiveSpecification)
    assert.equal("users-events", log.TableName)
  end)

  it("has the bus, its archive, the rule with its API destination, retry policy and dead-letter queue", function()
    assert.equal("dynamodb-log", t.Resources.Bus.Properties.Name)
    assert.same({ ["Fn::GetAtt"] = { "Bus", "Arn" } }, t.Resources.BusArchive.Properties.SourceArn)
    assert.equal(30, t.Resources.BusArchive.Properties.RetentionDays)
    local rule = t.Resources.RuleUsersToCore.Properties
    assert.same({ Ref = "Bus" }, rule.EventBusName)
    local target = rule.Targets[1]
    assert.same({ ["Fn::GetAtt"] = { "UsersProjectionApiDestination", "Arn" } }, target.Arn)
    assert.same({ MaximumEventAgeInSeconds = 86400, MaximumRetryAttempts = 185 }, target.RetryPolicy)
    assert.same({ ["Fn::GetAtt"] = { "UsersProjectionDeadLetterQueue", "Arn" } }, target.DeadLetterConfig.Arn)
    assert.equal("AWS::SQS::Queue", t.Resources.UsersProjectionDeadLetterQueue.Type)
    assert.equal("AWS::SQS::QueuePolicy", t.Resources.UsersProjectionDeadLetterQueuePolicy.Type)
  end)

  it("names the connection's secret, never its value", function()
    local auth = t.Resources.UsersProjectionConnection.Properties.AuthParameters.ApiKeyAuthParameters
    assert.equal("x-api-key", auth.ApiKeyName)
    assert.equal("{{resolve:secretsmanager:dynlog/users/receiver:SecretString:api_key}}", auth.ApiKeyValue)
  end)

  it("scopes every policy to resources of the template (\"*\" only for ListStreams)", function()
    local list = statements(t)
    assert.is_true(#list > 0)
    for _, e in ipairs(list) do
      for _, res in ipairs(as_list(e.s.Resource)) do
        if res == "*" then
          assert.same({ "dynamodb:ListStreams" }, as_list(e.s.Action), e.owner)
        else
          local id = res.Ref or (res["Fn::GetAtt"] or {})[1]
          assert.is_string(id, e.owner .. ": a resource that is not of the template")
          assert.is_table(t.Resources[id], e.owner .. " names " .. tostring(id))
        end
      end
    end
    local consumer = t.Resources.ConsumerPolicy.Properties.PolicyDocument.Statement
    local by_sid = {}
    for _, s in ipairs(consumer) do by_sid[s.Sid] = s end
    assert.same({ { ["Fn::GetAtt"] = { "LogTable", "StreamArn" } } }, by_sid.LogStream.Resource)
    assert.same({ { ["Fn::GetAtt"] = { "Bus", "Arn" } } }, by_sid.Publish.Resource)
  end)

  it("gives the outputs", function()
    for _, name in ipairs({ "LogStreamArn", "BusArn", "BusName", "LogTableName", "ReadModelCoreTableName",
                            "CheckpointTableName", "Endpoints", "ConsumerPolicyArn" }) do
      assert.is_table(t.Outputs[name], name)
    end
    assert.equal("https://app.example.com/users", t.Outputs.Endpoints.Value)
  end)

  it("makes a Lambda trigger with partial batch responses, and Lambda targets", function()
    local d = example()
    d.trigger = { kind = "lambda" }
    d.rules[1].targets[2] = { name = "users-lambda", kind = "lambda", project = "examples.handler",
                              read_model = "core" }
    local lt = built(d)
    local mapping = lt.Resources.TriggerMapping.Properties
    assert.same({ "ReportBatchItemFailures" }, mapping.FunctionResponseTypes)
    assert.same({ ["Fn::GetAtt"] = { "LogTable", "StreamArn" } }, mapping.EventSourceArn)
    assert.equal("trigger", lt.Resources.TriggerFunction.Properties.Handler)
    assert.equal("project:examples.handler", lt.Resources.UsersLambdaFunction.Properties.Handler)
    assert.same({ Ref = "LambdaCodeBucket" }, lt.Resources.TriggerFunction.Properties.Code.S3Bucket)
    assert.is_table(lt.Parameters.LambdaCodeKey)
    assert.is_nil(lt.Resources.ConsumerPolicy)
  end)

  it("gives the Lambda trigger the variables the runtime's trigger reads: the bus among them", function()
    local d = example()
    d.trigger = { kind = "lambda" }
    d.bus.name = "orders-bus"
    local vars = built(d).Resources.TriggerFunction.Properties.Environment.Variables
    assert.same({ Ref = "Bus" }, vars.DYNLOG_EVENT_BUS)
    -- The names the runtime reads while making the `trigger` handler.
    local read = {}
    local values = { AWS_REGION = "us-east-1", AWS_ACCESS_KEY_ID = "AKIDTEMPLATE", AWS_SECRET_ACCESS_KEY = "s" }
    for name, value in pairs(vars) do values[name] = type(value) == "table" and "from-template" or value end
    local fn = require("dynlog.lambda.handlers").resolve("trigger", { getenv = function(name)
      read[name] = true
      return values[name]
    end })
    assert.is_function(fn)
    local unread = {}
    for name in pairs(vars) do
      if not read[name] then unread[#unread + 1] = name end
    end
    assert.same({}, unread)
  end)

  it("makes a Pipe from the stream to the bus with the trigger's source and detail type", function()
    local d = example()
    d.trigger = { kind = "pipe" }
    local p = built(d).Resources.TriggerPipe.Properties
    assert.same({ ["Fn::GetAtt"] = { "LogTable", "StreamArn" } }, p.Source)
    assert.same({ ["Fn::GetAtt"] = { "Bus", "Arn" } }, p.Target)
    assert.equal("dynamodb-log", p.TargetParameters.EventBridgeEventBusParameters.Source)
    assert.equal("stream changes", p.TargetParameters.EventBridgeEventBusParameters.DetailType)
    assert.is_table(json.decode(p.SourceParameters.FilterCriteria.Filters[1].Pattern))
  end)

  it("takes a basic-auth password from a NoEcho parameter", function()
    local d = example()
    d.rules[1].targets[1].auth = { kind = "basic", user = "eventbridge", secret = { parameter = "ReceiverPassword" } }
    local bt = built(d)
    local basic = bt.Resources.UsersProjectionConnection.Properties.AuthParameters.BasicAuthParameters
    assert.same({ Ref = "ReceiverPassword" }, basic.Password)
    assert.is_true(bt.Parameters.ReceiverPassword.NoEcho)
  end)

  it("answers nil, err for an invalid description", function()
    local d = example()
    d.log = nil
    local ok, err = template.build(d)
    assert.is_nil(ok)
    assert.equal("log: is required (the log table)", err.message)
  end)
end)
