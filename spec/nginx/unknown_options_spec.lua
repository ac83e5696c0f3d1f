-- Every public function that takes a table of options (or of request
-- fields) refuses a key it does not know, at the caller's line, naming the
-- key and the nearest known one (dynlog.options): the transports, the
-- credentials provider and values, dynlog.aws.config and dynlog.sigv4. A
-- misspelt key must never run as if it were absent.
local cjson = require "cjson"
local config = require "dynlog.aws.config"
local credentials = require "dynlog.aws.credentials"
local http = require "dynlog.transport.curl"
local sigv4 = require "dynlog.sigv4"

-- f must raise on the one line it is written on.
local function assert_unknown(f, where, key, near)
  local line = debug.getinfo(f, "S").linedefined
  local ok, err = pcall(f)
  assert.is_false(ok, "no error for " .. key)
  err = tostring(err)
  assert.matches(("%s: unknown option %q"):format(where, key), err, 1, true)
  if near then assert.matches(("(did you mean %q?)"):format(near), err, 1, true) end
  assert.matches("unknown_options_spec.lua:" .. line .. ":", err, 1, true)
end

local NO_ENV = { getenv = function() return nil end, read_file = function() return nil end }

describe("unknown option keys", function()
  it("dynlog.transport.curl.new and a transport's request refuse them", function()
    assert_unknown(function() http.new{ timout = 3 } end, "dynlog.transport.curl.new", "timout", "timeout")
    assert_unknown(function() http.new{ max_response_byte = 2048 } end, "dynlog.transport.curl.new",
      "max_response_byte",
      "max_response_bytes")
    local t = http.new{ timeout = 1, connect_timeout = 1, max_response_bytes = 2048 }
    finally(function() t:close() end)
    assert_unknown(function() t:request{ url = "http://127.0.0.1:1/", header = {} } end,
      "dynlog.transport.curl request",
      "header", "headers")
    -- known keys pass: the request goes out (and finds nobody)
    local res, err = t:request{ method = "GET", url = "http://127.0.0.1:1/", headers = {}, body = nil, timeout = 1 }
    assert.is_nil(res)
    assert.are.equal("connection", err.code)
  end)

  it("credentials.provider refuses them, in its options and in its credentials", function()
    assert_unknown(function() credentials.provider{ proflie = "dev" } end, "credentials.provider", "proflie", "profile")
    assert_unknown(function() credentials.provider{ imds_attempt = 1 } end, "credentials.provider", "imds_attempt",
      "imds_attempts")
    local typo = { access_key_id = "AKID", secret_acess_key = "s" }
    assert_unknown(function() credentials.provider{ credentials = typo } end, "credentials.provider: credentials",
      "secret_acess_key", "secret_access_key")
    -- every documented option passes
    local p = credentials.provider{ credentials = { access_key_id = "AKID", secret_access_key = "s",
      session_token = "t", expiration = 4102444800, source = "vault" }, profile = "dev", getenv = NO_ENV.getenv,
      read_file = NO_ENV.read_file, http = function() end, now = os.time, refresh_window = 60, retry_interval = 5,
      imds_timeout = 1, imds_attempts = 1, container_timeout = 1, container_attempts = 1 }
    assert.are.equal("AKID", assert(p:get()).access_key_id)
  end)

  it("credentials.new refuses them, and takes a credentials value as it is", function()
    local typo = { access_key_id = "AKID", secret_access_key = "s", sesion_token = "t" }
    assert_unknown(function() credentials.new(typo) end, "credentials.new", "sesion_token", "session_token")
    local creds = credentials.new({ access_key_id = "AKID", secret_access_key = "s", session_token = "t",
                                    expiration = 4102444800 }, "env")
    assert.are.equal("env", credentials.new(creds).source)
  end)

  it("dynlog.aws.config's functions refuse them", function()
    assert_unknown(function() config.region{ regoin = "us-east-1" } end, "config.region", "regoin", "region")
    assert_unknown(function() config.endpoint("dynamodb", { region = "us-east-1", endpiont = "http://x" }) end,
      "config.endpoint", "endpiont", "endpoint")
    assert_unknown(function() config.profile{ profil = "dev" } end, "config.profile", "profil", "profile")
    assert_unknown(function() config.files{ get_env = os.getenv } end, "config.files", "get_env", "getenv")
    assert_unknown(function() config.load_profile{ readfile = io.open } end, "config.load_profile", "readfile",
      "read_file")
    local opts = { region = "us-east-1", profile = "dev", endpoint = "http://127.0.0.1:8000",
                   getenv = NO_ENV.getenv, read_file = NO_ENV.read_file }
    assert.are.equal("http://127.0.0.1:8000", assert(config.endpoint("dynamodb", opts)).url)
  end)

  it("dynlog.sigv4 refuses them in a request and in its credentials", function()
    local function req(extra, creds)
      local r = { method = "POST", url = "https://dynamodb.us-east-1.amazonaws.com/", body = "{}",
        region = "us-east-1", service = "dynamodb", time = 1700000000,
        credentials = creds or { access_key_id = "AKIDEXAMPLE", secret_access_key = "spec-secret-key" } }
      for k, v in pairs(extra) do r[k] = v end
      return r
    end
    local signer = sigv4.new_signer()
    assert_unknown(function() sigv4.sign(req{ normalise_path = false }) end, "sigv4.sign", "normalise_path",
      "normalize_path")
    assert_unknown(function() sigv4.explain(req{ sign_session_tokens = false }) end, "sigv4.explain",
      "sign_session_tokens", "sign_session_token")
    assert_unknown(function() signer:sign(req{ header = {} }) end, "signer:sign", "header", "headers")
    assert_unknown(function() signer:explain(req{ tme = 1 }) end, "signer:explain", "tme", "time")
    assert_unknown(function() sigv4.sign(req({}, { access_key_id = "AKID", secret_key = "s" })) end,
      "sigv4.sign: credentials", "secret_key", nil)
    -- every field passes, and a credentials value from dynlog.aws.credentials as it is
    local creds = credentials.new({ access_key_id = "AKID", secret_access_key = "spec-secret-key",
                                    session_token = "tok", expiration = 4102444800 }, "env")
    local headers = assert(sigv4.sign(req({ headers = { ["X-Amz-Target"] = "x" }, normalize_path = true,
      content_sha256_header = true, sign_session_token = true }, creds)))
    assert.are.equal("tok", headers["X-Amz-Security-Token"])
    local _, steps = assert(signer:explain(req{}))
    assert.is_string(steps.signature)
  end)
end)

