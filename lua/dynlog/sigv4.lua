--- AWS Signature Version 4 (header flavour), signed by dynlog.core.
--
-- A request is a table:
--   { method = "POST", url = "https://host[:port]/raw path?query",
--     headers = { Name = "value" or { "v1", "v2" } }, body = "...",
--     region = "us-east-1", service = "dynamodb",
--     credentials = { access_key_id =, secret_access_key =, session_token = },
--     time = <epoch seconds, default now>,
--     normalize_path = true,          -- false for S3
--     content_sha256_header = false,  -- true adds and signs x-amz-content-sha256
--     sign_session_token = true }     -- false: token header added after signing
-- The result is the table of headers to send: the given ones (lists joined
-- with ','), Host when it came from the URL, X-Amz-Date, X-Amz-Security-Token,
-- x-amz-content-sha256 when asked, and Authorization.
--
-- Malformed requests raise, naming the field (never a secret). A failure of
-- the signer itself (libcrypto, memory) returns nil, err (dynlog.errors).
local core = require "dynlog.core"
local errors = require "dynlog.errors"
local options = require "dynlog.base.options"

local setmetatable, tostring, type = setmetatable, tostring, type

local _M = {}

local REQUEST = options.known{ "method", "url", "headers", "body", "region", "service", "credentials", "time",
  "normalize_path", "content_sha256_header", "sign_session_token" }
-- A credentials value of dynlog.aws.credentials may come as it is.
local CREDENTIALS = options.known{ "access_key_id", "secret_access_key", "session_token", "expiration", "source" }

-- A misspelt field (normalise_path, sign_session_tokens) would sign as if
-- it were absent: raise at the line that called sign or explain.
local function check(req, where)
  if type(req) ~= "table" then return end -- the C core names what is wrong
  options.check(req, REQUEST, where, 3)
  if type(req.credentials) == "table" then
    options.check(req.credentials, CREDENTIALS, where .. ": credentials", 3)
  end
end

local function checked(headers, code_or_steps, message)
  if headers == nil then return errors.from_core(nil, code_or_steps, message) end
  return headers, code_or_steps
end

local signer_mt = {}
signer_mt.__index = signer_mt

--- Signs req; returns the headers to send, or nil, err.
function signer_mt:sign(req)
  check(req, "signer:sign")
  return checked(self.core:sign(req))
end

--- Signs req; returns headers and the intermediate steps
-- {canonical_request=, string_to_sign=, signature=, signed_headers=,
--  payload_hash=, amz_date=, key_cached=}, or nil, err.
function signer_mt:explain(req)
  check(req, "signer:explain")
  return checked(self.core:sign(req, true))
end

--- Signs a POST whose only headers are Content-Type and X-Amz-Target (an
-- AWS JSON or query API call): the headers sign would return for
-- {method = "POST", url =, body =, time =, region =, service =, credentials =,
--  headers = {["Content-Type"] = content_type, ["X-Amz-Target"] = target}},
-- or nil, err. target may be nil.
function signer_mt:sign_post(url, body, time, region, service, credentials, content_type, target)
  if type(credentials) == "table" then
    options.check(credentials, CREDENTIALS, "signer:sign_post: credentials", 2)
  end
  return checked(self.core:sign_post(url, body, time, region, service, credentials, content_type, target))
end

--- {key_derivations=, key_cache_hits=, cached_keys=}
function signer_mt:stats()
  return self.core:stats()
end

signer_mt.__tostring = function(self)
  return tostring(self.core)
end

--- A signer with its own cache of signing keys (one per secret, date,
-- region and service, a few at most).
function _M.new_signer()
  return setmetatable({ core = core.sigv4_signer() }, signer_mt)
end

-- Most programs sign with one set of credentials: share one cache.
local default_signer = _M.new_signer()

function _M.sign(req)
  check(req, "sigv4.sign")
  return checked(default_signer.core:sign(req))
end

function _M.explain(req)
  check(req, "sigv4.explain")
  return checked(default_signer.core:sign(req, true))
end

function _M.stats()
  return default_signer:stats()
end

return _M
