-- Credentials from STS inside nginx: web identity and an assumed role fetched
-- over cosockets (the client's transport), shared by concurrent light
-- threads, and credential_process through ngx.pipe. spec/support/sts.lua is
-- a loopback stand-in for AWS STS; the DynamoDB requests go to DynamoDB
-- Local, which does not check signatures, so a transport wrapper records
-- the access key id and session token each request was signed with.
--
-- Needs nginx with libnginx-mod-http-lua (and lua-resty-core), `make
-- luajit`, and DYNLOG_TEST_ENDPOINT (`make test`).
local cjson = require "cjson"
local env = require "spec.support.env"
local ltn12 = require "ltn12"
local nginx = require "spec.support.nginx"
local run = require "spec.support.run"
local sts = require "spec.support.sts"
local http = require "socket.http"

local ROLE = "arn:aws:iam::123456789012:role/app"

-- Every handler: a client whose environment is that named by ?env= (JSON
-- in $envs), and
-- whose DynamoDB requests are recorded.
local PRELUDE = [[
local cjson = require "cjson"
local dynlog = require "dynlog"
local vars = cjson.decode(ngx.var.envs)[ngx.var.arg_env]
local function reply(v)
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(v))
end
local function client()
  local c = dynlog.new({ table = "sts-spec", region = "us-east-1", endpoint = os.getenv("DYNLOG_TEST_ENDPOINT"),
                         getenv = function(name) return vars[name] end })
  local transport = c:_transport()
  local seen = {}
  c.transport = { request = function(_, req)
    if req.headers["X-Amz-Target"] then
      seen[#seen + 1] = { key = req.headers.Authorization:match("Credential=([^/]+)/"),
                          token = req.headers["X-Amz-Security-Token"] }
    end
    return transport:request(req)
  end }
  return c, seen
end
]]

local function location(path, code)
  return ("location = %s { content_by_lua_block {\n%s\n%s\n} }\n"):format(path, PRELUDE, code)
end

local LOCATIONS = {
  -- One request to DynamoDB Local with the credentials of the chain.
  location("/list", [[
    local c, seen = client()
    local res, err = c:call("ListTables", {})
    reply({ ok = res ~= nil, err = err and tostring(err), seen = seen })
  ]]),
  -- Ten light threads at once on one fresh client: one refresh for all.
  location("/concurrent", [[
    local c, seen = client()
    local threads = {}
    for i = 1, 10 do
      threads[i] = ngx.thread.spawn(function() return c:call("ListTables", {}) end)
    end
    local failures = 0
    for i = 1, 10 do
      local _, res = ngx.thread.wait(threads[i])
      if not res then failures = failures + 1 end
    end
    reply({ failures = failures, seen = seen })
  ]]),
  location("/pipe", [[ reply({ supported = pcall(require, "ngx.pipe") }) ]]),
  -- The provider alone (credential_process needs no DynamoDB).
  location("/get", [[
    local c = client()
    local creds, err = c.provider:get()
    reply({ key = creds and creds.access_key_id, source = creds and creds.source, err = err and tostring(err) })
  ]]),
}

