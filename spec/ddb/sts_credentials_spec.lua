-- A client whose credentials come from STS (spec/support/sts.lua, a loopback
-- stand-in for AWS STS) signs its DynamoDB requests with them. DynamoDB Local
-- does not check signatures: a transport wrapper records the access key id
-- and session token each request carried.
local dynlog = require "dynlog"
local env = require "spec.support.env"
local sts = require "spec.support.sts"

local ROLE = "arn:aws:iam::123456789012:role/app"
local CONFIG = "/nonexistent/sts-spec/config"

describe("a client on assumed credentials", function()
  local s
  setup(function() s = sts.start({ { expires_in = 3600 } }) end)
  teardown(function() if s then s.stop() end end)

  local function client(vars, files)
    vars.AWS_ENDPOINT_URL_STS, vars.AWS_EC2_METADATA_DISABLED, vars.HOME = s.url, "true", "/nonexistent/sts-spec"
    local c = dynlog.new({ table = "sts-spec-table", region = "us-east-1", endpoint = env.dynamodb_endpoint(),
                           getenv = function(name) return vars[name] end,
                           read_file = function(path) return files[path] end })
    local transport, seen = c:_transport(), {}
    c.transport = { request = function(_, req)
      if req.headers["X-Amz-Target"] then
        seen[#seen + 1] = { key = req.headers.Authorization:match("Credential=([^/]+)/"),
                            token = req.headers["X-Amz-Security-Token"] }
      end
      return transport:request(req)
    end }
    return c, seen
  end

  it("signs DynamoDB requests with the role's keys and session token (web identity)", function()
    local c, seen = client({ AWS_WEB_IDENTITY_TOKEN_FILE = "/t/token", AWS_ROLE_ARN = ROLE }, { ["/t/token"] = "tok" })
    assert(c:call("ListTables", {}))
    assert(c:call("ListTables", {}))
    assert.are.equal(2, #seen)
    local issued = s.requests()
    local n = #issued
    assert.are.equal("AssumeRoleWithWebIdentity", issued[n].params.Action)
    assert.are.equal("ASIASTS" .. n, seen[1].key)
    assert.are.equal("sts-session-token-" .. n, seen[1].token)
    assert.are.same(seen[1], seen[2]) -- cached, not fetched again
  end)

  it("signs DynamoDB requests with an assumed role's keys (profile with source_profile)", function()
    local c, seen = client({ AWS_PROFILE = "app", AWS_CONFIG_FILE = CONFIG }, { [CONFIG] = "[profile app]\n"
      .. "role_arn = " .. ROLE .. "\nsource_profile = base\n[profile base]\naws_access_key_id = AKIDBASE\n"
      .. "aws_secret_access_key = basesecret\n" })
    assert(c:call("ListTables", {}))
    local issued = s.requests()
    local n = #issued
    assert.are.equal("AssumeRole", issued[n].params.Action)
    assert.matches("Credential=AKIDBASE/", issued[n].headers.authorization, 1, true)
    assert.are.equal("ASIASTS" .. n, seen[1].key)
    assert.are.equal("sts-session-token-" .. n, seen[1].token)
  end)
end)
