--- The CloudFormation template of a pipeline's description.
--
--   local template = require "dynlog.deploy.template"
--   local t, err = template.build(description)   -- a checked or an unchecked one
--   io.write(require("dynlog.json").encode(t))
--
-- build returns a Lua table shaped like the template's JSON (arrays marked
-- with json.array, so empty ones stay arrays), or `nil, err` from
-- dynlog.deploy.description when the description is invalid. Every role and
-- policy names only the actions its part calls, on the resources of this
-- template (Ref and Fn::GetAtt), except dynamodb:ListStreams, which has no
-- resource-level permissions. Secrets are never in the template: a
-- connection names a Secrets Manager secret (a dynamic reference, resolved
-- by CloudFormation) or a NoEcho parameter.
local description = require "dynlog.deploy.description"
local json = require "dynlog.json"

local error, ipairs, next, pairs, type = error, ipairs, next, pairs, type
local str_format, str_upper = string.format, string.upper
local tbl_concat, tbl_sort = table.concat, table.sort

local array = json.array

local _M = {}

-- The trigger's envelope, as dynlog.pipeline.trigger publishes it.
_M.SOURCE = "dynamodb-log"
_M.DETAIL_TYPE = "stream changes"

--- logical(name) -> a CloudFormation logical id from a name: "users-to-core" -> "UsersToCore".
function _M.logical(name)
  local parts = {}
  for word in name:gmatch("[%w]+") do parts[#parts + 1] = str_upper(word:sub(1, 1)) .. word:sub(2) end
  return tbl_concat(parts)
end
local logical = _M.logical

local function ref(id) return { Ref = id } end
local function getatt(id, attr) return { ["Fn::GetAtt"] = array{ id, attr } } end

local function tag_list(tags, name)
  local keys = {}
  for k in pairs(tags) do keys[#keys + 1] = k end
  tbl_sort(keys)
  local list = array{}
  for _, k in ipairs(keys) do list[#list + 1] = { Key = k, Value = tags[k] } end
  list[#list + 1] = { Key = "dynlog:pipeline", Value = name }
  return list
end

local function statement(sid, actions, resources)
  return { Sid = sid, Effect = "Allow", Action = array(actions), Resource = array(resources) }
end

local function policy_document(statements)
  return { Version = "2012-10-17", Statement = array(statements) }
end

local function trust(service)
  return policy_document({ { Effect = "Allow", Principal = { Service = service }, Action = "sts:AssumeRole" } })
end

local function role(d, statements, service, policy_name)
  return {
    Type = "AWS::IAM::Role",
    Properties = {
      AssumeRolePolicyDocument = trust(service),
      Policies = array{ { PolicyName = policy_name, PolicyDocument = policy_document(statements) } },
      Tags = tag_list({}, d.name),
    },
  }
end

-- A DynamoDB table: pk HASH S, sk RANGE (S, or N for a version-mode log).
local function dynamo_table(d, spec, log)
  local sk_type = log and spec.sort_key == "version" and "N" or "S"
  local p = {
    TableName = spec.table,
    AttributeDefinitions = array{ { AttributeName = "pk", AttributeType = "S" },
                                  { AttributeName = "sk", AttributeType = sk_type } },
    KeySchema = array{ { AttributeName = "pk", KeyType = "HASH" }, { AttributeName = "sk", KeyType = "RANGE" } },
    PointInTimeRecoverySpecification = { PointInTimeRecoveryEnabled = spec.pitr },
    Tags = tag_list(spec.tags, d.name),
  }
  if spec.billing == "provisioned" then
    p.BillingMode = "PROVISIONED"
    p.ProvisionedThroughput = { ReadCapacityUnits = spec.read_capacity, WriteCapacityUnits = spec.write_capacity }
  else
    p.BillingMode = "PAY_PER_REQUEST"
  end
  if spec.sse.kind == "aws_owned" then
    p.SSESpecification = { SSEEnabled = false }
  elseif spec.sse.kind == "aws_managed" then
    p.SSESpecification = { SSEEnabled = true, SSEType = "KMS" }
  else
    p.SSESpecification = { SSEEnabled = true, SSEType = "KMS", KMSMasterKeyId = spec.sse.key }
  end
  if spec.ttl then p.TimeToLiveSpecification = { AttributeName = spec.ttl, Enabled = true } end
  if log then p.StreamSpecification = { StreamViewType = "NEW_AND_OLD_IMAGES" } end
  return { Type = "AWS::DynamoDB::Table", DeletionPolicy = "Retain", UpdateReplacePolicy = "Retain", Properties = p }
end

local function table_id(t)
  if t.path == "log" then return "LogTable" end
  if t.path == "checkpoints" then return "CheckpointTable" end
  if t.path == "feed" then return "FeedTable" end
  return "ReadModel" .. logical(t.name) .. "Table"
end
_M.table_id = table_id

local STREAM_READ = { "dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator" }

-- A log group of a Lambda function, so that its role names it.
local function log_group(name)
  return { Type = "AWS::Logs::LogGroup",
           Properties = { LogGroupName = "/aws/lambda/" .. name, RetentionInDays = 30 } }
end

local function logs_statement(group_id)
  return statement("Logs", { "logs:CreateLogStream", "logs:PutLogEvents" }, { getatt(group_id, "Arn") })
end

local function lambda_code()
  return { S3Bucket = ref("LambdaCodeBucket"), S3Key = ref("LambdaCodeKey") }
end

-- The Pipe's input template: the trigger's detail, as far as Pipes can
-- build it (see docs/deploying.md: payload and meta stay DynamoDB JSON, no
-- partial rule, no appended_at as a number).
_M.PIPE_INPUT = '{"log": <$.dynamodb.NewImage.log.S>, "key": {"pk": <$.dynamodb.NewImage.pk.S>, '
  .. '"sk": <$.dynamodb.NewImage.sk.S>}, "type": <$.dynamodb.NewImage.type.S>, '
  .. '"payload": <$.dynamodb.NewImage.payload.M>}'
_M.PIPE_FILTER = '{"eventName":["INSERT","MODIFY"],"dynamodb":{"NewImage":{"pk":{"S":[{"suffix":"#stream"}]},'
  .. '"type":{"S":[{"exists":true}]}}}}'

local function build(d)
  local R, outputs, parameters = {}, {}, {}
  local stream_arn = getatt("LogTable", "StreamArn")
  local log_arn = getatt("LogTable", "Arn")
  local bus_arn = getatt("Bus", "Arn")

  -- Tables.
  for _, t in ipairs(description.tables(d)) do
    local id = table_id(t)
    R[id] = dynamo_table(d, t.spec, t.path == "log")
    outputs[id .. "Name"] = { Description = "the " .. t.path .. " table", Value = ref(id) }
  end
  outputs.LogStreamArn = { Description = "the log table's stream", Value = stream_arn }

  -- The bus and its archive.
  R.Bus = { Type = "AWS::Events::EventBus", Properties = { Name = d.bus.name, Tags = tag_list(d.bus.tags, d.name) } }
  outputs.BusArn = { Description = "the event bus", Value = bus_arn }
  outputs.BusName = { Description = "the event bus's name", Value = ref("Bus") }
  if d.bus.archive then
    R.BusArchive = { Type = "AWS::Events::Archive",
                     Properties = { SourceArn = bus_arn, RetentionDays = d.bus.archive.retention_days,
                                    Description = "every event of " .. d.bus.name .. ", for replays" } }
    outputs.ArchiveArn = { Description = "the bus's archive", Value = getatt("BusArchive", "Arn") }
  end

  local uses_lambda = d.trigger.kind == "lambda"

  -- The trigger.
  if d.trigger.kind == "consumer" then
    -- A managed policy for the hosts that run the consumer (nginx or a Lua process).
    R.ConsumerPolicy = {
      Type = "AWS::IAM::ManagedPolicy",
      Properties = {
        Description = "dynlog's consumer and trigger: the log's stream, the checkpoints, PutEvents on the bus",
        PolicyDocument = policy_document({
          statement("LogTable", { "dynamodb:DescribeTable" }, { log_arn }),
          statement("LogStream", STREAM_READ, { stream_arn }),
          statement("Checkpoints", { "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem",
                                     "dynamodb:CreateTable", "dynamodb:DescribeTable" },
            { getatt("CheckpointTable", "Arn") }),
          statement("Publish", { "events:PutEvents" }, { bus_arn }),
        }),
      },
    }
    outputs.ConsumerPolicyArn = { Description = "attach to the consumer hosts' role", Value = ref("ConsumerPolicy") }
  elseif d.trigger.kind == "lambda" then
    local fname = d.name .. "-trigger"
    R.TriggerLogGroup = log_group(fname)
    R.TriggerDeadLetterQueue = { Type = "AWS::SQS::Queue",
                                 Properties = { MessageRetentionPeriod = 14 * 86400, SqsManagedSseEnabled = true } }
    R.TriggerRole = role(d, {
      statement("LogStream", STREAM_READ, { stream_arn }),
      -- ListStreams has no resource-level permissions: AWS requires "*".
      statement("ListStreams", { "dynamodb:ListStreams" }, { "*" }),
      statement("Publish", { "events:PutEvents" }, { bus_arn }),
      statement("FailedBatches", { "sqs:SendMessage" }, { getatt("TriggerDeadLetterQueue", "Arn") }),
      logs_statement("TriggerLogGroup"),
    }, "lambda.amazonaws.com", "trigger")
    R.TriggerFunction = {
      Type = "AWS::Lambda::Function",
      DependsOn = "TriggerLogGroup",
      Properties = {
        FunctionName = fname, Runtime = d.lambda.runtime, Architectures = array{ d.lambda.architecture },
        Handler = "trigger", Code = lambda_code(), Role = getatt("TriggerRole", "Arn"),
        MemorySize = d.lambda.memory, Timeout = d.lambda.timeout,
        Environment = { Variables = { DYNLOG_TABLE = ref("LogTable"), DYNLOG_EVENT_BUS = ref("Bus"),
                                      DYNLOG_SORT_KEY = d.log.sort_key } },
        Tags = tag_list({}, d.name),
      },
    }
    R.TriggerMapping = {
      Type = "AWS::Lambda::EventSourceMapping",
      Properties = {
        FunctionName = ref("TriggerFunction"), EventSourceArn = stream_arn, StartingPosition = "TRIM_HORIZON",
        BatchSize = d.trigger.batch_size, FunctionResponseTypes = array{ "ReportBatchItemFailures" },
        BisectBatchOnFunctionError = true, MaximumRetryAttempts = d.trigger.max_retries,
        DestinationConfig = { OnFailure = { Destination = getatt("TriggerDeadLetterQueue", "Arn") } },
      },
    }
  else -- pipe
    R.PipeRole = role(d, {
      statement("LogStream", STREAM_READ, { stream_arn }),
      statement("ListStreams", { "dynamodb:ListStreams" }, { "*" }),
      statement("Publish", { "events:PutEvents" }, { bus_arn }),
    }, "pipes.amazonaws.com", "pipe")
    R.TriggerPipe = {
      Type = "AWS::Pipes::Pipe",
      Properties = {
        Name = d.name .. "-trigger", RoleArn = getatt("PipeRole", "Arn"), Source = stream_arn,
        SourceParameters = {
          DynamoDBStreamParameters = { StartingPosition = "TRIM_HORIZON", BatchSize = d.trigger.batch_size,
                                       MaximumRetryAttempts = d.trigger.max_retries },
          FilterCriteria = { Filters = array{ { Pattern = _M.PIPE_FILTER } } },
        },
        Target = bus_arn,
        TargetParameters = {
          InputTemplate = _M.PIPE_INPUT,
          EventBridgeEventBusParameters = { Source = _M.SOURCE, DetailType = _M.DETAIL_TYPE },
        },
      },
    }
  end

  -- Rules and their targets.
  local endpoints = {}
  for _, r in ipairs(d.rules) do
    local rid = "Rule" .. logical(r.name)
    local targets = array{}
    for _, t in ipairs(r.targets) do
      local tid = logical(t.name)
      local model_id = table_id({ path = "read_models." .. t.read_model, name = t.read_model })
      local dlq = tid .. "DeadLetterQueue"
      R[dlq] = { Type = "AWS::SQS::Queue",
                 Properties = { MessageRetentionPeriod = t.dead_letter.retention_days * 86400,
                                SqsManagedSseEnabled = true } }
      R[dlq .. "Policy"] = {
        Type = "AWS::SQS::QueuePolicy",
        Properties = {
          Queues = array{ ref(dlq) },
          PolicyDocument = policy_document({ {
            Sid = "FromRule", Effect = "Allow", Principal = { Service = "events.amazonaws.com" },
            Action = "sqs:SendMessage", Resource = getatt(dlq, "Arn"),
            Condition = { ArnEquals = { ["aws:SourceArn"] = getatt(rid, "Arn") } },
          } }),
        },
      }
      outputs[dlq .. "Url"] = { Description = "the dead letters of " .. t.name, Value = ref(dlq) }
      local entry = {
        Id = t.name,
        RetryPolicy = { MaximumEventAgeInSeconds = t.retry.max_age, MaximumRetryAttempts = t.retry.attempts },
        DeadLetterConfig = { Arn = getatt(dlq, "Arn") },
      }
      -- What the projection does, wherever it runs: Query the log, read and write its read model.
      local project_statements = {
        statement("ReadModel", { "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem" },
          { getatt(model_id, "Arn") }),
        statement("Log", { "dynamodb:Query" }, { log_arn }),
      }
      if t.kind == "api_destination" then
        local auth = { }
        local secret
        if t.auth.secret.secrets_manager then
          secret = "{{resolve:secretsmanager:" .. t.auth.secret.secrets_manager .. ":SecretString"
            .. (t.auth.secret.json_key and ":" .. t.auth.secret.json_key or "") .. "}}"
        else
          parameters[t.auth.secret.parameter] = {
            Type = "String", NoEcho = true, MinLength = 16,
            Description = "the receiver's " .. (t.auth.kind == "api_key" and "API key" or "password") .. " for "
              .. t.name,
          }
          secret = ref(t.auth.secret.parameter)
        end
        if t.auth.kind == "api_key" then
          auth.AuthorizationType = "API_KEY"
          auth.AuthParameters = { ApiKeyAuthParameters = { ApiKeyName = t.auth.header, ApiKeyValue = secret } }
        else
          auth.AuthorizationType = "BASIC"
          auth.AuthParameters = { BasicAuthParameters = { Username = t.auth.user, Password = secret } }
        end
        auth.Description = "the credentials " .. t.name .. "'s receiver checks"
        R[tid .. "Connection"] = { Type = "AWS::Events::Connection", Properties = auth }
        R[tid .. "ApiDestination"] = {
          Type = "AWS::Events::ApiDestination",
          Properties = {
            ConnectionArn = getatt(tid .. "Connection", "Arn"), InvocationEndpoint = t.endpoint,
            HttpMethod = "POST", InvocationRateLimitPerSecond = t.rate_limit,
          },
        }
        R[tid .. "InvokeRole"] = role(d, {
          statement("Invoke", { "events:InvokeApiDestination" }, { getatt(tid .. "ApiDestination", "Arn") }),
        }, "events.amazonaws.com", "invoke-api-destination")
        entry.Arn = getatt(tid .. "ApiDestination", "Arn")
        entry.RoleArn = getatt(tid .. "InvokeRole", "Arn")
        -- The receiver's hosts: a managed policy to attach to their role.
        R[tid .. "ReceiverPolicy"] = {
          Type = "AWS::IAM::ManagedPolicy",
          Properties = { Description = "dynlog's receiver of " .. t.name .. ": its projection",
                         PolicyDocument = policy_document(project_statements) },
        }
        outputs[tid .. "ReceiverPolicyArn"] = { Description = "attach to the role of " .. t.name .. "'s receiver hosts",
                                                Value = ref(tid .. "ReceiverPolicy") }
        outputs[tid .. "Endpoint"] = { Description = "where " .. t.name .. " delivers", Value = t.endpoint }
        endpoints[#endpoints + 1] = t.endpoint
      else
        uses_lambda = true
        local fname = d.name .. "-" .. t.name
        local fid = tid .. "Function"
        R[fid .. "LogGroup"] = log_group(fname)
        project_statements[#project_statements + 1] = logs_statement(fid .. "LogGroup")
        R[fid .. "Role"] = role(d, project_statements, "lambda.amazonaws.com", "project")
        R[fid] = {
          Type = "AWS::Lambda::Function",
          DependsOn = fid .. "LogGroup",
          Properties = {
            FunctionName = fname, Runtime = d.lambda.runtime, Architectures = array{ d.lambda.architecture },
            Handler = "project:" .. t.project, Code = lambda_code(), Role = getatt(fid .. "Role", "Arn"),
            MemorySize = d.lambda.memory, Timeout = d.lambda.timeout,
            Environment = { Variables = { DYNLOG_TABLE = ref("LogTable"), DYNLOG_CORE_TABLE = ref(model_id),
                                          DYNLOG_SORT_KEY = d.log.sort_key } },
            Tags = tag_list({}, d.name),
          },
        }
        R[fid .. "Permission"] = {
          Type = "AWS::Lambda::Permission",
          Properties = { FunctionName = ref(fid), Action = "lambda:InvokeFunction",
                         Principal = "events.amazonaws.com", SourceArn = getatt(rid, "Arn") },
        }
        entry.Arn = getatt(fid, "Arn")
        outputs[fid .. "Name"] = { Description = "the function of " .. t.name, Value = ref(fid) }
      end
      targets[#targets + 1] = entry
    end
    R[rid] = {
      Type = "AWS::Events::Rule",
      Properties = { Name = r.name, EventBusName = ref("Bus"), EventPattern = r.pattern, State = "ENABLED",
                     Targets = targets },
    }
  end
  if #endpoints > 0 then
    outputs.Endpoints = { Description = "the receivers' endpoints", Value = tbl_concat(endpoints, ",") }
  end

  if uses_lambda then
    parameters.LambdaCodeBucket = { Type = "String", Description = "the S3 bucket of the zip `make lambda` makes" }
    parameters.LambdaCodeKey = { Type = "String", Description = "its key in that bucket" }
  end

  local t = {
    AWSTemplateFormatVersion = "2010-09-09",
    Description = str_format("dynlog pipeline %s: the log %s, its stream, the bus %s and its rules", d.name,
      d.log.table, d.bus.name),
    Resources = R,
    Outputs = outputs,
  }
  if next(parameters) then t.Parameters = parameters end
  return t
end

-- JSON with sorted keys, indented: the same template is always the same text.
local function pretty(v, indent, out)
  if type(v) ~= "table" or json.is_array(v) and #v == 0 then
    out[#out + 1] = json.encode(v)
    return
  end
  local inner = indent .. "  "
  if json.is_array(v) or (#v > 0 and next(v, #v) == nil) then
    out[#out + 1] = "[\n"
    for i = 1, #v do
      out[#out + 1] = inner
      pretty(v[i], inner, out)
      out[#out + 1] = i < #v and ",\n" or "\n"
    end
    out[#out + 1] = indent .. "]"
    return
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  if #keys == 0 then
    out[#out + 1] = "{}"
    return
  end
  tbl_sort(keys)
  out[#out + 1] = "{\n"
  for i, k in ipairs(keys) do
    out[#out + 1] = inner .. json.encode(k) .. ": "
    pretty(v[k], inner, out)
    out[#out + 1] = i < #keys and ",\n" or "\n"
  end
  out[#out + 1] = indent .. "}"
end

--- encode(template) -> its JSON text: keys sorted, two-space indents, a final newline.
function _M.encode(t)
  local out = {}
  pretty(t, "", out)
  out[#out + 1] = "\n"
  return tbl_concat(out)
end

--- build(description) -> template | nil, err.
function _M.build(d)
  if type(d) ~= "table" then error("template.build: description must be a table", 2) end
  if not description.is_checked(d) then
    local err
    d, err = description.check(d)
    if not d then return nil, err end
  end
  return build(d)
end

return _M
