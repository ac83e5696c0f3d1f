-- Every example in examples/ runs against DynamoDB Local as the README shows it.
local env = require "spec.support.env"
local run = require "spec.support.run"

local ddb = require "spec.support.ddb"

local function example_env(table_name)
  return run.lua_env({
    AWS_ENDPOINT_URL_DYNAMODB = env.dynamodb_endpoint(), DYNLOG_TABLE = table_name,
    AWS_REGION = "us-east-1", AWS_ACCESS_KEY_ID = "AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY = "example-secret",
  })
end

describe("examples", function()
  local table_name = ddb.table_name("example")

  it("append.lua appends the users example and shows a version conflict", function()
    local status, out = run.run("lua5.4 examples/append.lua ada", example_env(table_name))
    assert.are.equal(0, status, out)
    assert.matches("users#ada#stream\t%w+\tsignup", out)
    assert.matches("users#ada#stream\t%w+\taddLocation", out)
    assert.matches("accounts#ada#stream\t2\tdeposited", out)
    assert.matches("a second writer at version 1 gets: conflict: ", out, 1, true)
  end)

  it("query.lua reads the events back in order, and by pages in reverse", function()
    local status, out = run.run("lua5.4 examples/query.lua ada", example_env(table_name))
    assert.are.equal(0, status, out)
    local types = {}
    for t in out:gmatch("\n?%w+\t(%a+)\t{") do types[#types + 1] = t end
    assert.are.same({ "signup", "addPhoneNumber", "verifyPhoneNumber", "addLocation" }, types)
    assert.matches("latest: addLocation", out, 1, true)
    assert.matches("page 1\taddLocation\npage 1\tverifyPhoneNumber\npage 2\taddPhoneNumber\npage 2\tsignup", out)
  end)

  it("list-tables.lua lists the tables of an endpoint", function()
    local status, out = run.run("lua5.4 examples/list-tables.lua", example_env(table_name))
    assert.are.equal(0, status, out)
    assert.matches(table_name, out, 1, true)
  end)
end)
