-- The lease plan: which shards a worker takes or asks for, from the leases
-- as read. Pure, so every case of lineage and balance can be laid out here.
local leases = require "dynlog.pipeline.leases"

local function lease(id, fields)
  local l = { sk = id, counter = 1 }
  for k, v in pairs(fields or {}) do l[k] = v end
  return l
end

local function set(list)
  local all = {}
  for _, l in ipairs(list) do all[l.sk] = l end
  return all
end

local never = function() return false end

local function ids(list)
  local out = {}
  for _, l in ipairs(list) do out[#out + 1] = l.sk end
  return out
end

describe("dynlog.pipeline.leases.plan", function()
  it("takes every free shard when alone", function()
    local plan = leases.plan(set({ lease("s1"), lease("s2"), lease("s3") }), never, "me")
    assert.are.same({ "s1", "s2", "s3" }, ids(plan.take))
    assert.is_nil(plan.request)
  end)

  it("starts a child shard only once its parent is read to its end", function()
    local waiting = set({ lease("parent", { owner = "other" }), lease("child", { parent = "parent" }) })
    assert.are.same({}, ids(leases.plan(waiting, never, "me").take))
    local done = set({ lease("parent", { checkpoint = leases.SHARD_END }), lease("child", { parent = "parent" }) })
    assert.are.same({ "child" }, ids(leases.plan(done, never, "me").take))
    -- A parent trimmed away (no lease, not in the stream) holds nothing up.
    assert.are.same({ "orphan" }, ids(leases.plan(set({ lease("orphan", { parent = "gone" }) }), never, "me").take))
  end)

  it("starts the shards of a table's newer stream only once every shard of the older one is read to its end", function()
    local old, new = "arn:t/stream/2026-12-01T10:00:00.000", "arn:t/stream/2026-12-02T10:00:00.000"
    local waiting = set({ lease("a1", { stream = old, owner = "other" }), lease("a2", { stream = old, parent = "a0" }),
                          lease("b1", { stream = new }), lease("b2", { stream = new, parent = "b1" }) })
    assert.are.same({ "a2" }, ids(leases.plan(waiting, never, "me").take))
    local done = set({ lease("a1", { stream = old, checkpoint = leases.SHARD_END }),
                       lease("b1", { stream = new }), lease("b2", { stream = new, parent = "b1" }) })
    assert.are.same({ "b1" }, ids(leases.plan(done, never, "me").take))
    -- Leases that name no stream (made before leases did) hold nobody back.
    local legacy = set({ lease("x1", { owner = "other" }), lease("b1", { stream = new }) })
    assert.are.same({ "b1" }, ids(leases.plan(legacy, never, "me").take))
  end)

  it("takes only its share, counting the live workers", function()
    local all = set({ lease("s1", { owner = "other" }), lease("s2", { owner = "other" }), lease("s3"), lease("s4") })
    local plan = leases.plan(all, never, "me")
    assert.are.equal(2, plan.target)
    assert.are.same({ "s3", "s4" }, ids(plan.take))
  end)

  it("takes an expired lease as a free one", function()
    local all = set({ lease("s1", { owner = "dead" }) })
    local plan = leases.plan(all, function(l) return l.owner == "dead" end, "me")
    assert.are.same({ "s1" }, ids(plan.take))
  end)

  it("asks the busiest worker for a lease when none is free", function()
    local all = set({ lease("s1", { owner = "busy" }), lease("s2", { owner = "busy" }),
                      lease("s3", { owner = "busy" }), lease("s4", { owner = "me" }) })
    local plan = leases.plan(all, never, "me")
    assert.are.same({}, ids(plan.take))
    assert.are.equal("busy", plan.request.owner)
  end)

  it("does not ask when the work is already even", function()
    local all = set({ lease("s1", { owner = "other" }), lease("s2", { owner = "me" }) })
    local plan = leases.plan(all, never, "me")
    assert.are.same({}, ids(plan.take))
    assert.is_nil(plan.request)
  end)

  it("leaves finished shards alone", function()
    local all = set({ lease("old", { checkpoint = leases.SHARD_END }) })
    assert.are.same({}, ids(leases.plan(all, never, "me").take))
  end)
end)

describe("dynlog.pipeline.leases.watcher", function()
  it("calls a lease expired once its counter has stood still for the lease duration", function()
    local w = leases.watcher(10)
    local l = lease("s1", { counter = 5 })
    w.observe({ s1 = l }, 100)
    assert.is_false(w.expired(l, 105))
    assert.is_true(w.expired(l, 110))
    local moved = lease("s1", { counter = 6 })
    w.observe({ s1 = moved }, 111)
    assert.is_false(w.expired(moved, 115))
  end)
end)

describe("dynlog.leases in their table", function()
  local ddb = require "spec.support.ddb"

  it("creates its table only by a name, raising at the caller's line for anything else", function()
    local c = ddb.client()
    local ok, message = pcall(function()
      local desc = leases.create_table(c, 42)
      return desc
    end)
    assert.is_false(ok)
    assert.matches("create_table: name must be a string", message, 1, true)
    local line = tonumber(message:match("^spec/ddb/leases_spec%.lua:(%d+): "))
    assert.are.equal(debug.getinfo(1, "l").currentline - 6, line, "blames the line that called create_table")
  end)

  it("reads the leases back as the plain values they were written with", function()
    local c = ddb.client()
    local name = ddb.table_name("leases")
    assert(leases.create_table(c, name))
    assert(leases.ensure(c, name, "g", { ShardId = "shardId-1" }, "TRIM_HORIZON", nil, "arn:stream:1"))
    local all = assert(leases.read_all(c, name, "g"))
    assert.are.equal("arn:stream:1", all["shardId-1"].stream)
    assert.are.equal(0, all["shardId-1"].counter)
    assert.are.equal("TRIM_HORIZON", all["shardId-1"].start)
  end)
end)
