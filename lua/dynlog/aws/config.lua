--- Region, profile, shared-file and endpoint configuration, resolved the way
-- the AWS CLI and SDKs do.
--
-- Every function takes an `opts` table whose `getenv` (default os.getenv) and
-- `read_file` (default: whole file through io.open, nil when unreadable) can
-- be replaced, so callers and specs control the environment without touching
-- the process's. An empty environment variable counts as unset, as in the SDKs.
-- Nothing here touches the network.
local errors = require("dynlog.errors")
local ini = require("dynlog.aws.ini")
local options = require("dynlog.base.options")

local error, ipairs, tostring, type = error, ipairs, tostring, type
local io_open, os_getenv = io.open, os.getenv
local str_find, str_gsub, str_lower, str_match, str_sub =
  string.find, string.gsub, string.lower, string.match, string.sub

local _M = {}

--- Per service: the endpoint override variable, the regional host prefix and
-- the SigV4 signing name.
local SERVICES = {
  dynamodb = {
    env = "AWS_ENDPOINT_URL_DYNAMODB", host = "dynamodb", signing_name = "dynamodb",
  },
  dynamodb_streams = {
    env = "AWS_ENDPOINT_URL_DYNAMODB_STREAMS", host = "streams.dynamodb",
    signing_name = "dynamodb",
  },
  eventbridge = {
    env = "AWS_ENDPOINT_URL_EVENTBRIDGE", host = "events", signing_name = "events",
  },
  sts = {
    env = "AWS_ENDPOINT_URL_STS", host = "sts", signing_name = "sts",
  },
  cloudformation = {
    env = "AWS_ENDPOINT_URL_CLOUDFORMATION", host = "cloudformation", signing_name = "cloudformation",
  },
}

-- The regions where AWS_STS_REGIONAL_ENDPOINTS=legacy (the SDKs' old
-- default) sends STS requests to the global endpoint, signed for us-east-1.
local STS_LEGACY_REGIONS = {}
for _, r in ipairs({ "ap-northeast-1", "ap-south-1", "ap-southeast-1", "ap-southeast-2", "aws-global",
    "ca-central-1", "eu-central-1", "eu-north-1", "eu-west-1", "eu-west-2", "eu-west-3", "sa-east-1",
    "us-east-1", "us-east-2", "us-west-1", "us-west-2" }) do
  STS_LEGACY_REGIONS[r] = true
end
_M.SERVICES = SERVICES

local function default_read_file(path)
  local f, err = io_open(path, "rb")
  if not f then return nil, err end
  local text, read_err = f:read("*a")
  f:close()
  if not text then return nil, read_err end
  return text
end

-- Every option the functions below read.
local KNOWN = options.known{ "region", "profile", "endpoint", "getenv", "read_file", "cafile" }

local function check_opts(opts, where)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(where .. ": opts must be a table", 3)
  end
  options.check(opts, KNOWN, where, 3)
  if opts.getenv ~= nil and type(opts.getenv) ~= "function" then
    error(where .. ": opts.getenv must be a function", 3)
  end
  if opts.read_file ~= nil and type(opts.read_file) ~= "function" then
    error(where .. ": opts.read_file must be a function", 3)
  end
  for _, name in ipairs({ "region", "profile", "endpoint", "cafile" }) do
    if opts[name] ~= nil and type(opts[name]) ~= "string" then
      error(where .. ": opts." .. name .. " must be a string", 3)
    end
  end
  return opts
end

--- A getenv that treats "" as unset.
function _M.getenv_from(opts)
  local getenv = opts and opts.getenv or os_getenv
  return function(name)
    local value = getenv(name)
    if value == "" then return nil end
    return value
  end
end

--- The default file reader: the whole file, or nil, reason.
_M.read_file = default_read_file

local function reader_from(opts)
  return opts and opts.read_file or default_read_file
end

--- The profile name: opts.profile → AWS_PROFILE → "default". The second
-- result tells whether it was chosen explicitly (a named profile that exists
-- in no file is then an error, not a silent fallback).
function _M.profile(opts)
  opts = check_opts(opts, "config.profile")
  if opts.profile and opts.profile ~= "" then return opts.profile, true end
  local from_env = _M.getenv_from(opts)("AWS_PROFILE")
  if from_env then return from_env, true end
  return "default", false
end

