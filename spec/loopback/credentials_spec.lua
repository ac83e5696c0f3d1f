local credentials = require("dynlog.aws.credentials")
local cjson = require("cjson")

-- Test secrets: none of these may ever show up in an error or a tostring.
local SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzSECRETKEY"
local TOKEN = "IQoJb3JpZ2luX2VjSESSIONTOKENzz"
local AUTH_TOKEN = "Basic-containerAUTHTOKEN"
local IMDS_TOKEN = "AQAEAimdsTOKENzz=="

local EXPIRATION_TEXT = "2026-11-25T12:00:00Z"
local EXPIRATION = 1795608000 -- the same instant, computed independently

local HOME = "/nonexistent/dynlog-spec-home"
local CRED_FILE = HOME .. "/.aws/credentials"
local CONFIG_FILE = HOME .. "/.aws/config"

local function assert_no_secrets(text)
  text = tostring(text)
  for _, secret in ipairs({ SECRET, TOKEN, AUTH_TOKEN, IMDS_TOKEN }) do
    assert.not_matches(secret, text, 1, true)
  end
end

-- An injected environment. IMDS is disabled unless a spec turns it on with
-- AWS_EC2_METADATA_DISABLED = false, so that no spec can ever send a request
-- to the real 169.254.169.254. `false` stands for unset.
local function env(vars)
  vars = vars or {}
  if vars.HOME == nil then vars.HOME = HOME end
  if vars.AWS_EC2_METADATA_DISABLED == nil then vars.AWS_EC2_METADATA_DISABLED = "true" end
  return function(name) return vars[name] or nil end
end

local function files(contents)
  contents = contents or {}
  return function(path) return contents[path] end
end

local function document(fields)
  local doc = {
    Code = "Success", AccessKeyId = "ASIAFROMDOC", SecretAccessKey = SECRET,
    Token = TOKEN, Expiration = EXPIRATION_TEXT,
  }
  for k, v in pairs(fields or {}) do
    if v == false then doc[k] = nil else doc[k] = v end
  end
  return cjson.encode(doc)
end

