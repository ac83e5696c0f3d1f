-- Subscriptions as processes and from the command line: a subscriber
-- killed with SIGKILL mid-stream and started again delivers every event at
-- least once, in feed order; `dynlog subscriptions` lists, shows, resets
-- and resubmits. Against DynamoDB Local; the feed is filled by feed.commit.
local ddb = require "spec.support.ddb"
local env = require "spec.support.env"
local feed = require "dynlog.client.feed"
local json = require "dynlog.json"
local run = require "spec.support.run"
local socket = require "socket"
local subscription = require "dynlog.pipeline.subscription"

local read_file, write_file = run.read_file, run.write_file

local ACCESS_KEY, SECRET_KEY = "AKIDSPEC", "spec-secret-key" -- those of spec.support.ddb's clients

local function cli_env(table_name)
  return run.lua_env({
    AWS_ENDPOINT_URL_DYNAMODB = env.dynamodb_endpoint(), AWS_REGION = "us-east-1",
    AWS_ACCESS_KEY_ID = ACCESS_KEY, AWS_SECRET_ACCESS_KEY = SECRET_KEY, AWS_SESSION_TOKEN = "",
    AWS_PROFILE = "", AWS_ENDPOINT_URL = "", AWS_EC2_METADATA_DISABLED = "true",
    DYNLOG_TABLE = table_name, DYNLOG_SORT_KEY = "",
  })
end

--- dynlog(args, env) -> status, stdout, stderr
local function dynlog(args, e)
  local err_file = os.tmpname()
  local status, out = run.run("sh -c " .. run.quote("lua5.4 bin/dynlog " .. args .. " 2>" .. err_file), e)
  local err = read_file(err_file) or ""
  os.remove(err_file)
  return status, out, err
end

-- dynlog(args, env) -> status, stderr: for commands whose stdout says nothing.
local function failing(args, e)
  local status, _, err = dynlog(args, e)
  return status, err
end