describe("credentials from STS inside nginx", function()
  local dir, stsd, slow, srv

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(run.succeeded("mkdir -p " .. run.quote(dir)))
    run.write_file(dir .. "/token", "the-web-identity-token\n")
    run.write_file(dir .. "/config", "[profile app]\nrole_arn = " .. ROLE .. "\nsource_profile = base\n"
      .. "[profile base]\naws_access_key_id = AKIDSOURCE\naws_secret_access_key = sourcesecret\n"
      .. "[profile proc]\ncredential_process = " .. dir .. "/proc.sh\n")
    run.write_file(dir .. "/proc.sh", "#!/bin/sh\necho '{\"Version\": 1, \"AccessKeyId\": \"ASIAPROC\","
      .. " \"SecretAccessKey\": \"procsecret\", \"SessionToken\": \"proctoken\"}'\n")
    assert(run.succeeded("chmod +x " .. run.quote(dir .. "/proc.sh")))
    stsd = sts.start({ { token = "the-web-identity-token" } })
    slow = sts.start({ { delay_ms = 300 } })
    srv = nginx.start({
      workers = 1,
      env = { "DYNLOG_TEST_ENDPOINT" },
      server = "set $envs '" .. cjson.encode({
          webid = { AWS_WEB_IDENTITY_TOKEN_FILE = dir .. "/token", AWS_ROLE_ARN = ROLE, AWS_ENDPOINT_URL_STS = stsd.url,
                    AWS_EC2_METADATA_DISABLED = "true" },
          assume = { AWS_CONFIG_FILE = dir .. "/config", AWS_SHARED_CREDENTIALS_FILE = dir .. "/none",
                     AWS_PROFILE = "app", AWS_ENDPOINT_URL_STS = stsd.url, AWS_EC2_METADATA_DISABLED = "true" },
          slow = { AWS_WEB_IDENTITY_TOKEN_FILE = dir .. "/token", AWS_ROLE_ARN = ROLE, AWS_ENDPOINT_URL_STS = slow.url,
                   AWS_EC2_METADATA_DISABLED = "true" },
          proc = { AWS_CONFIG_FILE = dir .. "/config", AWS_SHARED_CREDENTIALS_FILE = dir .. "/none",
                   AWS_PROFILE = "proc", AWS_EC2_METADATA_DISABLED = "true" },
        }) .. "';\n" .. table.concat(LOCATIONS),
    })
    env.dynamodb_endpoint()
  end)

  teardown(function()
    if srv then srv.stop() end
    for _, s in ipairs({ stsd, slow }) do
      if s then s.stop() end
    end
    if dir then run.succeeded("rm -rf " .. run.quote(dir)) end
  end)

  local function get(path)
    local parts = {}
    http.TIMEOUT = 20
    local ok, code = http.request({ url = srv.url .. path, sink = ltn12.sink.table(parts) })
    if not ok then error("GET " .. path .. ": " .. tostring(code)) end
    local body = table.concat(parts)
    local decoded = code == 200 and pcall(cjson.decode, body) and cjson.decode(body)
    if not decoded then
      error(path .. ": HTTP " .. tostring(code) .. " " .. body .. "\n" .. srv.error_log():sub(-2000))
    end
    return decoded
  end

  local function count(s, action)
    local n = 0
    for _, r in ipairs(s.requests()) do
      if r.params.Action == action then n = n + 1 end
    end
    return n
  end

  it("signs DynamoDB requests with the credentials of AssumeRoleWithWebIdentity", function()
    local before = count(stsd, "AssumeRoleWithWebIdentity")
    local out = get("/list?env=webid")
    assert.is_true(out.ok, out.err)
    assert.are.equal(1, #out.seen)
    assert.matches("^ASIASTS%d+$", out.seen[1].key)
    assert.matches("^sts%-session%-token%-%d+$", out.seen[1].token)
    assert.are.equal(before + 1, count(stsd, "AssumeRoleWithWebIdentity"))
  end)

  it("signs DynamoDB requests with the credentials of AssumeRole, itself signed with the source profile", function()
    local out = get("/list?env=assume")
    assert.is_true(out.ok, out.err)
    assert.matches("^ASIASTS%d+$", out.seen[1].key)
    local last
    for _, r in ipairs(stsd.requests()) do
      if r.params.Action == "AssumeRole" then last = r end
    end
    assert.are.equal(ROLE, last.params.RoleArn)
    assert.matches("Credential=AKIDSOURCE/", last.headers.authorization, 1, true)
  end)

  it("makes one STS request for ten light threads that need credentials at once", function()
    local out = get("/concurrent?env=slow")
    assert.are.equal(0, out.failures)
    assert.are.equal(10, #out.seen)
    for _, s in ipairs(out.seen) do assert.are.equal(out.seen[1].key, s.key) end
    assert.are.equal(1, count(slow, "AssumeRoleWithWebIdentity"))
  end)

  -- ngx.pipe needs OpenResty's nginx (a patch Debian's nginx lacks): where it
  -- is missing, credential_process is refused rather than run with io.popen,
  -- which would block the worker.
  it("runs credential_process through ngx.pipe, or refuses it clearly where nginx has no ngx.pipe", function()
    local out = get("/get?env=proc")
    if get("/pipe?env=proc").supported then
      assert.is_nil(out.err)
      assert.are.equal("ASIAPROC", out.key)
      assert.are.equal("process", out.source)
    else
      assert.is_nil(out.key)
      assert.matches("credential_process of profile proc cannot be run inside nginx without lua-resty-core's"
        .. " ngx.pipe (io.popen would block the worker", out.err, 1, true)
    end
  end)
end)