-- A transport that never touches the network: it answers from a table
-- "METHOD url" → list of responses (the last one repeats; a response may be a
-- function(req) or { err = ... } for a transport failure) and records every
-- request. Unknown requests fail the spec.
local function scripted(routes)
  local calls, served = {}, {}
  local function send(req)
    calls[#calls + 1] = req
    local key = req.method .. " " .. req.url
    local list = routes and routes[key]
    if not list then error("unexpected request: " .. key, 0) end
    served[key] = (served[key] or 0) + 1
    local response = list[served[key]] or list[#list]
    if type(response) == "function" then return response(req) end
    if response.err then return nil, response.err end
    return response
  end
  return send, calls
end

local function ok(body) return { status = 200, headers = {}, body = body } end

local FAKE_CONTAINER = "http://127.0.0.1:1/creds"
local FAKE_IMDS = "http://127.0.0.1:2"
local ROLE_PATH = "/latest/meta-data/iam/security-credentials/"

local function fake_imds_routes(doc)
  return {
    ["PUT " .. FAKE_IMDS .. "/latest/api/token"] = { ok(IMDS_TOKEN) },
    ["GET " .. FAKE_IMDS .. ROLE_PATH] = { ok("web-role\n") },
    ["GET " .. FAKE_IMDS .. ROLE_PATH .. "web-role"] = { ok(doc or document({ AccessKeyId = "ASIAIMDS" })) },
  }
end

describe("dynlog.aws.credentials", function()
  describe("parse_rfc3339", function()
    it("turns a UTC timestamp into epoch seconds whatever the local time zone", function()
      assert.equal(EXPIRATION, credentials.parse_rfc3339(EXPIRATION_TEXT))
      assert.equal(0, credentials.parse_rfc3339("1970-01-01T00:00:00Z"))
      assert.equal(1709251199, credentials.parse_rfc3339("2024-02-29T23:59:59Z"))
      assert.equal(951868800, credentials.parse_rfc3339("2000-03-01T00:00:00Z"))
      assert.equal(4102444799, credentials.parse_rfc3339("2099-12-31T23:59:59Z"))
    end)

    it("gives the same answer in a process whose local time zone is not UTC", function()
      -- os.time would read the date as local time; a child with TZ set proves
      -- the parser does not. POSIX TZ strings need no tzdata.
      local command = "TZ='IST-5:30' lua5.4 -e \"package.path='lua/?.lua;'..package.path "
        .. "io.write(os.time{year=1970,month=1,day=2,hour=0}, ' ', "
        .. "require('dynlog.aws.credentials').parse_rfc3339('" .. EXPIRATION_TEXT .. "'))\""
      local pipe = assert(io.popen(command, "r"))
      local output = pipe:read("*a")
      pipe:close()
      local local_midnight, parsed = output:match("^(%-?%d+) (%d+)$")
      assert.equal(86400 - 19800, tonumber(local_midnight), "the child's TZ did not apply: " .. output)
      assert.equal(EXPIRATION, tonumber(parsed))
    end)

    it("drops fractional seconds and applies numeric offsets", function()
      assert.equal(EXPIRATION, credentials.parse_rfc3339("2026-11-25T12:00:00.999Z"))
      assert.equal(EXPIRATION, credentials.parse_rfc3339("2026-11-25T12:00:00+00:00"))
      assert.equal(EXPIRATION, credentials.parse_rfc3339("2026-11-25T14:00:00.5+02:00"))
      assert.equal(EXPIRATION, credentials.parse_rfc3339("2026-11-25T06:30:00-05:30"))
      assert.equal(EXPIRATION, credentials.parse_rfc3339("2026-11-25t12:00:00z"))
    end)

    it("rejects what is not a valid RFC 3339 timestamp", function()
      for _, bad in ipairs({ "2026-11-25T12:00:00", "2026-02-30T00:00:00Z",
          "2025-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-11-25T24:00:00Z",
          "2026-11-25T12:00:00+2:00", "yesterday", "", 1795608000 }) do
        local value, err = credentials.parse_rfc3339(bad)
        assert.is_nil(value, tostring(bad))
        assert.equal("credentials", err.code)
      end
    end)
  end)

  describe("credentials values", function()
    it("show only the access key id and the source in tostring", function()
      local c = credentials.new({ access_key_id = "AKIDSHOWN", secret_access_key = SECRET,
        session_token = TOKEN }, "env")
      assert.equal("credentials(AKIDSHOWN, env)", tostring(c))
      assert.equal(SECRET, c.secret_access_key)
      assert.equal(TOKEN, c.session_token)
    end)

    it("raise on a missing secret, a programming error", function()
      assert.has_error(function() credentials.new({ access_key_id = "AKID" }) end)
      assert.has_error(function() credentials.new("AKID:SECRET") end)
    end)
  end)

  describe("provider construction", function()
    it("does no I/O: env, files, transport and clock are untouched until get()", function()
      local function boom() error("I/O at construction") end
      local p = credentials.provider({ getenv = boom, read_file = boom, http = boom, now = boom })
      assert.equal("credentials.provider(unresolved)", tostring(p))
    end)

    it("raises on option types that are programming errors", function()
      assert.has_error(function() credentials.provider({ credentials = "AKID" }) end)
      assert.has_error(function() credentials.provider({ credentials = { access_key_id = "A" } }) end)
      assert.has_error(function() credentials.provider({ now = 5 }) end)
      assert.has_error(function() credentials.provider({ refresh_window = "5m" }) end)
      assert.has_error(function() credentials.provider({ http = "curl" }) end)
      assert.has_error(function() credentials.provider({ profile = 1 }) end)
    end)
  end)

  describe("chain order", function()
    -- Every source configured; each case removes the ones above the expected winner.
    local function everything()
      return {
        AWS_ACCESS_KEY_ID = "AKIDENV", AWS_SECRET_ACCESS_KEY = SECRET,
        AWS_CONTAINER_CREDENTIALS_FULL_URI = FAKE_CONTAINER,
        AWS_EC2_METADATA_DISABLED = false,
        AWS_EC2_METADATA_SERVICE_ENDPOINT = FAKE_IMDS,
      }
    end
    local all_files = {
      [CRED_FILE] = "[default]\naws_access_key_id = AKIDCREDFILE\naws_secret_access_key = " .. SECRET .. "\n",
      [CONFIG_FILE] = "[default]\naws_access_key_id = AKIDCONFIGFILE\naws_secret_access_key = " .. SECRET .. "\n",
    }
    local function routes()
      local r = fake_imds_routes()
      r["GET " .. FAKE_CONTAINER] = { ok(document({ AccessKeyId = "ASIACONTAINER" })) }
      return r
    end

    local function resolve(vars, contents, explicit)
      local send, calls = scripted(routes())
      local p = credentials.provider({ credentials = explicit, getenv = env(vars),
        read_file = files(contents), http = send })
      local c = assert(p:get())
      return c, calls
    end

    it("takes explicit keys before anything else", function()
      local c, calls = resolve(everything(), all_files,
        { access_key_id = "AKIDEXPLICIT", secret_access_key = SECRET })
      assert.equal("AKIDEXPLICIT", c.access_key_id)
      assert.equal("explicit", c.source)
      assert.equal(0, #calls)
    end)

    it("takes the environment before the shared files", function()
      local c, calls = resolve(everything(), all_files)
      assert.equal("AKIDENV", c.access_key_id)
      assert.equal("env", c.source)
      assert.equal(0, #calls)
    end)

    it("takes the credentials file before the config file and the container", function()
      local vars = everything()
      vars.AWS_ACCESS_KEY_ID, vars.AWS_SECRET_ACCESS_KEY = false, false
      local c, calls = resolve(vars, all_files)
      assert.equal("AKIDCREDFILE", c.access_key_id)
      assert.equal("shared-credentials-file", c.source)
      assert.equal(0, #calls)
    end)

    it("takes the config file when the credentials file has no keys", function()
      local vars = everything()
      vars.AWS_ACCESS_KEY_ID, vars.AWS_SECRET_ACCESS_KEY = false, false
      local c = resolve(vars, { [CONFIG_FILE] = all_files[CONFIG_FILE],
        [CRED_FILE] = "[default]\n# no keys here\n" })
      assert.equal("AKIDCONFIGFILE", c.access_key_id)
      assert.equal("shared-config-file", c.source)
    end)

    it("takes the container endpoint before IMDS", function()
      local vars = everything()
      vars.AWS_ACCESS_KEY_ID, vars.AWS_SECRET_ACCESS_KEY = false, false
      local c, calls = resolve(vars, {})
      assert.equal("ASIACONTAINER", c.access_key_id)
      assert.equal("container", c.source)
      assert.equal(1, #calls)
    end)

    it("falls back to IMDS last", function()
      local vars = everything()
      vars.AWS_ACCESS_KEY_ID, vars.AWS_SECRET_ACCESS_KEY = false, false
      vars.AWS_CONTAINER_CREDENTIALS_FULL_URI = false
      local c, calls = resolve(vars, {})
      assert.equal("ASIAIMDS", c.access_key_id)
      assert.equal("imds", c.source)
      assert.equal(3, #calls)
    end)

    it("lists every source it tried, and why, when none has credentials", function()
      local send, calls = scripted({})
      local p = credentials.provider({ getenv = env(), read_file = files(), http = send })
      local c, err = p:get()
      assert.is_nil(c)
      assert.equal("credentials", err.code)
      for _, part in ipairs({ "explicit:", "env: AWS_ACCESS_KEY_ID", "shared files: no profile default",
          "web identity: AWS_WEB_IDENTITY_TOKEN_FILE not set",
          "container: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "imds: disabled by AWS_EC2_METADATA_DISABLED" }) do
        assert.matches(part, err.message, 1, true)
      end
      assert.equal(6, #err.tried)
      assert.equal(0, #calls)
    end)

    it("stops at a broken web identity setup instead of falling through to IMDS", function()
      local vars = everything()
      vars.AWS_ACCESS_KEY_ID, vars.AWS_SECRET_ACCESS_KEY = nil, nil
      vars.AWS_WEB_IDENTITY_TOKEN_FILE = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"
      local send, calls = scripted(routes())
      local p = credentials.provider({ getenv = env(vars), read_file = files(), http = send })
      local c, err = p:get()
      assert.is_nil(c)
      assert.matches("web identity", err.message, 1, true)
      assert.matches("AWS_ROLE_ARN is not", err.message, 1, true)
      assert.equal(0, #calls)
    end)
  end)

  describe("environment source", function()
    it("reads the session token", function()
      local p = credentials.provider({ read_file = files(), http = scripted(), getenv = env({
        AWS_ACCESS_KEY_ID = "AKID", AWS_SECRET_ACCESS_KEY = SECRET, AWS_SESSION_TOKEN = TOKEN }) })
      local c = assert(p:get())
      assert.equal(TOKEN, c.session_token)
      assert.is_nil(c.expiration)
    end)

    it("stops the chain on a half-set key pair instead of using another identity", function()
      local send, calls = scripted({ ["GET " .. FAKE_CONTAINER] = { ok(document()) } })
      local p = credentials.provider({ read_file = files(), http = send, getenv = env({
        AWS_ACCESS_KEY_ID = "AKID", AWS_CONTAINER_CREDENTIALS_FULL_URI = FAKE_CONTAINER }) })
      local c, err = p:get()
      assert.is_nil(c)
      assert.matches("AWS_SECRET_ACCESS_KEY is not", err.message, 1, true)
      assert.not_matches("container", err.message, 1, true)
      assert.equal(0, #calls)
    end)

    it("treats empty variables as unset", function()
      local p = credentials.provider({ read_file = files(), http = scripted(), getenv = env({
        AWS_ACCESS_KEY_ID = "", AWS_SECRET_ACCESS_KEY = "" }) })
      local c, err = p:get()
      assert.is_nil(c)
      assert.matches("env: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY not set", err.message, 1, true)
    end)
  end)

  describe("shared files source", function()
    local function provider(vars, contents, profile)
      local send, calls = scripted({ ["GET " .. FAKE_CONTAINER] = { ok(document()) } })
      return credentials.provider({ profile = profile, getenv = env(vars),
        read_file = files(contents), http = send }), calls
    end

    it("reads a named profile from '[name]' in the credentials file", function()
      local p = provider({ AWS_PROFILE = "dev" }, { [CRED_FILE] =
        "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = x\n"
        .. "[dev]\nAWS_ACCESS_KEY_ID = AKIDDEV\naws_secret_access_key=" .. SECRET
        .. "\naws_session_token = " .. TOKEN .. "\n" })
      local c = assert(p:get())
      assert.equal("AKIDDEV", c.access_key_id)
      assert.equal(TOKEN, c.session_token)
    end)

    it("reads '[profile name]' in the config file and ignores a bare '[name]' there", function()
      local contents = { [CONFIG_FILE] =
        "[dev]\naws_access_key_id = AKIDWRONG\naws_secret_access_key = x\n"
        .. "[profile dev]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = " .. SECRET .. "\n" }
      local c = assert(provider({}, contents, "dev"):get())
      assert.equal("AKIDPROFILE", c.access_key_id)
      assert.equal("shared-config-file", c.source)
    end)

    it("prefers the explicit profile to AWS_PROFILE", function()
      local contents = { [CRED_FILE] = "[a]\naws_access_key_id = AKIDA\naws_secret_access_key = x\n"
        .. "[b]\naws_access_key_id = AKIDB\naws_secret_access_key = x\n" }
      assert.equal("AKIDA", assert(provider({ AWS_PROFILE = "b" }, contents, "a"):get()).access_key_id)
    end)

    it("follows AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE", function()
      local contents = { ["/etc/aws/creds"] = "[default]\naws_access_key_id = AKIDMOVED\naws_secret_access_key = x\n" }
      local c = assert(provider({ AWS_SHARED_CREDENTIALS_FILE = "/etc/aws/creds",
        AWS_CONFIG_FILE = "/etc/aws/config" }, contents):get())
      assert.equal("AKIDMOVED", c.access_key_id)
    end)

    it("moves on when the files are missing and no profile was named", function()
      local p, calls = provider({ AWS_CONTAINER_CREDENTIALS_FULL_URI = FAKE_CONTAINER }, {})
      assert.equal("container", assert(p:get()).source)
      assert.equal(1, #calls)
    end)

    it("moves on when the default profile only holds settings", function()
      local p = provider({ AWS_CONTAINER_CREDENTIALS_FULL_URI = FAKE_CONTAINER },
        { [CONFIG_FILE] = "[default]\nregion = eu-west-1\n" })
      assert.equal("container", assert(p:get()).source)
    end)

    it("fails, without trying further sources, when a named profile exists nowhere", function()
      local p, calls = provider({ AWS_PROFILE = "prod", AWS_CONTAINER_CREDENTIALS_FULL_URI = FAKE_CONTAINER },
        { [CRED_FILE] = "[default]\naws_access_key_id = A\naws_secret_access_key = x\n" })
      local c, err = p:get()
      assert.is_nil(c)
      assert.matches("no profile prod in " .. CRED_FILE, err.message, 1, true)
      assert.equal(0, #calls)
    end)

    it("fails on a profile with only one half of the key pair", function()
      local c, err = provider({}, { [CRED_FILE] = "[default]\naws_access_key_id = AKID\n" }):get()
      assert.is_nil(c)
      assert.matches("only one of aws_access_key_id and aws_secret_access_key", err.message, 1, true)
    end)

    it("fails on a profile that needs an unsupported provider such as sso_session", function()
      local p, calls = provider({ AWS_CONTAINER_CREDENTIALS_FULL_URI = FAKE_CONTAINER },
        { [CONFIG_FILE] = "[profile ops]\nsso_session = corp\nsso_account_id = 1\n" }, "ops")
      local c, err = p:get()
      assert.is_nil(c)
      assert.matches("IAM Identity Center (sso_session), which dynlog does not support", err.message, 1, true)
      assert.equal(0, #calls)
    end)

    it("reports a malformed credentials file by line, without its secrets", function()
      local c, err = provider({}, { [CRED_FILE] = "[default]\naws_access_key_id = AKID\n" .. SECRET .. "\n" }):get()
      assert.is_nil(c)
      assert.matches(CRED_FILE .. " line 3", err.message, 1, true)
      assert_no_secrets(err)
    end)
  end)

  describe("container source", function()
    local function provider(vars, routes, opts)
      local send, calls = scripted(routes)
      opts = opts or {}
      opts.getenv, opts.read_file, opts.http = env(vars), opts.read_file or files(), send
      return credentials.provider(opts), calls
    end

    it("asks 169.254.170.2 plus AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", function()
      local p, calls = provider({ AWS_CONTAINER_CREDENTIALS_RELATIVE_URI = "/v2/credentials/abc",
        AWS_CONTAINER_CREDENTIALS_FULL_URI = FAKE_CONTAINER },
        { ["GET http://169.254.170.2/v2/credentials/abc"] = { ok(document()) } })
      local c = assert(p:get())
      assert.equal("ASIAFROMDOC", c.access_key_id)
      assert.equal(SECRET, c.secret_access_key)
      assert.equal(TOKEN, c.session_token)
      assert.equal(EXPIRATION, c.expiration)
      assert.equal(1, #calls)
      assert.is_nil(calls[1].headers.Authorization)
    end)

    it("accepts FULL_URI over http only for loopback and the ECS/EKS agent addresses", function()
      for _, url in ipairs({ "http://127.0.0.1:51679/creds", "http://127.1.2.3/creds",
          "http://localhost:8080/creds", "http://LOCALHOST/creds", "http://[::1]:80/creds",
          "http://169.254.170.2/v1/credentials", "http://169.254.170.23/v1/credentials",
          "http://[fd00:ec2::23]/v1/credentials", "https://creds.example.test/path" }) do
        local p, calls = provider({ AWS_CONTAINER_CREDENTIALS_FULL_URI = url },
          { ["GET " .. url] = { ok(document()) } })
        assert.equal("container", assert(p:get()).source, url)
        assert.equal(1, #calls, url)
      end
    end)

    it("refuses FULL_URI over http to any other host without sending a request", function()
      for _, url in ipairs({ "http://192.0.2.10/creds", "http://10.0.0.1:8080/creds",
          "http://169.254.169.254/latest", "http://127.0.0.1.example.test/creds",
          "http://127.0.0.1@example.test/creds", "http://example.test\\@127.0.0.1/creds",
          "http://localhost.example.test/creds", "http://128.0.0.1/creds",
          "http://127.0.0.256/creds", "http://[fd00:ec2::24]/creds", "ftp://127.0.0.1/creds",
          "127.0.0.1/creds" }) do
        local p, calls = provider({ AWS_CONTAINER_CREDENTIALS_FULL_URI = url,
          AWS_CONTAINER_AUTHORIZATION_TOKEN = AUTH_TOKEN }, {})
        local c, err = p:get()
        assert.is_nil(c, url)
        assert.matches("AWS_CONTAINER_CREDENTIALS_FULL_URI", err.message, 1, true)
        assert.equal(0, #calls, url)
        assert_no_secrets(err)
      end
    end)

    it("refuses an authorization token with a line break", function()
      local p, calls = provider({ AWS_CONTAINER_CREDENTIALS_FULL_URI = FAKE_CONTAINER,
        AWS_CONTAINER_AUTHORIZATION_TOKEN = AUTH_TOKEN .. "\r\nX-Injected: 1" }, {})
      local c, err = p:get()
      assert.is_nil(c)
      assert.matches("line break", err.message, 1, true)
      assert.equal(0, #calls)
      assert_no_secrets(err)
    end)

    it("fails clearly when the token file cannot be read", function()
      local p, calls = provider({ AWS_CONTAINER_CREDENTIALS_FULL_URI = FAKE_CONTAINER,
        AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE = "/var/run/missing-token" }, {})
      local c, err = p:get()
      assert.is_nil(c)
      assert.matches("/var/run/missing-token", err.message, 1, true)
      assert.equal(0, #calls)
    end)

    it("retries a 5xx once and reports the status, never the body", function()
      local p, calls = provider({ AWS_CONTAINER_CREDENTIALS_FULL_URI = FAKE_CONTAINER },
        { ["GET " .. FAKE_CONTAINER] = { { status = 500, headers = {}, body = document() } } })
      local c, err = p:get()
      assert.is_nil(c)
      assert.matches("HTTP 500", err.message, 1, true)
      assert.equal(2, #calls)
      assert_no_secrets(err)
    end)

    it("rejects a document without keys or with a bad Expiration, without echoing it", function()
      for _, body in ipairs({ document({ AccessKeyId = false }), document({ Expiration = "soon " .. SECRET }),
          "{not json " .. SECRET, document({ Code = "Failure" }) }) do
        local p = provider({ AWS_CONTAINER_CREDENTIALS_FULL_URI = FAKE_CONTAINER },
          { ["GET " .. FAKE_CONTAINER] = { ok(body) } })
        local c, err = p:get()
        assert.is_nil(c)
        assert.equal("credentials", err.code)
        assert_no_secrets(err)
      end
    end)

    it("accepts credentials without Expiration and keeps them", function()
      local p, calls = provider({ AWS_CONTAINER_CREDENTIALS_FULL_URI = FAKE_CONTAINER },
        { ["GET " .. FAKE_CONTAINER] = { ok(document({ Expiration = false, Token = false })) } })
      local c = assert(p:get())
      assert.is_nil(c.expiration)
      assert.is_nil(c.session_token)
      assert.equal(c, p:get())
      assert.equal(1, #calls)
    end)
  end)

  describe("IMDS source", function()
    it("is skipped without a request when AWS_EC2_METADATA_DISABLED is true in any case", function()
      local send, calls = scripted({})
      local p = credentials.provider({ read_file = files(), http = send, getenv = env({
        AWS_EC2_METADATA_DISABLED = "True", AWS_EC2_METADATA_SERVICE_ENDPOINT = FAKE_IMDS }) })
      local c, err = p:get()
      assert.is_nil(c)
      assert.matches("imds: disabled by AWS_EC2_METADATA_DISABLED", err.message, 1, true)
      assert.equal(0, #calls)
    end)

    it("defaults to http://169.254.169.254 (seen only by a fake transport here)", function()
      local send, calls = scripted({
        ["PUT http://169.254.169.254/latest/api/token"] = { { err = "no route" } } })
      local p = credentials.provider({ read_file = files(), http = send,
        getenv = env({ AWS_EC2_METADATA_DISABLED = false }) })
      local c, err = p:get()
      assert.is_nil(c)
      assert.matches("no answer from http://169.254.169.254", err.message, 1, true)
      assert.equal(1, #calls)
    end)

    it("uses the IPv6 address in IPv6 endpoint mode (fake transport)", function()
      local send, calls = scripted({
        ["PUT http://[fd00:ec2::254]/latest/api/token"] = { { err = "no route" } } })
      local p = credentials.provider({ read_file = files(), http = send, getenv = env({
        AWS_EC2_METADATA_DISABLED = false, AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE = "IPv6" }) })
      assert.is_nil(p:get())
      assert.equal(1, #calls)
    end)

    it("asks for a token once only, so a host without IMDS fails fast", function()
      local send, calls = scripted({ ["PUT " .. FAKE_IMDS .. "/latest/api/token"] = {
        { err = { code = "timeout", message = "timed out" } } } })
      local p = credentials.provider({ read_file = files(), http = send, getenv = env({
        AWS_EC2_METADATA_DISABLED = false, AWS_EC2_METADATA_SERVICE_ENDPOINT = FAKE_IMDS }) })
      local c, err = p:get()
      assert.is_nil(c)
      assert.matches("timed out", err.message, 1, true)
      assert.equal(1, #calls)
      assert.equal(1, calls[1].timeout)
    end)

    it("says so when no role is attached", function()
      local routes = fake_imds_routes()
      routes["GET " .. FAKE_IMDS .. ROLE_PATH] = { { status = 404, headers = {}, body = "" } }
      local send = scripted(routes)
      local p = credentials.provider({ read_file = files(), http = send, getenv = env({
        AWS_EC2_METADATA_DISABLED = false, AWS_EC2_METADATA_SERVICE_ENDPOINT = FAKE_IMDS }) })
      local c, err = p:get()
      assert.is_nil(c)
      assert.matches("no IAM role", err.message, 1, true)
      assert_no_secrets(err)
    end)

    it("refuses a role name that would bend the path", function()
      local routes = fake_imds_routes()
      routes["GET " .. FAKE_IMDS .. ROLE_PATH] = { ok("../../user-data\n") }
      local send, calls = scripted(routes)
      local p = credentials.provider({ read_file = files(), http = send, getenv = env({
        AWS_EC2_METADATA_DISABLED = false, AWS_EC2_METADATA_SERVICE_ENDPOINT = FAKE_IMDS }) })
      local c, err = p:get()
      assert.is_nil(c)
      assert.matches("no valid role name", err.message, 1, true)
      assert.equal(2, #calls)
    end)

    it("rejects a document whose Code is not Success, without echoing it", function()
      local send = scripted(fake_imds_routes(document({ Code = "Failure" })))
      local p = credentials.provider({ read_file = files(), http = send, getenv = env({
        AWS_EC2_METADATA_DISABLED = false, AWS_EC2_METADATA_SERVICE_ENDPOINT = FAKE_IMDS }) })
      local c, err = p:get()
      assert.is_nil(c)
      assert.matches("Code Failure", err.message, 1, true)
      assert_no_secrets(err)
    end)
  end)

  describe("caching and refresh", function()
    local clock
    local function now() return clock end

    local function container_provider(responses, opts)
      local send, calls = scripted({ ["GET " .. FAKE_CONTAINER] = responses })
      opts = opts or {}
      opts.getenv = env({ AWS_CONTAINER_CREDENTIALS_FULL_URI = FAKE_CONTAINER })
      opts.read_file, opts.http, opts.now = files(), send, now
      return credentials.provider(opts), calls
    end

    local FIRST = ok(document({ AccessKeyId = "ASIAFIRST" }))
    local SECOND = ok(document({ AccessKeyId = "ASIASECOND", Expiration = "2026-11-25T13:00:00Z" }))
    local FAILURE = { status = 500, headers = {}, body = "" }

    before_each(function() clock = EXPIRATION - 3600 end)

    it("caches static credentials for good", function()
      local vars = { AWS_ACCESS_KEY_ID = "AKIDONE", AWS_SECRET_ACCESS_KEY = SECRET }
      local p = credentials.provider({ getenv = env(vars), read_file = files(), http = scripted(), now = now })
      assert.equal("AKIDONE", assert(p:get()).access_key_id)
      vars.AWS_ACCESS_KEY_ID = "AKIDTWO"
      clock = clock + 10 * 365 * 86400
      assert.equal("AKIDONE", assert(p:get()).access_key_id)
    end)

    it("keeps temporary credentials until fewer than 5 minutes remain, then refreshes", function()
      local p, calls = container_provider({ FIRST, SECOND })
      assert.equal("ASIAFIRST", assert(p:get()).access_key_id)
      clock = EXPIRATION - 301
      assert.equal("ASIAFIRST", assert(p:get()).access_key_id)
      assert.equal(1, #calls)
      clock = EXPIRATION - 299
      local c = assert(p:get())
      assert.equal("ASIASECOND", c.access_key_id)
      assert.equal(EXPIRATION + 3600, c.expiration)
      assert.equal(2, #calls)
    end)

    it("honours a custom refresh window", function()
      local p, calls = container_provider({ FIRST, SECOND }, { refresh_window = 60 })
      assert(p:get())
      clock = EXPIRATION - 100
      assert.equal("ASIAFIRST", assert(p:get()).access_key_id)
      clock = EXPIRATION - 59
      assert.equal("ASIASECOND", assert(p:get()).access_key_id)
      assert.equal(2, #calls)
    end)

    it("keeps the old credentials while they last when a refresh fails", function()
      local p, calls = container_provider({ FIRST, FAILURE })
      assert(p:get())
      clock = EXPIRATION - 200
      local c = assert(p:get())
      assert.equal("ASIAFIRST", c.access_key_id)
      assert.equal(3, #calls) -- the first fetch, then a failed refresh of two attempts
      clock = EXPIRATION
      local none, err = p:get()
      assert.is_nil(none)
      assert.equal("credentials", err.code)
      assert.matches("refreshing AWS credentials failed: container", err.message, 1, true)
      assert_no_secrets(err)
    end)

    it("waits retry_interval between failed refreshes instead of asking on every call", function()
      local p, calls = container_provider({ FIRST, FAILURE }, { retry_interval = 30 })
      assert(p:get())
      clock = EXPIRATION - 200
      assert(p:get())
      local after_failure = #calls
      clock = EXPIRATION - 171
      assert(p:get())
      assert.equal(after_failure, #calls)
      clock = EXPIRATION - 170
      assert(p:get())
      assert.is_true(#calls > after_failure)
    end)

    it("does not refetch on every call when fresh credentials are already inside the window", function()
      local p, calls = container_provider({ FIRST }, { retry_interval = 10 })
      clock = EXPIRATION - 100
      assert(p:get())
      assert(p:get())
      assert.equal(1, #calls)
      clock = EXPIRATION - 90
      assert(p:get())
      assert.equal(2, #calls)
    end)

    it("refreshes from the source that produced the credentials", function()
      local vars = { AWS_CONTAINER_CREDENTIALS_FULL_URI = FAKE_CONTAINER }
      local send, calls = scripted({ ["GET " .. FAKE_CONTAINER] = { FIRST, SECOND } })
      local p = credentials.provider({ getenv = env(vars), read_file = files(), http = send, now = now })
      assert(p:get())
      vars.AWS_ACCESS_KEY_ID, vars.AWS_SECRET_ACCESS_KEY = "AKIDLATE", SECRET
      clock = EXPIRATION - 10
      assert.equal("ASIASECOND", assert(p:get()).access_key_id)
      assert.equal(2, #calls)
      assert.equal("credentials.provider(container)", tostring(p))
    end)

    it("runs the chain again after invalidate()", function()
      local p, calls = container_provider({ FIRST, SECOND })
      assert(p:get())
      p:invalidate()
      assert.equal("ASIASECOND", assert(p:get()).access_key_id)
      assert.equal(2, #calls)
    end)
  end)

  describe("against a loopback HTTP server", function()
    local server = require("support.server")
    local http = require("dynlog.transport.curl")
    local s

    after_each(function()
      if s then s.stop() end
      s = nil
    end)

    -- Real transport, real sockets: only ever to the 127.0.0.1 server.
    local function loopback_provider(vars, opts)
      for _, name in ipairs({ "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_EC2_METADATA_SERVICE_ENDPOINT" }) do
        if vars[name] then assert(vars[name]:find("^http://127%.0%.0%.1:%d+")) end
      end
      assert.is_nil(vars.AWS_CONTAINER_CREDENTIALS_RELATIVE_URI)
      if vars.AWS_EC2_METADATA_DISABLED == false then assert(vars.AWS_EC2_METADATA_SERVICE_ENDPOINT) end
      opts = opts or {}
      opts.getenv = env(vars)
      opts.read_file = opts.read_file or files()
      opts.http = http.new({ timeout = 2, connect_timeout = 1 })
      return credentials.provider(opts)
    end

    it("sends AWS_CONTAINER_AUTHORIZATION_TOKEN as the Authorization header", function()
      s = server.start({ { method = "GET", path = "/v1/creds", responses = { { status = 200, body = document() } } } })
      local p = loopback_provider({ AWS_CONTAINER_CREDENTIALS_FULL_URI = s.url .. "/v1/creds",
        AWS_CONTAINER_AUTHORIZATION_TOKEN = AUTH_TOKEN })
      local c = assert(p:get())
      assert.equal("ASIAFROMDOC", c.access_key_id)
      assert.equal(EXPIRATION, c.expiration)
      local requests = s.requests()
      assert.equal(1, #requests)
      assert.equal("GET", requests[1].method)
      assert.equal("/v1/creds", requests[1].path)
      assert.equal(AUTH_TOKEN, requests[1].headers.authorization)
      assert_no_secrets(c)
      assert_no_secrets(p)
    end)

    it("re-reads and trims the token file on every fetch, preferring it to the variable", function()
      local token_file = os.tmpname()
      finally(function() os.remove(token_file) end)
      local function write_token(text)
        local f = assert(io.open(token_file, "wb"))
        f:write(text)
        f:close()
      end
      write_token("  first-token\n")
      s = server.start({ { method = "GET", path = "/creds", responses = { { status = 200, body = document() } } } })
      -- The real file reader, so the file is read from disk each time.
      local p = loopback_provider({ AWS_CONTAINER_CREDENTIALS_FULL_URI = s.url .. "/creds",
        AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE = token_file,
        AWS_CONTAINER_AUTHORIZATION_TOKEN = AUTH_TOKEN }, { read_file = require("dynlog.aws.config").read_file })
      assert(p:get())
      write_token("second-token\r\n")
      p:invalidate()
      assert(p:get())
      local requests = s.requests()
      assert.equal(2, #requests)
      assert.equal("first-token", requests[1].headers.authorization)
      assert.equal("second-token", requests[2].headers.authorization)
    end)

    it("refreshes container credentials as the server's answers change", function()
      local clock = EXPIRATION - 3600
      s = server.start({ { method = "GET", path = "/creds", responses = {
        { status = 200, body = document({ AccessKeyId = "ASIAFIRST" }) },
        { status = 503, body = "" },
        { status = 200, body = document({ AccessKeyId = "ASIATHIRD", Expiration = "2026-11-25T13:00:00.000+00:00" }) },
      } } })
      local p = loopback_provider({ AWS_CONTAINER_CREDENTIALS_FULL_URI = s.url .. "/creds" },
        { now = function() return clock end, container_attempts = 1 })
      assert.equal("ASIAFIRST", assert(p:get()).access_key_id)
      clock = EXPIRATION - 120 -- inside the window: the refresh gets a 503
      assert.equal("ASIAFIRST", assert(p:get()).access_key_id)
      clock = EXPIRATION - 60  -- retry_interval later: the third answer
      local c = assert(p:get())
      assert.equal("ASIATHIRD", c.access_key_id)
      assert.equal(EXPIRATION + 3600, c.expiration)
      assert.equal(3, #s.requests())
    end)

    it("speaks IMDSv2: token PUT first, then the token on every GET", function()
      s = server.start({
        { method = "PUT", path = "/latest/api/token", responses = { { status = 200, body = IMDS_TOKEN,
          headers = { ["Content-Type"] = "text/plain" } } } },
        { method = "GET", path = ROLE_PATH, responses = { { status = 200, body = "app-role\nother-role" } } },
        { method = "GET", path = ROLE_PATH .. "app-role", responses = { { status = 200,
          body = document({ AccessKeyId = "ASIAIMDS", LastUpdated = "2026-11-25T11:00:00Z", Type = "AWS-HMAC" }) } } },
      })
      local p = loopback_provider({ AWS_EC2_METADATA_DISABLED = false,
        AWS_EC2_METADATA_SERVICE_ENDPOINT = s.url .. "/" })
      local c = assert(p:get())
      assert.equal("ASIAIMDS", c.access_key_id)
      assert.equal(SECRET, c.secret_access_key)
      assert.equal(TOKEN, c.session_token)
      assert.equal(EXPIRATION, c.expiration)
      assert.equal("imds", c.source)

      local requests = s.requests()
      assert.equal(3, #requests)
      assert.equal("PUT", requests[1].method)
      assert.equal("/latest/api/token", requests[1].path)
      assert.equal("21600", requests[1].headers["x-aws-ec2-metadata-token-ttl-seconds"])
      assert.equal(ROLE_PATH, requests[2].path)
      assert.equal(ROLE_PATH .. "app-role", requests[3].path)
      for i = 2, 3 do
        assert.equal("GET", requests[i].method)
        assert.equal(IMDS_TOKEN, requests[i].headers["x-aws-ec2-metadata-token"])
      end
    end)

    it("gives up on a silent IMDS within its timeout, after one token request", function()
      s = server.start({ { method = "PUT", path = "/latest/api/token",
        responses = { { status = 200, body = IMDS_TOKEN, delay_ms = 1500 } } } })
      local p = loopback_provider({ AWS_EC2_METADATA_DISABLED = false,
        AWS_EC2_METADATA_SERVICE_ENDPOINT = s.url }, { imds_timeout = 0.3 })
      local socket = require("socket")
      local started = socket.gettime()
      local c, err = p:get()
      local elapsed = socket.gettime() - started
      assert.is_nil(c)
      assert.matches("no answer from " .. s.url, err.message, 1, true)
      assert.is_true(elapsed < 1.2, "took " .. elapsed .. " s")
      assert.equal(1, #s.requests())
    end)

    it("never puts secrets into errors, even when the server echoes them", function()
      s = server.start({ { method = "GET", path = "/creds", responses = {
        { status = 403, body = { message = "denied for " .. AUTH_TOKEN .. " " .. SECRET } },
      } } })
      local p = loopback_provider({ AWS_CONTAINER_CREDENTIALS_FULL_URI = s.url .. "/creds",
        AWS_CONTAINER_AUTHORIZATION_TOKEN = AUTH_TOKEN })
      local c, err = p:get()
      assert.is_nil(c)
      assert.matches("HTTP 403", err.message, 1, true)
      assert_no_secrets(err)
      assert_no_secrets(err.message)
      for _, line in ipairs(err.tried) do assert_no_secrets(line) end
      assert.equal(1, #s.requests())
    end)
  end)
end)
