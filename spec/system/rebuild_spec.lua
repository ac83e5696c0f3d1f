-- `dynlog rebuild`: bin/dynlog as a subprocess against DynamoDB Local, with
-- the users example's spec (examples/handler.lua) and a feed filled as the
-- indexer fills it.
local cli = require "spec.support.cli"
local ddb = require "spec.support.ddb"
local fill_feed = require "spec.support.fill_feed"
local handler = require "dynlog.handler"
local json = require "dynlog.json"
local trigger = require "dynlog.trigger"

local dynlog, cli_env = cli.dynlog, cli.env

local function items_of(c, table_name)
  local out, n = {}, 0
  local params = { TableName = table_name, ConsistentRead = true }
  repeat
    local resp = assert(c:call("Scan", params))
    for _, item in ipairs(resp.Items) do
      out[item.pk.S] = item
      n = n + 1
    end
    params.ExclusiveStartKey = resp.LastEvaluatedKey
  until params.ExclusiveStartKey == nil
  return out, n
end

describe("dynlog rebuild", function()
  local c, e, live

  setup(function()
    c = ddb.ready_client()
    assert(c:create_feed_table())
    live = c.table .. "-core" -- the example's read model: DYNLOG_CORE_TABLE's default
    assert(handler.create_table(c, live))
    local spec = { table = live, handlers = require("examples.handler").spec.handlers }
    local events = {}
    for round = 1, 3 do
      for u = 1, 8 do
        local id = "u" .. u
        local ev = round == 1 and { "signup", { name = "N" .. u, email = id .. "@example.com" } }
          or round == 2 and { "addPhoneNumber", { phoneNumber = "+1 555 01" .. u } }
          or { "addLocation", { lat = u + 0.5, long = -u - 0.25 } }
        local key = assert(c:append("users", id, ev[1], ev[2]))
        local stored = assert(c:get("users", id, key.sk, { consistent = true, numbers = "exact" }))
        assert(handler.project(c, { detail = trigger.detail(stored) }, spec))
        events[#events + 1] = stored
      end
    end
    fill_feed.commit(c, events)
    e = cli_env(c.table)
  end)

  it("projects the read model again into --into, item for item, and switches --alias over", function()
    local target = live .. "-v2"
    local status, out, err = dynlog("rebuild --spec examples.handler --into " .. target .. " --alias " .. live
      .. " --logs users --json", e)
    assert.are.equal(0, status, err)
    assert.are.same({ table = target, position = 24, head = 24, done = 24, projected = 8, applied = 24,
                      caught_up = true, alias = live, subscription = "rebuild:" .. target }, json.decode(out))
    local want, n = items_of(c, live)
    local got = items_of(c, target)
    assert.are.equal(8, n)
    for key, item in pairs(want) do assert.are.same(item, got[key], key) end
    assert.are.equal(target, c:read_model_table(live))

    -- run again: nothing left
    status, out, err = dynlog("rebuild --spec examples.handler --into " .. target .. " --logs users", e)
    assert.are.equal(0, status, err)
    assert.matches("rebuilt " .. target .. ": 0 event(s) read, 0 projection(s), 0 event(s) applied; at position 24"
      .. " of 24", out, 1, true)
  end)

  it("prints progress about every second, and keeps to --rate", function()
    local target = live .. "-v3"
    local started = os.time()
    local status, out, err = dynlog("rebuild --spec examples.handler --into " .. target
      .. " --rate 10 --batch-size 5 --json", e)
    assert.are.equal(0, status, err)
    -- 24 events at 10 a second: the first 5 at once, then 2 seconds or so
    assert.is_true(os.time() - started >= 1)
    assert.are.equal(24, json.decode(out).done)
    local quoted = target:gsub("%p", "%%%0")
    assert.matches("dynlog: rebuild " .. quoted .. ": position %d+ of 24 %(%d+%.%d%%%), %d+ event%(s%), [%d.]+"
      .. " event%(s%)/s, ETA %d+s\n", err)
  end)

  it("stops on SIGTERM with its position stored; run again, it finishes the same read model", function()
    local target = live .. "-v4"
    local h = cli.spawn("rebuild --spec examples.handler --into " .. target .. " --alias " .. target
      .. "-name --rate 8 --batch-size 1", e)
    local ok, status
    ok = pcall(function()
      assert.is_true(h.wait_for_stderr("dynlog: rebuild " .. target .. ": position", 20), h.stderr())
      h.kill("TERM")
      status = h.wait(20)
    end)
    local err = h.stderr()
    h.cleanup()
    assert.is_true(ok)
    assert.are.equal(1, status, err)
    local at = tonumber(err:match("interrupted by SIGTERM at position (%d+); run the same command again to continue"))
    assert.is_number(at, err)
    assert.is_true(at > 0 and at < 24, err)
    -- not caught up: no alias yet
    assert.are.equal(target .. "-name", c:read_model_table(target .. "-name"))

    local out
    status, out, err = dynlog("rebuild --spec examples.handler --into " .. target .. " --alias " .. target
      .. "-name --json", e)
    assert.are.equal(0, status, err)
    local summary = json.decode(out)
    assert.are.same({ 24 - at, 24, true }, { summary.done, summary.position, summary.caught_up })
    local want = items_of(c, live)
    local got = items_of(c, target)
    for key, item in pairs(want) do assert.are.same(item, got[key], key) end
    assert.are.equal(target, c:read_model_table(target .. "-name"))

    -- --after 0: from the first event again (the read models are there: nothing applied)
    status, out, err = dynlog("rebuild --spec examples.handler --into " .. target .. " --after 0 --json", e)
    assert.are.equal(0, status, err)
    summary = json.decode(out)
    assert.are.same({ 24, 0 }, { summary.done, summary.applied })
  end)

  it("--follow: caught up, switched over, then new events projected until SIGTERM (exit 0)", function()
    local target = live .. "-v5"
    local h = cli.spawn("rebuild --spec examples.handler --into " .. target .. " --alias " .. target
      .. "-name --follow --poll-interval 0.1 --json", e)
    local ok, status, got
    ok = pcall(function()
      assert.is_true(h.wait_for_stderr("dynlog: rebuild " .. target .. " caught up at position 24; " .. target
        .. "-name now reads " .. target .. "; following the feed (stop with Ctrl-C)", 20), h.stderr())
      assert.are.equal(target, c:read_model_table(target .. "-name"))
      -- a new user: appended, projected live, in the feed
      local key = assert(c:append("users", "late", "signup", { name = "Late", email = "late@example.com" }))
      local ev = assert(c:get("users", "late", key.sk, { consistent = true, numbers = "exact" }))
      assert(handler.project(c, { detail = trigger.detail(ev) },
        { table = live, handlers = require("examples.handler").spec.handlers }))
      fill_feed.commit(c, { ev })
      local deadline = os.time() + 20
      repeat
        got = items_of(c, target)["users#late"]
        if not got then require("socket").sleep(0.05) end
      until got or os.time() > deadline
      h.kill("TERM")
      status = h.wait(20)
    end)
    local out, err = h.stdout(), h.stderr()
    h.cleanup()
    assert.is_true(ok)
    assert.are.equal(0, status, err)
    assert.are.equal("Late", got.name.S)
    local summary = json.decode(out)
    assert.are.same({ 25, 25, true }, { summary.position, summary.head, summary.caught_up })
  end)

  it("usage errors: no spec, a module that is none, a bad table", function()
    for _, case in ipairs({
      { "rebuild", "--spec MODULE is required" },
      { "rebuild --spec no.such.module", "--spec no.such.module could not be loaded" },
      { "rebuild --spec dynlog.json", "--spec dynlog.json must return a read model's spec" },
      { "rebuild --spec spec.support.bad_read_model --into x-v9",
        "--spec spec.support.bad_read_model is not a spec rebuild takes: project: spec.key must be a function" },
      { "rebuild --spec examples.handler --into x", "invalid table name x" },
      { "rebuild --spec examples.handler --batch-size 5000", "--batch-size must be at most 1000" },
    }) do
      local status, _, err = dynlog(case[1], e)
      assert.are.equal(2, status, case[1] .. ": " .. err)
      assert.matches(case[2], err, 1, true)
    end
    -- a table without a feed: said so, and no target table made
    local plain = ddb.ready_client()
    local status, _, err = dynlog("rebuild --spec examples.handler --into " .. plain.table .. "-v2",
      cli_env(plain.table))
    assert.are.equal(1, status, err)
    assert.matches("the table has no feed (" .. plain.table .. "-feed)", err, 1, true)
    local _, derr = plain:call("DescribeTable", { TableName = plain.table .. "-v2" })
    assert.are.equal("ResourceNotFoundException", derr.code)
    local out
    status, out = dynlog("--help", e)
    assert.are.equal(0, status)
    assert.matches("\n  rebuild --spec MODULE", out, 1, true)
    status, out = dynlog("rebuild --help", e)
    assert.are.equal(0, status)
    assert.matches("--follow", out, 1, true)
  end)
end)
