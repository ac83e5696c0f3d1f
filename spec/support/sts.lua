--- A loopback AWS STS for the specs: it stands for sts.<region>.amazonaws.com
-- and answers AssumeRole and AssumeRoleWithWebIdentity as STS documents them
-- (https://docs.aws.amazon.com/STS/latest/APIReference/), in the query
-- protocol: a form-encoded POST in, XML out.
--
--   local sts = require "spec.support.sts"
--   local s = sts.start({ {}, { error = "Throttling" }, { expires_in = 600 } })
--   -- AWS_ENDPOINT_URL_STS = s.url
--   s.requests()  -- { {method=, path=, headers=, body=, params = form fields}, ... }
--   s.stop()
--
-- It runs inside spec/support/httpd.lua (a response {"sts": {...}} there):
-- the answers given to start are served in order, the last one repeating.
-- Each request is checked as STS would: POST, the form Content-Type,
-- Version=2011-06-15, a known Action, RoleArn and RoleSessionName;
-- AssumeRole must carry a SigV4 Authorization for service sts
-- (MissingAuthenticationToken otherwise), AssumeRoleWithWebIdentity must
-- carry none (it is not signed) and a WebIdentityToken. An answer may say:
--   error = "AccessDenied" | "ExpiredTokenException" | "InvalidIdentityToken"
--           | "Throttling" | "IDPCommunicationError" | "InternalFailure" | …
--           (answered as STS does, with its HTTP status), message = "…"
--   expires_in = seconds from now (default 3600) or expiration = "…Z"
--   access_key_id, secret_access_key, session_token (default: numbered
--           ASIASTS<n>, sts-secret-<n>, sts-session-token-<n>)
--   token = the WebIdentityToken it accepts (InvalidIdentityToken otherwise)
--   signed_by = the access key id the AssumeRole signature must name
--           (InvalidClientTokenId otherwise)
local _M = {}

local STATUS = {
  AccessDenied = 403, ExpiredTokenException = 400, InvalidIdentityToken = 400, Throttling = 400,
  IDPCommunicationError = 400, IDPRejectedClaim = 403, InternalFailure = 500, ServiceUnavailable = 503,
  MissingAuthenticationToken = 403, InvalidClientTokenId = 403, InvalidParameterValue = 400,
  MissingParameter = 400, InvalidAction = 400, RegionDisabledException = 403,
}

local function xml_escape(s)
  return (tostring(s):gsub("[&<>\"]", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;" }))
end

local function unescape(s)
  s = s:gsub("+", " ")
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- The fields of a form-encoded body.
function _M.form(body)
  local t = {}
  for pair in (body or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    t[unescape(k)] = unescape(v)
  end
  return t
end

local counter = 0

local function error_response(code, message)
  local status = STATUS[code] or 400
  local kind = status >= 500 and "Receiver" or "Sender"
  return {
    status = status, headers = { ["Content-Type"] = "text/xml" },
    body = '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">\n  <Error>\n    <Type>' .. kind
      .. "</Type>\n    <Code>" .. xml_escape(code) .. "</Code>\n    <Message>" .. xml_escape(message or code)
      .. "</Message>\n  </Error>\n  <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>\n</ErrorResponse>\n",
  }
end

-- What is wrong with the request, as STS would say it; nil when it is fine.
local function check(req, p, answer)
  if req.method ~= "POST" then return "InvalidAction", "STS takes POST" end
  local ctype = req.headers["content-type"] or ""
  if not ctype:find("^application/x%-www%-form%-urlencoded") then
    return "InvalidParameterValue", "Content-Type must be application/x-www-form-urlencoded, got " .. ctype
  end
  if p.Version ~= "2011-06-15" then return "InvalidParameterValue", "Version must be 2011-06-15" end
  local action = p.Action
  if action ~= "AssumeRole" and action ~= "AssumeRoleWithWebIdentity" then
    return "InvalidAction", "Could not find operation " .. tostring(action) .. " for version 2011-06-15"
  end
  if not (p.RoleArn or ""):find("^arn:aws:iam::%d%d%d%d%d%d%d%d%d%d%d%d:role/[%w+=,.@_/-]+$") then
    return "ValidationError", "RoleArn is not a role ARN: " .. tostring(p.RoleArn)
  end
  if not (p.RoleSessionName or ""):find("^[%w+=,.@_-]+$") or #p.RoleSessionName < 2 or #p.RoleSessionName > 64 then
    return "ValidationError", "RoleSessionName must be 2-64 characters of [\\w+=,.@-]"
  end
  if p.DurationSeconds and not (tonumber(p.DurationSeconds) and tonumber(p.DurationSeconds) >= 900) then
    return "ValidationError", "DurationSeconds must be at least 900"
  end
  local auth = req.headers["authorization"]
  if action == "AssumeRole" then
    if not auth then return "MissingAuthenticationToken", "Request is missing Authentication Token" end
    local key = auth:match("^AWS4%-HMAC%-SHA256 Credential=([^/]+)/%d%d%d%d%d%d%d%d/[%w-]+/sts/aws4_request, "
      .. "SignedHeaders=[%w;-]+, Signature=%x+$")
    if not key or not req.headers["x-amz-date"] then
      return "IncompleteSignature", "Authorization is not a SigV4 signature for service sts"
    end
    if answer.signed_by and key ~= answer.signed_by then
      return "InvalidClientTokenId", "The security token included in the request is invalid."
    end
  else
    if auth then return "InvalidParameterValue", "AssumeRoleWithWebIdentity must not be signed" end
    if not p.WebIdentityToken or p.WebIdentityToken == "" then
      return "MissingParameter", "WebIdentityToken is required"
    end
    if answer.token and p.WebIdentityToken ~= answer.token then
      return "InvalidIdentityToken", "Couldn't retrieve verification key from your identity provider"
    end
  end
end

--- Answers one request (`req`: {method=, headers= lower-cased, body=})
-- as `answer` says: {status=, headers=, body=}.
function _M.answer(answer, req)
  local p = _M.form(req.body)
  local code, message = check(req, p, answer)
  if code then return error_response(code, message) end
  if answer.error then return error_response(answer.error, answer.message) end
  counter = counter + 1
  local expiration = answer.expiration or os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + (answer.expires_in or 3600))
  local action = p.Action
  local role = p.RoleArn:match(":role/(.*)$")
  local account = p.RoleArn:match("^arn:aws:iam::(%d+)")
  local extra = ""
  if action == "AssumeRoleWithWebIdentity" then
    extra = "<SubjectFromWebIdentityToken>system:serviceaccount:default:app</SubjectFromWebIdentityToken>"
      .. "<Audience>sts.amazonaws.com</Audience><Provider>oidc.eks.eu-west-1.amazonaws.com</Provider>"
  end
  local body = table.concat({
    '<', action, 'Response xmlns="https://sts.amazonaws.com/doc/2011-06-15/">\n  <', action, 'Result>',
    extra, '\n    <Credentials>\n      <AccessKeyId>', xml_escape(answer.access_key_id or ("ASIASTS" .. counter)),
    '</AccessKeyId>\n      <SecretAccessKey>', xml_escape(answer.secret_access_key or ("sts-secret-" .. counter)),
    '</SecretAccessKey>\n      <SessionToken>', xml_escape(answer.session_token or ("sts-session-token-" .. counter)),
    '</SessionToken>\n      <Expiration>', expiration, '</Expiration>\n    </Credentials>\n',
    '    <AssumedRoleUser>\n      <AssumedRoleId>AROA3XFRBF535PLBIFPI4:', xml_escape(p.RoleSessionName),
    '</AssumedRoleId>\n      <Arn>arn:aws:sts::', account, ':assumed-role/', xml_escape(role), '/',
    xml_escape(p.RoleSessionName), '</Arn>\n    </AssumedRoleUser>\n    <PackedPolicySize>6</PackedPolicySize>\n  </',
    action, 'Result>\n  <ResponseMetadata>\n    <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>\n',
    '  </ResponseMetadata>\n</', action, 'Response>\n',
  })
  return { status = 200, headers = { ["Content-Type"] = "text/xml" }, body = body }
end

--- Starts a loopback STS answering as `answers` say, in order (the last
-- repeats). The handle is support.server's, with each request's form
-- fields as `params`.
function _M.start(answers)
  local server = require("spec.support.server")
  local responses = {}
  for i, a in ipairs(answers or { {} }) do responses[i] = { sts = a } end
  local s = server.start({ { method = "POST", path = "/", responses = responses } })
  local requests = s.requests
  function s.requests()
    local list = requests()
    for _, r in ipairs(list) do r.params = _M.form(r.body) end
    return list
  end
  return s
end

return _M
