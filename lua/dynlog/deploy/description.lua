--- The description of a pipeline: one Lua table (a file that returns it)
-- from which `dynlog up` runs the pipeline on this machine and
-- `dynlog deploy` writes its CloudFormation template.
--
--   local description = require "dynlog.deploy.description"
--   local d, err = description.load("examples/users/pipeline.lua")
--   local d, err = description.check(tbl)      -- the same, from a table
--
-- Both return the description with its defaults filled in (a new table; the
-- given one is not changed), or `nil, err` with err.code
-- "invalid_description" and a message that starts with the path of the bad
-- field (`rules[1].targets[2].retry.attempts: ...`). Unknown keys are errors,
-- naming the nearest known one. docs/deploying.md describes every field.
local errors = require "dynlog.errors"
local options = require "dynlog.base.options"
local pattern = require "dynlog.eventbridge.pattern"

local error, getmetatable, ipairs, loadfile, next, pairs, pcall, setmetatable, tostring, type =
  error, getmetatable, ipairs, loadfile, next, pairs, pcall, setmetatable, tostring, type
local G = _G
local setfenv = rawget(G, "setfenv") -- LuaJIT
local math_floor, math_huge = math.floor, math.huge
local str_find, str_format, str_match = string.find, string.format, string.match
local tbl_concat, tbl_sort = table.concat, table.sort

local _M = {}

-- A failure inside the walk: thrown as a table, caught by check.
local Invalid = {}
Invalid.__index = Invalid

local function invalid(path, message)
  error(setmetatable({ message = (path ~= "" and path .. ": " or "") .. message }, Invalid), 0)
end

local function join(path, key)
  if type(key) == "number" then return path .. "[" .. key .. "]" end
  if path == "" then return key end
  return path .. "." .. key
end

local function is_integer(v) return type(v) == "number" and v == math_floor(v) and v > -math_huge and v < math_huge end

local function is_list(v)
  if type(v) ~= "table" then return false end
  local n = #v
  for k in pairs(v) do
    if type(k) ~= "number" or k < 1 or k > n or k ~= math_floor(k) then return false end
  end
  return true
end

