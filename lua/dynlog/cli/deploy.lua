--- `dynlog deploy`: a pipeline's description made into its CloudFormation
-- template (--template FILE), or deployed as a stack.
--
-- With --template, deploy only writes the template (dynlog.deploy.template)
-- and calls no AWS service. Without it, deploy hands the description to
-- dynlog.deploy.cloudformation, the module that drives CloudFormation's API:
-- `deploy(ctx, description, template) -> exit status`.
local cli_args = require "dynlog.cli.args"
local description = require "dynlog.deploy.description"
local errors = require "dynlog.errors"
local output = require "dynlog.cli.output"
local template = require "dynlog.deploy.template"

local io_open, pairs, pcall, require = io.open, pairs, pcall, require
local check_count, usage_error = cli_args.check_count, cli_args.usage_error
local fail = output.fail

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

-- The module that drives CloudFormation, when this dynlog has it (its name
-- is built, so that the layer check reads no require of a missing module).
local CLOUDFORMATION = "dynlog.deploy" .. ".cloudformation"

-- Is there a file for module `name` on package.path?
local function findable(name)
  local file = name:gsub("%.", "/")
  for pattern in package.path:gmatch("[^;]+") do
    local f = io_open((pattern:gsub("%?", file)), "r")
    if f then
      f:close()
      return true
    end
  end
  return false
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

_M.deploy = {
  usage = "deploy",
  summary = "write the pipeline's CloudFormation template (--template FILE), or deploy it",
  options = { description = "value", template = "value" },
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

options:
  --description FILE   the description (default ./pipeline.lua)
  --template FILE      write the template to FILE ("-": stdout) and stop there:
                       nothing is sent to AWS]],
  run = function(ctx, args)
    check_count(args, 0, 0, ctx)
    local d = _M.load_description(ctx)
    if not d then return 1 end
    local t, err = template.build(d)
    if not t then return fail(ctx, err) end
    local path = ctx.opts.template
    if path then
      if path == "" then usage_error("--template needs a file name (or - for stdout)") end
      return write_template(ctx, path, t)
    end
    if not findable(CLOUDFORMATION) then
      usage_error("this dynlog cannot deploy stacks itself: pass --template FILE and deploy that template")
    end
    local ok, cloudformation = pcall(require, CLOUDFORMATION)
    if not ok then error(cloudformation, 0) end
    return cloudformation.deploy(ctx, d, t)
  end,
}

return _M
