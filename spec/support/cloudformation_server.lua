--- A loopback stand-in for AWS CloudFormation's query API, for the specs.
--
-- No local implementation of CloudFormation exists (DynamoDB has DynamoDB
-- Local; CloudFormation has nothing alike), so this simulation follows the
-- documented protocol (API version 2010-05-15) closely enough for dynlog's
-- deploy and remove: form-encoded POST requests with Action and
-- Version=2010-05-15, a SigV4 Authorization header for service
-- "cloudformation", and XML answers in CloudFormation's shapes
-- (<ActionResponse><ActionResult>…</ActionResult><ResponseMetadata>…,
-- lists as <member> elements, errors as <ErrorResponse><Error><Type>,
-- <Code>, <Message></Error><RequestId>).
--
-- It is loaded by spec/support/httpd.lua: a route whose response is
-- {"cloudformation": CONFIG} is answered here, with the state of every
-- stack kept in the httpd process. Start it with
--   server.start({ { method = "POST", path = "/", responses = { { cloudformation = {} } } } })
-- CONFIG:
--   fail = { LogicalId = "reason" }  creating that resource fails with that
--                                     reason: the stack rolls back
--                                     (ROLLBACK_COMPLETE after a create,
--                                     UPDATE_ROLLBACK_COMPLETE after an update)
--   page = N                          events per DescribeStackEvents page (default 3)
--   step = N                          events the stack moves on by at each
--                                     DescribeStacks (default 2)
--
-- What it simulates:
--   CreateChangeSet  CREATE (the stack appears in REVIEW_IN_PROGRESS) or
--                    UPDATE; TemplateBody is JSON, at most 51,200 bytes;
--                    IAM resources need CAPABILITY_IAM or CAPABILITY_NAMED_IAM
--   DescribeChangeSet  CREATE_PENDING → CREATE_IN_PROGRESS → CREATE_COMPLETE
--                    over polls, or FAILED "The submitted information didn't
--                    contain changes…" for an update with the stack's own
--                    template and parameters
--   ExecuteChangeSet, DeleteChangeSet, DeleteStack
--   DescribeStacks   the stack, its outputs (literal values, Ref and
--                    Fn::GetAtt of resources, Ref of parameters); every call
--                    moves the stack on by `step` events, until a terminal
--                    status; a missing stack → ValidationError "Stack with
--                    id X does not exist" (a deleted stack is found by its
--                    id only, in DELETE_COMPLETE, as in CloudFormation)
--   DescribeStackEvents  newest first, NextToken pages
local cjson = require("cjson")

local ipairs, next, pairs, tonumber, tostring, type = ipairs, next, pairs, tonumber, tostring, type
local str_format, str_gsub, str_match = string.format, string.gsub, string.match
local tbl_concat, tbl_sort = table.concat, table.sort

local _M = {}

local XMLNS = "http://cloudformation.amazonaws.com/doc/2010-05-15/"
local ACCOUNT, REGION = "123456789012", "us-east-1"
local MAX_BODY = 51200

local stacks = {}        -- name -> the live stack (absent once deleted)
local by_id = {}         -- stack id -> stack, deleted ones too
local change_sets = {}   -- change set id -> change set
local serial = 0
local clock = os.time()

local function next_serial()
  serial = serial + 1
  return serial
end

local function uuid()
  return str_format("%08x-0000-4000-8000-%012d", os.time() % 0xffffffff, next_serial())
end

-- Timestamps strictly increasing, in CloudFormation's format.
local function timestamp()
  clock = clock + 0.001
  local s = math.floor(clock)
  return os.date("!%Y-%m-%dT%H:%M:%S", s) .. str_format(".%03dZ", math.floor((clock - s) * 1000 + 0.5) % 1000)
end

local function escape(s)
  return (str_gsub(tostring(s), "[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
                                              ['"'] = "&quot;", ["'"] = "&apos;" }))
end

