--- `dynlog deploy` and `dynlog remove`: a pipeline's description made into
-- its CloudFormation template (--template FILE), or deployed as a stack
-- through CloudFormation's API (--stack NAME, dynlog.deploy.cloudformation),
-- its progress on stderr and its outputs on stdout; a stack removed.
--
-- With --template, deploy only writes the template (dynlog.deploy.template)
-- and calls no AWS service.
local cfn = require "dynlog.deploy.cloudformation"
local cli_args = require "dynlog.cli.args"
local description = require "dynlog.deploy.description"
local errors = require "dynlog.errors"
local output = require "dynlog.cli.output"
local template = require "dynlog.deploy.template"

local io_open, ipairs, pairs, tostring = io.open, ipairs, pairs, tostring
local math_max, math_min = math.max, math.min
local str_format, str_gsub, str_match = string.format, string.gsub, string.match
local tbl_sort = table.sort
local check_count, new_client, usage_error = cli_args.check_count, cli_args.new_client, cli_args.usage_error
local positive_seconds = cli_args.positive_seconds
local encode, fail, printable = output.encode, output.fail, output.printable

local _M = {}

-- The description's file: --description, else ./pipeline.lua.
_M.DEFAULT_DESCRIPTION = "pipeline.lua"

--- load_description(ctx) -> the checked description, or nil after telling why (exit status 1).
function _M.load_description(ctx)
  local path = ctx.opts.description or _M.DEFAULT_DESCRIPTION
  local f = io_open(path, "r")
  if not f then
    usage_error("no description " .. path .. ": pass --description FILE (e.g. examples/users/pipeline.lua)")
  end
  f:close()
  local d, err = description.load(path)
  if not d then
    fail(ctx, err, "see docs/deploying.md for the description's fields")
    return nil
  end
  return d
end

local function write_template(ctx, path, t)
  local text = template.encode(t)
  if path == "-" then
    ctx.out:write(text)
    return 0
  end
  local tmp = path .. ".tmp"
  local f, oerr = io_open(tmp, "w")
  if not f then return fail(ctx, errors.new("io", "cannot write " .. path .. ": " .. oerr)) end
  local ok, werr = f:write(text)
  local closed, cerr = f:close()
  if not ok or not closed then
    os.remove(tmp)
    return fail(ctx, errors.new("io", "cannot write " .. path .. ": " .. tostring(werr or cerr)))
  end
  local renamed, rerr = os.rename(tmp, path)
  if not renamed then
    os.remove(tmp)
    return fail(ctx, errors.new("io", "cannot write " .. path .. ": " .. tostring(rerr)))
  end
  local count = 0
  for _ in pairs(t.Resources) do count = count + 1 end
  if ctx.json then
    ctx.out:write(output.encode({ template = path, resources = count }), "\n")
  else
    ctx.out:write("wrote ", path, ": ", count, " resources\n")
  end
  return 0
end

-- The capabilities a template of dynlog needs: its roles have names.
local CAPABILITIES = { "CAPABILITY_NAMED_IAM" }

local function stack_arg(ctx)
  local name = ctx.opts.stack
  if name == nil then usage_error("no stack: pass --stack NAME") end
  local ok, why = cfn.valid_stack_name(name)
  if not ok then usage_error("--stack: " .. why .. ", got " .. name) end
  return name
end

-- --parameter K=V, as often as needed → { K = V }.
local function parameters_arg(ctx)
  local out = {}
  for _, text in ipairs(ctx.opts.parameter or {}) do
    local k, v = str_match(text, "^([%w]+)=(.*)$")
    if not k then usage_error("--parameter must be KEY=VALUE (KEY of letters and digits), got " .. text) end
    if out[k] ~= nil then usage_error("--parameter " .. k .. " given twice") end
    out[k] = v
  end
  return out
end

-- How the wait is paced: --poll seconds at first, growing to ten times
-- that (at most 10 s, and never below --poll).
local function pacing(ctx)
  local poll = positive_seconds(ctx.opts, "poll") or 2
  return { poll_interval = poll, max_poll_interval = math_max(poll, math_min(10, poll * 10)),
           wait = positive_seconds(ctx.opts, "wait") or cfn.DEFAULT_WAIT }
