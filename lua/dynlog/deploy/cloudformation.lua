--- A stack deployed and removed through CloudFormation's API, signed by
-- dynlog's own client (dynlog.aws.query over c:_request).
--
--   local cfn = require "dynlog.deploy.cloudformation"
--   local result, err = cfn.deploy{ client = c, stack = "app", template = template,
--     parameters = { Env = "prod" }, capabilities = { "CAPABILITY_NAMED_IAM" },
--     on_event = function(ev) print(ev.timestamp, ev.logical_id, ev.status) end }
--   -- result = { status = "CREATE_COMPLETE", stack_id = …, outputs = { Key = "value" }, unchanged = false }
--   local gone, rerr = cfn.remove{ client = c, stack = "app" }
--
-- deploy: DescribeStacks chooses the change set's type (CREATE for a stack
-- that does not exist or that only a change set made, REVIEW_IN_PROGRESS;
-- UPDATE otherwise), CreateChangeSet with the template as TemplateBody,
-- DescribeChangeSet until it is made (a change set without changes is
-- deleted: nothing to do), ExecuteChangeSet, then DescribeStackEvents (each
-- new event handed to on_event, oldest first) and DescribeStacks until the
-- stack reaches a final status.
-- remove: DescribeStacks (a stack that does not exist: nothing to do),
-- DeleteStack, then the same wait until DELETE_COMPLETE.
--
-- Expected failures return nil, err: AWS's errors as they come
-- (`ValidationError`, `InsufficientCapabilitiesException`, `AccessDenied`…),
-- `too_large` (a template over 51,200 bytes), `bad_state` (a stack that
-- cannot be updated or removed now), `deploy_failed` (the change set or the
-- stack failed: err.reasons lists the failed events), `deploy_timeout`
-- (still in progress after `wait` seconds; CloudFormation carries on).
local core = require "dynlog.core"
local errors = require "dynlog.errors"
local options = require "dynlog.base.options"
local query = require "dynlog.aws.query"

local error, ipairs, pairs, tostring, type = error, ipairs, pairs, tostring, type
local math_min = math.min
local str_find, str_format = string.find, string.format
local tbl_concat, tbl_sort = table.concat, table.sort

local _M = {}

--- The largest template CloudFormation takes in a request (TemplateBody);
-- a larger one must be uploaded to S3 and given as TemplateURL, which
-- dynlog does not do.
_M.MAX_TEMPLATE_BODY = 51200

--- How long deploy and remove wait by default, in seconds.
_M.DEFAULT_WAIT = 3600

local POLL_FIRST, POLL_MAX = 2, 10

local DEPLOY = options.known{
  "client", "stack", "template", "parameters", "capabilities", "on_event", "wait", "sleep", "now",
  "poll_interval", "max_poll_interval",
}
local REMOVE = options.known{ "client", "stack", "on_event", "wait", "sleep", "now", "poll_interval",
  "max_poll_interval" }

---------------------------------------------------------------------------
-- Arguments
---------------------------------------------------------------------------

--- valid_stack_name(name) -> true, or false and why: CloudFormation's rule,
-- a letter then letters, digits and hyphens, at most 128 characters.
function _M.valid_stack_name(name)
  if type(name) ~= "string" or not str_find(name, "^%a[%w%-]*$") or #name > 128 then
    return false, "a stack name is a letter followed by letters, digits and hyphens, at most 128 characters"
  end
  return true
end

local function check_common(where, opts, known)
  if type(opts) ~= "table" then error(where .. ": expects a table of options", 3) end
  options.check(opts, known, where, 3)
  local c = opts.client
  if type(c) ~= "table" or type(c._request) ~= "function" then
    error(where .. ": client must be a dynlog client", 3)
  end
  local ok, why = _M.valid_stack_name(opts.stack)
  if not ok then error(where .. ": stack: " .. why .. ", got " .. tostring(opts.stack), 3) end
  for _, name in ipairs({ "on_event", "sleep", "now" }) do
    if opts[name] ~= nil and type(opts[name]) ~= "function" then
      error(where .. ": " .. name .. " must be a function", 3)
    end
  end
  for _, name in ipairs({ "wait", "poll_interval", "max_poll_interval" }) do
    local v = opts[name]
    if v ~= nil and (type(v) ~= "number" or not (v > 0)) then
      error(where .. ": " .. name .. " must be a positive number of seconds", 3)
    end
  end
end

-- The template's text: JSON for a table, a string as it is.
local function template_body(template)
  if type(template) == "string" then return template end
  local body, code, message = core.json_encode_safe(template)
  if not body then return nil, errors.new(code or "invalid_argument", "template: " .. tostring(message)) end
  return body
end

