-- dynlog's Lua runtime for AWS Lambda (dynlog.lambda.runtime, the bootstrap of
-- `make lambda`), run as Lambda runs it: a process against the Runtime API,
-- here the loopback one of spec/support/lambda_runtime_api.lua, with
-- DynamoDB Local behind the handlers and a loopback PutEvents answerer for
-- EventBridge.
local ddb = require "spec.support.ddb"
local env = require "spec.support.env"
local handler = require "dynlog.pipeline.handler"
local json = require "dynlog.json"
local lambda = require "spec.support.lambda"
local run = require "spec.support.run"
local server = require "spec.support.server"
local stream = require "spec.support.stream"

local RUNTIME = "lua5.4 -e 'os.exit(require(\"dynlog.lambda.runtime\").main())'"

-- The function's own code (LAMBDA_TASK_ROOT): a module of functions and a
-- projection's spec.
local FNS = [[
local core = require "dynlog.core"
local errors = require "dynlog.errors"
local M = {}
function M.echo(event, ctx)
  return { event = event, request_id = ctx.aws_request_id, arn = ctx.invoked_function_arn,
           trace_id = ctx.trace_id, env_trace = os.getenv("_X_AMZN_TRACE_ID"), deadline_ms = ctx.deadline_ms,
           remaining = ctx:remaining_time_ms(), client_context = ctx.client_context, identity = ctx.identity }
end
function M.boom() error("the handler raised") end
function M.fail() return nil, errors.new("conflict", "the read model moved") end
function M.slow(_, ctx) core.sleep(ctx:remaining_time_ms() / 1000 + 0.3) return { done = true } end
function M.mark() local f = assert(io.open(os.getenv("MARK_FILE"), "w")) f:write("ran") f:close() return {} end
function M.unencodable() return { f = print } end
return M
]]

local MODEL = [[
return {
  table = os.getenv("READ_MODEL_TABLE"),
  handlers = {
    signup = function(_, ev) return { name = ev.payload.name } end,
    rename = function(user, ev) user.name = ev.payload.name return user end,
  },
}
]]

local function tmpdir()
  local p = assert(io.popen("mktemp -d"))
  local dir = p:read("*l")
  p:close()
  return dir
end

local task = tmpdir()
run.write_file(task .. "/fns.lua", FNS)
run.write_file(task .. "/users_model.lua", MODEL)

local function base_env(api, handler_name, extra)
  local e = {
    AWS_LAMBDA_RUNTIME_API = api, _HANDLER = handler_name, LAMBDA_TASK_ROOT = task,
    LUA_PATH = task .. "/?.lua;lua/?.lua;lua/?/init.lua", LUA_CPATH = "build54/?.so",
    AWS_REGION = "us-east-1", AWS_ACCESS_KEY_ID = "AKIDSPEC", AWS_SECRET_ACCESS_KEY = "spec-secret-key",
    AWS_ENDPOINT_URL_DYNAMODB = env.dynamodb_endpoint(), AWS_EC2_METADATA_DISABLED = "true",
    AWS_LAMBDA_FUNCTION_NAME = "dynlog-spec",
  }
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

