-- Retries and recoveries, driven by a transport that wraps the real one and
-- misbehaves on cue, in front of a real DynamoDB Local.
local ddb = require "spec.support.ddb"
local errors = require "dynlog.errors"
local http = require "dynlog.transport.curl"
local timeutil = require "dynlog.base.timeutil"

local AWS = "com.amazonaws.dynamodb.v20120810#"

local function aws_body(name, message, extra)
  return ('{"__type":"%s%s","message":"%s"%s}'):format(AWS, name, message, extra or "")
end

-- script[n] says what to do with the n-th request: "pass" (default), "500",
-- "throttle", "html502", "timeout_before" (the request never arrives),
-- "timeout_after" (it arrives and is applied; the answer is lost), "crc"
-- (a corrupted x-amz-crc32), "skew" (a signature-expired error with the
-- server's Date an hour ahead), "expired_token", "txn_conflict",
-- "txn_throttled", "txn_condition_and_throttled" (cancelled transactions), "resent"
-- (the transport itself sends the request twice, as curl does when a
-- reused connection dies after the request went out, and answers with the
-- second response, marked `resent` as the transports mark it).
local function flaky(script)
  local real = http.new()
  local t = { calls = 0, sent = {} }
  function t.request(_, req)
    t.calls = t.calls + 1
    t.sent[t.calls] = req
    local action = script[t.calls] or "pass"
    local function answer(status, body, headers)
      return { status = status, headers = headers or {}, body = body }
    end
    if action == "500" then return answer(500, aws_body("InternalServerError", "boom")) end
    if action == "throttle" then return answer(400, aws_body("ThrottlingException", "slow down")) end
    if action == "html502" then
      return answer(502, "<html><body>Bad Gateway</body></html>", { ["content-type"] = "text/html" })
    end
    if action == "timeout_before" then return nil, errors.new("timeout", "injected", { retryable = true }) end
    if action == "skew" then
      return answer(400, aws_body("InvalidSignatureException", "Signature expired: 20200101T000000Z is now earlier"),
        { date = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 3600) })
    end
    if action == "expired_token" then return answer(400, aws_body("ExpiredTokenException", "token expired")) end
    if action == "txn_conflict" then
      return answer(400, aws_body("TransactionCanceledException", "cancelled",
        ',"CancellationReasons":[{"Code":"TransactionConflict"},{"Code":"None"}]'))
    end
    if action == "txn_throttled" then
      return answer(400, aws_body("TransactionCanceledException", "cancelled",
        ',"CancellationReasons":[{"Code":"None"},{"Code":"ThrottlingError"}]'))
    end
    if action == "txn_condition_and_throttled" then
      return answer(400, aws_body("TransactionCanceledException", "cancelled",
        ',"CancellationReasons":[{"Code":"ConditionalCheckFailed"},{"Code":"ProvisionedThroughputExceeded"}]'))
    end
    if action == "resent" then
      real:request(req)
      local res, err = real:request(req)
      if res then res.resent = true end
      return res, err
    end
    local res, err = real:request(req)
    if action == "timeout_after" then return nil, errors.new("timeout", "injected", { retryable = true }) end
    if action == "crc" and res then res.headers["x-amz-crc32"] = "12345" end
    return res, err
  end
  return t
end