-- A table's fields: unknown ones are errors (with the nearest known name).
local function fields(v, path, known)
  if type(v) ~= "table" then invalid(path, "must be a table, got " .. type(v)) end
  if not options.valid(v, known) then
    local names = {}
    for k in pairs(v) do
      if not known.set[k] then names[#names + 1] = tostring(k) end
    end
    tbl_sort(names)
    local near = options.nearest(names[1], known)
    invalid(join(path, names[1]), "unknown field" .. (near and str_format(" (did you mean %q?)", near)
      or " (known: " .. tbl_concat(known.names, ", ") .. ")"))
  end
  return v
end

local function string_field(v, path, required, re, what)
  if v == nil then
    if required then invalid(path, "is required") end
    return nil
  end
  if type(v) ~= "string" then invalid(path, "must be a string, got " .. type(v)) end
  if re and not str_find(v, re) then invalid(path, str_format("%q is not %s", v, what)) end
  return v
end

local function boolean_field(v, path, default)
  if v == nil then return default end
  if type(v) ~= "boolean" then invalid(path, "must be true or false, got " .. type(v)) end
  return v
end

local function integer_field(v, path, min, max, default)
  if v == nil then return default end
  if not is_integer(v) then invalid(path, "must be an integer, got " .. tostring(v)) end
  if v < min or v > max then invalid(path, str_format("must be from %d to %d, got %d", min, max, v)) end
  return v
end

local function one_of(v, path, list, default)
  if v == nil then return default end
  for _, name in ipairs(list) do
    if v == name then return v end
  end
  invalid(path, str_format("must be one of %s, got %s", tbl_concat(list, ", "),
    type(v) == "string" and str_format("%q", v) or tostring(v)))
end

-- Names AWS accepts.
local TABLE_NAME = "^[%w_.%-]+$" -- 3 to 255 characters, checked below
local RESOURCE_NAME = "^[%w_.%-]+$" -- bus, rule, target, connection names: at most 64
local LOGICAL = "^[%a][%w%-]*$" -- the description's name: a prefix of resource names
local KMS_ARN = "^arn:aws[%w%-]*:kms:[%w%-]+:%d+:key/[%w%-]+$"
local LUA_MODULE = "^[%a_][%w_]*[%w_.]*$"

local function table_name(v, path)
  string_field(v, path, true, TABLE_NAME, "a DynamoDB table name (letters, digits, _ . -)")
  if #v < 3 or #v > 255 then invalid(path, str_format("%q must be 3 to 255 characters long", v)) end
  return v
end

local function resource_name(v, path, required)
  string_field(v, path, required, RESOURCE_NAME, "a name AWS accepts (letters, digits, _ . -)")
  if v and #v > 64 then invalid(path, str_format("%q is longer than 64 characters", v)) end
  return v
end

local function tags(v, path)
  if v == nil then return {} end
  if type(v) ~= "table" then invalid(path, "must be a table of tag names to values") end
  local out = {}
  for k, value in pairs(v) do
    if type(k) ~= "string" or k == "" or #k > 128 then
      invalid(path, "tag names must be strings of 1 to 128 characters, got " .. tostring(k))
    end
    if str_find(k, "^aws:") then invalid(join(path, k), "tag names may not start with aws:") end
    if type(value) ~= "string" or #value > 256 then
      invalid(join(path, k), "must be a string of at most 256 characters")
    end
    out[k] = value
  end
  return out
end

-- "aws_owned" | "aws_managed" | a KMS key ARN.
local function sse(v, path)
  if v == nil then return { kind = "aws_managed" } end
  if v == "aws_owned" or v == "aws_managed" then return { kind = v } end
  if type(v) == "string" and str_find(v, KMS_ARN) then return { kind = "kms", key = v } end
  invalid(path, "must be \"aws_owned\", \"aws_managed\" or a KMS key ARN "
    .. "(arn:aws:kms:<region>:<account>:key/<id>), got "
    .. (type(v) == "string" and str_format("%q", v) or type(v)))
end

local TABLE = options.known{ "table", "sort_key", "billing", "read_capacity", "write_capacity", "pitr", "sse", "ttl",
                             "tags" }

-- A DynamoDB table: the log (log = true) or one of the others.
local function dynamo_table(v, path, log)
  fields(v, path, TABLE)
  local t = {
    table = table_name(v.table, join(path, "table")),
    billing = one_of(v.billing, join(path, "billing"), { "on_demand", "provisioned" }, "on_demand"),
    pitr = boolean_field(v.pitr, join(path, "pitr"), true),
    sse = sse(v.sse, join(path, "sse")),
    ttl = string_field(v.ttl, join(path, "ttl"), false, "^[%w_.%-]+$", "an attribute name"),
    tags = tags(v.tags, join(path, "tags")),
  }
  if log then
    t.sort_key = one_of(v.sort_key, join(path, "sort_key"), { "ulid", "version" }, "ulid")
  elseif v.sort_key ~= nil then
    invalid(join(path, "sort_key"), "only the log table has a sort-key mode")
  end
  if t.billing == "provisioned" then
    t.read_capacity = integer_field(v.read_capacity, join(path, "read_capacity"), 1, 40000, 5)
    t.write_capacity = integer_field(v.write_capacity, join(path, "write_capacity"), 1, 40000, 5)
  elseif v.read_capacity ~= nil or v.write_capacity ~= nil then
    invalid(join(path, v.read_capacity ~= nil and "read_capacity" or "write_capacity"),
      "only with billing = \"provisioned\"")
  end
  return t
end

-- A secret the template names, never holds: a Secrets Manager secret (its
-- SecretString, or one JSON key of it) or a NoEcho template parameter.
local SECRET = options.known{ "secrets_manager", "json_key", "parameter", "value" }

local function secret(v, path)
  if v == nil then invalid(path, "is required (a Secrets Manager secret or a template parameter)") end
  fields(v, path, SECRET)
  if v.value ~= nil then
    invalid(join(path, "value"), "secrets are never written in the description or the template: name a "
      .. "Secrets Manager secret (secrets_manager = \"name\") or a parameter (parameter = \"Name\")")
  end
  if (v.secrets_manager == nil) == (v.parameter == nil) then
    invalid(path, "needs one of secrets_manager or parameter")
  end
  if v.secrets_manager then
    string_field(v.secrets_manager, join(path, "secrets_manager"), true, "^[%w/_+=.@%-:]+$",
      "a secret name or ARN")
    string_field(v.json_key, join(path, "json_key"), false, "^[%w_.%-]+$", "a JSON key")
    return { secrets_manager = v.secrets_manager, json_key = v.json_key }
  end
  if v.json_key ~= nil then invalid(join(path, "json_key"), "only with secrets_manager") end
  string_field(v.parameter, join(path, "parameter"), true, "^[%a][%w]*$", "a parameter name (letters, digits)")
  return { parameter = v.parameter }
end

local AUTH = options.known{ "kind", "header", "user", "secret" }

local function auth(v, path)
  if v == nil then invalid(path, "is required: the receiver checks an API key or basic credentials") end
  fields(v, path, AUTH)
  local a = { kind = one_of(v.kind, join(path, "kind"), { "api_key", "basic" }) }
  if not a.kind then invalid(join(path, "kind"), "is required (api_key or basic)") end
  if a.kind == "api_key" then
    a.header = string_field(v.header, join(path, "header"), false, "^[%w%-]+$", "a header name") or "x-api-key"
    if v.user ~= nil then invalid(join(path, "user"), "only with kind = \"basic\"") end
  else
    a.user = string_field(v.user, join(path, "user"), true, "^[^:]+$", "a user name without ':'")
    if v.header ~= nil then invalid(join(path, "header"), "only with kind = \"api_key\"") end
  end
  a.secret = secret(v.secret, join(path, "secret"))
  return a
end

local RETRY = options.known{ "max_age", "attempts" }

local function retry(v, path)
  if v == nil then return { max_age = 86400, attempts = 185 } end
  fields(v, path, RETRY)
  return {
    max_age = integer_field(v.max_age, join(path, "max_age"), 60, 86400, 86400),
    attempts = integer_field(v.attempts, join(path, "attempts"), 0, 185, 185),
  }
end

local DEAD_LETTER = options.known{ "retention_days" }

local function dead_letter(v, path)
  if v == nil or v == true then return { retention_days = 14 } end
  if v == false then invalid(path, "every target has a dead-letter queue: give {retention_days = N} or true") end
  fields(v, path, DEAD_LETTER)
  return { retention_days = integer_field(v.retention_days, join(path, "retention_days"), 1, 14, 14) }
end

local TARGET = options.known{ "name", "kind", "endpoint", "auth", "rate_limit", "project", "read_model", "retry",
                              "dead_letter" }

local function target(v, path, d)
  fields(v, path, TARGET)
  local t = {
    name = resource_name(v.name, join(path, "name"), true),
    kind = one_of(v.kind, join(path, "kind"), { "api_destination", "lambda" }),
    project = string_field(v.project, join(path, "project"), true, LUA_MODULE,
      "a Lua module name (its project(event) projects the event)"),
    read_model = string_field(v.read_model, join(path, "read_model"), true),
    retry = retry(v.retry, join(path, "retry")),
    dead_letter = dead_letter(v.dead_letter, join(path, "dead_letter")),
  }
  if not t.kind then invalid(join(path, "kind"), "is required (api_destination or lambda)") end
  if not d.read_models[t.read_model] then
    invalid(join(path, "read_model"), str_format("%q is not one of read_models", t.read_model))
  end
  if t.kind == "api_destination" then
    t.endpoint = string_field(v.endpoint, join(path, "endpoint"), true, "^https://[%w.%-]+[:%d]*/[^%s]*$",
      "an https URL with a path (API destinations call HTTPS endpoints only)")
    t.path = str_match(t.endpoint, "^https://[^/]+(/[^?#]*)")
    t.auth = auth(v.auth, join(path, "auth"))
    t.rate_limit = integer_field(v.rate_limit, join(path, "rate_limit"), 1, 300, 50)
  else
    for _, key in ipairs({ "endpoint", "auth", "rate_limit" }) do
      if v[key] ~= nil then invalid(join(path, key), "only for kind = \"api_destination\"") end
    end
  end
  return t
end

local RULE = options.known{ "name", "pattern", "targets" }

local function rule(v, path, d)
  fields(v, path, RULE)
  local r = { name = resource_name(v.name, join(path, "name"), true) }
  if v.pattern == nil then invalid(join(path, "pattern"), "is required (an EventBridge event pattern)") end
  local ok, perr = pattern.compile(v.pattern)
  if not ok then invalid(join(path, "pattern"), perr.message) end
  r.pattern = v.pattern
  if not is_list(v.targets) or #v.targets == 0 then
    invalid(join(path, "targets"), "must be a list of 1 to 5 targets")
  end
  if #v.targets > 5 then invalid(join(path, "targets"), "EventBridge allows at most 5 targets per rule") end
  r.targets = {}
  for i, t in ipairs(v.targets) do r.targets[i] = target(t, join(join(path, "targets"), i), d) end
  return r
end

local ARCHIVE = options.known{ "retention_days" }
local BUS = options.known{ "name", "archive", "tags" }

local function bus(v, path)
  if v == nil then v = {} end
  fields(v, path, BUS)
  local b = { name = resource_name(v.name, join(path, "name"), false) or "dynamodb-log",
              tags = tags(v.tags, join(path, "tags")) }
  if v.archive ~= nil and v.archive ~= false then
    local a = v.archive == true and {} or v.archive
    fields(a, join(path, "archive"), ARCHIVE)
    b.archive = { retention_days = integer_field(a.retention_days, join(join(path, "archive"), "retention_days"), 0,
      36500, 30) }
  end
  return b
end

local TRIGGER = options.known{ "kind", "batch_size", "max_retries", "workers" }

local function trigger(v, path, d)
  if v == nil then v = { kind = "consumer" } end
  fields(v, path, TRIGGER)
  local t = { kind = one_of(v.kind, join(path, "kind"), { "consumer", "lambda", "pipe" }) }
  if not t.kind then invalid(join(path, "kind"), "is required (consumer, lambda or pipe)") end
  t.batch_size = integer_field(v.batch_size, join(path, "batch_size"), 1, 1000, 100)
  if t.kind == "consumer" then
    if v.max_retries ~= nil then invalid(join(path, "max_retries"), "only for kind = \"lambda\" or \"pipe\"") end
    t.workers = integer_field(v.workers, join(path, "workers"), 1, 64, 1)
  else
    if v.workers ~= nil then invalid(join(path, "workers"), "only for kind = \"consumer\"") end
    t.max_retries = integer_field(v.max_retries, join(path, "max_retries"), 0, 10000, 10)
  end
  if t.kind == "pipe" and d.log.sort_key ~= "ulid" then
    invalid(join(path, "kind"), "a pipe cannot give the detail of a version-mode log (its sort key is a number, "
      .. "which an input template passes as text): use \"consumer\" or \"lambda\"")
  end
  return t
end

local LAMBDA = options.known{ "runtime", "architecture", "memory", "timeout" }

local function lambda(v, path)
  if v == nil then v = {} end
  fields(v, path, LAMBDA)
  return {
    runtime = one_of(v.runtime, join(path, "runtime"), { "provided.al2023", "provided.al2" }, "provided.al2023"),
    architecture = one_of(v.architecture, join(path, "architecture"), { "x86_64", "arm64" }, "x86_64"),
    memory = integer_field(v.memory, join(path, "memory"), 128, 10240, 256),
    timeout = integer_field(v.timeout, join(path, "timeout"), 1, 900, 30),
  }
end

local function named_table(v, path)
  if v == nil then return nil end
  return dynamo_table(v, path, false)
end

local DESCRIPTION = options.known{ "name", "log", "read_models", "checkpoints", "feed", "bus", "trigger", "rules",
                                   "lambda" }

local function walk(v)
  fields(v, "", DESCRIPTION)
  local d = {
    name = string_field(v.name, "name", true, LOGICAL, "a name of letters, digits and '-', starting with a letter"),
  }
  if #d.name > 32 then invalid("name", "must be at most 32 characters (it prefixes the names of roles and queues)") end
  if v.log == nil then invalid("log", "is required (the log table)") end
  d.log = dynamo_table(v.log, "log", true)
  d.read_models = {}
  if v.read_models ~= nil then
    if type(v.read_models) ~= "table" or is_list(v.read_models) and next(v.read_models) ~= nil then
      invalid("read_models", "must be a table of names to tables ({core = {table = \"...\"}})")
    end
    for name, t in pairs(v.read_models) do
      if type(name) ~= "string" or not str_find(name, "^[%a][%w_]*$") then
        invalid("read_models", "names must be identifiers, got " .. tostring(name))
      end
      d.read_models[name] = dynamo_table(t, join("read_models", name), false)
    end
  end
  d.checkpoints = named_table(v.checkpoints, "checkpoints")
  d.feed = named_table(v.feed, "feed")
  d.bus = bus(v.bus, "bus")
  d.trigger = trigger(v.trigger, "trigger", d)
  if d.trigger.kind == "consumer" and not d.checkpoints then
    invalid("checkpoints", "is required with trigger.kind = \"consumer\" (its leases and checkpoints)")
  end
  d.lambda = lambda(v.lambda, "lambda")
  d.rules = {}
  if v.rules ~= nil and not is_list(v.rules) then invalid("rules", "must be a list of rules") end
  local seen = {}
  for i, r in ipairs(v.rules or {}) do
    d.rules[i] = rule(r, join("rules", i), d)
    if seen[d.rules[i].name] then invalid(join(join("rules", i), "name"), "another rule has this name") end
    seen[d.rules[i].name] = true
  end
  local targets = {}
  for i, r in ipairs(d.rules) do
    for j, t in ipairs(r.targets) do
      if targets[t.name] then
        invalid(join(join(join("rules", i), "targets"), j) .. ".name", str_format("another target is named %q", t.name))
      end
      targets[t.name] = true
    end
  end
  local names = {}
  for _, t in ipairs(_M.tables(d)) do
    if names[t.table] then
      invalid(t.path .. ".table", str_format("%q is also %s's table", t.table, names[t.table]))
    end
    names[t.table] = t.path
  end
  return d
end

--- tables(d) -> every table of a checked description, the log first:
-- {{path = "log", table = ..., spec = ...}, ...}, read models by name.
function _M.tables(d)
  local list = { { path = "log", table = d.log.table, spec = d.log } }
  local models = {}
  for name in pairs(d.read_models) do models[#models + 1] = name end
  tbl_sort(models)
  for _, name in ipairs(models) do
    list[#list + 1] = { path = "read_models." .. name, table = d.read_models[name].table, spec = d.read_models[name],
                        name = name }
  end
  if d.checkpoints then
    list[#list + 1] = { path = "checkpoints", table = d.checkpoints.table, spec = d.checkpoints }
  end
  if d.feed then list[#list + 1] = { path = "feed", table = d.feed.table, spec = d.feed } end
  return list
end

-- The descriptions check made (their fields are in canonical form).
local checked = setmetatable({}, { __mode = "k" })

--- is_checked(d) -> true for a description returned by check or load.
function _M.is_checked(d) return checked[d] == true end

--- check(tbl) -> description | nil, err ("invalid_description").
function _M.check(tbl)
  local ok, res = pcall(walk, tbl)
  if ok then
    checked[res] = true
    return res
  end
  if getmetatable(res) == Invalid then return nil, errors.new("invalid_description", res.message) end
  error(res, 0)
end

--- load(path) -> description | nil, err: runs the Lua file (in an empty
-- environment with only the safe standard functions) and checks what it returns.
local SAFE = { "ipairs", "pairs", "tostring", "tonumber", "type", "string", "table", "math", "os", "next",
               "select", "error", "assert" }

function _M.load(path)
  if type(path) ~= "string" then error("description.load: path must be a string", 2) end
  local env = {}
  for _, name in ipairs(SAFE) do env[name] = G[name] end
  env.os = { getenv = os.getenv }
  local chunk, lerr = loadfile(path, "t", env)
  if not chunk then return nil, errors.new("invalid_description", tostring(lerr)) end
  if setfenv then setfenv(chunk, env) end
  local ok, res = pcall(chunk)
  if not ok then return nil, errors.new("invalid_description", path .. ": " .. tostring(res)) end
  local d, err = _M.check(res)
  if not d then
    err.message = path .. ": " .. err.message
    return nil, err
  end
  d.file = path
  return d
end

return _M