-- Lua value → XML in the query protocol's way: tables with an array part
-- become <member> lists; keys are written sorted.
local function xml(value)
  if type(value) ~= "table" then return escape(value) end
  local parts = {}
  if value[1] ~= nil or value.__list then
    for _, v in ipairs(value) do parts[#parts + 1] = "<member>" .. xml(v) .. "</member>" end
    return tbl_concat(parts)
  end
  local keys = {}
  for k in pairs(value) do keys[#keys + 1] = k end
  tbl_sort(keys)
  for _, k in ipairs(keys) do parts[#parts + 1] = "<" .. k .. ">" .. xml(value[k]) .. "</" .. k .. ">" end
  return tbl_concat(parts)
end

local function list(t)
  t = t or {}
  t.__list = true
  return t
end

local function answer(action, result)
  local inner = result and xml(result) or ""
  local result_element = "<" .. action .. "Result>" .. inner .. "</" .. action .. "Result>"
  if result == false then result_element = "" end
  return { status = 200, headers = { ["Content-Type"] = "text/xml" },
           body = '<?xml version="1.0" encoding="UTF-8"?>\n<' .. action .. 'Response xmlns="' .. XMLNS .. '">'
             .. result_element .. "<ResponseMetadata><RequestId>" .. uuid()
             .. "</RequestId></ResponseMetadata></" .. action .. "Response>" }
end

local function failure(status, code, message, kind)
  return { status = status, headers = { ["Content-Type"] = "text/xml" },
           body = '<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse xmlns="' .. XMLNS .. '"><Error><Type>'
             .. (kind or "Sender") .. "</Type><Code>" .. escape(code) .. "</Code><Message>" .. escape(message)
             .. "</Message></Error><RequestId>" .. uuid() .. "</RequestId></ErrorResponse>" }
end

local function validation(message) return failure(400, "ValidationError", message) end

local function url_decode(s)
  s = str_gsub(s, "%+", " ")
  return (str_gsub(s, "%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function form(body)
  local params = {}
  for pair in (body or ""):gmatch("[^&]+") do
    local k, v = str_match(pair, "^([^=]*)=?(.*)$")
    params[url_decode(k)] = url_decode(v)
  end
  return params
end

-- Prefix.member.N[.Suffix] lists of the request, in order.
local function members(params, prefix, suffix)
  local out, i = {}, 1
  while true do
    local key = prefix .. ".member." .. i .. (suffix and ("." .. suffix) or "")
    if params[key] == nil then return out end
    out[i] = params[key]
    i = i + 1
  end
end

local function parameters_of(params)
  local out = {}
  local keys, values = members(params, "Parameters", "ParameterKey"), members(params, "Parameters", "ParameterValue")
  for i, k in ipairs(keys) do out[k] = values[i] end
  return out
end

local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

local function same_params(a, b)
  for k, v in pairs(a) do if b[k] ~= v then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

local function find_stack(name)
  if name == nil then return nil end
  return stacks[name] or by_id[name]
end

local function add_event(stack, logical, rtype, status, reason, physical)
  stack.events[#stack.events + 1] = {
    StackId = stack.id, StackName = stack.name, EventId = uuid(), LogicalResourceId = logical,
    PhysicalResourceId = physical or "", ResourceType = rtype, Timestamp = timestamp(),
    ResourceStatus = status, ResourceStatusReason = reason,
  }
end

-- What happens when a change set is executed: a queue of steps, each an
-- event and the stack status it leaves.
local function plan(stack, cs, fail)
  local steps = {}
  local function step(logical, rtype, status, reason, stack_status, stack_reason)
    steps[#steps + 1] = { logical = logical, rtype = rtype, status = status, reason = reason,
                          stack_status = stack_status, stack_reason = stack_reason }
  end
  local verb = cs.type == "CREATE" and "CREATE" or "UPDATE"
  local old = stack.template and stack.template.Resources or {}
  local new = cs.template.Resources or {}
  step(stack.name, "AWS::CloudFormation::Stack", verb .. "_IN_PROGRESS", "User Initiated", verb .. "_IN_PROGRESS")
  local names = {}
  for logical in pairs(new) do names[#names + 1] = logical end
  tbl_sort(names)
  local made, failed = {}, nil
  for _, logical in ipairs(names) do
    local r = new[logical]
    local adding = old[logical] == nil
    if adding or not same(old[logical], r) then
      local rv = adding and "CREATE" or "UPDATE"
      step(logical, r.Type, rv .. "_IN_PROGRESS", nil)
      if adding and fail[logical] then
        step(logical, r.Type, "CREATE_FAILED", fail[logical])
        failed = logical
        break
      end
      step(logical, r.Type, rv .. "_COMPLETE", nil)
      if adding then made[#made + 1] = logical end
    end
  end
  if failed then
    local rb = verb == "CREATE" and "ROLLBACK" or "UPDATE_ROLLBACK"
    local why = "The following resource(s) failed to create: [" .. failed .. "]. Rollback requested by user."
    step(stack.name, "AWS::CloudFormation::Stack", rb .. "_IN_PROGRESS", why, rb .. "_IN_PROGRESS", why)
    for i = #made, 1, -1 do
      step(made[i], new[made[i]].Type, "DELETE_IN_PROGRESS", nil)
      step(made[i], new[made[i]].Type, "DELETE_COMPLETE", nil)
    end
    step(failed, new[failed].Type, "DELETE_COMPLETE", nil)
    step(stack.name, "AWS::CloudFormation::Stack", rb .. "_COMPLETE", nil, rb .. "_COMPLETE")
    return steps, false
  end
  if verb == "UPDATE" then
    step(stack.name, "AWS::CloudFormation::Stack", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", nil,
      "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS")
    local gone = {}
    for logical in pairs(old) do if new[logical] == nil then gone[#gone + 1] = logical end end
    tbl_sort(gone)
    for _, logical in ipairs(gone) do
      step(logical, old[logical].Type, "DELETE_IN_PROGRESS", nil)
      step(logical, old[logical].Type, "DELETE_COMPLETE", nil)
    end
  end
  step(stack.name, "AWS::CloudFormation::Stack", verb .. "_COMPLETE", nil, verb .. "_COMPLETE")
  return steps, true
end

local function delete_plan(stack)
  local steps = {}
  local function step(logical, rtype, status, stack_status)
    steps[#steps + 1] = { logical = logical, rtype = rtype, status = status, stack_status = stack_status }
  end
  step(stack.name, "AWS::CloudFormation::Stack", "DELETE_IN_PROGRESS", "DELETE_IN_PROGRESS")
  local names = {}
  for logical in pairs(stack.live or {}) do names[#names + 1] = logical end
  tbl_sort(names)
  for _, logical in ipairs(names) do
    step(logical, stack.live[logical].Type, "DELETE_IN_PROGRESS")
    step(logical, stack.live[logical].Type, "DELETE_COMPLETE")
  end
  step(stack.name, "AWS::CloudFormation::Stack", "DELETE_COMPLETE", "DELETE_COMPLETE")
  return steps
end

-- Moves a stack on by up to n steps.
local function advance(stack, n)
  local steps = stack.steps
  for _ = 1, n do
    if not steps or #steps == 0 then return end
    local s = table.remove(steps, 1)
    local physical = s.rtype == "AWS::CloudFormation::Stack" and stack.id or (s.logical .. "-" .. stack.name)
    add_event(stack, s.logical, s.rtype, s.status, s.reason, physical)
    if s.stack_status then
      stack.status, stack.reason = s.stack_status, s.stack_reason
      stack.updated = timestamp()
    end
    if #steps == 0 then
      if stack.on_done then stack.on_done() end
      stack.steps, stack.on_done = nil, nil
    end
  end
end

local function needs_capability(template, capabilities)
  local iam = false
  for _, r in pairs(template.Resources or {}) do
    if type(r) == "table" and type(r.Type) == "string" and r.Type:find("^AWS::IAM::") then iam = true end
  end
  if not iam then return nil end
  for _, c in ipairs(capabilities) do
    if c == "CAPABILITY_IAM" or c == "CAPABILITY_NAMED_IAM" then return nil end
  end
  return "CAPABILITY_NAMED_IAM"
end

local function output_value(stack, value)
  if type(value) ~= "table" then return tostring(value) end
  if value.Ref then
    if stack.parameters[value.Ref] then return stack.parameters[value.Ref] end
    return value.Ref .. "-" .. stack.name
  end
  local getatt = value["Fn::GetAtt"]
  if getatt then
    return "arn:aws:loopback:" .. REGION .. ":" .. ACCOUNT .. ":" .. tostring(getatt[1]) .. "-" .. stack.name
      .. "/" .. tostring(getatt[2])
  end
  return cjson.encode(value)
end

local ACTIONS = {}

function ACTIONS.CreateChangeSet(p, config)
  local name, cs_name, cs_type = p.StackName, p.ChangeSetName, p.ChangeSetType or "UPDATE"
  if not name or not cs_name then return validation("StackName and ChangeSetName are required") end
  if p.TemplateURL then return validation("this loopback CloudFormation takes TemplateBody only") end
  local body = p.TemplateBody
  if not body then return validation("Either Template URL or Template Body must be specified.") end
  if #body > MAX_BODY then
    return validation("1 validation error detected: Value at 'templateBody' failed to satisfy constraint: "
      .. "Member must have length less than or equal to 51200")
  end
  local ok, template = pcall(cjson.decode, body)
  if not ok or type(template) ~= "table" then return validation("Template format error: JSON not well-formed.") end
  if type(template.Resources) ~= "table" or next(template.Resources) == nil then
    return validation("Template format error: At least one Resources member must be defined.")
  end
  local capability = needs_capability(template, members(p, "Capabilities"))
  if capability then
    return failure(400, "InsufficientCapabilitiesException", "Requires capabilities : [" .. capability .. "]")
  end
  local stack = stacks[name]
  if cs_type == "CREATE" then
    if stack and stack.status ~= "REVIEW_IN_PROGRESS" then
      return failure(400, "AlreadyExistsException", "Stack [" .. name .. "] already exists")
    end
    if not stack then
      stack = { name = name, id = "arn:aws:cloudformation:" .. REGION .. ":" .. ACCOUNT .. ":stack/" .. name .. "/"
                  .. uuid(), status = "REVIEW_IN_PROGRESS", events = {}, parameters = {}, created = timestamp() }
      stacks[name], by_id[stack.id] = stack, stack
      add_event(stack, name, "AWS::CloudFormation::Stack", "REVIEW_IN_PROGRESS", "User Initiated", stack.id)
    end
  elseif cs_type == "UPDATE" then
    if not stack or stack.status == "REVIEW_IN_PROGRESS" then
      return validation("Stack [" .. name .. "] does not exist")
    end
    if stack.steps then
      return validation("Stack:" .. stack.id .. " is in " .. stack.status .. " state and can not be updated.")
    end
    if stack.status == "ROLLBACK_COMPLETE" or stack.status == "ROLLBACK_FAILED" then
      return validation("Stack:" .. stack.id .. " is in " .. stack.status .. " state and can not be updated.")
    end
  else
    return validation("ChangeSetType must be CREATE, UPDATE or IMPORT")
  end
  local parameters = parameters_of(p)
  local cs = {
    id = "arn:aws:cloudformation:" .. REGION .. ":" .. ACCOUNT .. ":changeSet/" .. cs_name .. "/" .. uuid(),
    name = cs_name, stack = stack, type = cs_type, template = template, body = body, parameters = parameters,
    status = "CREATE_PENDING", polls = 0, fail = config.fail or {},
  }
  if cs_type == "UPDATE" and same(stack.template, template) and same_params(stack.parameters, parameters) then
    cs.no_changes = true
  end
  change_sets[cs.id] = cs
  return answer("CreateChangeSet", { Id = cs.id, StackId = stack.id })
end

local function find_change_set(p)
  local cs = change_sets[p.ChangeSetName]
  if cs then return cs end
  local stack = find_stack(p.StackName)
  for _, c in pairs(change_sets) do
    if c.name == p.ChangeSetName and c.stack == stack then return c end
  end
  return nil
end

function ACTIONS.DescribeChangeSet(p)
  local cs = find_change_set(p)
  if not cs then return failure(404, "ChangeSetNotFound", "ChangeSet [" .. tostring(p.ChangeSetName)
    .. "] does not exist") end
  cs.polls = cs.polls + 1
  if cs.status == "CREATE_PENDING" and cs.polls >= 1 then
    cs.status = "CREATE_IN_PROGRESS"
  elseif cs.status == "CREATE_IN_PROGRESS" then
    if cs.no_changes then
      cs.status, cs.reason = "FAILED", "The submitted information didn't contain changes. Submit different"
        .. " information to create a change set."
    else
      cs.status = "CREATE_COMPLETE"
    end
  end
  local changes = list()
  if cs.status == "CREATE_COMPLETE" then
    local old = cs.stack.template and cs.stack.template.Resources or {}
    local names = {}
    for logical in pairs(cs.template.Resources) do names[#names + 1] = logical end
    for logical in pairs(old) do if not cs.template.Resources[logical] then names[#names + 1] = logical end end
    tbl_sort(names)
    for _, logical in ipairs(names) do
      local r, o = cs.template.Resources[logical], old[logical]
      local action = not o and "Add" or not r and "Remove" or (not same(o, r) and "Modify") or nil
      if action then
        changes[#changes + 1] = { Type = "Resource", ResourceChange = { Action = action, LogicalResourceId = logical,
          ResourceType = (r or o).Type } }
      end
    end
  end
  local execution = cs.status == "CREATE_COMPLETE" and (cs.executed and "EXECUTE_COMPLETE" or "AVAILABLE")
    or "UNAVAILABLE"
  return answer("DescribeChangeSet", {
    ChangeSetId = cs.id, ChangeSetName = cs.name, StackId = cs.stack.id, StackName = cs.stack.name,
    Status = cs.status, StatusReason = cs.reason, ExecutionStatus = execution, Changes = changes,
    CreationTime = cs.stack.created,
  })
end

function ACTIONS.ExecuteChangeSet(p, config)
  local cs = find_change_set(p)
  if not cs then return failure(404, "ChangeSetNotFound", "ChangeSet [" .. tostring(p.ChangeSetName)
    .. "] does not exist") end
  if cs.status ~= "CREATE_COMPLETE" or cs.executed then
    return failure(400, "InvalidChangeSetStatus", "ChangeSet [" .. cs.id .. "] cannot be executed in its current"
      .. " status of [" .. cs.status .. "]")
  end
  local stack = cs.stack
  if stack.steps then return validation("Stack:" .. stack.id .. " is in " .. stack.status .. " state") end
  cs.executed = true
  local steps, succeeds = plan(stack, cs, config.fail or {})
  stack.steps = steps
  stack.on_done = function()
    if succeeds then
      stack.template, stack.parameters = cs.template, cs.parameters
      stack.live = cs.template.Resources
    elseif cs.type == "CREATE" then
      stack.live = {}
    end
  end
  -- Every other change set of the stack is gone once one is executed.
  for id, other in pairs(change_sets) do
    if other.stack == stack and other ~= cs then change_sets[id] = nil end
  end
  return answer("ExecuteChangeSet", {})
end

function ACTIONS.DeleteChangeSet(p)
  local cs = find_change_set(p)
  if not cs then return failure(404, "ChangeSetNotFound", "ChangeSet [" .. tostring(p.ChangeSetName)
    .. "] does not exist") end
  change_sets[cs.id] = nil
  return answer("DeleteChangeSet", {})
end

local function stack_xml(stack)
  local outputs = list()
  if stack.template and (stack.status:find("_COMPLETE$") and not stack.status:find("ROLLBACK")) then
    local keys = {}
    for k in pairs(stack.template.Outputs or {}) do keys[#keys + 1] = k end
    tbl_sort(keys)
    for _, k in ipairs(keys) do
      local o = stack.template.Outputs[k]
      outputs[#outputs + 1] = { OutputKey = k, OutputValue = output_value(stack, o.Value), Description = o.Description }
    end
  end
  local parameters = list()
  local keys = {}
  for k in pairs(stack.parameters) do keys[#keys + 1] = k end
  tbl_sort(keys)
  for _, k in ipairs(keys) do
    parameters[#parameters + 1] = { ParameterKey = k, ParameterValue = stack.parameters[k] }
  end
  return { StackId = stack.id, StackName = stack.name, StackStatus = stack.status,
           StackStatusReason = stack.reason, CreationTime = stack.created, LastUpdatedTime = stack.updated,
           Outputs = outputs, Parameters = parameters }
end

function ACTIONS.DescribeStacks(p, config)
  local stack = find_stack(p.StackName)
  if not stack then
    if p.StackName == nil then
      local all = list()
      for _, s in pairs(stacks) do all[#all + 1] = stack_xml(s) end
      return answer("DescribeStacks", { Stacks = all })
    end
    return validation("Stack with id " .. p.StackName .. " does not exist")
  end
  advance(stack, config.step or 2)
  if stack.status == "DELETE_COMPLETE" and stacks[p.StackName] == stack then stacks[p.StackName] = nil end
  if stack.status == "DELETE_COMPLETE" and p.StackName == stack.name then
    return validation("Stack with id " .. p.StackName .. " does not exist")
  end
  return answer("DescribeStacks", { Stacks = list({ stack_xml(stack) }) })
end

function ACTIONS.DescribeStackEvents(p, config)
  local stack = find_stack(p.StackName)
  if not stack or (stack.status == "DELETE_COMPLETE" and p.StackName == stack.name) then
    return validation("Stack [" .. tostring(p.StackName) .. "] does not exist")
  end
  local page = config.page or 3
  local start = tonumber(p.NextToken or "0") or 0
  local events = list()
  local n = #stack.events
  for i = n - start, math.max(1, n - start - page + 1), -1 do events[#events + 1] = stack.events[i] end
  local result = { StackEvents = events }
  if n - start - page >= 1 then result.NextToken = tostring(start + page) end
  return answer("DescribeStackEvents", result)
end

function ACTIONS.DeleteStack(p)
  local stack = find_stack(p.StackName)
  -- CloudFormation answers success for a stack that does not exist.
  if not stack or stack.status == "DELETE_COMPLETE" then return answer("DeleteStack", false) end
  if stack.status == "DELETE_IN_PROGRESS" then return answer("DeleteStack", false) end
  if stack.steps then
    return validation("Stack:" .. stack.id .. " is in " .. stack.status .. " state and can not be deleted")
  end
  stack.steps = delete_plan(stack)
  stack.on_done = function() stacks[stack.name] = nil end
  return answer("DeleteStack", false)
end

--- handle(config, req) -> response {status, headers, body}: one request of
-- the query API.
function _M.handle(config, req)
  if req.method ~= "POST" then return failure(405, "MethodNotAllowed", "POST only") end
  local ctype = req.headers["content-type"] or ""
  if not ctype:find("^application/x%-www%-form%-urlencoded") then
    return failure(400, "InvalidParameterValue", "Content-Type must be application/x-www-form-urlencoded, got "
      .. ctype)
  end
  local auth = req.headers["authorization"] or ""
  if not auth:find("^AWS4%-HMAC%-SHA256 Credential=[^/]+/%d+/[%w%-]+/cloudformation/aws4_request, SignedHeaders=")
      or not auth:find("Signature=%x+") or not req.headers["x-amz-date"] then
    return failure(403, "MissingAuthenticationToken", "Request is missing Authentication Token or is not signed"
      .. " for service cloudformation")
  end
  local p = form(req.body)
  if p.Version ~= "2010-05-15" then
    return failure(400, "InvalidParameterValue", "Version must be 2010-05-15, got " .. tostring(p.Version))
  end
  local action = ACTIONS[p.Action or ""]
  if not action then return failure(400, "InvalidAction", "Could not find operation " .. tostring(p.Action)) end
  return action(p, config or {})
end

return _M
