-- AWS Signature Version 4: dynlog.core's signer and lua/dynlog/sigv4.lua.
-- The vectors are in spec/vectors (see spec/vectors/README.md for their provenance).
local cjson = require "cjson"
local core = require "dynlog.core"
local sigv4 = require "dynlog.sigv4"

local SUITE = "spec/vectors/sigv4"
local EXTRA = "spec/vectors/sigv4-extra"
local SUITE_TIME = 1440938160 -- 2015-08-30T12:36:00Z
local KEY_ID = "AKIDEXAMPLE"
local SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
local TOKEN = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPf"

local function read_file(path) return (assert(require("spec.support.run").read_file(path), path)) end

-- The case folders of a suite (its README.md is not a case).
local function list_dir(path)
  local names = {}
  local p = assert(io.popen('find "' .. path .. '" -mindepth 1 -maxdepth 1 -type d -printf "%f\\n" | LC_ALL=C sort'))
  for name in p:lines() do names[#names + 1] = name end
  p:close()
  return names
end

-- request.txt / .req: "METHOD SP target SP HTTP/1.1", "Name:value" lines, lines
-- starting with white space continue the previous header, an empty line, the
-- body to the end of the file. A repeated name becomes a list of values.
local function parse_request(text)
  local head, body = text:match("^(.-)\n\n(.*)$")
  if not head then head, body = text, "" end
  local lines = {}
  for line in (head .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = line end
  local method, target = lines[1]:match("^(%S+) (.*) HTTP/1%.1$")
  local headers, last = {}, nil
  for i = 2, #lines do
    local line = lines[i]
    if line:match("^[ \t]") then
      local v = headers[last]
      if type(v) == "table" then
        v[#v] = v[#v] .. "\n" .. line
      else
        headers[last] = v .. "\n" .. line
      end
    elseif line ~= "" then
      local name, value = line:match("^([^:]+):(.*)$")
      local old = headers[name]
      if old == nil then
        headers[name] = value
      elseif type(old) == "table" then
        old[#old + 1] = value
      else
        headers[name] = { old, value }
      end
      last = name
    end
  end
  return { method = method, target = target, headers = headers, body = body }
end

local function header(headers, wanted)
  for name, value in pairs(headers) do
    if name:lower() == wanted:lower() then return value end
  end
end

-- Header name (lower case) -> value as sent (lists joined, trimmed).
local function by_lower_name(headers)
  local out = {}
  for name, value in pairs(headers) do
    if type(value) == "table" then value = table.concat(value, ",") end
    out[name:lower()] = value:match("^%s*(.-)%s*$")
  end
  return out
end

local function count_names(headers, wanted)
  local n = 0
  for name in pairs(headers) do
    if name:lower() == wanted then n = n + 1 end
  end
  return n
end

local function suite_request(parsed, ctx)
  ctx = ctx or {}
  local creds = ctx.credentials or { access_key_id = KEY_ID, secret_access_key = SECRET }
  return {
    method = parsed.method,
    url = "https://" .. header(parsed.headers, "host") .. parsed.target,
    headers = parsed.headers,
    body = parsed.body,
    region = ctx.region or "us-east-1",
    service = ctx.service or "service",
    credentials = {
      access_key_id = creds.access_key_id,
      secret_access_key = creds.secret_access_key,
      session_token = creds.token,
    },
    time = SUITE_TIME,
    normalize_path = ctx.normalize ~= false,
    content_sha256_header = ctx.sign_body == true,
    sign_session_token = not ctx.omit_session_token,
  }
end

local function dynamodb_request(fields)
  local req = {
    method = "POST",
    url = "https://dynamodb.us-east-1.amazonaws.com/",
    headers = {
      ["Content-Type"] = "application/x-amz-json-1.0",
      ["X-Amz-Target"] = "DynamoDB_20120810.PutItem",
    },
    body = '{"TableName":"events","Item":{"pk":{"S":"stream#1"},"sk":{"S":"01H00000000000000000000000"}}}',
    region = "us-east-1",
    service = "dynamodb",
    credentials = { access_key_id = KEY_ID, secret_access_key = SECRET },
    time = SUITE_TIME,
  }
  for k, v in pairs(fields or {}) do req[k] = v end
  return req
end

-- The key chain and signature computed from the hash primitives alone.
local function expected_signature(secret, date, region, service, string_to_sign)
  local key = core.hmac_sha256("AWS4" .. secret, date)
  key = core.hmac_sha256(key, region)
  key = core.hmac_sha256(key, service)
  key = core.hmac_sha256(key, "aws4_request")
  return core.hmac_sha256(key, string_to_sign, "hex")
end

local function sign_error(signer, req)
  local ok, err = pcall(signer.sign, signer, req)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

describe("dynlog.core sigv4 signer", function()
  describe("against the AWS SigV4 suite (aws-c-auth copy, header flavour)", function()
    local cases = list_dir(SUITE)
    local signer = core.sigv4_signer()

    it("finds all 38 cases", function()
      assert.are.equal(38, #cases)
    end)

    for _, name in ipairs(cases) do
      it("signs " .. name .. " exactly as the suite expects", function()
        local dir = SUITE .. "/" .. name .. "/"
        local ctx = cjson.decode(read_file(dir .. "context.json"))
        assert.are.equal("2015-08-30T12:36:00Z", ctx.timestamp)
        local req = suite_request(parse_request(read_file(dir .. "request.txt")), ctx)

        local headers, steps = signer:sign(req, true)

        assert.are.equal(read_file(dir .. "header-canonical-request.txt"), steps.canonical_request)
        assert.are.equal(read_file(dir .. "header-string-to-sign.txt"), steps.string_to_sign)
        assert.are.equal(read_file(dir .. "header-signature.txt"), steps.signature)
        local signed = parse_request(read_file(dir .. "header-signed-request.txt"))
        assert.are.equal(header(signed.headers, "authorization"), headers.Authorization)
        assert.are.same(by_lower_name(signed.headers), by_lower_name(headers))
      end)
    end

    it("derived the signing key once for all cases", function()
      local stats = signer:stats()
      assert.are.equal(1, stats.key_derivations)
      assert.are.equal(#cases - 1, stats.key_cache_hits)
    end)
  end)

  describe("against the botocore-only suite cases", function()
    local cases = list_dir(EXTRA)

    it("finds all 5 cases", function()
      assert.are.equal(5, #cases)
    end)

    for _, name in ipairs(cases) do
      it("signs " .. name .. " exactly as the suite expects", function()
        local base = EXTRA .. "/" .. name .. "/" .. name
        local parsed = parse_request(read_file(base .. ".req"))
        local given_date = header(parsed.headers, "x-amz-date")

        local headers, steps = core.sigv4_signer():sign(suite_request(parsed), true)

        assert.are.equal(read_file(base .. ".creq"), steps.canonical_request)
        assert.are.equal(read_file(base .. ".sts"), steps.string_to_sign)
        assert.are.equal(read_file(base .. ".authz"), headers.Authorization)
        assert.are.equal(given_date, headers["X-Amz-Date"])
        assert.are.equal(1, count_names(headers, "x-amz-date"))
        local signed = parse_request(read_file(base .. ".sreq"))
        assert.are.same(by_lower_name(signed.headers), by_lower_name(headers))
      end)
    end
  end)

  describe("sign_post", function()
    local CREDS = { access_key_id = KEY_ID, secret_access_key = SECRET }

    -- The botocore cases that are a POST with a Content-Type and nothing else.
    for _, name in ipairs({ "post-x-www-form-urlencoded", "post-x-www-form-urlencoded-parameters" }) do
      it("signs " .. name .. " exactly as the suite expects", function()
        local base = EXTRA .. "/" .. name .. "/" .. name
        local parsed = parse_request(read_file(base .. ".req"))
        local headers = core.sigv4_signer():sign_post("https://example.amazonaws.com/", parsed.body, SUITE_TIME,
          "us-east-1", "service", CREDS, header(parsed.headers, "content-type"))
        assert.are.equal(read_file(base .. ".authz"), headers.Authorization)
        local signed = parse_request(read_file(base .. ".sreq"))
        assert.are.same(by_lower_name(signed.headers), by_lower_name(headers))
      end)
    end

    it("returns what sign returns for the same POST, with or without a target and a token", function()
      local signer = core.sigv4_signer()
      local cases = {
        { "https://dynamodb.us-east-1.amazonaws.com/", "DynamoDB_20120810.PutItem", nil },
        { "https://dynamodb.us-east-1.amazonaws.com/", "DynamoDB_20120810.PutItem", TOKEN },
        { "https://sts.amazonaws.com/", nil, nil },
        { "http://localhost:8000", "DynamoDB_20120810.Query", nil },           -- no path: "/"
        { "https://Example.com:443/a/./b//c?b=2&a=1#frag", "T.x", TOKEN },      -- normalised, sorted
        { "https://[::1]:8443/x%2Fy?q", "T.y", nil },
      }
      for i, c in ipairs(cases) do
        for round = 1, 2 do -- the second time from the cached URL parts
          local creds = { access_key_id = KEY_ID, secret_access_key = SECRET, session_token = c[3] }
          local body = ('{"n":%d}'):format(i)
          local post = signer:sign_post(c[1], body, SUITE_TIME + round, "us-east-1", "dynamodb", creds,
            "application/x-amz-json-1.0", c[2])
          local general = signer:sign({ method = "POST", url = c[1], body = body, time = SUITE_TIME + round,
            region = "us-east-1", service = "dynamodb", credentials = creds,
            headers = { ["Content-Type"] = "application/x-amz-json-1.0", ["X-Amz-Target"] = c[2] } })
          assert.are.same(general, post)
        end
      end
      -- one key for the whole day, shared by both methods
      assert.are.equal(1, signer:stats().key_derivations)
    end)

    it("signs another URL after a cached one, and with the real clock when time is nil", function()
      local signer = core.sigv4_signer()
      local a = signer:sign_post("https://a.example.com/x", "", SUITE_TIME, "us-east-1", "s", CREDS, "t/t")
      local b = signer:sign_post("https://b.example.com/y?z", "", SUITE_TIME, "us-east-1", "s", CREDS, "t/t")
      assert.are.equal("a.example.com", a.Host)
      assert.are.equal("b.example.com", b.Host)
      local _, steps = signer:sign({ method = "POST", url = "https://b.example.com/y?z", region = "us-east-1",
        service = "s", credentials = CREDS, time = SUITE_TIME, headers = { ["Content-Type"] = "t/t" } }, true)
      assert.truthy(b.Authorization:find("Signature=" .. steps.signature, 1, true))
      local now = signer:sign_post("https://a.example.com/", "", nil, "us-east-1", "s", CREDS, "t/t")
      assert.are.equal(os.date("!%Y%m%d", os.time()), now["X-Amz-Date"]:sub(1, 8))
    end)

    it("gives each signer its own Host and date when signers and seconds alternate", function()
      local a, b = core.sigv4_signer(), core.sigv4_signer()
      for i = 1, 4 do
        local t = SUITE_TIME + i * 3600
        local ha = a:sign_post("https://a.example.com/", "", t, "us-east-1", "s", CREDS, "t/t")
        local hb = b:sign_post("https://b.example.com:8443/", "", t + 1, "us-east-1", "s", CREDS, "t/t")
        assert.are.equal("a.example.com", ha.Host)
        assert.are.equal("b.example.com:8443", hb.Host)
        assert.are.equal(os.date("!%Y%m%dT%H%M%SZ", t), ha["X-Amz-Date"])
        assert.are.equal(os.date("!%Y%m%dT%H%M%SZ", t + 1), hb["X-Amz-Date"])
      end
    end)

    it("raises what sign raises, naming the field and showing no secret", function()
      local signer = core.sigv4_signer()
      local function post_error(...)
        local ok, err = pcall(signer.sign_post, signer, ...)
        assert.is_false(ok, "expected an error")
        return tostring(err)
      end
      local url = "https://dynamodb.us-east-1.amazonaws.com/"
      assert.truthy(post_error(url, "", 1, "r", "s", nil, "t/t"):find("req.credentials: table expected", 1, true))
      assert.truthy(post_error(nil, "", 1, "r", "s", CREDS, "t/t"):find("req.url: string expected", 1, true))
      assert.truthy(post_error("ftp://x/", "", 1, "r", "s", CREDS, "t/t"):find("the scheme must be http", 1, true))
      assert.truthy(post_error(url, "", -1, "r", "s", CREDS, "t/t"):find("req.time: outside", 1, true))
      assert.truthy(post_error(url, "", 1, "r/x", "s", CREDS, "t/t"):find("req.region", 1, true))
      assert.truthy(post_error(url, "", 1, "r", "s", CREDS, nil):find('req.headers["Content-Type"]', 1, true))
      assert.truthy(post_error(url, "", 1, "r", "s", CREDS, "t/t", 5):find('req.headers["X-Amz-Target"]', 1, true))
      local err = post_error(url, "", 1, "r", "s", { access_key_id = KEY_ID }, "t/t")
      assert.truthy(err:find("credentials.secret_access_key", 1, true))
      err = post_error(url, "", 1, "r", "s", CREDS, "t/t\r\nX-Evil: 1")
      assert.truthy(err:find('req.headers["Content-Type"]', 1, true))
      assert.is_nil(err:find(SECRET, 1, true))
      assert.truthy(post_error({}, "", 1, "r", "s", CREDS, "t/t"):find("req.url: string expected", 1, true))
      local ok, msg = pcall(core.sigv4_signer().sign_post, {}, url)
      assert.is_false(ok)
      assert.truthy(tostring(msg):find("sigv4_signer", 1, true))
    end)
  end)

  describe("signing key cache", function()
    it("gives the same signature for the same inputs and derives the key once", function()
      local signer = core.sigv4_signer()
      local h1, s1 = signer:sign(dynamodb_request(), true)
      local h2, s2 = signer:sign(dynamodb_request(), true)
      assert.are.equal(h1.Authorization, h2.Authorization)
      assert.is_false(s1.key_cached)
      assert.is_true(s2.key_cached)
      assert.are.same({ key_derivations = 1, key_cache_hits = 1, cached_keys = 1 }, signer:stats())
    end)

    it("reuses the key later the same day (new signature, no new derivation)", function()
      local signer = core.sigv4_signer()
      local h1 = signer:sign(dynamodb_request())
      local h2, steps = signer:sign(dynamodb_request({ time = SUITE_TIME + 3600 }), true)
      assert.are_not.equal(h1.Authorization, h2.Authorization)
      assert.is_true(steps.key_cached)
      assert.are.equal(1, signer:stats().key_derivations)
    end)

    it("derives a new key for another date, region, service or secret", function()
      local signer = core.sigv4_signer()
      local base = signer:sign(dynamodb_request()).Authorization
      local variants = {
        { time = SUITE_TIME + 86400 },
        { region = "eu-west-1" },
        { service = "streams.dynamodb" },
        { credentials = { access_key_id = KEY_ID, secret_access_key = SECRET .. "2" } },
      }
      for i, fields in ipairs(variants) do
        local headers, steps = signer:sign(dynamodb_request(fields), true)
        assert.are_not.equal(base, headers.Authorization)
        assert.is_false(steps.key_cached)
        assert.are.equal(i + 1, signer:stats().key_derivations)
      end
    end)

    it("keeps at most 4 keys and evicts the least recently used", function()
      local signer = core.sigv4_signer()
      local regions = { "r-1", "r-2", "r-3", "r-4" }
      for _, r in ipairs(regions) do signer:sign(dynamodb_request({ region = r })) end
      signer:sign(dynamodb_request({ region = "r-1" })) -- r-2 is now the oldest
      signer:sign(dynamodb_request({ region = "r-5" }))
      assert.are.same({ key_derivations = 5, key_cache_hits = 1, cached_keys = 4 }, signer:stats())
      local _, kept = signer:sign(dynamodb_request({ region = "r-1" }), true)
      local _, evicted = signer:sign(dynamodb_request({ region = "r-2" }), true)
      assert.is_true(kept.key_cached)
      assert.is_false(evicted.key_cached)
    end)
  end)

  describe("a DynamoDB PutItem", function()
    it("signs a JSON POST whose steps match an independent computation", function()
      local req = dynamodb_request({
        credentials = { access_key_id = KEY_ID, secret_access_key = SECRET, session_token = TOKEN },
      })
      local headers, steps = core.sigv4_signer():sign(req, true)

      local body_hash = core.sha256_hex(req.body)
      assert.are.equal(table.concat({
        "POST", "/", "",
        "content-type:application/x-amz-json-1.0",
        "host:dynamodb.us-east-1.amazonaws.com",
        "x-amz-date:20150830T123600Z",
        "x-amz-security-token:" .. TOKEN,
        "x-amz-target:DynamoDB_20120810.PutItem",
        "",
        "content-type;host;x-amz-date;x-amz-security-token;x-amz-target",
        body_hash,
      }, "\n"), steps.canonical_request)
      local sts = table.concat({
        "AWS4-HMAC-SHA256", "20150830T123600Z", "20150830/us-east-1/dynamodb/aws4_request",
        core.sha256_hex(steps.canonical_request),
      }, "\n")
      assert.are.equal(sts, steps.string_to_sign)
      local signature = expected_signature(SECRET, "20150830", "us-east-1", "dynamodb", sts)
      assert.are.equal(signature, steps.signature)
      assert.are.same({
        ["Content-Type"] = "application/x-amz-json-1.0",
        ["X-Amz-Target"] = "DynamoDB_20120810.PutItem",
        Host = "dynamodb.us-east-1.amazonaws.com",
        ["X-Amz-Date"] = "20150830T123600Z",
        ["X-Amz-Security-Token"] = TOKEN,
        Authorization = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/dynamodb/aws4_request, "
          .. "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, "
          .. "Signature=" .. signature,
      }, headers)
    end)

    it("signs with secrets around HMAC's 64-byte block (a longer key is hashed first)", function()
      -- "AWS4" .. secret is the first key: 63, 64, 65 and 200 bytes, and 300 (not cached).
      for _, len in ipairs({ 59, 60, 61, 196, 296 }) do
        local secret = ("s"):rep(len)
        local req = dynamodb_request({ credentials = { access_key_id = KEY_ID, secret_access_key = secret } })
        local signer = core.sigv4_signer()
        for _ = 1, 2 do -- derived, then from the cache when it may be cached
          local _, steps = signer:sign(req, true)
          assert.are.equal(expected_signature(secret, "20150830", "us-east-1", "dynamodb", steps.string_to_sign),
            steps.signature)
        end
      end
    end)

    it("hashes the body without adding x-amz-content-sha256 unless asked", function()
      local req = dynamodb_request()
      local plain, steps = core.sigv4_signer():sign(req, true)
      assert.is_nil(header(plain, "x-amz-content-sha256"))
      assert.are.equal(core.sha256_hex(req.body), steps.payload_hash)

      req.content_sha256_header = true
      local with, steps2 = core.sigv4_signer():sign(req, true)
      assert.are.equal(core.sha256_hex(req.body), with["x-amz-content-sha256"])
      assert.truthy(steps2.signed_headers:find("x-amz-content-sha256", 1, true))
    end)

    it("hashes an empty body as e3b0…b855", function()
      local _, steps = core.sigv4_signer():sign(dynamodb_request({ body = "" }), true)
      assert.are.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", steps.payload_hash)
    end)

    it("sends the session token but leaves it unsigned when sign_session_token is false", function()
      local req = dynamodb_request({
        credentials = { access_key_id = KEY_ID, secret_access_key = SECRET, session_token = TOKEN },
        sign_session_token = false,
      })
      local headers, steps = core.sigv4_signer():sign(req, true)
      assert.are.equal(TOKEN, headers["X-Amz-Security-Token"])
      assert.are.equal("content-type;host;x-amz-date;x-amz-target", steps.signed_headers)
      assert.is_nil(steps.canonical_request:find(TOKEN, 1, true))
    end)
  end)

  describe("request details", function()
    local function host_of(url)
      return core.sigv4_signer():sign(dynamodb_request({ url = url })).Host
    end

    it("takes Host from the URL, with the port only when it is not the default", function()
      assert.are.equal("localhost:8000", host_of("http://localhost:8000/"))
      assert.are.equal("localhost", host_of("http://localhost:80/"))
      assert.are.equal("db.example", host_of("https://db.example:443"))
      assert.are.equal("db.example:80", host_of("HTTPS://db.example:80/"))
      assert.are.equal("[::1]:8000", host_of("http://[::1]:8000/"))
      assert.are.equal("[::1]", host_of("http://[::1]/"))
    end)

    it("keeps a Host header the caller gave, under the caller's name", function()
      local req = dynamodb_request()
      req.headers.host = "proxy.local"
      local headers, steps = core.sigv4_signer():sign(req, true)
      assert.are.equal("proxy.local", headers.host)
      assert.is_nil(headers.Host)
      assert.truthy(steps.canonical_request:find("\nhost:proxy.local\n", 1, true))
    end)

    it("splits path and query from the URL and drops the fragment", function()
      local _, steps = core.sigv4_signer():sign(dynamodb_request({
        method = "GET", url = "http://h:8000/a/./b/../c?z=1&a=2#frag", body = "",
      }), true)
      local prefix = "GET\n/a/c\na=2&z=1\n"
      assert.are.equal(prefix, steps.canonical_request:sub(1, #prefix))
    end)

    it("leaves an S3 path alone unless told otherwise", function()
      local req = dynamodb_request({ url = "https://bucket.s3.amazonaws.com/a//b/../c" })
      req.service = "s3"
      local _, steps = core.sigv4_signer():sign(req, true)
      local prefix = "POST\n/a//b/../c\n\n"
      assert.are.equal(prefix, steps.canonical_request:sub(1, #prefix))
      req.normalize_path = true
      _, steps = core.sigv4_signer():sign(req, true)
      prefix = "POST\n/a/c\n\n"
      assert.are.equal(prefix, steps.canonical_request:sub(1, #prefix))
    end)

    it("leaves the path alone when normalize_path is false (S3)", function()
      local _, steps = core.sigv4_signer():sign(dynamodb_request({
        url = "https://h/a//b/../c d", normalize_path = false,
      }), true)
      local prefix = "POST\n/a//b/../c%20d\n\n"
      assert.are.equal(prefix, steps.canonical_request:sub(1, #prefix))
    end)

    it("joins list values with ',' in the request and in the signature", function()
      local req = dynamodb_request()
      req.headers["X-Multi"] = { "b", " a ", "c" }
      local headers, steps = core.sigv4_signer():sign(req, true)
      assert.are.equal("b, a ,c", headers["X-Multi"])
      assert.truthy(steps.canonical_request:find("\nx-multi:b,a,c\n", 1, true))
    end)

    it("replaces X-Amz-Date and Authorization given in any case instead of duplicating them", function()
      local req = dynamodb_request()
      req.headers["x-amz-date"] = "19990101T000000Z"
      req.headers["AUTHORIZATION"] = "stale"
      local headers = core.sigv4_signer():sign(req)
      assert.are.equal(1, count_names(headers, "x-amz-date"))
      assert.are.equal(1, count_names(headers, "authorization"))
      assert.are.equal("20150830T123600Z", headers["X-Amz-Date"])
      assert.are_not.equal("stale", headers.Authorization)
    end)

    it("uses the real clock when no time is given", function()
      local req = dynamodb_request()
      req.time = nil
      local before = os.time()
      local date = core.sigv4_signer():sign(req)["X-Amz-Date"]
      local after = os.time()
      assert.truthy(date:match("^%d%d%d%d%d%d%d%dT%d%d%d%d%d%dZ$"))
      assert.truthy(date >= os.date("!%Y%m%dT%H%M%SZ", before) and date <= os.date("!%Y%m%dT%H%M%SZ", after))
    end)

    it("formats dates across leap years and centuries", function()
      local function date_at(t)
        return core.sigv4_signer():sign(dynamodb_request({ time = t }))["X-Amz-Date"]
      end
      assert.are.equal("19700101T000000Z", date_at(0))
      assert.are.equal("20000229T235959Z", date_at(951868799))
      assert.are.equal("21000301T000000Z", date_at(4107542400))
      assert.are.equal("99991231T235959Z", date_at(253402300799))
    end)
  end)

  describe("errors", function()
    local with_token = { access_key_id = KEY_ID, secret_access_key = SECRET, session_token = TOKEN }
    local cases = {
      { "a missing region", { region = false }, "req.region" },
      { "an invalid region", { region = "us east" }, "region" },
      { "missing credentials", { credentials = false }, "req.credentials" },
      { "a missing secret", { credentials = { access_key_id = KEY_ID, session_token = TOKEN } },
        "credentials.secret_access_key" },
      { "a missing access key id", { credentials = { secret_access_key = SECRET, session_token = TOKEN } },
        "credentials.access_key_id" },
      { "a token that is not a string", { credentials = { access_key_id = KEY_ID, secret_access_key = SECRET,
        session_token = 42 } }, "credentials.session_token" },
      { "a missing method", { method = false, credentials = with_token }, "req.method" },
      { "a URL without scheme", { url = "dynamodb.us-east-1.amazonaws.com/", credentials = with_token }, "req.url" },
      { "a URL with user info", { url = "https://me:" .. SECRET .. "@h/", credentials = with_token }, "req.url" },
      { "a time out of range", { time = -1, credentials = with_token }, "req.time" },
      { "a time that is not a number", { time = "now", credentials = with_token }, "req.time" },
      { "a flag that is not a boolean", { normalize_path = "yes", credentials = with_token }, "req.normalize_path" },
      { "a body that is not a string", { body = {}, credentials = with_token }, "req.body" },
      { "a header value that is not a string", { headers = { ["X-Count"] = 5 }, credentials = with_token },
        "X-Count" },
      { "a header list with a non-string", { headers = { ["X-List"] = { "a", true } }, credentials = with_token },
        "X-List" },
      { "an empty header list", { headers = { ["X-List"] = {} }, credentials = with_token }, "X-List" },
      { "a header value that smuggles a new line", { headers = { ["X-A"] = "a\r\nX-Evil: 1" },
        credentials = with_token }, "header value" },
      { "an invalid header name", { headers = { ["Bad Name"] = "v" }, credentials = with_token }, "header name" },
      { "one header given twice in different case", { headers = { ["X-A"] = "1", ["x-a"] = "2" },
        credentials = with_token }, "given twice" },
    }

    for _, case in ipairs(cases) do
      local what, fields, field = case[1], case[2], case[3]
      it("raises for " .. what .. ", naming the field and showing no secret", function()
        local req = dynamodb_request()
        for k, v in pairs(fields) do
          if v == false then req[k] = nil else req[k] = v end
        end
        local msg = sign_error(core.sigv4_signer(), req)
        assert.truthy(msg:find(field, 1, true), msg)
        assert.is_nil(msg:find(SECRET, 1, true), msg)
        assert.is_nil(msg:find(TOKEN, 1, true), msg)
      end)
    end

    it("raises when req is not a table", function()
      assert.has_error(function() core.sigv4_signer():sign("GET /") end)
    end)
  end)

  describe("tostring", function()
    it("shows no secret, token or key after signing", function()
      local signer = core.sigv4_signer()
      signer:sign(dynamodb_request({
        credentials = { access_key_id = KEY_ID, secret_access_key = SECRET, session_token = TOKEN },
      }))
      local text = tostring(signer)
      assert.truthy(text:find("dynlog.sigv4_signer", 1, true))
      assert.truthy(text:find("1 cached keys", 1, true))
      assert.is_nil(text:find(SECRET, 1, true))
      assert.is_nil(text:find(TOKEN, 1, true))
      assert.is_nil(text:find(KEY_ID, 1, true))
    end)
  end)
end)

describe("dynlog.sigv4", function()
  it("signs with one module-level signer whose key cache is shared", function()
    local before = sigv4.stats()
    local h1 = sigv4.sign(dynamodb_request({ region = "module-test-1" }))
    local h2 = sigv4.sign(dynamodb_request({ region = "module-test-1" }))
    local after = sigv4.stats()
    assert.are.equal(h1.Authorization, h2.Authorization)
    assert.are.equal(before.key_derivations + 1, after.key_derivations)
    assert.are.equal(before.key_cache_hits + 1, after.key_cache_hits)
  end)

  it("explains a signature with its intermediate steps", function()
    local headers, steps = sigv4.explain(dynamodb_request())
    assert.truthy(headers.Authorization:find(steps.signature, 1, true))
    assert.are.equal(core.sha256_hex(steps.canonical_request), steps.string_to_sign:match("[^\n]+$"))
    assert.are.equal("content-type;host;x-amz-date;x-amz-target", steps.signed_headers)
  end)

  it("signs a POST from its parts with signer:sign_post, checking the credentials' fields", function()
    local signer = sigv4.new_signer()
    local creds = { access_key_id = KEY_ID, secret_access_key = SECRET }
    local headers = signer:sign_post("https://dynamodb.us-east-1.amazonaws.com/", "{}", SUITE_TIME, "us-east-1",
      "dynamodb", creds, "application/x-amz-json-1.0", "DynamoDB_20120810.ListTables")
    local same = signer:sign({ method = "POST", url = "https://dynamodb.us-east-1.amazonaws.com/", body = "{}",
      time = SUITE_TIME, region = "us-east-1", service = "dynamodb", credentials = creds,
      headers = { ["Content-Type"] = "application/x-amz-json-1.0",
                  ["X-Amz-Target"] = "DynamoDB_20120810.ListTables" } })
    assert.are.same(same, headers)
    local ok, err = pcall(signer.sign_post, signer, "https://x.example.com/", "", SUITE_TIME, "r", "s",
      { access_key_id = KEY_ID, secret_acess_key = SECRET }, "t/t")
    assert.is_false(ok)
    assert.truthy(tostring(err):find('unknown option "secret_acess_key"', 1, true))
  end)

  it("makes independent signers with their own caches", function()
    local a, b = sigv4.new_signer(), sigv4.new_signer()
    local ha = a:sign(dynamodb_request())
    local hb = b:sign(dynamodb_request())
    assert.are.equal(ha.Authorization, hb.Authorization)
    assert.are.equal(1, a:stats().key_derivations)
    assert.are.equal(1, b:stats().key_derivations)
    assert.is_nil(tostring(a):find(SECRET, 1, true))
  end)

  it("raises, naming the field, on a malformed request", function()
    local ok, err = pcall(sigv4.sign, dynamodb_request({ region = 7 }))
    assert.is_false(ok)
    assert.truthy(tostring(err):find("req.region", 1, true))
  end)
end)