-- `~/x` → `$HOME/x`; nil when HOME is needed but unset.
local function expand_home(path, getenv)
  if str_sub(path, 1, 1) ~= "~" then return path end
  local home = getenv("HOME")
  if not home then return nil end
  return home .. str_sub(path, 2)
end

--- The shared file paths: { credentials = path|nil, config = path|nil }.
-- A nil path means HOME is unset and no override variable was given.
function _M.files(opts)
  opts = check_opts(opts, "config.files")
  local getenv = _M.getenv_from(opts)
  return {
    credentials = expand_home(getenv("AWS_SHARED_CREDENTIALS_FILE")
      or "~/.aws/credentials", getenv),
    config = expand_home(getenv("AWS_CONFIG_FILE") or "~/.aws/config", getenv),
  }
end

-- Reads and parses one shared file. A missing or unreadable file (or no
-- HOME to find it in) is not an error, most hosts have none: it simply
-- holds no sections.
-- Line breaks are read as the AWS CLI reads them (Python's universal
-- newlines): "\r\n", and a lone "\r" too, end a line.
local function load_file(path, read_file)
  if not path then return {} end
  local text = read_file(path)
  if not text then return {} end
  return ini.parse((str_gsub(text, "\r\n?", "\n")), path)
end

--- Loads the chosen profile from both shared files.
-- @return { name=, explicit=, credentials=section|nil, config=section|nil,
--   files={credentials=, config=} } or nil, err (code "config") when a file
--   is malformed.
function _M.load_profile(opts)
  opts = check_opts(opts, "config.load_profile")
  local name, explicit = _M.profile(opts)
  local files = _M.files(opts)
  local read_file = reader_from(opts)

  local cred_sections, err = load_file(files.credentials, read_file)
  if not cred_sections then return nil, err end
  local config_sections
  config_sections, err = load_file(files.config, read_file)
  if not config_sections then return nil, err end

  return {
    name = name,
    explicit = explicit,
    credentials = cred_sections[name],
    config = ini.config_section(config_sections, name),
    files = files,
  }
end

local REGION_PATTERN = "^[a-z0-9][a-z0-9%-]*[a-z0-9]$"

--- The region: opts.region → AWS_REGION → AWS_DEFAULT_REGION → the profile's
-- `region` in the config file.
-- @return region or nil, err (code "config")
function _M.region(opts)
  opts = check_opts(opts, "config.region")
  local getenv = _M.getenv_from(opts)
  local region, origin = opts.region, "opts.region"
  if not region or region == "" then
    region, origin = getenv("AWS_REGION"), "AWS_REGION"
  end
  if not region then
    region, origin = getenv("AWS_DEFAULT_REGION"), "AWS_DEFAULT_REGION"
  end
  if not region then
    local profile, err = _M.load_profile(opts)
    if not profile then return nil, err end
    region = profile.config and profile.config.region
    if region == "" then region = nil end
    origin = "region in profile " .. profile.name
    if not region then
      return nil, errors.new("config",
        "no AWS region: pass opts.region or set AWS_REGION, AWS_DEFAULT_REGION or "
        .. "'region' in the config file's profile " .. profile.name)
    end
  end
  -- The region becomes part of a host name and of the signature scope.
  if type(region) ~= "string" or not str_find(region, REGION_PATTERN) then
    return nil, errors.new("config",
      "invalid AWS region from " .. origin .. " (expected e.g. us-east-1)")
  end
  return region
end

local function check_service(service, where)
  local spec = SERVICES[service]
  if not spec then
    error(where .. ": unknown service " .. tostring(service)
      .. " (expected dynamodb, dynamodb_streams, eventbridge, sts or cloudformation)", 3)
  end
  return spec
end

local function is_true(value)
  return value ~= nil and str_lower(value) == "true"
end

-- Checks a configured endpoint URL and drops a trailing slash so paths can be
-- appended. Only http and https make sense for these services.
local function normalize_url(url, origin)
  local scheme, rest = str_match(url, "^(%a[%w+.-]*)://(.+)$")
  scheme = scheme and str_lower(scheme)
  local ok = (scheme == "http" or scheme == "https") and not str_find(rest, "^[/?#]")
    and not str_find(url, "[%c%s]")
  if ok then
    -- host[:port], the host a name, an IPv4 address or a bracketed IPv6 one
    local authority = str_match(rest, "^[^/?#]*")
    authority = str_match(authority, "@([^@]*)$") or authority
    local host, port = str_match(authority, "^(%[[%x:.]+%])(.*)$")
    if not host then host, port = str_match(authority, "^([^:%[%]]+)(.*)$") end
    local number = port and tonumber(str_match(port, "^:(%d+)$"))
    ok = host ~= nil and (port == "" or (number ~= nil and number >= 1 and number <= 65535))
  end
  if not ok then
    return nil, errors.new("config", "invalid endpoint URL from " .. origin
      .. " (expected http://host[:port] or https://host[:port])")
  end
  return (str_gsub(url, "/+$", ""))
