local config = require("dynlog.aws.config")
local ini = require("dynlog.aws.ini")

-- The specs never read the process environment or the real ~/.aws: both are
-- injected from tables.
local function env(vars)
  vars = vars or {}
  if vars.HOME == nil then vars.HOME = "/home/spec" end
  return function(name) return vars[name] or nil end -- HOME = false: unset
end

local function files(contents)
  contents = contents or {}
  return function(path) return contents[path] end
end

local CRED_FILE = "/home/spec/.aws/credentials"
local CONFIG_FILE = "/home/spec/.aws/config"

describe("dynlog.aws.ini", function()
  it("reads sections, lower-cases keys and trims whitespace around '='", function()
    local sections = assert(ini.parse("[default]\nAWS_Access_Key_ID   =   AKID  \nRegion=eu-west-1\n"))
    assert.same({ aws_access_key_id = "AKID", region = "eu-west-1" }, sections.default)
  end)

  it("skips '#' and ';' comment lines and blank lines", function()
    local sections = assert(ini.parse("# top\n\n[a]\n; note\n  # indented comment\nk = v\n"))
    assert.same({ a = { k = "v" } }, sections)
  end)

  it("keeps '#' and ';' inside values, as the AWS CLI does", function()
    local sections = assert(ini.parse("[a]\nsecret = ab#cd;ef\n"))
    assert.equal("ab#cd;ef", sections.a.secret)
  end)

  it("accepts ':' as a delimiter and splits at the first one", function()
    local sections = assert(ini.parse("[a]\nrole_arn = arn:aws:iam::1:role/x\nb: c=d\n"))
    assert.equal("arn:aws:iam::1:role/x", sections.a.role_arn)
    assert.equal("c=d", sections.a.b)
  end)

  it("handles CRLF line ends, a byte order mark and a missing final newline", function()
    local sections = assert(ini.parse("\239\187\191[a]\r\nk = v\r\nz = last"))
    assert.same({ k = "v", z = "last" }, sections.a)
  end)

  it("reads indented keys under an empty value as a nested table", function()
    local sections = assert(ini.parse("[a]\ns3 =\n  max_concurrent_requests = 20\nnext = 1\n"))
    assert.same({ max_concurrent_requests = "20" }, sections.a.s3)
    assert.equal("1", sections.a.next)
  end)

  it("reports a malformed line by number without echoing its content", function()
    local sections, err = ini.parse("[a]\nk = v\nwJalrXUtnFEMI-not-an-assignment\n", "/x/credentials")
    assert.is_nil(sections)
    assert.equal("config", err.code)
    assert.matches("/x/credentials line 3", err.message, 1, true)
    assert.not_matches("wJalr", tostring(err), 1, true)
  end)

  it("refuses keys before any section", function()
    local sections, err = ini.parse("k = v\n[a]\n")
    assert.is_nil(sections)
    assert.matches("line 1", err.message, 1, true)
  end)

  it("finds '[profile name]' sections, and '[default]' for the default profile", function()
    local sections = assert(ini.parse("[default]\nr = 1\n[profile   dev]\nr = 2\n[prod]\nr = 3\n"))
    assert.equal("1", ini.config_section(sections, "default").r)
    assert.equal("2", ini.config_section(sections, "dev").r)
    assert.is_nil(ini.config_section(sections, "prod"))
  end)
end)

