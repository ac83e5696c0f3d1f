-- Bad and hostile input, as listed in docs/hostile-input.md: each case gets
-- a clear error, nothing raised where an error value is due, no crash, and
-- nothing half-written. The last test checks that every row of that
-- catalogue names a test that exists.
local dynlog = require "dynlog"
local ddb = require "spec.support.ddb"
local server = require "spec.support.server"

local function refused(code, pattern, key, err)
  assert.is_nil(key)
  assert.is_table(err, "an error value")
  assert.are.equal(code, err.code, tostring(err))
  if pattern then assert.matches(pattern, err.message) end
end

describe("bad input to the event log", function()
  local c
  setup(function() c = ddb.ready_client() end)

  it("refuses values DynamoDB cannot hold, naming where they are, and writes nothing", function()
    local cases = {
      { { x = 0 / 0 }, "NaN cannot be stored in DynamoDB at Item%.payload%.x" },
      { { x = math.huge }, "infinity cannot be stored" },
      { { x = -math.huge }, "infinity cannot be stored" },
      { { x = 1e200 }, "too large for DynamoDB" },
      { { x = 1e-200 }, "too close to zero" },
      { { x = io.stdout }, "a userdata cannot be stored" },
      { { x = coroutine.create(print) }, "a thread cannot be stored" },
      { { x = print }, "a function cannot be stored" },
      { { x = { 1, nil, 3 } }, "array has holes" },
      { { x = { 1, y = 2 } }, nil },
      { { [true] = 1 }, "neither a string nor a number" },
    }
    for i, case in ipairs(cases) do
      refused("invalid_argument", case[2], c:append("hostile", "values", "t", case[1]))
      assert.is_nil(c:head("hostile", "values"), "case " .. i .. " wrote nothing")
    end
    local cyclic = {}
    cyclic.again = cyclic
    refused("invalid_argument", nil, c:append("hostile", "values", "t", { c = cyclic }))
    assert.is_nil(c:head("hostile", "values"))
  end)

  it("refuses a number with more than 38 significant digits, from DynamoDB or sent through call", function()
    local value, err = dynlog.unmarshal({ N = "123456789012345678901234567890123456789" })
    refused("invalid_argument", "more than 38 significant digits", value, err)
    local resp, cerr = c:call("PutItem", { TableName = c.table, Item = {
      pk = { S = "hostile#digits#stream" }, sk = { S = "x" },
      n = { N = "123456789012345678901234567890123456789" } } })
    refused("ValidationException", nil, resp, cerr)
    assert.is_nil(c:head("hostile", "digits"))
  end)

  it("refuses a batch over 100 events or 4 MB, writing none of it", function()
    local many = {}
    for i = 1, 101 do many[i] = { type = "t", payload = { i = i } } end
    refused("too_large", "at most 100", c:append_batch("hostile", "batch", many))
    local big = {}
    for i = 1, 12 do big[i] = { type = "t", payload = { blob = string.rep("b", 390 * 1024) } } end
    refused("too_large", "4 MB", c:append_batch("hostile", "batch", big))
    assert.is_nil(c:head("hostile", "batch"))
  end)

  it("refuses invalid ULIDs and cursors", function()
    refused("invalid_argument", "26 characters", dynlog.ulid_time("not-a-ulid"))
    refused("invalid_argument", "exceeds 128 bits", dynlog.ulid_time("8ZZZZZZZZZZZZZZZZZZZZZZZZZ"))
    refused("invalid_argument", "query_page returned", c:query_page("hostile", "x", { cursor = "garbage" }))
    refused("invalid_argument", "query_page returned", c:query_page("hostile", "x", { cursor = string.rep("A", 5000) }))
    refused("invalid_argument", "unknown AttributeValue type", dynlog.unmarshal({ Q = "x" }))
  end)
end)