describe("retries against DynamoDB Local", function()
  local table_name
  setup(function() table_name = ddb.ready_client().table end)

  local function client(script, opts)
    local t = flaky(script)
    -- The scripts number the requests of the write itself: appends do not
    -- read the stream's tombstone first here.
    local o = { table = table_name, transport = t, sleep = function() end, tombstones = false }
    for k, v in pairs(opts or {}) do o[k] = v end
    return ddb.client(o), t
  end

  local function count(c, log, id)
    return #assert(c:query(log, id, { consistent = true }):all())
  end

  it("retries 5xx, throttling, HTML error pages and corrupted checksums, then succeeds", function()
    local c, t = client({ "500", "throttle", "html502", "crc", "pass", "pass" })
    -- The crc case reaches DynamoDB: the put is applied and its answer
    -- refused. The fifth attempt fails its condition, and a read (the
    -- sixth request) finds that the event there is ours.
    assert(c:append("retry", "a", "e", { n = 1 }))
    assert.are.equal(6, t.calls)
    assert.matches("GetItem", t.sent[6].headers["X-Amz-Target"])
    assert.are.equal(1, count(c, "retry", "a"))
  end)

  it("reuses the sort key on a retry, so a lost answer never writes twice (ulid mode)", function()
    local c, t = client({ "timeout_after", "pass" })
    local key = assert(c:append("retry", "b", "e", { n = 1 }))
    assert.are.equal(t.sent[1].body, t.sent[2].body, "the retry sends the same item")
    assert.are.equal(1, count(c, "retry", "b"))
    assert.are.equal(key.sk, c:head("retry", "b").sk)
  end)

  it("counts a conditional failure on an identical item as success (version mode)", function()
    local v = ddb.ready_client({ sort_key = "version" })
    local c = client({ "pass", "timeout_after", "pass", "pass" }, { table = v.table, sort_key = "version" })
    -- 1: Query head; 2: the put lands but its answer is lost; 3: the put
    -- again, ConditionalCheckFailed; 4: GetItem finds our event.
    local key = assert(c:append("acct", "x", "opened", { n = 1 }))
    assert.are.equal(1, key.sk)
    assert.are.equal(1, count(v, "acct", "x"))
  end)

  it("finds its own event after a silent re-send by the transport, in both modes", function()
    local c, t = client({ "resent" })
    local key = assert(c:append("retry", "resent", "e", { n = 1 }))
    assert.matches("GetItem", t.sent[2].headers["X-Amz-Target"], 1, true)
    assert.are.equal(1, count(c, "retry", "resent"))
    assert.are.equal(key.sk, c:head("retry", "resent").sk)

    local v = ddb.ready_client({ sort_key = "version" })
    local vc = client({ "pass", "resent", "pass" }, { table = v.table, sort_key = "version" })
    -- 1: Query head; 2: the put, sent twice (the second fails its
    -- condition); 3: GetItem finds our event: no second write at version 2.
    assert.are.equal(1, assert(vc:append("acct", "resent", "opened", { n = 1 })).sk)
    assert.are.equal(1, count(v, "acct", "resent"))
  end)

  it("says the outcome is unknown when reading back after an unknown outcome fails", function()
    local v = ddb.ready_client({ sort_key = "version" })
    -- 1: Query head; 2: the put lands, its answer lost; 3: the put again,
    -- ConditionalCheckFailed; 4 and on: the read-back fails every time.
    local c = client({ "pass", "timeout_after", "pass", "500", "500" },
      { table = v.table, sort_key = "version", max_attempts = 2 })
    local key, err = c:append("acct", "unknown", "opened", { n = 1 })
    assert.is_nil(key)
    assert.are.equal("InternalServerError", err.code)
    assert.is_true(err.ambiguous)
    assert.matches("may have been written", err.message, 1, true)
    assert.are.equal(1, count(v, "acct", "unknown"), "written once, never twice")
  end)

  it("still reports a conflict when the item found is not ours", function()
    local v = ddb.ready_client({ sort_key = "version" })
    assert(v:append("acct", "y", "theirs", {}, { expected_version = 0 }))
    local c = client({ "timeout_before", "pass", "pass" }, { table = v.table, sort_key = "version" })
    local key, err = c:append("acct", "y", "ours", {}, { expected_version = 0 })
    assert.is_nil(key)
    assert.are.equal("conflict", err.code)
    assert.are.equal("theirs", v:get("acct", "y", 1).type)
  end)

  it("gives up after max_attempts with the last error", function()
    local c, t = client({ "500", "500", "500", "500" }, { max_attempts = 3 })
    local key, err = c:append("retry", "c", "e", {})
    assert.is_nil(key)
    assert.are.equal("InternalServerError", err.code)
    assert.are.equal(3, err.attempts)
    assert.is_true(err.retryable)
    assert.are.equal(3, t.calls)
  end)

  it("does not retry validation errors", function()
    local c, t = client({})
    local resp, err = c:call("Query", { TableName = table_name, KeyConditionExpression = "nonsense" })
    assert.is_nil(resp)
    assert.are.equal("ValidationException", err.code)
    assert.are.equal(1, t.calls)
  end)

  it("waits with exponential backoff and full jitter, capped", function()
    local sleeps = {}
    local c = client({ "500", "500", "500", "500", "500", "500" },
      { max_attempts = 7, base_delay = 0.1, max_delay = 0.4, sleep = function(s) sleeps[#sleeps + 1] = s end })
    assert(c:append("retry", "d", "e", {}))
    assert.are.equal(6, #sleeps)
    local caps = { 0.1, 0.2, 0.4, 0.4, 0.4, 0.4 }
    for i, s in ipairs(sleeps) do
      assert.is_true(s >= 0 and s <= caps[i], ("sleep %d was %g"):format(i, s))
    end
  end)

  it("re-signs with the server's clock after a clock-skew error", function()
    local c, t = client({ "skew", "pass" })
    assert(c:append("retry", "e", "e", {}))
    local first = t.sent[1].headers["X-Amz-Date"]
    local second = t.sent[2].headers["X-Amz-Date"]
    local function epoch(amz)
      local y, m, d, h, mi, s = amz:match("^(%d%d%d%d)(%d%d)(%d%d)T(%d%d)(%d%d)(%d%d)Z$")
      return timeutil.days_from_civil(tonumber(y), tonumber(m), tonumber(d)) * 86400 + h * 3600 + mi * 60 + s
    end
    local shift = epoch(second) - epoch(first)
    assert.is_true(shift > 3500 and shift < 3700, "shifted by " .. shift .. " s")
  end)

  it("fetches credentials again after ExpiredTokenException", function()
    local gets, invalidated = 0, 0
    local provider = {
      -- DynamoDB Local keeps tables per access key: only the token changes.
      get = function()
        gets = gets + 1
        return { access_key_id = "AKIDSPEC", secret_access_key = "s", session_token = "token" .. gets }
      end,
      invalidate = function() invalidated = invalidated + 1 end,
    }
    local c, t = client({ "expired_token", "pass" }, { credentials = provider })
    assert(c:append("retry", "f", "e", {}))
    assert.are.equal(1, invalidated)
    assert.are.equal("token1", t.sent[1].headers["X-Amz-Security-Token"])
    assert.are.equal("token2", t.sent[2].headers["X-Amz-Security-Token"])
  end)

  it("retries a transaction cancelled by throttling, but not one that also failed a condition", function()
    local c, t = client({ "txn_throttled", "pass" })
    assert.are.equal(2, #assert(c:append_batch("retry", "h", { { type = "a" }, { type = "b" } })))
    assert.are.equal(2, t.calls)
    assert.are.equal(2, count(c, "retry", "h"))
    c, t = client({ "txn_condition_and_throttled", "pass" })
    local keys, err = c:append_batch("retry", "i", { { type = "a" }, { type = "b" } })
    assert.is_nil(keys)
    assert.are.equal("conflict", err.code)
    assert.are.equal(1, t.calls)
  end)

  for _, mode in ipairs({ "ulid", "version" }) do
    it("writes a batch once when its commit's answer is lost (" .. mode .. " mode)", function()
      local v = ddb.ready_client({ sort_key = mode })
      -- version mode reads the head first: the transaction is the 2nd request.
      local script = mode == "ulid" and { "timeout_after", "pass" } or { "pass", "timeout_after", "pass" }
      local c, t = client(script, { table = v.table, sort_key = mode })
      local keys = assert(c:append_batch("retry", "j", { { type = "a" }, { type = "b" } }))
      assert.are.equal(2, #keys)
      assert.are.equal(t.sent[#t.sent - 1].body, t.sent[#t.sent].body, "the same ClientRequestToken again")
      assert.are.equal(2, count(v, "retry", "j"))
    end)
  end

  it("retries a transaction cancelled by a conflict with another transaction", function()
    local c, t = client({ "txn_conflict", "pass" })
    local keys = assert(c:append_batch("retry", "g", { { type = "a" }, { type = "b" } }))
    assert.are.equal(2, #keys)
    assert.are.equal(t.sent[1].body, t.sent[2].body, "same ClientRequestToken on the retry")
    assert.are.equal(2, count(c, "retry", "g"))
  end)
end)