describe("dynlog.aws.config", function()
  describe("profile", function()
    it("prefers the explicit profile, then AWS_PROFILE, then 'default'", function()
      assert.equal("a", (config.profile({ profile = "a", getenv = env({ AWS_PROFILE = "b" }) })))
      assert.equal("b", (config.profile({ getenv = env({ AWS_PROFILE = "b" }) })))
      local name, explicit = config.profile({ getenv = env({}) })
      assert.equal("default", name)
      assert.is_false(explicit)
    end)

    it("treats an empty AWS_PROFILE as unset", function()
      assert.equal("default", (config.profile({ getenv = env({ AWS_PROFILE = "" }) })))
    end)
  end)

  describe("files", function()
    it("defaults to ~/.aws/credentials and ~/.aws/config under HOME", function()
      assert.same({ credentials = CRED_FILE, config = CONFIG_FILE },
        config.files({ getenv = env({}) }))
    end)

    it("follows AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE, expanding ~", function()
      assert.same({ credentials = "/etc/c", config = "/home/spec/cfg" },
        config.files({ getenv = env({
          AWS_SHARED_CREDENTIALS_FILE = "/etc/c", AWS_CONFIG_FILE = "~/cfg" }) }))
    end)

    it("has no default paths when HOME is unset", function()
      assert.same({}, config.files({ getenv = env({ HOME = false }) }))
    end)
  end)

  describe("region", function()
    local region_env = {
      AWS_REGION = "eu-west-1", AWS_DEFAULT_REGION = "eu-west-2",
    }
    local read = files({ [CONFIG_FILE] = "[default]\nregion = eu-west-3\n"
      .. "[profile dev]\nregion = ap-south-1\n" })

    it("prefers the explicit region", function()
      assert.equal("us-east-2", config.region({
        region = "us-east-2", getenv = env(region_env), read_file = read }))
    end)

    it("then AWS_REGION", function()
      assert.equal("eu-west-1", config.region({ getenv = env(region_env), read_file = read }))
    end)

    it("then AWS_DEFAULT_REGION", function()
      assert.equal("eu-west-2", config.region({
        getenv = env({ AWS_DEFAULT_REGION = "eu-west-2" }), read_file = read }))
    end)

    it("then the default profile's region in the config file", function()
      assert.equal("eu-west-3", config.region({ getenv = env(), read_file = read }))
    end)

    it("reads a named profile from its '[profile name]' section", function()
      assert.equal("ap-south-1", config.region({ profile = "dev", getenv = env(), read_file = read }))
      assert.equal("ap-south-1", config.region({
        getenv = env({ AWS_PROFILE = "dev" }), read_file = read }))
    end)

    it("accepts '[profile default]' in the config file", function()
      assert.equal("sa-east-1", config.region({ getenv = env(), read_file = files({
        [CONFIG_FILE] = "[profile default]\nregion = sa-east-1\n" }) }))
    end)

    it("ignores a region in the credentials file, as the CLI does", function()
      local region, err = config.region({ getenv = env(), read_file = files({
        [CRED_FILE] = "[default]\nregion = eu-north-1\n" }) })
      assert.is_nil(region)
      assert.equal("config", err.code)
    end)

    it("says what to set when no region is configured and no file exists", function()
      local region, err = config.region({ getenv = env(), read_file = files() })
      assert.is_nil(region)
      assert.equal("config", err.code)
      assert.matches("AWS_REGION", err.message, 1, true)
      assert.matches("opts.region", err.message, 1, true)
    end)

    it("handles a missing HOME and missing files through the real reader", function()
      local region, err = config.region({ getenv = env({ HOME = "/nonexistent/dynlog-spec" }) })
      assert.is_nil(region)
      assert.equal("config", err.code)
    end)

    it("rejects a region that cannot be part of a host name", function()
      local region, err = config.region({ region = "us-east-1/evil", getenv = env() })
      assert.is_nil(region)
      assert.matches("invalid AWS region", err.message, 1, true)
    end)

    it("passes on a malformed config file as an error", function()
      local region, err = config.region({ getenv = env(), read_file = files({
        [CONFIG_FILE] = "region = x\n" }) })
      assert.is_nil(region)
      assert.matches(CONFIG_FILE .. " line 1", err.message, 1, true)
    end)

    it("raises on option types that are programming errors", function()
      assert.has_error(function() config.region({ region = 42 }) end)
      assert.has_error(function() config.region({ getenv = "nope" }) end)
      assert.has_error(function() config.region("us-east-1") end)
    end)
  end)

  describe("endpoint", function()
    local base = { AWS_REGION = "eu-west-1" }

    it("gives the regional endpoints and signing names of the three services", function()
      local opts = { getenv = env(base) }
      assert.same({ url = "https://dynamodb.eu-west-1.amazonaws.com", region = "eu-west-1",
        signing_name = "dynamodb", service = "dynamodb", origin = "default" }, config.endpoint("dynamodb", opts))
      assert.same({ url = "https://streams.dynamodb.eu-west-1.amazonaws.com", region = "eu-west-1",
        signing_name = "dynamodb", service = "dynamodb_streams", origin = "default" },
        config.endpoint("dynamodb_streams", opts))
      assert.same({ url = "https://events.eu-west-1.amazonaws.com", region = "eu-west-1",
        signing_name = "events", service = "eventbridge", origin = "default" }, config.endpoint("eventbridge", opts))
    end)

    it("uses amazonaws.com.cn for China regions", function()
      local e = config.endpoint("dynamodb_streams", { region = "cn-north-1", getenv = env() })
      assert.equal("https://streams.dynamodb.cn-north-1.amazonaws.com.cn", e.url)
    end)

    it("prefers the service's AWS_ENDPOINT_URL_<SERVICE> over AWS_ENDPOINT_URL", function()
      local opts = { getenv = env({
        AWS_REGION = "eu-west-1",
        AWS_ENDPOINT_URL = "http://127.0.0.1:9000",
        AWS_ENDPOINT_URL_DYNAMODB = "http://127.0.0.1:8000",
        AWS_ENDPOINT_URL_DYNAMODB_STREAMS = "http://127.0.0.1:8001",
        AWS_ENDPOINT_URL_EVENTBRIDGE = "http://127.0.0.1:8002",
      }) }
      assert.equal("http://127.0.0.1:8000", config.endpoint("dynamodb", opts).url)
      assert.equal("AWS_ENDPOINT_URL_DYNAMODB", config.endpoint("dynamodb", opts).origin)
      assert.equal("http://127.0.0.1:8001", config.endpoint("dynamodb_streams", opts).url)
      assert.equal("http://127.0.0.1:8002", config.endpoint("eventbridge", opts).url)
    end)

    it("falls back to AWS_ENDPOINT_URL for every service", function()
      local opts = { getenv = env({ AWS_REGION = "eu-west-1", AWS_ENDPOINT_URL = "http://127.0.0.1:9000/" }) }
      for service in pairs(config.SERVICES) do
        local e = config.endpoint(service, opts)
        assert.equal("http://127.0.0.1:9000", e.url)
        assert.equal("eu-west-1", e.region)
      end
      assert.equal("events", config.endpoint("eventbridge", opts).signing_name)
    end)

    it("prefers an explicit endpoint over the environment", function()
      local e = config.endpoint("dynamodb", { endpoint = "https://ddb.example.test",
        getenv = env({ AWS_REGION = "eu-west-1", AWS_ENDPOINT_URL_DYNAMODB = "http://127.0.0.1:8000" }) })
      assert.equal("https://ddb.example.test", e.url)
    end)

    it("ignores the environment's endpoints when AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true", function()
      local e = config.endpoint("dynamodb", { getenv = env({ AWS_REGION = "eu-west-1",
        AWS_IGNORE_CONFIGURED_ENDPOINT_URLS = "TRUE", AWS_ENDPOINT_URL = "http://127.0.0.1:9000" }) })
      assert.equal("https://dynamodb.eu-west-1.amazonaws.com", e.url)
    end)

    it("rejects an endpoint that is not an http(s) URL", function()
      local e, err = config.endpoint("dynamodb", { getenv = env({ AWS_REGION = "eu-west-1",
        AWS_ENDPOINT_URL = "localhost:8000" }) })
      assert.is_nil(e)
      assert.equal("config", err.code)
      assert.matches("AWS_ENDPOINT_URL", err.message, 1, true)
    end)

    it("still needs a region for signing when the endpoint is overridden", function()
      local e, err = config.endpoint("dynamodb", { endpoint = "http://127.0.0.1:8000", getenv = env() ,
        read_file = files() })
      assert.is_nil(e)
      assert.equal("config", err.code)
    end)

    it("raises on an unknown service", function()
      assert.has_error(function() config.endpoint("s3", { region = "eu-west-1" }) end)
      assert.equal("events", config.signing_name("eventbridge"))
      assert.equal("dynamodb", config.signing_name("dynamodb_streams"))
    end)
  end)

  describe("ca_bundle", function()
    it("is opts.cafile, else AWS_CA_BUNDLE, else the profile's ca_bundle, else nil (the system's CAs)", function()
      local read = files({ [CONFIG_FILE] = "[default]\r\nca_bundle = /etc/ssl/profile.pem\r\n"
        .. "[profile other]\nregion = eu-west-1\n" })
      assert.equal("/x.pem", config.ca_bundle({ cafile = "/x.pem", getenv = env({ AWS_CA_BUNDLE = "/env.pem" }),
                                                 read_file = read }))
      assert.equal("/env.pem", config.ca_bundle({ getenv = env({ AWS_CA_BUNDLE = "/env.pem" }), read_file = read }))
      assert.equal("/etc/ssl/profile.pem", config.ca_bundle({ getenv = env(), read_file = read }))
      assert.is_nil(config.ca_bundle({ profile = "other", getenv = env(), read_file = read }))
    end)

    it("reaches the client's transport, as the AWS CLI reads AWS_CA_BUNDLE", function()
      local dynlog = require("dynlog")
      local c = dynlog.new({ table = "cab", region = "us-east-1", getenv = env({ AWS_CA_BUNDLE = "/env.pem" }),
                             read_file = files() })
      assert.equal("/env.pem", c.transport_opts.cafile)
      c = dynlog.new({ table = "cab", region = "us-east-1", cafile = "/mine.pem",
                       getenv = env({ AWS_CA_BUNDLE = "/env.pem" }), read_file = files() })
      assert.equal("/mine.pem", c.transport_opts.cafile)
    end)
  end)

  describe("shared files with CR line endings", function()
    it("are read as the AWS CLI reads them: a lone \\r ends a line too", function()
      local read = files({ [CRED_FILE] = "[default]\raws_access_key_id = AK\raws_secret_access_key = SK\r" })
      local p = assert(config.load_profile({ getenv = env(), read_file = read }))
      assert.same({ aws_access_key_id = "AK", aws_secret_access_key = "SK" }, p.credentials)
    end)
  end)
end)