describe("bad answers from the server", function()
  local s
  after_each(function() if s then s.stop() s = nil end end)

  local function client_of(url, opts)
    -- The canned answers are for the write itself: appends do not read
    -- the stream's tombstone first here.
    local o = { table = "events", endpoint = url, region = "us-east-1", max_attempts = 2,
                base_delay = 0.001, max_delay = 0.002, timeout = 2, tombstones = false,
                credentials = { access_key_id = "AKIDSPEC", secret_access_key = "spec-secret-key" } }
    for k, v in pairs(opts or {}) do o[k] = v end
    return dynlog.new(o)
  end

  local function answering(responses)
    s = server.start({ { method = "POST", path = "/", responses = responses } })
    return client_of(s.url)
  end

  it("reports malformed, truncated and empty JSON as bad_response", function()
    for _, body in ipairs({ "{not json", '{"Item": {"pk": {"S": "x"', "", "[1,2]" }) do
      local c = answering({ { status = 200, body = body } })
      local got, err = c:get("l", "1", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
      refused("bad_response", nil, got, err)
      s.stop()
      s = nil
    end
  end)

  it("reports an HTML error page from a proxy as bad_response with its status, retried when 5xx", function()
    local c = answering({ { status = 502, headers = { ["Content-Type"] = "text/html" },
                            body = "<html><body><h1>502 Bad Gateway</h1></body></html>" } })
    local key, err = c:append("l", "1", "t", {})
    refused("bad_response", "HTTP 502 without an AWS error body: <html>", key, err)
    assert.are.equal(502, err.status)
    assert.are.equal(2, err.attempts)
    assert.are.equal(2, #s.requests())
  end)

  it("reports an empty error body as bad_response, and a 4xx one is not retried", function()
    local c = answering({ { status = 403, body = "" } })
    local key, err = c:append("l", "1", "t", {})
    refused("bad_response", "HTTP 403", key, err)
    assert.are.equal(1, #s.requests())
  end)

  it("reports wrong credentials as AWS does, without retrying", function()
    local c = answering({ { status = 400, body = {
      __type = "com.amazon.coral.service#UnrecognizedClientException",
      message = "The security token included in the request is invalid." } } })
    refused("UnrecognizedClientException", "security token", c:append("l", "1", "t", {}))
    assert.are.equal(1, #s.requests())
  end)

  it("fetches credentials again after ExpiredTokenException, and signs with the new ones", function()
    local served = 0
    local provider = { get = function()
      served = served + 1
      return { access_key_id = "AKID" .. served, secret_access_key = "spec-secret-key", session_token = "t" .. served }
    end, invalidate = function() end }
    s = server.start({ { method = "POST", path = "/", responses = {
      { status = 400, body = { __type = "com.amazon.coral.service#ExpiredTokenException",
                               message = "The security token included in the request is expired" } },
      { status = 200, body = {} } } } })
    local c = client_of(s.url, { credentials = provider })
    assert(c:append("l", "1", "t", {}))
    local requests = s.requests()
    assert.are.equal(2, #requests)
    assert.matches("AKID1/", requests[1].headers.authorization, 1, true)
    assert.matches("AKID2/", requests[2].headers.authorization, 1, true)
  end)

  it("reports missing credentials before sending anything", function()
    s = server.start({ { method = "POST", path = "/", responses = { { status = 200, body = {} } } } })
    -- no keys in the environment or the shared files, no container, no instance metadata
    local env = { AWS_EC2_METADATA_DISABLED = "true" }
    local c = dynlog.new({ table = "events", endpoint = s.url, region = "us-east-1",
                           getenv = function(name) return env[name] end, read_file = function() return nil end })
    refused("credentials", nil, c:append("l", "1", "t", {}))
    assert.are.equal(0, #s.requests())
  end)

  it("signs again with the server's time after a clock skew error", function()
    s = server.start({ { method = "POST", path = "/", responses = {
      { status = 400, headers = { Date = "Mon, 01 Jan 2024 00:00:00 GMT" },
        body = { __type = "com.amazon.coral.service#InvalidSignatureException",
                 message = "Signature expired: 20261125T120000Z is now earlier than 20240101T000000Z" } },
      { status = 200, body = {} } } } })
    local c = client_of(s.url)
    assert(c:append("l", "1", "t", {}))
    local requests = s.requests()
    assert.are.equal(2, #requests)
    assert.are.equal("20240101T000000Z", requests[2].headers["x-amz-date"]:sub(1, 16))
  end)
end)

describe("docs/hostile-input.md", function()
  it("names, for every row, a test that exists", function()
    local f = assert(io.open("docs/hostile-input.md"))
    local text = f:read("*a")
    f:close()
    local rows = 0
    for file, name in text:gmatch("`(spec/[%w_/]+%.lua)`: \"([^\"]+)\"") do
      rows = rows + 1
      local sf = assert(io.open(file), file)
      local spec = sf:read("*a")
      sf:close()
      assert.is_truthy(spec:find('it("' .. name .. '"', 1, true), file .. " has no test \"" .. name .. "\"")
    end
    assert.is_true(rows >= 20, "the catalogue lists its cases")
  end)
end)
