-- The C core's XML decoder (core.xml_decode, over expat) and the AWS query
-- protocol (dynlog.aws.query) through the client's request path. The
-- transport here answers as STS and CloudFormation document it (their XML);
-- spec/loopback/sts_spec.lua talks to a loopback STS over HTTP.
local core = require "dynlog.core"
local dynlog = require "dynlog"
local json = require "dynlog.json"
local query = require "dynlog.aws.query"

local function env(t)
  return function(name) return t[name] end
end

local function client(transport, extra)
  local vars = { AWS_REGION = "eu-west-1", AWS_ACCESS_KEY_ID = "AKIDQUERY", AWS_SECRET_ACCESS_KEY = "secret" }
  for k, v in pairs(extra or {}) do vars[k] = v end
  return dynlog.new({ table = "events", getenv = env(vars), read_file = function() return nil end,
                      transport = transport, sleep = function() end, max_attempts = 3 })
end

local function form(body)
  local t = {}
  for pair in body:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=(.*)$")
    t[k] = v
  end
  return t
end

describe("core.xml_decode", function()
  it("builds elements with names, attributes, children and text", function()
    local root = assert(core.xml_decode('<?xml version="1.0" encoding="UTF-8"?>\n'
      .. '<A xmlns="https://x/"><B k="v">a &amp; b <![CDATA[<c>]]></B><C/>tail</A>'))
    assert.are.equal("A", root.name)
    assert.are.equal("https://x/", root.attrs.xmlns)
    assert.are.equal(2, #root.children)
    assert.are.equal("a & b <c>", root.children[1].text)
    assert.are.equal("v", root.children[1].attrs.k)
    assert.are.equal("", root.children[2].text)
    assert.are.same({}, root.children[2].children)
    assert.are.equal("tail", root.text)
  end)

  it("gives UTF-8 whatever the document's encoding", function()
    local root = assert(core.xml_decode('<?xml version="1.0" encoding="ISO-8859-1"?><a>caf\233</a>'))
    assert.are.equal("café", root.text)
  end)

  it("refuses malformed XML with invalid_xml and where", function()
    for _, text in ipairs({ "", "<a>", "<a></b>", "<a/><b/>", "plain", "<a>&nope;</a>", "<a>\0</a>" }) do
      local v, code, message = core.xml_decode(text)
      assert.is_nil(v, text)
      assert.are.equal("invalid_xml", code)
      assert.matches("^line %d+, column %d+: ", message)
    end
  end)

  it("refuses a document type declaration, so no entity can expand", function()
    local v, code, message =
      core.xml_decode('<!DOCTYPE a [<!ENTITY x "xxxxxxxx"><!ENTITY y "&x;&x;&x;">]><a>&y;</a>')
    assert.is_nil(v)
    assert.are.equal("invalid_xml", code)
    assert.matches("document type declaration", message)
  end)

  it("bounds the depth", function()
    assert.is_truthy(core.xml_decode(("<a>"):rep(150) .. ("</a>"):rep(150)))
    local v, code, message = core.xml_decode(("<a>"):rep(5000) .. ("</a>"):rep(5000))
    assert.is_nil(v)
    assert.are.equal("invalid_xml", code)
    assert.matches("nested too deeply", message)
  end)

  it("raises on a non-string", function()
    assert.has_error(function() core.xml_decode({}) end)
  end)
end)

describe("dynlog.aws.query", function()
  describe("encode", function()
    it("writes Action, Version, lists as member.N, maps as entry.N, structures as Name.Field", function()
      local body = assert(query.encode("CreateChangeSet", "2010-05-15", {
        StackName = "app stack", Capabilities = { "CAPABILITY_IAM", "CAPABILITY_NAMED_IAM" },
        Parameters = { { ParameterKey = "Env", ParameterValue = "a/b=c&d" } },
        Tags = query.map({ team = "core", env = "prod" }), Empty = json.array(),
        DurationSeconds = 900, UsePrevious = true, Ratio = 0.5,
      }))
      assert.are.equal("Action=CreateChangeSet&Version=2010-05-15", body:sub(1, 41))
      local f = form(body)
      assert.are.equal("app%20stack", f.StackName)
      assert.are.equal("CAPABILITY_IAM", f["Capabilities.member.1"])
      assert.are.equal("CAPABILITY_NAMED_IAM", f["Capabilities.member.2"])
      assert.are.equal("Env", f["Parameters.member.1.ParameterKey"])
      assert.are.equal("a%2Fb%3Dc%26d", f["Parameters.member.1.ParameterValue"])
      assert.are.equal("env", f["Tags.entry.1.key"])
      assert.are.equal("prod", f["Tags.entry.1.value"])
      assert.are.equal("team", f["Tags.entry.2.key"])
      assert.are.equal("", f.Empty)
      assert.are.equal("900", f.DurationSeconds)
      assert.are.equal("true", f.UsePrevious)
      assert.are.equal("0.5", f.Ratio)
    end)

    it("percent-encodes as SigV4 does: only A-Z a-z 0-9 - _ . ~ stay", function()
      local f = form(assert(query.encode("X", "1", { V = "aZ9-_.~ +*é" })))
      assert.are.equal("aZ9-_.~%20%2B%2A%C3%A9", f.V)
    end)

    it("refuses values that cannot be sent", function()
      for _, params in ipairs({ { A = function() end }, { A = 0 / 0 }, { A = { [true] = 1 } }, { Action = "x" } }) do
        local body, err = query.encode("X", "1", params)
        assert.is_nil(body)
        assert.are.equal("invalid_argument", err.code)
      end
    end)
  end)

  describe("decode", function()
    it("turns the Result element into Lua values", function()
      local r = assert(query.decode(
[[<DescribeStacksResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/">
  <DescribeStacksResult>
    <Stacks>
      <member><StackName>app</StackName><Outputs/>
        <Tags><member><Key>a</Key><Value>1</Value></member></Tags></member>
    </Stacks>
    <Map><entry><key>k</key><value>v</value></entry></Map>
  </DescribeStacksResult>
  <ResponseMetadata><RequestId>req-1</RequestId></ResponseMetadata>
</DescribeStacksResponse>]], "DescribeStacks"))
      assert.are.equal("app", r.Stacks[1].StackName)
      assert.are.same({}, query.list(r.Stacks[1].Outputs))
      assert.are.equal("1", r.Stacks[1].Tags[1].Value)
      assert.are.same({ k = "v" }, r.Map)
      assert.are.equal("req-1", r.ResponseMetadata.RequestId)
    end)

    it("says when the answer is not XML or not the action's", function()
      local r, err = query.decode("{}", "AssumeRole")
      assert.is_nil(r)
      assert.are.equal("bad_response", err.code)
      r, err = query.decode("<OtherResponse/>", "AssumeRole")
      assert.is_nil(r)
      assert.matches("expected a AssumeRoleResponse", err.message)
    end)
  end)

  describe("error", function()
    it("reads ErrorResponse: code, message, type, request id, retryable", function()
      local body = [[<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>
<Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>r-9</RequestId></ErrorResponse>]]
      local err = query.error(400, body, {})
      assert.are.equal("Throttling", err.code)
      assert.are.equal("Rate exceeded", err.message)
      assert.are.equal("Sender", err.aws_type)
      assert.are.equal("r-9", err.request_id)
      assert.is_true(err.retryable)
      err = query.error(403, body:gsub("Throttling", "AccessDenied"), {})
      assert.are.equal("AccessDenied", err.code)
      assert.is_false(err.retryable)
    end)

    it("makes a bad_response of a body without an AWS error, retryable on 5xx", function()
      local err = query.error(502, "<html>bad gateway</html>", {})
      assert.are.equal("bad_response", err.code)
      assert.is_true(err.retryable)
    end)
  end)

  describe("call", function()
    it("sends a signed form request to the service's endpoint and decodes the answer", function()
      local seen
      local c = client({ request = function(_, req)
        seen = req
        return { status = 200, headers = {}, body =
[[<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<GetCallerIdentityResult><Account>123456789012</Account><Arn>arn:aws:iam::123456789012:user/u</Arn>
<UserId>AIDA</UserId></GetCallerIdentityResult><ResponseMetadata><RequestId>r1</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>]] }
      end }, { AWS_ENDPOINT_URL_STS = "http://127.0.0.1:9/sts" })
      local r = assert(query.call(c, "sts", "GetCallerIdentity", {}))
      assert.are.equal("123456789012", r.Account)
      assert.are.equal("http://127.0.0.1:9/sts", seen.url)
      assert.are.equal("POST", seen.method)
      assert.are.equal("Action=GetCallerIdentity&Version=2011-06-15", seen.body)
      assert.are.equal("application/x-www-form-urlencoded; charset=utf-8", seen.headers["Content-Type"])
      assert.is_nil(seen.headers["X-Amz-Target"])
      assert.matches("Credential=AKIDQUERY/%d+/eu%-west%-1/sts/aws4_request", seen.headers.Authorization)
    end)

    it("signs CloudFormation as cloudformation at its regional endpoint", function()
      local seen
      local c = client({ request = function(_, req)
        seen = req
        return { status = 200, headers = {}, body = "<DeleteStackResponse><ResponseMetadata><RequestId>r2"
          .. "</RequestId></ResponseMetadata></DeleteStackResponse>" }
      end })
      local r = assert(query.call(c, "cloudformation", "DeleteStack", { StackName = "app" }))
      assert.are.equal("r2", r.ResponseMetadata.RequestId)
      assert.are.equal("https://cloudformation.eu-west-1.amazonaws.com/", seen.url)
      assert.matches("/eu%-west%-1/cloudformation/aws4_request", seen.headers.Authorization)
      assert.are.equal("Action=DeleteStack&Version=2010-05-15&StackName=app", seen.body)
    end)

    it("retries Throttling and 5xx, not AccessDenied", function()
      local answers = {
        { status = 400, body = "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>slow"
          .. "</Message></Error><RequestId>a</RequestId></ErrorResponse>" },
        { status = 503, body = "" },
        { status = 403, body = "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>no"
          .. "</Message></Error><RequestId>b</RequestId></ErrorResponse>" },
      }
      local n = 0
      local c = client({ request = function()
        n = n + 1
        local a = answers[n]
        return { status = a.status, headers = {}, body = a.body }
      end })
      local r, err = query.call(c, "cloudformation", "DescribeStacks", {})
      assert.is_nil(r)
      assert.are.equal(3, n)
      assert.are.equal("AccessDenied", err.code)
      assert.are.equal("no", err.message)
      assert.are.equal(403, err.status)
      assert.are.equal("b", err.request_id)
      assert.are.equal(3, err.attempts)
    end)

    it("uses the global STS endpoint only when AWS_STS_REGIONAL_ENDPOINTS=legacy", function()
      local seen
      local function answer(_, req)
        seen = req
        return { status = 200, headers = {}, body = "<GetCallerIdentityResponse/>" }
      end
      local c = client({ request = answer }, { AWS_REGION = "us-east-2" })
      assert(query.call(c, "sts", "GetCallerIdentity"))
      assert.are.equal("https://sts.us-east-2.amazonaws.com/", seen.url)
      c = client({ request = answer }, { AWS_REGION = "us-east-2", AWS_STS_REGIONAL_ENDPOINTS = "legacy" })
      assert(query.call(c, "sts", "GetCallerIdentity"))
      assert.are.equal("https://sts.amazonaws.com/", seen.url)
      assert.matches("/us%-east%-1/sts/aws4_request", seen.headers.Authorization)
    end)

    it("raises on a service that is not query-protocol", function()
      local c = client({ request = function() error("no request expected") end })
      assert.has_error(function() query.call(c, "dynamodb", "DescribeTable", {}) end,
        "query.call: dynamodb is not a query-protocol service of the client")
    end)
  end)
end)