end

-- A client for CloudFormation: the table it names is not used, but a
-- client has one (the description's log table, else --table, else a name).
local function client_for(ctx, table_name)
  ctx.table = table_name or ctx.opts.table or ctx.getenv("DYNLOG_TABLE") or "dynlog-deploy"
  ctx.sort_key = ctx.sort_key or "ulid"
  return new_client(ctx)
end

-- One progress line per stack event on stderr.
local function progress(ctx)
  return function(ev)
    local line = str_format("%-24s  %-28s %-32s %s", tostring(ev.timestamp), tostring(ev.logical_id),
      tostring(ev.type), tostring(ev.status))
    if ev.reason then line = line .. "  " .. ev.reason end
    ctx.err:write(printable(line), "\n")
    ctx.err:flush()
  end
end

local function print_result(ctx, stack, result)
  if ctx.json then
    ctx.out:write(encode({ stack = stack, status = result.status, stack_id = result.stack_id,
                           outputs = result.outputs, unchanged = result.unchanged }), "\n")
    return
  end
  ctx.out:write("stack    ", printable(stack), "\n")
  ctx.out:write("status   ", printable(tostring(result.status)), result.unchanged and " (nothing to do)" or "", "\n")
  local keys, width = {}, 0
  for k in pairs(result.outputs or {}) do
    keys[#keys + 1] = k
    width = math_max(width, #k)
  end
  tbl_sort(keys)
  if #keys > 0 then ctx.out:write("outputs\n") end
  for _, k in ipairs(keys) do
    ctx.out:write("  ", printable(k), (" "):rep(width - #k + 2), printable(tostring(result.outputs[k])), "\n")
  end
end

local HINTS = {
  deploy_failed = "the reasons above say which resources failed and why; `dynlog remove --stack NAME` removes a"
    .. " stack whose creation failed",
  deploy_timeout = "CloudFormation goes on without dynlog: run the command again later, or pass a longer --wait",
  bad_state = "see the stack in the CloudFormation console, or `dynlog remove --stack NAME`",
  too_large = "a template over 51,200 bytes must go through S3: `aws cloudformation deploy --s3-bucket`",
  ValidationError = "check --stack, --parameter and the template; AWS_ENDPOINT_URL_CLOUDFORMATION and --region",
  InsufficientCapabilitiesException = "the template needs a capability dynlog did not grant",
  AccessDenied = "the deploying identity lacks a permission: see docs/deploying.md, \"Deploying to AWS\"",
}

local function failed(ctx, err)
  local hint = HINTS[err.code]
  if hint and ctx.opts.stack then hint = str_gsub(hint, "NAME", ctx.opts.stack) end
  return fail(ctx, err, hint)
end

-- Deploys the description's template as the stack --stack NAME.
local function deploy_api(ctx, stack, parameters, pace, d, t)
  local c, cerr = client_for(ctx, d.log and d.log.table)
  if not c then return failed(ctx, cerr) end
  ctx.err:write("dynlog: deploying ", printable(ctx.opts.description or _M.DEFAULT_DESCRIPTION), " as stack ",
    stack, " in ", tostring(c.region), "\n")
  local result, err = cfn.deploy{ client = c, stack = stack, template = t, parameters = parameters,
    capabilities = CAPABILITIES, on_event = progress(ctx), wait = pace.wait, poll_interval = pace.poll_interval,
    max_poll_interval = pace.max_poll_interval }
  if not result then return failed(ctx, err) end
  print_result(ctx, stack, result)
  return 0
end

_M.deploy = {
  usage = "deploy [--description FILE] (--stack NAME | --template FILE)",
  summary = "deploy the pipeline's stack to AWS, or write its CloudFormation template",
  options = { description = "value", template = "value", stack = "value", parameter = "list", wait = "value",
              poll = "value" },
  -- the tables are the description's: no --table needed
  table = false,
  help = [[
Reads the pipeline's description (a Lua file returning a table: see
docs/deploying.md) and makes its CloudFormation template: the tables (point-in-
time recovery, encryption, TTL, the log's NEW_AND_OLD_IMAGES stream, tags), the
bus and its archive, the rules and their targets (API destinations with their
connections, or Lambda functions), retry policies and dead-letter queues, the
trigger (a policy for the consumer's hosts, a Lambda event-source mapping or
an EventBridge Pipe), IAM roles and policies scoped to the template's own
resources, and the outputs (stream ARN, bus ARN, endpoints, table names).
Secrets are never in the template: a connection names a Secrets Manager
secret or a NoEcho parameter.

With --stack NAME, deploys that template as the CloudFormation stack NAME
through CloudFormation's API: a change set (CREATE for a new stack, UPDATE
for an existing one), executed, then followed until the stack settles. Each
stack event is a line on stderr (time, logical id, type, status, reason); the
stack's status and outputs are printed. An update that changes nothing does
nothing. A failed deployment rolls back and exits 1 with each failed
resource's reason.

options:
  --description FILE   the description (default ./pipeline.lua)
  --template FILE      write the template to FILE ("-": stdout) and stop there:
                       nothing is sent to AWS
  --stack NAME         deploy to the stack NAME: letters, digits and hyphens,
                       from a letter
  --parameter K=V      a template parameter (repeat for more)
  --wait SECONDS       give up waiting after this long (default 3600;
                       CloudFormation carries on)
  --poll SECONDS       the first pause between polls, growing (default 2)
The endpoint is CloudFormation's in --region, or AWS_ENDPOINT_URL_CLOUDFORMATION.
With --json: {"stack", "status", "stack_id", "outputs", "unchanged"}, or
{"template", "resources"} with --template.]],
  run = function(ctx, args)
    check_count(args, 0, 0, ctx)
    local path = ctx.opts.template
    local stack, parameters, pace
    if path then
      if path == "" then usage_error("--template needs a file name (or - for stdout)") end
      if ctx.opts.stack then usage_error("--template writes the template, --stack deploys it: pass one of them") end
    else
      if ctx.opts.stack == nil then
        usage_error("no stack: pass --stack NAME to deploy, or --template FILE to write the template")
      end
      stack, parameters, pace = stack_arg(ctx), parameters_arg(ctx), pacing(ctx)
    end
    local d = _M.load_description(ctx)
    if not d then return 1 end
    local t, err = template.build(d)
    if not t then return fail(ctx, err) end
    if path then return write_template(ctx, path, t) end
    return deploy_api(ctx, stack, parameters, pace, d, t)
  end,
}

_M.remove = {
  usage = "remove --stack NAME",
  summary = "remove a deployed stack and wait until it is gone",
  options = { stack = "value", wait = "value", poll = "value" },
  table = false,
  help = [[
Deletes the CloudFormation stack --stack NAME and waits for DELETE_COMPLETE,
each stack event a line on stderr. A stack that does not exist is nothing to
do. Everything the stack made goes with it, the tables and their events
included, unless the template keeps them (DeletionPolicy: Retain).
  --stack NAME         the stack
  --wait SECONDS       give up waiting after this long (default 3600)
  --poll SECONDS       the first pause between polls, growing (default 2)
With --json: {"stack", "status", "stack_id", "unchanged"}.]],
  run = function(ctx, args)
    check_count(args, 0, 0, ctx)
    local stack = stack_arg(ctx)
    local pace = pacing(ctx)
    local c, cerr = client_for(ctx)
    if not c then return failed(ctx, cerr) end
    local result, err = cfn.remove{ client = c, stack = stack, on_event = progress(ctx), wait = pace.wait,
      poll_interval = pace.poll_interval, max_poll_interval = pace.max_poll_interval }
    if not result then return failed(ctx, err) end
    if ctx.json then
      ctx.out:write(encode({ stack = stack, status = result.status, stack_id = result.stack_id,
                             unchanged = result.unchanged }), "\n")
    else
      ctx.out:write("stack    ", stack, "\n", "status   ", result.unchanged and "no such stack (nothing to do)"
        or result.status, "\n")
    end
    return 0
  end,
}

return _M
