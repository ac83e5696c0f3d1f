-- The pieces of dynlog's Lambda runtime that need no Runtime API: the wait of
-- `next` without a timeout, the context, the handler names. The runtime as
-- a whole is in spec/system/lambda_spec.lua.
local curl = require "dynlog.transport.curl"
local handlers = require "dynlog.lambda.handlers"
local runtime = require "dynlog.lambda.runtime"
local server = require "spec.support.server"

describe("dynlog.lambda", function()
  it("waits for an answer without a timeout when a request's timeout is false", function()
    local s = server.start({ { method = "GET", path = "/slow", responses = { { status = 200, body = "late",
                                                                              delay_ms = 700 } } } })
    local t = curl.new({ timeout = 0.2 })
    local res, err = t:request({ method = "GET", url = s.url .. "/slow", timeout = false })
    local _, timed_out = t:request({ method = "GET", url = s.url .. "/slow" })
    s.stop()
    assert.is_nil(err)
    assert.are.equal(200, res.status)
    assert.are.equal("timeout", timed_out.code)
  end)

  it("sets and removes a variable of the process's environment (core.setenv, for _X_AMZN_TRACE_ID)", function()
    local core = require "dynlog.core"
    assert.is_true(core.setenv("DYNLOG_SPEC_TRACE", "Root=1-abc"))
    assert.are.equal("Root=1-abc", os.getenv("DYNLOG_SPEC_TRACE"))
    assert.are.equal("Root=1-abc\n", io.popen("printenv DYNLOG_SPEC_TRACE"):read("*a"))
    assert.is_true(core.setenv("DYNLOG_SPEC_TRACE", nil))
    assert.is_nil(os.getenv("DYNLOG_SPEC_TRACE"))
    assert.matches("invalid variable name", require("spec.support.run").raised(core.setenv, "A=B", "x"))
    assert.matches("invalid variable name", require("spec.support.run").raised(core.setenv, "", "x"))
    assert.matches("NUL", require("spec.support.run").raised(core.setenv, "DYNLOG_SPEC_TRACE", "a\0b"))
  end)

  it("gives the context of an invocation from the headers of next", function()
    local now = 1000.5
    local ctx = runtime.context({
      ["lambda-runtime-aws-request-id"] = "id-1", ["lambda-runtime-deadline-ms"] = "1002000",
      ["lambda-runtime-invoked-function-arn"] = "arn:aws:lambda:eu-west-1:1:function:f",
      ["lambda-runtime-trace-id"] = "Root=1-a", ["lambda-runtime-client-context"] = '{"a":1}',
    }, function(name) return ({ AWS_LAMBDA_FUNCTION_NAME = "f", AWS_LAMBDA_FUNCTION_MEMORY_SIZE = "256" })[name] end,
      function() return now end)
    assert.are.equal("id-1", ctx.aws_request_id)
    assert.are.equal(1002000, ctx.deadline_ms)
    assert.are.equal("Root=1-a", ctx.trace_id)
    assert.are.same({ a = 1 }, ctx.client_context)
    assert.is_nil(ctx.identity)
    assert.are.equal("f", ctx.function_name)
    assert.are.equal(256, ctx.memory_limit_in_mb)
    assert.are.equal(1500, ctx:remaining_time_ms())
    now = 1003
    assert.are.equal(0, ctx:remaining_time_ms())
  end)

  it("says which handler names it cannot resolve, with Lambda's error types", function()
    local none = function() return nil end
    for name, error_type in pairs({ [""] = "Runtime.HandlerNotFound", nope = "Runtime.HandlerNotFound",
                                    ["a..b.c"] = "Runtime.HandlerNotFound",
                                    ["dynlog_no_such.f"] = "Runtime.ImportModuleError",
                                    ["dynlog.json.nothing"] = "Runtime.HandlerNotFound",
                                    trigger = "Runtime.ConfigError" }) do
      local fn, err = handlers.resolve(name, { getenv = none })
      assert.is_nil(fn, name)
      assert.are.equal("config", err.code)
      assert.are.equal(error_type, err.error_type, name)
    end
    assert.are.equal("function", type(handlers.resolve("dynlog.json.encode", { getenv = none })))
    assert.has_error(function() handlers.resolve("trigger", { getnev = none }) end)
  end)
end)