-- { Key = value } → CloudFormation's Parameters list, sorted by key.
local function parameter_list(parameters, where)
  local keys = {}
  for k, v in pairs(parameters or {}) do
    if type(k) ~= "string" then error(where .. ": parameters: every key must be a string", 4) end
    local tv = type(v)
    if tv ~= "string" and tv ~= "number" and tv ~= "boolean" then
      error(where .. ": parameters." .. k .. " must be a string, a number or a boolean, got " .. tv, 4)
    end
    keys[#keys + 1] = k
  end
  tbl_sort(keys)
  local list = core.array({})
  for i, k in ipairs(keys) do list[i] = { ParameterKey = k, ParameterValue = tostring(parameters[k]) } end
  return list
end

---------------------------------------------------------------------------
-- Waiting
---------------------------------------------------------------------------

-- The pacing of one wait: sleeps that grow from poll_interval to
-- max_poll_interval, and a deadline `wait` seconds after the start.
local function pacer(c, opts)
  local now = opts.now or core.monotonic
  local sleep = opts.sleep or c.sleep or core.sleep
  local first = opts.poll_interval or POLL_FIRST
  local max = opts.max_poll_interval or POLL_MAX
  if max < first then max = first end
  local deadline = now() + (opts.wait or _M.DEFAULT_WAIT)
  local delay = first
  return {
    -- false once the deadline is past; otherwise sleeps and returns true.
    pause = function()
      local left = deadline - now()
      if left <= 0 then return false end
      sleep(math_min(delay, left))
      delay = math_min(max, delay * 1.5)
      return true
    end,
    wait = opts.wait or _M.DEFAULT_WAIT,
  }
end

local function call(c, action, params)
  return query.call(c, "cloudformation", action, params)
end

local function does_not_exist(err)
  return err and err.code == "ValidationError" and str_find(tostring(err.message), "does not exist", 1, true) ~= nil
end

-- The stack's description, false when it does not exist, or nil, err.
local function describe(c, name)
  local res, err = call(c, "DescribeStacks", { StackName = name })
  if not res then
    if does_not_exist(err) then return false end
    return nil, err
  end
  local stack = query.list(res.Stacks)[1]
  if type(stack) ~= "table" then return false end
  return stack
end

local function outputs_of(stack)
  local out = {}
  for _, o in ipairs(query.list(stack.Outputs)) do
    if type(o) == "table" and type(o.OutputKey) == "string" then out[o.OutputKey] = o.OutputValue end
  end
  return out
end

local function text(v)
  if v == nil or v == "" then return nil end
  return v
end

local function event_of(e)
  return {
    event_id = e.EventId, timestamp = e.Timestamp, logical_id = e.LogicalResourceId,
    physical_id = text(e.PhysicalResourceId), type = e.ResourceType, status = e.ResourceStatus,
    reason = text(e.ResourceStatusReason),
  }
end

local STACK_TYPE = "AWS::CloudFormation::Stack"

-- The stack's events as they come: `mark()` takes the events already there
-- as seen; `poll()` hands every new one to on_event, oldest first (the API
-- gives them newest first, in pages). Events whose status ends in _FAILED
-- are kept for the error.
local function event_reader(c, stack_id, on_event)
  local seen, failed = {}, {}
  local reader = { failed = failed }

  local function newest(stop_at_seen)
    local fresh, token = {}, nil
    repeat
      local res, err = call(c, "DescribeStackEvents", { StackName = stack_id, NextToken = token })
      if not res then return nil, err end
      for _, e in ipairs(query.list(res.StackEvents)) do
        if seen[e.EventId] and stop_at_seen then return fresh end
        fresh[#fresh + 1] = e
      end
      token = text(res.NextToken)
    until not token or not stop_at_seen
    return fresh
  end

  function reader.mark()
    local first, err = newest(false)
    if not first then return nil, err end
    for _, e in ipairs(first) do seen[e.EventId] = true end
    return true
  end

  function reader.poll()
    local fresh, err = newest(true)
    if not fresh then return nil, err end
    for i = #fresh, 1, -1 do
      local e = fresh[i]
      seen[e.EventId] = true
      local ev = event_of(e)
      if ev.status and str_find(ev.status, "_FAILED$") then failed[#failed + 1] = ev end
      -- Why the stack rolls back: the reason of its own ROLLBACK event.
      if ev.type == STACK_TYPE and ev.reason and str_find(tostring(ev.status), "ROLLBACK_IN_PROGRESS$") then
        reader.rollback_reason = ev.reason
      end
      if on_event then on_event(ev) end
    end
    return true
  end

  return reader
end

local function settled(status)
  return status ~= nil and not str_find(status, "_IN_PROGRESS$")
    and (str_find(status, "_COMPLETE$") or str_find(status, "_FAILED$")) ~= nil
end

-- The failure of a stack: its status, its reason and the reasons of the
-- events that failed.
local function stack_failure(name, stack, reader)
  local failed = reader.failed
  local parts = {}
  for _, ev in ipairs(failed) do
    parts[#parts + 1] = str_format("%s (%s) %s: %s", tostring(ev.logical_id), tostring(ev.type),
      tostring(ev.status), tostring(ev.reason or "no reason given"))
  end
  local reason = text(stack.StackStatusReason) or reader.rollback_reason
  if #parts == 0 and reason then parts[1] = reason end
  local message = "stack " .. name .. " ended in " .. tostring(stack.StackStatus)
  if #parts > 0 then message = message .. ": " .. tbl_concat(parts, "; ") end
  return errors.new("deploy_failed", message, { stack = name, status = stack.StackStatus,
    stack_reason = reason, reasons = failed })
end

-- Follows the stack until it settles: { status, stack_id, outputs } or
-- nil, err. `want` is the status of success.
local function follow(c, name, stack_id, reader, pace, want)
  while true do
    local ok, err = reader.poll()
    if not ok then return nil, err end
    local stack
    stack, err = describe(c, stack_id)
    if stack == nil then return nil, err end
    -- A deleted stack asked for by its id is still described (DELETE_COMPLETE);
    -- one that is not at all is gone all the same.
    if stack == false then
      if want == "DELETE_COMPLETE" then return { status = "DELETE_COMPLETE", stack_id = stack_id, outputs = {} } end
      return nil, errors.new("deploy_failed", "stack " .. name .. " disappeared while it was deployed",
        { stack = name })
    end
    local status = stack.StackStatus
    if settled(status) then
      ok, err = reader.poll() -- the events that came with the last change
      if not ok then return nil, err end
      if status == want then
        return { status = status, stack_id = stack.StackId or stack_id, outputs = outputs_of(stack) }
      end
      return nil, stack_failure(name, stack, reader)
    end
    if not pace.pause() then
      return nil, errors.new("deploy_timeout", "stack " .. name .. " is still " .. tostring(status) .. " after "
        .. pace.wait .. " s; CloudFormation goes on with it", { stack = name, status = status, retryable = true })
    end
  end
end

---------------------------------------------------------------------------
-- deploy
---------------------------------------------------------------------------

local NO_CHANGES = { "didn't contain changes", "No updates are to be performed" }

local function no_changes(reason)
  for _, words in ipairs(NO_CHANGES) do
    if str_find(tostring(reason), words, 1, true) then return true end
  end
  return false
end

-- Whether a stack in `status` takes a change set, and of which type.
local function change_set_type(name, stack)
  if stack == false then return "CREATE" end
  local status = stack.StackStatus
  if status == "REVIEW_IN_PROGRESS" then return "CREATE" end
  if status == "ROLLBACK_COMPLETE" or status == "ROLLBACK_FAILED" or status == "CREATE_FAILED"
      or status == "DELETE_FAILED" then
    return nil, errors.new("bad_state", "stack " .. name .. " is in " .. status .. " and cannot be updated: remove"
      .. " it (dynlog remove --stack " .. name .. ") and deploy again", { stack = name, status = status })
  end
  if not settled(status) then
    return nil, errors.new("bad_state", "stack " .. name .. " is " .. tostring(status) .. ": another operation is"
      .. " in progress; wait until it ends", { stack = name, status = status, retryable = true })
  end
  return "UPDATE"
end

-- Waits for the change set to be made: its description, or nil, err.
local function wait_change_set(c, name, id, pace)
  while true do
    local cs, err = call(c, "DescribeChangeSet", { ChangeSetName = id, StackName = name })
    if not cs then return nil, err end
    local status, execution = cs.Status, text(cs.ExecutionStatus)
    if status == "FAILED" then return cs end
    if status == "CREATE_COMPLETE" then
      if execution == nil or execution == "AVAILABLE" then return cs end
      if execution ~= "UNAVAILABLE" then
        return nil, errors.new("deploy_failed", "the change set of stack " .. name .. " cannot be executed: its"
          .. " execution status is " .. execution, { stack = name, status = execution, reasons = {} })
      end
    end
    if not pace.pause() then
      return nil, errors.new("deploy_timeout", "the change set of stack " .. name .. " is still "
        .. tostring(status) .. " after " .. pace.wait .. " s", { stack = name, status = status, retryable = true })
    end
  end
end

--- deploy(opts) -> { status, stack_id, outputs = { key = value }, unchanged }
-- | nil, err. See the top of the file.
function _M.deploy(opts)
  check_common("cloudformation.deploy", opts, DEPLOY)
  if type(opts.template) ~= "table" and type(opts.template) ~= "string" then
    error("cloudformation.deploy: template must be a table or JSON text", 2)
  end
  if opts.parameters ~= nil and type(opts.parameters) ~= "table" then
    error("cloudformation.deploy: parameters must be a table of key = value", 2)
  end
  local capabilities = opts.capabilities or {}
  if type(capabilities) ~= "table" then error("cloudformation.deploy: capabilities must be a list of strings", 2) end
  for _, cap in ipairs(capabilities) do
    if type(cap) ~= "string" then error("cloudformation.deploy: capabilities must be a list of strings", 2) end
  end
  local parameters = parameter_list(opts.parameters, "cloudformation.deploy")
  local c, name = opts.client, opts.stack

  local body, berr = template_body(opts.template)
  if not body then return nil, berr end
  if #body > _M.MAX_TEMPLATE_BODY then
    return nil, errors.new("too_large", "the template is " .. #body .. " bytes; CloudFormation takes at most "
      .. _M.MAX_TEMPLATE_BODY .. " bytes in a request, and a larger template must be uploaded to S3 (TemplateURL),"
      .. " which dynlog does not do: make the template smaller, or deploy it with the AWS CLI's"
      .. " --s3-bucket", { stack = name })
  end

  local pace = pacer(c, opts)
  local stack, err = describe(c, name)
  if stack == nil then return nil, err end
  local kind
  kind, err = change_set_type(name, stack)
  if not kind then return nil, err end

  local params = {
    StackName = name, ChangeSetName = "dynlog-" .. core.ulid(), ChangeSetType = kind, TemplateBody = body,
    Description = "dynlog deploy",
  }
  if #parameters > 0 then params.Parameters = parameters end
  if #capabilities > 0 then
    local list = core.array({})
    for i, cap in ipairs(capabilities) do list[i] = cap end
    params.Capabilities = list
  end
  local made
  made, err = call(c, "CreateChangeSet", params)
  if not made then return nil, err end
  local cs_id, stack_id = made.Id, made.StackId

  local cs
  cs, err = wait_change_set(c, name, cs_id, pace)
  if not cs then return nil, err end
  if cs.Status == "FAILED" then
    -- A change set dynlog made and will never execute: it goes.
    local _, derr = call(c, "DeleteChangeSet", { ChangeSetName = cs_id, StackName = name })
    if no_changes(cs.StatusReason) then
      if derr then return nil, derr end
      local now_stack
      now_stack, err = describe(c, stack_id)
      if not now_stack then return nil, err or errors.new("deploy_failed", "stack " .. name .. " disappeared") end
      return { status = now_stack.StackStatus, stack_id = now_stack.StackId or stack_id,
               outputs = outputs_of(now_stack), unchanged = true }
    end
    return nil, errors.new("deploy_failed", "the change set of stack " .. name .. " failed: "
      .. tostring(text(cs.StatusReason) or "no reason given"), { stack = name, status = "FAILED",
      stack_reason = text(cs.StatusReason), reasons = {} })
  end

  local reader = event_reader(c, stack_id, opts.on_event)
  local ok
  ok, err = reader.mark()
  if not ok then return nil, err end
  made, err = call(c, "ExecuteChangeSet", { ChangeSetName = cs_id, StackName = name })
  if not made then return nil, err end
  local result
  result, err = follow(c, name, stack_id, reader, pace, kind == "CREATE" and "CREATE_COMPLETE" or "UPDATE_COMPLETE")
  if not result then return nil, err end
  result.unchanged = false
  return result
end

---------------------------------------------------------------------------
-- remove
---------------------------------------------------------------------------

--- remove(opts) -> { status = "DELETE_COMPLETE", stack_id, unchanged } |
-- nil, err; `unchanged` is true when there was no such stack.
function _M.remove(opts)
  check_common("cloudformation.remove", opts, REMOVE)
  local c, name = opts.client, opts.stack
  local pace = pacer(c, opts)
  local stack, err = describe(c, name)
  if stack == nil then return nil, err end
  if stack == false then return { status = "DELETE_COMPLETE", unchanged = true, outputs = {} } end
  local stack_id = stack.StackId
  if not settled(stack.StackStatus) and stack.StackStatus ~= "DELETE_IN_PROGRESS"
      and stack.StackStatus ~= "REVIEW_IN_PROGRESS" then
    return nil, errors.new("bad_state", "stack " .. name .. " is " .. tostring(stack.StackStatus) .. ": another"
      .. " operation is in progress; wait until it ends", { stack = name, status = stack.StackStatus,
      retryable = true })
  end
  local reader = event_reader(c, stack_id, opts.on_event)
  local ok
  ok, err = reader.mark()
  if not ok then return nil, err end
  if stack.StackStatus ~= "DELETE_IN_PROGRESS" then
    ok, err = call(c, "DeleteStack", { StackName = stack_id })
    if not ok then return nil, err end
  end
  local result
  result, err = follow(c, name, stack_id, reader, pace, "DELETE_COMPLETE")
  if not result then return nil, err end
  result.unchanged = false
  return result
end

return _M
