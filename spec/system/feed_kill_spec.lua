-- The feed under crashes: an indexer process killed with SIGKILL mid-batch,
-- again and again, while a writer appends a burst; at the end the feed is
-- the table: every event exactly once, positions dense, each stream in
-- sort-key order.
local ddb = require "spec.support.ddb"
local run = require "spec.support.run"
local socket = require "socket"

local N, STREAMS, KILLS = 2400, 12, 4

-- A Lua script of spec/support in the background; returns its pid.
local function start(script, args, out)
  local env = run.lua_env({ DYNLOG_TEST_ENDPOINT = os.getenv("DYNLOG_TEST_ENDPOINT") })
  local prefix = {}
  for k, v in pairs(env) do prefix[#prefix + 1] = k .. "=" .. run.quote(v) end
  local pipe = assert(io.popen(("env --default-signal=HUP,PIPE %s lua5.4 spec/support/%s %s >>%s 2>&1 & echo $!")
    :format(table.concat(prefix, " "), script, args, out)))
  local pid = assert(tonumber(pipe:read("*l")))
  pipe:close()
  return pid
end

local function read_lines(path)
  local lines = {}
  local f = io.open(path, "r")
  if not f then return lines end
  for line in f:lines() do lines[#lines + 1] = line end
  f:close()
  return lines
end

local function wait_for(cond, seconds)
  local deadline = socket.gettime() + seconds
  while socket.gettime() < deadline do
    if cond() then return true end
    socket.sleep(0.02)
  end
  return false
end

local function alive(pid)
  return run.succeeded("kill -0 " .. pid .. " 2>/dev/null")
end

-- Every event item of the table: { "<pk>/<sk>" = true }, and their number.
local function table_events(c)
  local all, n = {}, 0
  local params = { TableName = c.table }
  repeat
    local resp = assert(c:call("Scan", params))
    for _, item in ipairs(resp.Items or {}) do
      if item.pk.S:sub(-7) == "#stream" then
        all[item.pk.S .. "/" .. item.sk.S] = true
        n = n + 1
      end
    end
    params.ExclusiveStartKey = resp.LastEvaluatedKey
  until params.ExclusiveStartKey == nil
  return all, n
end

describe("the feed under SIGKILL", function()
  local pids = {}
  after_each(function()
    for _, pid in ipairs(pids) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
    pids = {}
  end)

  it("holds every event exactly once, in order, after an indexer killed mid-batch " .. KILLS .. " times", function()
    local c = ddb.ready_client()
    local cp, log, writer_out = ddb.table_name("cp"), os.tmpname(), os.tmpname()
    local writer = start("feed_writer.lua", ("%s %d %d"):format(c.table, N, STREAMS), writer_out)
    pids[#pids + 1] = writer
    local function commits_of(label)
      local n = 0
      for _, line in ipairs(read_lines(log)) do
        if line:match("^commit " .. label .. " ") then n = n + 1 end
      end
      return n
    end
    -- Each indexer pauses after each commit, before its checkpoint: it is
    -- killed in that pause, after its first commits.
    local writing = 0 -- kills while the writer was still appending
    for k = 1, KILLS do
      local label = "i" .. k
      local pid = start("indexer.lua", ("%s %s ix %s 0.3 %s"):format(c.table, cp, log, label), log .. ".err")
      pids[#pids + 1] = pid
      assert.is_true(wait_for(function() return commits_of(label) >= k end, 60),
        label .. " committed; " .. (run.read_file(log .. ".err") or ""))
      if alive(writer) then writing = writing + 1 end
      os.execute("kill -9 " .. pid)
      assert.is_true(wait_for(function() return not alive(pid) end, 10))
    end
    assert.is_true(writing >= 2, "the writer was appending during " .. writing .. " kill(s) only")
    assert.is_true(wait_for(function() return not alive(writer) end, 300), "the writer finished")
    assert.matches("done " .. N, run.read_file(writer_out), 1, true)
    -- The last one runs to the end of the stream, and stops on SIGTERM.
    local last = start("indexer.lua", ("%s %s ix %s 0 last"):format(c.table, cp, log), log .. ".err")
    pids[#pids + 1] = last
    assert.is_true(wait_for(function() return assert(c:feed_head()) >= N end, 300),
      "the feed reached " .. N .. ": " .. tostring(c:feed_head()))
    socket.sleep(1) -- anything more would come now
    os.execute("kill -TERM " .. last)
    assert.is_true(wait_for(function() return not alive(last) end, 20))

    -- Batches were handed over again after the kills: some indexer saw
    -- more events than it added.
    local repeated = false
    for _, line in ipairs(read_lines(log)) do
      local seen, indexed = line:match("^%a+ %S+ (%d+) (%d+)$")
      if seen and tonumber(seen) > tonumber(indexed) then repeated = true end
    end
    assert.is_true(repeated, "no batch was handed over twice:\n" .. table.concat(read_lines(log), "\n"))

    local expected, n = table_events(c)
    assert.are.equal(N, n)
    assert.are.equal(N, assert(c:feed_head()))
    local seen, last_sk, after = {}, {}, 0
    local count = 0
    repeat
      local events, upto, head = assert(c:read_all{ after = after, limit = 500 })
      for _, ev in ipairs(events) do
        count = count + 1
        assert.are.equal(count, ev.position)
        local key = ev.pk .. "/" .. ev.sk
        assert.is_nil(seen[key], key .. " twice in the feed")
        assert.is_true(expected[key], key .. " is no event of the table")
        seen[key] = true
        if last_sk[ev.pk] then
          assert.is_true(last_sk[ev.pk] < ev.sk, ev.pk .. ": " .. ev.sk .. " after " .. last_sk[ev.pk])
        end
        last_sk[ev.pk] = ev.sk
      end
      after = upto
    until upto == head
    assert.are.equal(N, count)
    -- Every guard names its event's entry.
    local sample = 0
    for key in pairs(expected) do
      sample = sample + 1
      if sample % 97 == 0 then
        local pk, sk = key:match("^(.*)/(.*)$")
        assert.is_number(assert(c:feed_position(pk, sk)))
      end
    end
    for _, f in ipairs({ log, log .. ".err", writer_out }) do os.remove(f) end
  end)
end)
