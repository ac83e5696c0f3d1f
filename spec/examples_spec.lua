-- Every example in examples/ runs against DynamoDB Local as the README shows it.
local env = require "spec.support.env"
local run = require "spec.support.run"

describe("examples", function()
  it("list-tables.lua lists the tables of an endpoint", function()
    local status, out = run.run("lua5.4 examples/list-tables.lua", run.lua_env({
      AWS_ENDPOINT_URL_DYNAMODB = env.dynamodb_endpoint(),
      AWS_REGION = "us-east-1", AWS_ACCESS_KEY_ID = "AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY = "example-secret",
    }))
    assert.are.equal(0, status, out)
  end)
end)