describe("unknown option keys, inside nginx", function()
  local nginx = require "spec.support.nginx"
  local socket_http = require "socket.http"
  local srv

  setup(function()
    srv = nginx.start({
      workers = 1,
      server = [[location = /options { content_by_lua_block {
        local ngx_http = require "dynlog.transport.cosocket"
        local function caught(f)
          local ok, err = pcall(f)
          return ok and "no error" or tostring(err)
        end
        local t = ngx_http.new{ timeout = 1, connect_timeout = 1, pool_size = 2, keepalive_timeout = 1,
                                verify = true, max_response_bytes = 2048, cafile = "/dev/null" }
        local res, err = t:request{ method = "GET", url = "http://127.0.0.1:1/", headers = {}, timeout = 1 }
        ngx.say(require("cjson").encode({
          new = caught(function() ngx_http.new{ pool_sise = 5 } end),
          request = caught(function() t:request{ url = "http://127.0.0.1:1/", bodyy = "" } end),
          known = res and "answered" or err.code,
        }))
      } }
      ]],
    })
  end)
  teardown(function() if srv then srv.stop() end end)

  it("dynlog.transport.cosocket.new and its request refuse them", function()
    local body, code = socket_http.request(srv.url .. "/options")
    assert.are.equal(200, code, tostring(body) .. srv.error_log():sub(-2000))
    local out = cjson.decode(body)
    assert.matches('dynlog.transport.cosocket.new: unknown option "pool_sise" (did you mean "pool_size"?)',
      out.new, 1, true)
    assert.matches('dynlog.transport.cosocket request: unknown option "bodyy" (did you mean "body"?)',
      out.request, 1, true)
    -- blamed on the handler's line, not on dynlog's
    assert.not_matches("ngx_http.lua", out.new, 1, true)
    assert.not_matches("ngx_http.lua", out.request, 1, true)
    assert.are.equal("connection", out.known)
  end)
end)
