-- Several processes append to one stream at once.
local ddb = require "spec.support.ddb"
local run = require "spec.support.run"

local WRITERS = 4

-- Starts every writer before reading any output, so they really overlap.
local function run_writers(table_name, mode, count, kind)
  local pipes = {}
  for w = 1, WRITERS do
    local env = run.lua_env({ DYNLOG_TEST_ENDPOINT = os.getenv("DYNLOG_TEST_ENDPOINT") })
    local prefix = {}
    for k, v in pairs(env) do prefix[#prefix + 1] = k .. "=" .. run.quote(v) end
    pipes[w] = assert(io.popen(("env %s lua5.4 spec/support/appender.lua %s %s w%d %d %s 2>&1"):format(
      table.concat(prefix, " "), table_name, mode, w, count, kind)))
  end
  local lines = {}
  for w, pipe in ipairs(pipes) do
    lines[w] = {}
    for line in pipe:lines() do lines[w][#lines[w] + 1] = line end
    pipe:close()
  end
  return lines
end

describe("concurrent writers", function()
  it("version mode: exactly one winner per version, every loser told conflict", function()
    local c = ddb.ready_client({ sort_key = "version" })
    local count = 20
    local lines = run_writers(c.table, "version", count, "race")
    local winners = {}
    for w = 1, WRITERS do
      assert.are.equal(count, #lines[w], table.concat(lines[w], "\n"))
      for _, line in ipairs(lines[w]) do
        local i = line:match("^won (%d+)$")
        if i then
          winners[tonumber(i)] = (winners[tonumber(i)] or 0) + 1
        else
          assert.matches("^lost %d+ conflict$", line)
        end
      end
    end
    local events = assert(c:query("race", "r", { consistent = true }):all())
    assert.are.equal(count, #events)
    for i = 1, count do
      assert.are.equal(1, winners[i], "winners of version " .. i)
      assert.are.equal(i, events[i].sk)
    end
  end)

  it("version mode under \"any\": versions stay contiguous and every success is stored once", function()
    local c = ddb.ready_client({ sort_key = "version" })
    local lines = run_writers(c.table, "version", 25, "any")
    local acknowledged = {}
    for w = 1, WRITERS do
      for _, line in ipairs(lines[w]) do
        local sk = line:match("^ok (%d+)$")
        if sk then
          assert.is_nil(acknowledged[tonumber(sk)], "version " .. sk .. " acknowledged twice")
          acknowledged[tonumber(sk)] = true
        else
          assert.matches("^err conflict$", line)
        end
      end
    end
    local events = assert(c:query("conc", "c", { consistent = true }):all())
    for i, ev in ipairs(events) do
      assert.are.equal(i, ev.sk)
      assert.is_true(acknowledged[i], "stored version " .. i .. " was acknowledged")
    end
    local n = 0
    for _ in pairs(acknowledged) do n = n + 1 end
    assert.are.equal(n, #events)
    assert.is_true(n >= 25, "at least one writer's worth of appends succeeded")
  end)

  it("ulid mode loses nothing", function()
    local c = ddb.ready_client()
    local count = 50
    local lines = run_writers(c.table, "ulid", count, "any")
    local acknowledged = {}
    for w = 1, WRITERS do
      assert.are.equal(count, #lines[w])
      for _, line in ipairs(lines[w]) do
        local sk = assert(line:match("^ok (%w+)$"), line)
        acknowledged[sk] = true
      end
    end
    local events = assert(c:query("conc", "c", { consistent = true }):all())
    assert.are.equal(WRITERS * count, #events)
    local per_writer = {}
    for _, ev in ipairs(events) do
      assert.is_true(acknowledged[ev.sk])
      local w = ev.payload.writer
      -- each writer's own events keep their order
      assert.is_true((per_writer[w] or 0) < ev.payload.i)
      per_writer[w] = ev.payload.i
    end
  end)
end)