-- Runs the runtime (`command`, default the module) over `invocations`
-- until each has an outcome: the outcomes by id, every request, the output.
local function invoke(handler_name, invocations, extra, command)
  local api = lambda.start_api(invocations)
  local rt = lambda.start_runtime(command or RUNTIME, base_env(api.api, handler_name, extra))
  local outcomes = api.wait_outcomes(#invocations, 30)
  local requests = api.requests()
  local output = rt.output()
  local alive = rt.running()
  rt.stop()
  api.stop()
  assert.are.equal(#invocations, #outcomes, "outcomes: " .. #outcomes .. "; runtime output:\n" .. output)
  local by_id = {}
  for _, o in ipairs(outcomes) do
    by_id[o.id] = o
    o.doc = json.decode(o.body)
  end
  return by_id, requests, output, alive
end

local function error_type(o) return o.headers["lambda-runtime-function-error-type"] end

describe("the Lua runtime for AWS Lambda", function()
  it("calls a function of one's own with the event and its context, and posts what it returns", function()
    local outcomes, requests, _, alive = invoke("fns.echo", {
      { id = "req-1", event = { hello = "world", n = 3 },
        trace_id = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
        function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:f", deadline_in_ms = 5000,
        client_context = '{"custom":{"a":"b"}}', identity = '{"cognitoIdentityId":"id-1"}' },
      { id = "req-2", event = json.array() },
    })
    local first = outcomes["req-1"]
    assert.are.equal("response", first.kind)
    assert.are.same({ hello = "world", n = 3 }, first.doc.event)
    assert.are.equal("req-1", first.doc.request_id)
    assert.are.equal("arn:aws:lambda:eu-west-1:123456789012:function:f", first.doc.arn)
    assert.are.equal("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1", first.doc.trace_id)
    assert.are.equal(first.doc.trace_id, first.doc.env_trace)
    assert.are.same({ custom = { a = "b" } }, first.doc.client_context)
    assert.are.same({ cognitoIdentityId = "id-1" }, first.doc.identity)
    assert.is_true(first.doc.remaining > 0 and first.doc.remaining <= 5000)
    -- The second invocation has no trace id: the first one's is gone.
    assert.are.equal("response", outcomes["req-2"].kind)
    assert.is_nil(outcomes["req-2"].doc.env_trace)
    assert.are.same({}, outcomes["req-2"].doc.event)
    -- next, response, next, response, next (held): the loop goes on.
    assert.are.equal(5, #requests)
    assert.are.equal("GET", requests[5].method)
    assert.are.equal("/2018-06-01/runtime/invocation/next", requests[5].path)
    assert.are.equal("application/json", requests[2].headers["content-type"])
    assert.is_true(alive)
  end)

  it("posts a raised error, or a nil, err, to .../error with its type, stack and header", function()
    local outcomes = invoke("fns.boom", { { id = "e-1", event = {} } })
    local o = outcomes["e-1"]
    assert.are.equal("error", o.kind)
    assert.are.equal("Function.Error", error_type(o))
    assert.are.equal("Error", o.doc.errorType)
    assert.matches("fns.lua:%d+: the handler raised", o.doc.errorMessage)
    assert.is_true(json.is_array(o.doc.stackTrace) and #o.doc.stackTrace > 0)
    assert.matches("fns.lua:%d+: in function", o.doc.stackTrace[2])
    for _, line in ipairs(o.doc.stackTrace) do assert.is_nil(line:find("dynlog/lambda/runtime.lua", 1, true)) end

    outcomes = invoke("fns.fail", { { id = "e-2", event = {} } })
    o = outcomes["e-2"]
    assert.are.equal("error", o.kind)
    assert.are.equal("Function.Failed", error_type(o))
    assert.are.same({ errorType = "conflict", errorMessage = "conflict: the read model moved", stackTrace = {} }, o.doc)

    outcomes = invoke("fns.unencodable", { { id = "e-3", event = {} } })
    assert.are.equal("Runtime.InvalidResponse", error_type(outcomes["e-3"]))
  end)

  it("reports an invocation past its deadline as an error, and does not start one whose deadline has passed",
    function()
      local mark = os.tmpname()
      os.remove(mark)
      local outcomes = invoke("fns.slow", { { id = "slow", event = {}, deadline_in_ms = 300 } })
      local o = outcomes["slow"]
      assert.are.equal("error", o.kind)
      assert.are.equal("Function.DeadlineExceeded", error_type(o))
      assert.are.equal("DeadlineExceeded", o.doc.errorType)
      assert.matches("the handler returned %d+ ms after the invocation's deadline", o.doc.errorMessage)

      outcomes = invoke("fns.mark", { { id = "late", event = {}, deadline_in_ms = -10 } }, { MARK_FILE = mark })
      o = outcomes["late"]
      assert.are.equal("Runtime.DeadlineExceeded", error_type(o))
      assert.matches("deadline had passed before its handler started", o.doc.errorMessage)
      assert.is_nil(io.open(mark), "the handler ran")
    end)

  it("posts an init error and exits 1 for an unknown handler, a missing module or a missing table", function()
    for _, case in ipairs({
      { "nope", "Runtime.HandlerNotFound", 'unknown handler "nope"' },
      { "fns.nothing", "Runtime.HandlerNotFound", "module fns has no function nothing" },
      { "no_such_module.f", "Runtime.ImportModuleError", "module 'no_such_module' not found" },
      { "project:fns", "Runtime.HandlerNotFound", "module fns does not return a handler spec" },
      { "trigger", "Runtime.ConfigError", "DYNLOG_TABLE is not set" },
    }) do
      local api = lambda.start_api({ { id = "never", event = {} } })
      local e = base_env(api.api, case[1])
      local cmd = RUNTIME
      local status, out = run.run(cmd, e)
      local requests = api.requests()
      api.stop()
      assert.are.equal(1, status, case[1] .. ": " .. out)
      assert.are.equal(1, #requests, case[1])
      assert.are.equal("/2018-06-01/runtime/init/error", requests[1].path)
      assert.are.equal(case[2], requests[1].headers["lambda-runtime-function-error-type"])
      local doc = json.decode(requests[1].body)
      assert.are.equal(case[2], doc.errorType)
      assert.is_truthy(doc.errorMessage:find(case[3], 1, true), doc.errorMessage)
      assert.is_true(json.is_array(doc.stackTrace))
    end
  end)

  describe("with DynamoDB Local", function()
    local c, records
    setup(function()
      c = ddb.ready_client()
      for i, t in ipairs({ "signup", "rename", "rename" }) do
        assert(c:append("users", "u1", t, { name = "name " .. i }))
      end
      records = stream.all_records(c)
      assert.are.equal(3, #records)
    end)

    it("trigger: a stream batch in, its partial-batch response out when one record cannot be published", function()
      local bus = server.start({ { method = "POST", path = "/", responses = {
        { putevents = true, fail = { { index = 2, code = "MalformedDetail", message = "refused" } } } } } })
      local outcomes = invoke("trigger", { { id = "t-1", event = { Records = records } } },
        { DYNLOG_TABLE = c.table, AWS_ENDPOINT_URL_EVENTBRIDGE = bus.url })
      local puts = bus.requests()
      bus.stop()
      local o = outcomes["t-1"]
      assert.are.equal("response", o.kind)
      assert.are.same({ batchItemFailures = {
        { itemIdentifier = records[2].dynamodb.SequenceNumber },
        { itemIdentifier = records[3].dynamodb.SequenceNumber },
      } }, o.doc)
      assert.are.equal(1, #puts)
      assert.are.equal(3, #json.decode(puts[1].body).Entries)

      -- Everything published: an empty list, as an array.
      bus = server.start({ { method = "POST", path = "/", responses = { { putevents = true } } } })
      outcomes = invoke("trigger", { { id = "t-2", event = { Records = records } } },
        { DYNLOG_TABLE = c.table, AWS_ENDPOINT_URL_EVENTBRIDGE = bus.url })
      bus.stop()
      assert.are.equal('{"batchItemFailures":[]}', outcomes["t-2"].body)
    end)

    it("trigger: an EventBridge that answers after the deadline fails the batch before the deadline", function()
      -- A PutEvents answered 4 s late, when the invocation has 1.5 s.
      local bus = server.start({ { method = "POST", path = "/", responses = {
        { status = 200, delay_ms = 4000, body = { FailedEntryCount = 0, Entries = {} } } } } })
      local outcomes = invoke("trigger", { { id = "t-3", event = { Records = records }, deadline_in_ms = 1500 } },
        { DYNLOG_TABLE = c.table, AWS_ENDPOINT_URL_EVENTBRIDGE = bus.url })
      bus.stop()
      local o = outcomes["t-3"]
      -- A response, not a DeadlineExceeded error: the trigger answered in time.
      assert.are.equal("response", o.kind, o.body)
      assert.are.equal(3, #o.doc.batchItemFailures)
    end)

    it("project:<module> applies an EventBridge event to the read model", function()
      local model = ddb.table_name("lambda-model")
      assert(handler.create_table(c, model))
      local head = assert(c:head("users", "u1"))
      local event = { version = "0", id = "ev-1", ["detail-type"] = "stream changes", source = "dynamodb-log",
                      account = "000000000000", time = "2026-12-02T09:00:00Z", region = "us-east-1",
                      resources = json.array(),
                      detail = { log = "users", key = { pk = "users#u1#stream", sk = head.sk }, type = head.type,
                                 payload = head.payload } }
      local outcomes = invoke("project:users_model", { { id = "p-1", event = event } },
        { DYNLOG_TABLE = c.table, READ_MODEL_TABLE = model })
      local o = outcomes["p-1"]
      assert.are.equal("response", o.kind, o.body)
      assert.are.equal(3, o.doc.applied)
      local item = assert(c:call("GetItem", { TableName = model, ConsistentRead = true,
                                              Key = { pk = { S = "users#u1" }, sk = { S = "users#u1" } } })).Item
      assert.are.equal("name 3", item.name.S)
      assert.are.equal(head.sk, item.version.S)

      -- A detail without a key: the projection's error, posted as one.
      outcomes = invoke("project:users_model", { { id = "p-2", event = { detail = {} } } },
        { DYNLOG_TABLE = c.table, READ_MODEL_TABLE = model })
      assert.are.equal("Function.Failed", error_type(outcomes["p-2"]))
      assert.are.equal("invalid_argument", outcomes["p-2"].doc.errorType)
    end)
  end)

  describe("make lambda", function()
    it("builds a zip whose bootstrap runs a function with nothing but the zip", function()
      local out = tmpdir()
      local status, log = run.run("make -s lambda LAMBDA_DIST=" .. run.quote(out))
      assert.are.equal(0, status, log)
      assert.matches("lambda: .*dynlog%-lambda%-[%w_]+%.zip %(%d+ KB, GLIBC_2%.%d+ needed%)", log)
      local arch = io.popen("uname -m"):read("*l")
      arch = arch == "aarch64" and "arm64" or arch
      local zip = out .. "/dynlog-lambda-" .. arch .. ".zip"
      local _, listing = run.run("unzip -Z1 " .. run.quote(zip))
      local names = {}
      for name in listing:gmatch("[^\n]+") do names[name] = true end
      for _, name in ipairs({ "bootstrap", "bin/lua5.4", "BUILD-INFO.txt", "lib/lua/5.4/dynlog/core.so",
                              "lib/lua/5.4/dynlog/curl.so", "lib/libcurl.so.4", "lib/libyajl.so.2",
                              "lib/libcrypto.so.3",
                              "lua/dynlog/init.lua", "lua/dynlog/lambda/runtime.lua",
                              "lua/dynlog/lambda/handlers.lua", "lua/dynlog/pipeline/trigger.lua" }) do
        assert.is_true(names[name], name .. " is not in the zip:\n" .. listing)
      end
      for name in pairs(names) do
        assert.is_nil(name:match("^lib/libc%.so") or name:match("^lib/ld%-linux"), name .. ": glibc is not bundled")
      end
      local _, perms = run.run("unzip -Z " .. run.quote(zip) .. " bootstrap bin/lua5.4")
      local executables = 0
      for line in perms:gmatch("[^\n]+") do
        if line:find("bootstrap$") or line:find("bin/lua5%.4$") then
          assert.matches("^%-rwx", line)
          executables = executables + 1
        end
      end
      assert.are.equal(2, executables, perms)
      local _, info = run.run("unzip -p " .. run.quote(zip) .. " BUILD-INFO.txt")
      assert.matches("needs: GLIBC_2%.%d+ or newer", info)

      local root = tmpdir()
      assert.are.equal(0, (run.run("unzip -q " .. run.quote(zip) .. " -d " .. run.quote(root))))
      -- Nothing of this checkout: the bootstrap sets the paths.
      local outcomes = invoke("fns.echo", { { id = "z-1", event = { from = "zip" }, trace_id = "Root=1-a" } },
        { LUA_PATH = "", LUA_CPATH = "" }, root .. "/bootstrap")
      assert.are.equal("response", outcomes["z-1"].kind)
      assert.are.same({ from = "zip" }, outcomes["z-1"].doc.event)
      run.run("rm -rf " .. run.quote(out) .. " " .. run.quote(root))
    end)
  end)
end)
