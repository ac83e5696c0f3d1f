--- `dynlog deploy` and `dynlog remove`: a pipeline's stack on AWS, through
-- CloudFormation's API (dynlog.deploy.cloudformation), its progress on
-- stderr, its outputs on stdout.
local cfn = require "dynlog.deploy.cloudformation"
local cli_args = require "dynlog.cli.args"
local description = require "dynlog.deploy.description"
local output = require "dynlog.cli.output"
local template = require "dynlog.deploy.template"

local ipairs, pairs, tostring = ipairs, pairs, tostring
local math_max, math_min = math.max, math.min
local str_format, str_gsub, str_match = string.format, string.gsub, string.match
local tbl_sort = table.sort
local check_count, new_client, usage_error = cli_args.check_count, cli_args.new_client, cli_args.usage_error
local positive_seconds = cli_args.positive_seconds
local encode, fail, printable = output.encode, output.fail, output.printable

local _M = {}

--- The description file read when --description is not given.
_M.DEFAULT_DESCRIPTION = "pipeline.lua"

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

local function deploy_api(ctx, path)
  local stack = stack_arg(ctx)
  local parameters = parameters_arg(ctx)
  local pace = pacing(ctx)
  local d, derr = description.load(path)
  if not d then return failed(ctx, derr) end
  local t, terr = template.build(d)
  if not t then return failed(ctx, terr) end
  local c, cerr = client_for(ctx, d.log and d.log.table)
  if not c then return failed(ctx, cerr) end
  ctx.err:write("dynlog: deploying ", printable(path), " as stack ", stack, " in ", tostring(c.region), "\n")
  local result, err = cfn.deploy{ client = c, stack = stack, template = t, parameters = parameters,
    capabilities = CAPABILITIES, on_event = progress(ctx), wait = pace.wait, poll_interval = pace.poll_interval,
    max_poll_interval = pace.max_poll_interval }
  if not result then return failed(ctx, err) end
  print_result(ctx, stack, result)
  return 0
end

_M.deploy = {
  usage = "deploy [--description FILE] --stack NAME",
  summary = "deploy a pipeline's stack to AWS through CloudFormation",
  options = { description = "value", stack = "value", parameter = "list", wait = "value", poll = "value" },
  no_table = true,
  help = [[
Deploys the pipeline that --description FILE describes (default
]] .. _M.DEFAULT_DESCRIPTION .. [[) as the CloudFormation stack --stack NAME, through
CloudFormation's API: a change set (CREATE for a new stack, UPDATE for an
existing one), executed, then followed until the stack settles. Each stack
event is a line on stderr (time, logical id, type, status, reason); the
stack's status and outputs are printed. An update that changes nothing does
nothing. A failed deployment rolls back and exits 1 with each failed
resource's reason.
  --description FILE   the pipeline's description (a Lua file returning it)
  --stack NAME         the stack: letters, digits and hyphens, from a letter
  --parameter K=V      a template parameter (repeat for more)
  --wait SECONDS       give up waiting after this long (default 3600;
                       CloudFormation carries on)
  --poll SECONDS       the first pause between polls, growing (default 2)
The endpoint is CloudFormation's in --region, or AWS_ENDPOINT_URL_CLOUDFORMATION.
With --json: {"stack", "status", "stack_id", "outputs", "unchanged"}.]],
  run = function(ctx, args)
    check_count(args, 0, 0, ctx)
    return deploy_api(ctx, ctx.opts.description or _M.DEFAULT_DESCRIPTION)
  end,
}

_M.remove = {
  usage = "remove --stack NAME",
  summary = "remove a deployed stack and wait until it is gone",
  options = { stack = "value", wait = "value", poll = "value" },
  no_table = true,
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
