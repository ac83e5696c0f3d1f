-- Credentials from STS: web identity (EKS IRSA), assumed roles from profiles
-- (source_profile, credential_source, web_identity_token_file), and
-- credential_process. spec/support/sts.lua is a loopback stand-in for AWS
-- STS (sts.<region>.amazonaws.com): it answers AssumeRole and
-- AssumeRoleWithWebIdentity in STS's XML and checks each request as STS does
-- (Version, Action, RoleArn, a SigV4 Authorization for AssumeRole and none
-- for web identity).
local credentials = require "dynlog.aws.credentials"
local run = require "spec.support.run"
local server = require "spec.support.server"
local sts = require "spec.support.sts"

local HOME = "/nonexistent/dynlog-sts-home"
local CONFIG_FILE = HOME .. "/.aws/config"
local CRED_FILE = HOME .. "/.aws/credentials"
local TOKEN_FILE = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"
local ROLE = "arn:aws:iam::123456789012:role/app"
local SOURCE_SECRET = "sourceSECRETkeyZZ"

local servers = {}
local function start(answers)
  local s = sts.start(answers)
  servers[#servers + 1] = s
  return s
end

-- A provider whose environment and files are these tables; IMDS off.
local function provider(s, vars, files, extra)
  vars = vars or {}
  vars.HOME = vars.HOME or HOME
  vars.AWS_EC2_METADATA_DISABLED = vars.AWS_EC2_METADATA_DISABLED or "true"
  vars.AWS_ENDPOINT_URL_STS = vars.AWS_ENDPOINT_URL_STS or (s and s.url)
  files = files or {}
  local opts = {
    getenv = function(name) return vars[name] or nil end,
    read_file = function(path) return files[path] end,
    region = "eu-west-1", sleep = function() end,
  }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return credentials.provider(opts)
end

local function assert_secret_free(text)
  text = tostring(text)
  assert.not_matches(SOURCE_SECRET, text, 1, true)
  assert.not_matches("the-web-identity-token", text, 1, true)
end

-- The access key id a request's SigV4 Authorization names.
local function signed_by(req)
  return (req.headers.authorization or ""):match("Credential=([^/]+)/")
end

describe("credentials from STS", function()
  teardown(function()
    for _, s in ipairs(servers) do s.stop() end
  end)

  describe("web identity from the environment", function()
    it("exchanges the token file's token, unsigned, for the role's credentials", function()
      local s = start({ { token = "the-web-identity-token" } })
      local p = provider(s, { AWS_WEB_IDENTITY_TOKEN_FILE = TOKEN_FILE, AWS_ROLE_ARN = ROLE,
                              AWS_ROLE_SESSION_NAME = "pod-1" },
                         { [TOKEN_FILE] = "the-web-identity-token\n" })
      local c = assert(p:get())
      assert.are.equal("ASIASTS1", c.access_key_id)
      assert.are.equal("sts-secret-1", c.secret_access_key)
      assert.are.equal("sts-session-token-1", c.session_token)
      assert.are.equal("web-identity", c.source)
      assert.is_number(c.expiration)
      local reqs = s.requests()
      assert.are.equal(1, #reqs)
      assert.are.equal("AssumeRoleWithWebIdentity", reqs[1].params.Action)
      assert.are.equal("2011-06-15", reqs[1].params.Version)
      assert.are.equal(ROLE, reqs[1].params.RoleArn)
      assert.are.equal("pod-1", reqs[1].params.RoleSessionName)
      assert.are.equal("the-web-identity-token", reqs[1].params.WebIdentityToken)
      assert.is_nil(reqs[1].headers.authorization)
    end)

    it("comes after keys in the environment and before any profile", function()
      local s = start({ {} })
      local files = { [TOKEN_FILE] = "tok", [CRED_FILE] = "[default]\naws_access_key_id = AKIDFILE\n"
        .. "aws_secret_access_key = filesecret\n" }
      local vars = { AWS_WEB_IDENTITY_TOKEN_FILE = TOKEN_FILE, AWS_ROLE_ARN = ROLE }
      assert.are.equal("web-identity", assert(provider(s, vars, files):get()).source)
      vars = { AWS_WEB_IDENTITY_TOKEN_FILE = TOKEN_FILE, AWS_ROLE_ARN = ROLE, AWS_ACCESS_KEY_ID = "AKIDENV",
               AWS_SECRET_ACCESS_KEY = "envsecret" }
      assert.are.equal("env", assert(provider(s, vars, files):get()).source)
      assert.are.equal(1, #s.requests())
    end)

    it("stops the chain with a clear error when AWS_ROLE_ARN or the token is missing", function()
      local s = start({ {} })
      local c, err = provider(s, { AWS_WEB_IDENTITY_TOKEN_FILE = TOKEN_FILE }, { [TOKEN_FILE] = "tok" }):get()
      assert.is_nil(c)
      assert.matches("AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not", err.message, 1, true)
      c, err = provider(s, { AWS_WEB_IDENTITY_TOKEN_FILE = TOKEN_FILE, AWS_ROLE_ARN = ROLE }, {}):get()
      assert.is_nil(c)
      assert.matches("cannot read the web identity token file " .. TOKEN_FILE, err.message, 1, true)
      assert.are.equal(0, #s.requests())
    end)

    it("reports STS's error: InvalidIdentityToken, not retried; code and message named", function()
      local s = start({ { token = "another" } })
      local c, err = provider(s, { AWS_WEB_IDENTITY_TOKEN_FILE = TOKEN_FILE, AWS_ROLE_ARN = ROLE },
                              { [TOKEN_FILE] = "the-web-identity-token" }):get()
      assert.is_nil(c)
      assert.are.equal("credentials", err.code)
      assert.matches("STS AssumeRoleWithWebIdentity for " .. ROLE .. " failed: InvalidIdentityToken: Couldn't",
        err.message, 1, true)
      assert.are.equal(1, #s.requests())
      assert_secret_free(err.message)
    end)

    it("retries Throttling and IDPCommunicationError, then succeeds", function()
      local s = start({ { error = "Throttling" }, { error = "IDPCommunicationError" }, {} })
      local c = assert(provider(s, { AWS_WEB_IDENTITY_TOKEN_FILE = TOKEN_FILE, AWS_ROLE_ARN = ROLE },
                                { [TOKEN_FILE] = "tok" }):get())
      assert.are.equal("ASIASTS1", c.access_key_id)
      assert.are.equal(3, #s.requests())
    end)

    it("gives up after sts_attempts on a 5xx", function()
      local s = start({ { error = "InternalFailure" } })
      local c, err = provider(s, { AWS_WEB_IDENTITY_TOKEN_FILE = TOKEN_FILE, AWS_ROLE_ARN = ROLE },
                              { [TOKEN_FILE] = "tok" }, { sts_attempts = 2 }):get()
      assert.is_nil(c)
      assert.matches("InternalFailure", err.message, 1, true)
      assert.are.equal(2, #s.requests())
    end)
  end)

  describe("assumed roles from profiles", function()
    local function config(text) return { [CONFIG_FILE] = text } end

    it("signs AssumeRole with the source_profile's keys and sends external_id, role_session_name, "
      .. "duration_seconds", function()
      local s = start({ { signed_by = "AKIDSOURCE" } })
      local files = config("[profile app]\nrole_arn = " .. ROLE .. "\nsource_profile = base\nexternal_id = ext-1\n"
        .. "role_session_name = deploy\nduration_seconds = 1800\n")
      files[CRED_FILE] = "[base]\naws_access_key_id = AKIDSOURCE\naws_secret_access_key = " .. SOURCE_SECRET .. "\n"
      local c = assert(provider(s, { AWS_PROFILE = "app" }, files):get())
      assert.are.equal("assume-role", c.source)
      assert.are.equal("sts-session-token-1", c.session_token)
      local r = s.requests()[1]
      assert.are.equal("AssumeRole", r.params.Action)
      assert.are.equal(ROLE, r.params.RoleArn)
      assert.are.equal("ext-1", r.params.ExternalId)
      assert.are.equal("deploy", r.params.RoleSessionName)
      assert.are.equal("1800", r.params.DurationSeconds)
      assert.are.equal("AKIDSOURCE", signed_by(r))
      assert.matches("/eu%-west%-1/sts/aws4_request", r.headers.authorization)
      assert.are.equal("application/x-www-form-urlencoded; charset=utf-8", r.headers["content-type"])
    end)

    it("follows a chain of roles, each signed with the one before", function()
      local s = start({ {} })
      local files = config("[profile top]\nrole_arn = arn:aws:iam::123456789012:role/top\nsource_profile = mid\n"
        .. "[profile mid]\nrole_arn = arn:aws:iam::123456789012:role/mid\nsource_profile = base\n"
        .. "[profile base]\naws_access_key_id = AKIDBASE\naws_secret_access_key = basesecret\n")
      local c = assert(provider(s, { AWS_PROFILE = "top" }, files):get())
      assert.are.equal("ASIASTS2", c.access_key_id)
      local reqs = s.requests()
      assert.are.equal(2, #reqs)
      assert.are.equal("arn:aws:iam::123456789012:role/mid", reqs[1].params.RoleArn)
      assert.are.equal("AKIDBASE", signed_by(reqs[1]))
      assert.are.equal("arn:aws:iam::123456789012:role/top", reqs[2].params.RoleArn)
      assert.are.equal("ASIASTS1", signed_by(reqs[2]))
      assert.are.equal("sts-session-token-1", reqs[2].headers["x-amz-security-token"])
    end)

    it("uses a source profile's own keys even when it names a role itself", function()
      local s = start({ {} })
      local files = config("[profile app]\nrole_arn = " .. ROLE .. "\nsource_profile = app\n"
        .. "aws_access_key_id = AKIDSELF\naws_secret_access_key = selfsecret\n")
      assert(provider(s, { AWS_PROFILE = "app" }, files):get())
      assert.are.equal("AKIDSELF", signed_by(s.requests()[1]))
    end)

    it("takes credential_source = EcsContainer: the container's credentials sign AssumeRole", function()
      local s = start({ {} })
      local container = server.start({ { method = "GET", path = "/creds", responses = { { status = 200, body = {
        AccessKeyId = "ASIACONTAINER", SecretAccessKey = "containersecret", Token = "containertoken",
        Expiration = "2026-12-24T12:00:00Z" } } } } })
      servers[#servers + 1] = container
      local files = config("[profile app]\nrole_arn = " .. ROLE .. "\ncredential_source = EcsContainer\n")
      local c = assert(provider(s, { AWS_PROFILE = "app", AWS_CONTAINER_CREDENTIALS_FULL_URI = container.url
        .. "/creds" }, files):get())
      assert.are.equal("assume-role", c.source)
      local r = s.requests()[1]
      assert.are.equal("ASIACONTAINER", signed_by(r))
      assert.are.equal("containertoken", r.headers["x-amz-security-token"])
    end)

    it("says when credential_source = Environment finds no keys", function()
      local s = start({ {} })
      local files = config("[profile app]\nrole_arn = " .. ROLE .. "\ncredential_source = Environment\n")
      local c, err = provider(s, { AWS_PROFILE = "app" }, files):get()
      assert.is_nil(c)
      assert.matches("credential_source Environment of profile app: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        .. " not set", err.message, 1, true)
      assert.are.equal(0, #s.requests())
    end)

    it("takes web_identity_token_file with role_arn", function()
      local s = start({ { token = "the-web-identity-token" } })
      local files = config("[profile app]\nrole_arn = " .. ROLE .. "\nweb_identity_token_file = /t/token\n"
        .. "role_session_name = sess\n")
      files["/t/token"] = "the-web-identity-token"
      local c = assert(provider(s, { AWS_PROFILE = "app" }, files):get())
      assert.are.equal("web-identity", c.source)
      local r = s.requests()[1]
      assert.are.equal("AssumeRoleWithWebIdentity", r.params.Action)
      assert.are.equal("sess", r.params.RoleSessionName)
      assert.is_nil(r.headers.authorization)
    end)

    it("refuses mfa_serial, naming the profile, without asking STS", function()
      local s = start({ {} })
      local files = config("[profile admin]\nrole_arn = " .. ROLE .. "\nsource_profile = base\n"
        .. "mfa_serial = arn:aws:iam::123456789012:mfa/me\n[profile base]\naws_access_key_id = A\n"
        .. "aws_secret_access_key = B\n")
      local c, err = provider(s, { AWS_PROFILE = "admin" }, files):get()
      assert.is_nil(c)
      assert.are.equal("credentials", err.code)
      assert.matches("profile admin sets mfa_serial, but dynlog cannot prompt for an MFA code", err.message, 1, true)
      assert.are.equal(0, #s.requests())
    end)

    it("says what is wrong with a role profile: no source, a loop, a missing source, a bad duration", function()
      local s = start({ {} })
      local cases = {
        { "[profile a]\nrole_arn = " .. ROLE .. "\n", "sets role_arn but none of source_profile" },
        { "[profile a]\nrole_arn = " .. ROLE .. "\nsource_profile = b\n[profile b]\nrole_arn = " .. ROLE
          .. "\nsource_profile = a\n", "form a loop through source_profile" },
        { "[profile a]\nrole_arn = " .. ROLE .. "\nsource_profile = nowhere\n", "source_profile nowhere of profile a:"
          .. " no profile nowhere" },
        { "[profile a]\nrole_arn = " .. ROLE .. "\nsource_profile = a\nduration_seconds = 60\n"
          .. "aws_access_key_id = A\naws_secret_access_key = B\n", "duration_seconds must be a whole number" },
        { "[profile a]\nrole_arn = " .. ROLE .. "\ncredential_source = Somewhere\n", "credential_source must be" },
      }
      for _, case in ipairs(cases) do
        local c, err = provider(s, { AWS_PROFILE = "a" }, config(case[1])):get()
        assert.is_nil(c)
        assert.matches(case[2], err.message, 1, true)
      end
      assert.are.equal(0, #s.requests())
    end)

    it("reports AccessDenied and ExpiredTokenException without retrying, never showing the source's secret", function()
      for _, code in ipairs({ "AccessDenied", "ExpiredTokenException" }) do
        local s = start({ { error = code, message = "not for you" } })
        local files = config("[profile app]\nrole_arn = " .. ROLE .. "\nsource_profile = base\n")
        files[CRED_FILE] = "[base]\naws_access_key_id = AKIDSOURCE\naws_secret_access_key = " .. SOURCE_SECRET .. "\n"
        local c, err = provider(s, { AWS_PROFILE = "app" }, files):get()
        assert.is_nil(c)
        assert.matches("STS AssumeRole for " .. ROLE .. " (profile app) failed: " .. code .. ": not for you",
          err.message, 1, true)
        assert.are.equal(1, #s.requests())
        assert_secret_free(err.message)
      end
    end)
  end)

  describe("refresh", function()
    local EXPIRES = "2026-12-24T12:00:00Z"
    local EXPIRES_AT = 1798113600

    it("refreshes refresh_window seconds before the expiration, not on every get", function()
      local s = start({ { expiration = EXPIRES } })
      local now = EXPIRES_AT - 3600
      local p = provider(s, { AWS_WEB_IDENTITY_TOKEN_FILE = TOKEN_FILE, AWS_ROLE_ARN = ROLE },
                         { [TOKEN_FILE] = "tok" }, { now = function() return now end })
      assert.are.equal("ASIASTS1", assert(p:get()).access_key_id)
      assert.are.equal(EXPIRES_AT, assert(p:get()).expiration)
      now = EXPIRES_AT - 301
      assert.are.equal("ASIASTS1", assert(p:get()).access_key_id)
      assert.are.equal(1, #s.requests())
      now = EXPIRES_AT - 299
      assert.are.equal("ASIASTS2", assert(p:get()).access_key_id)
      assert.are.equal(2, #s.requests())
    end)

    it("keeps the old credentials while they are valid when a refresh fails, and tries again later", function()
      local s = start({ { expiration = EXPIRES }, { error = "AccessDenied" }, { expiration = "2026-12-24T13:00:00Z" } })
      local now = EXPIRES_AT - 3600
      local p = provider(s, { AWS_WEB_IDENTITY_TOKEN_FILE = TOKEN_FILE, AWS_ROLE_ARN = ROLE },
                         { [TOKEN_FILE] = "tok" }, { now = function() return now end })
      assert(p:get())
      now = EXPIRES_AT - 200
      assert.are.equal("ASIASTS1", assert(p:get()).access_key_id) -- the refresh failed: the old ones
      assert.are.equal(2, #s.requests())
      now = now + 5
      assert.are.equal("ASIASTS1", assert(p:get()).access_key_id) -- within retry_interval: no request
      assert.are.equal(2, #s.requests())
      now = now + 10
      assert.are.equal("ASIASTS2", assert(p:get()).access_key_id)
      now = EXPIRES_AT + 1
      local c, err = p:get() -- still the newer ones, valid an hour more
      assert.is_nil(err)
      assert.are.equal("ASIASTS2", c.access_key_id)
    end)

    it("reports the failure once expired credentials cannot be refreshed", function()
      local s = start({ { expiration = EXPIRES }, { error = "AccessDenied" } })
      local now = EXPIRES_AT - 3600
      local p = provider(s, { AWS_WEB_IDENTITY_TOKEN_FILE = TOKEN_FILE, AWS_ROLE_ARN = ROLE },
                         { [TOKEN_FILE] = "tok" }, { now = function() return now end })
      assert(p:get())
      now = EXPIRES_AT + 1
      local c, err = p:get()
      assert.is_nil(c)
      assert.matches("refreshing AWS credentials failed: web identity: STS AssumeRoleWithWebIdentity", err.message,
        1, true)
      assert.matches("AccessDenied", err.message, 1, true)
    end)

    it("refreshes short-lived credentials no more often than retry_interval", function()
      local s = start({ { expires_in = 60 } })
      local p = provider(s, { AWS_WEB_IDENTITY_TOKEN_FILE = TOKEN_FILE, AWS_ROLE_ARN = ROLE },
                         { [TOKEN_FILE] = "tok" })
      for _ = 1, 5 do assert(p:get()) end
      assert.are.equal(1, #s.requests())
    end)
  end)

  describe("credential_process", function()
    local dir
    setup(function()
      dir = os.tmpname()
      os.remove(dir)
      assert(run.succeeded("mkdir -p " .. run.quote(dir)))
    end)
    teardown(function() run.succeeded("rm -rf " .. run.quote(dir)) end)

    local function script(name, text)
      local path = dir .. "/" .. name
      run.write_file(path, "#!/bin/sh\n" .. text)
      assert(run.succeeded("chmod +x " .. run.quote(path)))
      return path
    end

    local function process_provider(command)
      return provider(nil, { AWS_PROFILE = "proc" },
        { [CONFIG_FILE] = "[profile proc]\ncredential_process = " .. command .. "\n" })
    end

    it("runs the command and reads its Version 1 JSON, Expiration included", function()
      local path = script("ok.sh", [[
echo '{"Version": 1, "AccessKeyId": "ASIAPROC", "SecretAccessKey": "procsecret",' \
     '"SessionToken": "proctoken", "Expiration": "2026-12-24T12:00:00Z"}'
]])
      local c = assert(process_provider(path .. " --profile x"):get())
      assert.are.equal("ASIAPROC", c.access_key_id)
      assert.are.equal("proctoken", c.session_token)
      assert.are.equal(1798113600, c.expiration)
      assert.are.equal("process", c.source)
    end)

    it("reports a failing command with its exit status and stderr", function()
      local path = script("fail.sh", "echo 'token expired: run aws sso login' >&2\nexit 3\n")
      local c, err = process_provider(path):get()
      assert.is_nil(c)
      assert.matches("credential_process of profile proc exited with status 3 (stderr: token expired: run aws sso"
        .. " login)", err.message, 1, true)
    end)

    it("refuses output that is not Version 1 JSON with keys", function()
      local cases = {
        { "echo 'not json'\n", "did not print a JSON object" },
        { "echo '{\"Version\": 2, \"AccessKeyId\": \"A\", \"SecretAccessKey\": \"B\"}'\n", "printed Version 2" },
        { "echo '{\"Version\": 1}'\n", "printed no AccessKeyId/SecretAccessKey" },
        { "echo '{\"Version\": 1, \"AccessKeyId\": \"A\", \"SecretAccessKey\": \"B\", \"Expiration\": \"soon\"}'\n",
          "printed an invalid Expiration" },
      }
      for i, case in ipairs(cases) do
        local c, err = process_provider(script("bad" .. i .. ".sh", case[1])):get()
        assert.is_nil(c)
        assert.matches(case[2], err.message, 1, true)
      end
    end)
  end)
end)