local function json_lines(text)
  local list = {}
  for line in text:gmatch("[^\n]+") do list[#list + 1] = assert(json.decode(line)) end
  return list
end

local function wait_for(cond, seconds)
  local deadline = socket.gettime() + seconds
  while socket.gettime() < deadline do
    local v = cond()
    if v then return v end
    socket.sleep(0.05)
  end
  return nil
end

-- Appends events and commits them to the feed, in order.
local function add(c, n, log, etype)
  local images = {}
  for i = 1, n do
    local key = assert(c:append(log or "users", "u" .. i, etype or "signup", { n = i }))
    images[i] = { image = assert(c:_request("dynamodb", "GetItem", {
      TableName = c.table, ConsistentRead = true, Key = { pk = { S = key.pk }, sk = { S = key.sk } },
    }, false)).Item }
  end
  return assert(feed.commit(c, images))
end

local function ready()
  local c = ddb.ready_client()
  assert(c:create_feed_table())
  return c
end

describe("a subscriber process", function()
  local SCRIPT = [[
local dynlog = require "dynlog"
local out = assert(io.open(arg[2], "a"))
local c = dynlog.new{ table = arg[1] }
local sub = dynlog.subscribe{ client = c, name = "killed", batch_size = 5, poll_interval = 0.05,
  lease_duration = 1, retry_base_delay = 0.01, retry_max_delay = 0.1,
  handler = function(events)
    for _, ev in ipairs(events) do out:write(ev.position, "\n") end
    out:flush()
    require("dynlog.core").sleep(0.05)
    return true
  end }
assert(sub:run())
]]

  it("killed with SIGKILL mid-stream and started again, delivers every event at least once, in feed order", function()
    local c = ready()
    add(c, 60)
    local script, delivered = os.tmpname(), os.tmpname()
    write_file(script, SCRIPT)
    local e = cli_env(c.table)
    local prefix = {}
    for k, v in pairs(e) do prefix[#prefix + 1] = k .. "=" .. run.quote(v) end
    local function start()
      local pipe = assert(io.popen("env " .. table.concat(prefix, " ") .. " lua5.4 " .. script .. " "
        .. run.quote(c.table) .. " " .. run.quote(delivered) .. " >/dev/null 2>&1 </dev/null & echo $!"))
      local pid = tonumber(pipe:read("*l"))
      pipe:close()
      return pid
    end
    local function lines()
      local list = {}
      for l in (read_file(delivered) or ""):gmatch("%d+") do list[#list + 1] = tonumber(l) end
      return list
    end
    local pid = start()
    finally(function()
      os.execute("kill -9 " .. pid .. " 2>/dev/null")
      os.remove(script)
      os.remove(delivered)
    end)
    assert.is_truthy(wait_for(function() return #lines() >= 20 end, 20), "the subscriber delivered")
    os.execute("kill -9 " .. pid)
    assert.is_true(#lines() < 60, "killed mid-stream")
    pid = start()
    -- Live events come while the second one runs.
    add(c, 40, "orders", "placed")
    local done = wait_for(function()
      local seen = {}
      for _, p in ipairs(lines()) do seen[p] = true end
      for p = 1, 100 do if not seen[p] then return nil end end
      return true
    end, 40)
    assert.is_truthy(done, "every event delivered after the restart")
    os.execute("kill -TERM " .. pid)
    assert.is_truthy(wait_for(function() return not run.succeeded("kill -0 " .. pid .. " 2>/dev/null") end, 10))
    -- In feed order: each process delivered positions in increasing order,
    -- the second starting at most one past the first's last (at the checkpoint).
    local list = lines()
    local restarts = 0
    for i = 2, #list do
      if list[i] ~= list[i - 1] + 1 then
        restarts = restarts + 1
        assert.is_true(list[i] <= list[i - 1], "no position passed over at " .. i)
      end
    end
    assert.is_true(restarts <= 1)
    assert.are.equal(1, list[1])
    assert.are.equal(100, list[#list])
    -- SIGTERM: the lease was released on the way out.
    local item = assert(subscription.read(c, "killed"))
    assert.are.equal(100, item.position)
    assert.is_nil(item.owner)
  end)
end)

describe("dynlog subscriptions", function()
  it("lists, shows, resets (refusing while the lease is held, unless --force) and resubmits dead letters", function()
    local c = ready()
    add(c, 3)
    add(c, 1, "users", "bad")
    add(c, 2)
    local e = cli_env(c.table)
    local status, out, err = dynlog("subscriptions --json", e)
    assert.are.equal(0, status, err)
    assert.are.equal("", out)
    local accept, skew = false, 0
    local sub = require("dynlog").subscribe{ client = c, name = "cli", max_tries = 1, on_poison = "dead_letter",
      poll_interval = 0, retry_base_delay = 0, retry_max_delay = 0, worker_id = "w1",
      now = function() return socket.gettime() + skew end,
      handler = function(events)
        for _, ev in ipairs(events) do
          if ev.type == "bad" and not accept then return nil, "refused " .. ev.position end
        end
        return true
      end }
    for _ = 1, 20 do
      if sub:stats().position == 6 then break end
      assert(sub:poll_once())
    end
    assert.are.equal(6, sub:stats().position)

    status, out, err = dynlog("subscriptions --json", e)
    assert.are.equal(0, status, err)
    local rows = json_lines(out)
    assert.are.equal(1, #rows)
    assert.are.equal("cli", rows[1].name)
    assert.are.equal(6, rows[1].position)
    assert.are.equal(6, rows[1].head)
    assert.are.equal(0, rows[1].lag_events)
    assert.are.equal("w1", rows[1].owner)
    assert.are.equal("held", rows[1].lease)
    status, out = dynlog("subscriptions", e)
    assert.are.equal(0, status)
    assert.matches("NAME%s+POSITION%s+HEAD%s+LAG%s+OWNER%s+LEASE", out)
    assert.matches("cli%s+6%s+6%s+0%s+w1%s+held", out)

    status, out, err = dynlog("subscriptions show cli --json", e)
    assert.are.equal(0, status, err)
    local shown = json.decode(out)
    assert.are.equal(1, shown.dead_letters)
    status, out = dynlog("subscriptions show cli", e)
    assert.are.equal(0, status)
    assert.matches("position%s+6", out)
    status, err = failing("subscriptions show nobody", e)
    assert.are.equal(1, status)
    assert.matches("no subscription named nobody", err)

    status, out, err = dynlog("subscriptions dead-letters cli --json", e)
    assert.are.equal(0, status, err)
    local letters = json_lines(out)
    assert.are.equal(1, #letters)
    assert.are.equal(4, letters[1].position)
    assert.are.equal("bad", letters[1].type)
    assert.are.equal("users#u1#stream", letters[1].stream)
    assert.are.equal(1, letters[1].tries)
    assert.are.equal("parked", letters[1].status)
    assert.matches("refused 4", letters[1].error)
    status, out = dynlog("subscriptions dead-letters cli", e)
    assert.are.equal(0, status)
    assert.matches("4%s+bad%s+users#u1#stream%s+1%s+parked%s+.*refused 4", out)

    -- Resubmitted: the running subscription delivers it on its next round.
    status, err = failing("subscriptions resubmit cli 9", e)
    assert.are.equal(1, status)
    assert.matches("no dead letter at position 9", err)
    status, out, err = dynlog("subscriptions resubmit cli --all --json", e)
    assert.are.equal(0, status, err)
    assert.are.same({ 4 }, json.decode(out).resubmitted)
    accept = true
    assert.are.equal(1, sub:poll_once())
    status, out = dynlog("subscriptions dead-letters cli --json", e)
    assert.are.equal(0, status)
    assert.are.equal("", out)

    -- reset: refused while the lease is held, done with --force (the holder loses it).
    status, err = failing("subscriptions reset cli --to 2", e)
    assert.are.equal(1, status)
    assert.matches("bad_state", err)
    assert.matches("--force", err)
    assert.are.equal(6, assert(subscription.read(c, "cli")).position)
    status, out, err = dynlog("subscriptions reset cli --to 2 --force --json", e)
    assert.are.equal(0, status, err)
    assert.are.same({ name = "cli", position = 2 }, json.decode(out))
    -- The holder finds its lease gone at its next renewal, takes it again
    -- and reads on from 2.
    skew = 5
    local n = 0
    for _ = 1, 5 do n = n + assert(sub:poll_once()) end
    assert.are.equal(4, n)
    assert.are.equal(6, assert(subscription.read(c, "cli")).position)
    assert(sub:release())
    status, out, err = dynlog("subscriptions reset cli --to start --json", e)
    assert.are.equal(0, status, err)
    assert.are.equal(0, json.decode(out).position)
    status, out = dynlog("subscriptions reset cli --to end", e)
    assert.are.equal(0, status)
    assert.matches("position 6", out)

    -- Usage errors.
    for _, args in ipairs({ "subscriptions reset cli", "subscriptions reset cli --to x", "subscriptions frob cli",
                            "subscriptions show", "subscriptions resubmit cli", "subscriptions resubmit cli 1 --all",
                            "subscriptions --force" }) do
      status = dynlog(args, e)
      assert.are.equal(2, status, args)
    end
  end)
end)