end

--- The regional AWS endpoint for a service.
function _M.regional_url(service, region)
  local spec = check_service(service, "config.regional_url")
  local suffix = "amazonaws.com"
  if str_sub(region, 1, 3) == "cn-" then suffix = "amazonaws.com.cn" end
  return "https://" .. spec.host .. "." .. region .. "." .. suffix
end

-- The configured endpoint override, if any, and where it came from.
local function configured_url(spec, opts, getenv)
  if opts.endpoint and opts.endpoint ~= "" then return opts.endpoint, "opts.endpoint" end
  -- The SDKs' switch to ignore the environment's endpoint overrides.
  if is_true(getenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")) then return nil end
  local url = getenv(spec.env)
  if url then return url, spec.env end
  url = getenv("AWS_ENDPOINT_URL")
  if url then return url, "AWS_ENDPOINT_URL" end
  return nil
end

--- Resolves the endpoint of a service: opts.endpoint → the service's
-- AWS_ENDPOINT_URL_<SERVICE> → AWS_ENDPOINT_URL → the regional AWS endpoint.
-- A region is always required because SigV4 signs with it, even for an
-- overridden endpoint (DynamoDB Local namespaces tables by region too).
-- STS is regional too (`sts.<region>.amazonaws.com`), unless
-- AWS_STS_REGIONAL_ENDPOINTS (or the profile's sts_regional_endpoints) is
-- "legacy": then the regions that once used it get the global
-- https://sts.amazonaws.com, signed for us-east-1.
-- @param service "dynamodb" | "dynamodb_streams" | "eventbridge" | "sts" |
--   "cloudformation"
-- @return { url=, region=, signing_name=, service=, origin= } or nil, err
-- (code "config"); region is the one to sign with (us-east-1 for the global
-- STS endpoint); origin names the setting the URL came from, "default" for
-- the regional endpoint.
function _M.endpoint(service, opts)
  local spec = check_service(service, "config.endpoint")
  opts = check_opts(opts, "config.endpoint")
  local region, err = _M.region(opts)
  if not region then return nil, err end
  local getenv = _M.getenv_from(opts)
  local url, origin = configured_url(spec, opts, getenv)
  local signing_region = region
  if url then
    url, err = normalize_url(url, origin)
    if not url then return nil, err end
  else
    url, origin = _M.regional_url(service, region), "default"
    if service == "sts" and STS_LEGACY_REGIONS[region] then
      local mode = getenv("AWS_STS_REGIONAL_ENDPOINTS")
      if not mode then
        local profile = _M.load_profile(opts)
        mode = profile and profile.config and profile.config.sts_regional_endpoints
      end
      if type(mode) == "string" and str_lower(mode) == "legacy" then
        url, signing_region = "https://sts.amazonaws.com", "us-east-1"
      end
    end
  end
  return {
    url = url,
    region = signing_region,
    signing_name = spec.signing_name,
    service = service,
    origin = origin,
  }
end

--- The file of trusted CAs for https: opts.cafile → AWS_CA_BUNDLE → the
-- profile's `ca_bundle` in the config file, as the AWS CLI reads them; nil
-- for the system's store.
-- @return path or nil, or nil, err (code "config") when a file is malformed
function _M.ca_bundle(opts)
  opts = check_opts(opts, "config.ca_bundle")
  if opts.cafile and opts.cafile ~= "" then return opts.cafile end
  local path = _M.getenv_from(opts)("AWS_CA_BUNDLE")
  if path then return path end
  local profile, err = _M.load_profile(opts)
  if not profile then return nil, err end
  path = profile.config and profile.config.ca_bundle
  if type(path) ~= "string" or path == "" then return nil end
  return expand_home(path, _M.getenv_from(opts)) or path
end

--- The SigV4 signing name of a service ("dynamodb" or "events").
function _M.signing_name(service)
  return check_service(service, "config.signing_name").signing_name
end

return _M
