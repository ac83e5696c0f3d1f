-- The handler projecting into a real read-model table on DynamoDB Local,
-- with duplicate, reordered and partial deliveries.
local ddb = require "spec.support.ddb"
local dynlog = require "dynlog"
local handler = require "dynlog.handler"
local json = require "dynlog.json"
local logger = require "dynlog.logger"
local trigger = require "dynlog.trigger"

-- The EventBridge event the trigger would produce for an event item.
local function delivery(ev, max_detail)
  return { ["detail-type"] = "stream changes", source = "dynamodb-log",
           detail = json.decode(trigger.detail(ev, max_detail)) }
end

local users = {
  handlers = {
    signup = function(_, ev) return { type = "user", id = ev.payload.id, name = ev.payload.name } end,
    addPhoneNumber = function(u, ev) u.phoneNumber = ev.payload.phoneNumber return u end,
    verifyPhoneNumber = function(u) u.verifiedPhoneNumber = true return u end,
    addLocation = function(u, ev) u.location = { lat = ev.payload.lat, long = ev.payload.long } return u end,
  },
}

local function read_model(c, spec, pk)
  local resp = assert(c:call("GetItem", { TableName = spec.table, Key = { pk = { S = pk }, sk = { S = pk } },
                                          ConsistentRead = true }))
  return resp.Item and dynlog.unmarshal({ M = resp.Item }) or nil
end

for _, mode in ipairs({ "version", "ulid" }) do
  describe("dynlog.handler (" .. mode .. " mode)", function()
    local c, spec

    before_each(function()
      c = ddb.ready_client({ sort_key = mode })
      spec = { table = ddb.table_name("core"), handlers = users.handlers }
      assert(handler.create_table(c, spec.table))
    end)

    local function signup_story(id)
      local evs = {}
      local function add(t, p) evs[#evs + 1] = c:get("users", id, assert(c:append("users", id, t, p)).sk) end
      add("signup", { name = "Ada" })
      add("addPhoneNumber", { phoneNumber = "+44 1" })
      add("verifyPhoneNumber", {})
      add("addLocation", { lat = 51.5, long = -0.1 })
      return evs
    end

    it("projects the users example, writing the version of the last event applied", function()
      local evs = signup_story("1")
      local result = assert(handler.project(c, delivery(evs[1]), spec))
      -- One delivery applies everything the read model has not seen yet.
      assert.are.equal(4, result.applied)
      local user = read_model(c, spec, "users#1")
      assert.are.equal("Ada", user.name)
      assert.are.equal("+44 1", user.phoneNumber)
      assert.is_true(user.verifiedPhoneNumber)
      assert.are.same({ lat = 51.5, long = -0.1 }, user.location)
      assert.are.equal(evs[4].sk, user.version)
    end)

    it("leaves the read model identical under duplicate and reordered deliveries", function()
      local evs = signup_story("2")
      for _, i in ipairs({ 3, 1, 3, 4, 2, 2, 1, 4 }) do assert(handler.project(c, delivery(evs[i]), spec)) end
      local once = read_model(c, spec, "users#2")
      local again = assert(handler.project(c, delivery(evs[2]), spec))
      assert.are.equal(0, again.applied)
      assert.are.same(once, read_model(c, spec, "users#2"))
      assert.are.equal(evs[4].sk, once.version)
    end)

    it("applies events one delivery at a time as they arrive", function()
      local k1 = assert(c:append("users", "3", "signup", { name = "Grace" }))
      assert.are.equal(1, assert(handler.project(c, delivery(c:get("users", "3", k1.sk)), spec)).applied)
      local k2 = assert(c:append("users", "3", "addPhoneNumber", { phoneNumber = "+1" }))
      assert.are.equal(1, assert(handler.project(c, delivery(c:get("users", "3", k2.sk)), spec)).applied)
      assert.are.equal(k2.sk, read_model(c, spec, "users#3").version)
    end)

    it("completes a partial detail from the log", function()
      local key = assert(c:append("users", "4", "signup", { name = "Big", bio = string.rep("x", 12000) }))
      local d = delivery(c:get("users", "4", key.sk))
      assert.is_true(d.detail.partial)
      assert(handler.project(c, d, spec))
      assert.are.equal("Big", read_model(c, spec, "users#4").name)
    end)

    it("logs and skips unknown event types", function()
      local lines = {}
      logger.set_handler(function(level, message) lines[#lines + 1] = level .. " " .. message end)
      assert(c:append("users", "5", "signup", { name = "Lin" }))
      local k = assert(c:append("users", "5", "renamedTheCat", { cat = "Tom" }))
      assert(c:append("users", "5", "addPhoneNumber", { phoneNumber = "+2" }))
      local result = assert(handler.project(c, delivery(c:get("users", "5", k.sk)), spec))
      logger.set_handler(nil)
      assert.are.equal(2, result.applied)
      assert.are.same({ k.sk }, { result.skipped[1] })
      assert.matches("warn handler: no handler for event type \"renamedTheCat\"", lines[1], 1, true)
      assert.are.equal("+2", read_model(c, spec, "users#5").phoneNumber)
    end)

    -- A client that records the operation and body of every request it sends.
    local function counting_client(opts)
      local real, log = require("dynlog.transport.curl").new(), { ops = {}, bodies = {} }
      opts = opts or {}
      opts.table, opts.sort_key = c.table, mode
      opts.transport = { request = function(_, req)
        log.ops[#log.ops + 1] = req.headers["X-Amz-Target"]:match("%.(%a+)$")
        log.bodies[#log.bodies + 1] = json.decode(req.body)
        return real:request(req)
      end }
      return ddb.client(opts), log
    end

    it("writes once for all it applies, and reads only the read model for an event it has seen", function()
      local evs = signup_story("8")
      local counting, log = counting_client()
      local uncached = { table = spec.table, handlers = spec.handlers, cache = false }
      assert.are.equal(4, assert(handler.project(counting, delivery(evs[1]), uncached)).applied)
      assert.are.same({ "GetItem", "Query", "PutItem" }, log.ops)
      assert.is_true(log.bodies[1].ConsistentRead, "the read model's version is read consistently")
      assert.are.equal("attribute_not_exists(pk)", log.bodies[3].ConditionExpression)
      log.ops = {}
      local again = assert(handler.project(counting, delivery(evs[3]), uncached))
      assert.are.equal(0, again.applied)
      assert.are.equal(evs[4].sk, again.version)
      assert.are.same({ "GetItem" }, log.ops)
    end)

    it("starts from the version it wrote last: Query and a conditional PutItem, no GetItem", function()
      local counting, log = counting_client()
      local k1 = assert(c:append("users", "11", "signup", { name = "Cache" }))
      assert.are.equal(1, assert(handler.project(counting, delivery(c:get("users", "11", k1.sk)), spec)).applied)
      assert.are.same({ "GetItem", "Query", "PutItem" }, log.ops)
      local k2 = assert(c:append("users", "11", "addPhoneNumber", { phoneNumber = "+7" }))
      log.ops, log.bodies = {}, {}
      local result = assert(handler.project(counting, delivery(c:get("users", "11", k2.sk)), spec))
      assert.are.equal(1, result.applied)
      assert.are.same({ "Query", "PutItem" }, log.ops)
      assert.is_true(log.bodies[1].ConsistentRead, "the log is read consistently")
      assert.are.equal("#version = :previous", log.bodies[2].ConditionExpression)
      local user = read_model(c, spec, "users#11")
      assert.are.equal(k2.sk, user.version)
      assert.are.equal("Cache", user.name)
      assert.are.equal("+7", user.phoneNumber)
    end)

    it("reads the read model for an event it has seen, so a read model deleted by hand is projected again",
      function()
      local evs = signup_story("12")
      local counting, log = counting_client()
      assert.are.equal(4, assert(handler.project(counting, delivery(evs[1]), spec)).applied)
      log.ops = {}
      local again = assert(handler.project(counting, delivery(evs[2]), spec))
      assert.are.equal(0, again.applied)
      assert.are.same({ "GetItem" }, log.ops)
      -- Deleted to be rebuilt, then the same event again (examples/forget.lua does this).
      local key = { pk = { S = "users#12" }, sk = { S = "users#12" } }
      assert(c:call("DeleteItem", { TableName = spec.table, Key = key }))
      assert.are.equal(4, assert(handler.project(counting, delivery(evs[4]), spec)).applied)
      assert.are.equal(evs[4].sk, read_model(c, spec, "users#12").version)
    end)

    it("makes the round again from a consistent read when the read model moved away from the cached version",
      function()
      local counting, log = counting_client()
      local k1 = assert(c:append("users", "13", "signup", { name = "Moved" }))
      assert(handler.project(counting, delivery(c:get("users", "13", k1.sk)), spec))
      -- Deleted behind this process's back, then a new event.
      local key = { pk = { S = "users#13" }, sk = { S = "users#13" } }
      assert(c:call("DeleteItem", { TableName = spec.table, Key = key }))
      local k2 = assert(c:append("users", "13", "addPhoneNumber", { phoneNumber = "+8" }))
      log.ops = {}
      local result = assert(handler.project(counting, delivery(c:get("users", "13", k2.sk)), spec))
      assert.are.same({ "Query", "PutItem", "GetItem", "Query", "PutItem" }, log.ops)
      assert.are.equal(2, result.applied)
      local user = read_model(c, spec, "users#13")
      assert.are.equal(k2.sk, user.version)
      assert.are.equal("Moved", user.name)
      assert.are.equal("+8", user.phoneNumber)
    end)

    it("caches nothing from a handler that raised: the next delivery reads the read model", function()
      local counting, log = counting_client()
      local k1 = assert(c:append("users", "14", "signup", { name = "Raise" }))
      assert(handler.project(counting, delivery(c:get("users", "14", k1.sk)), spec))
      local k2 = assert(c:append("users", "14", "addPhoneNumber", { phoneNumber = "+9" }))
      local failing = { table = spec.table, handlers = setmetatable({
        addPhoneNumber = function(u) u.name = "changed in place" error("down", 0) end,
      }, { __index = users.handlers }) }
      assert.is_false(pcall(handler.project, counting, delivery(c:get("users", "14", k2.sk)), failing))
      log.ops = {}
      assert.are.equal(1, assert(handler.project(counting, delivery(c:get("users", "14", k2.sk)), spec)).applied)
      assert.are.same({ "GetItem", "Query", "PutItem" }, log.ops)
      assert.are.equal("Raise", read_model(c, spec, "users#14").name)
    end)

    it("keeps the events applied before a handler that raises, and raises its error", function()
      local evs = signup_story("9")
      local failing = { table = spec.table, handlers = setmetatable({
        verifyPhoneNumber = function() error("verification service down", 0) end,
      }, { __index = users.handlers }) }
      local ok, message = pcall(handler.project, c, delivery(evs[1]), failing)
      assert.is_false(ok)
      assert.are.equal("verification service down", message)
      local user = read_model(c, spec, "users#9")
      assert.are.equal(evs[2].sk, user.version, "signup and addPhoneNumber were written before the fault")
      assert.are.equal("+44 1", user.phoneNumber)
      -- Once the fault is gone, the next delivery carries on from there.
      assert.are.equal(2, assert(handler.project(c, delivery(evs[3]), spec)).applied)
      assert.are.equal(evs[4].sk, read_model(c, spec, "users#9").version)
    end)

    it("loses no update when another projection writes between its read and its write", function()
      local k1 = assert(c:append("users", "10", "signup", { name = "Race" }))
      local k2 = assert(c:append("users", "10", "addPhoneNumber", { phoneNumber = "+5" }))
      local k3
      local racing = { table = spec.table, handlers = setmetatable({
        addPhoneNumber = function(u, ev)
          if not k3 then
            -- Meanwhile another delivery appends and projects further.
            k3 = assert(c:append("users", "10", "addPhoneNumber", { phoneNumber = "+6" }))
            assert(handler.project(c, delivery(c:get("users", "10", k3.sk)), spec))
          end
          return users.handlers.addPhoneNumber(u, ev)
        end,
      }, { __index = users.handlers }) }
      assert(handler.project(c, delivery(c:get("users", "10", k1.sk)), racing))
      local user = read_model(c, spec, "users#10")
      -- Without the condition on the version, the slower projection would
      -- have written its older state over the newer one.
      assert.are.equal(k3.sk, user.version)
      assert.are.equal("+6", user.phoneNumber)
      assert.are_not.equal(k2.sk, user.version)
    end)

    it("takes the read-model key from spec.key", function()
      local k = assert(c:append("users", "6", "signup", { name = "Key" }))
      local custom = { table = spec.table, handlers = users.handlers,
                       key = function(detail) return "profile#" .. detail.payload.id, "v1" end }
      assert(handler.project(c, delivery(c:get("users", "6", k.sk)), custom))
      local resp = assert(c:call("GetItem", { TableName = spec.table,
        Key = { pk = { S = "profile#6" }, sk = { S = "v1" } }, ConsistentRead = true }))
      assert.are.same({ S = "Key" }, resp.Item.name)
    end)
  end)
end

-- Numbers no Lua number holds exactly, in one Lua or the other.
local BIG = {
  big = "123456789012345678901234567890",       -- beyond 64 bits
  over53 = "9007199254740993",                  -- 2^53 + 1: no double holds it
  precise = "0.1000000000000000055511151231257827",
}

local ledger = {
  handlers = {
    opened = function(_, ev)
      local state = { count = 1, price = ev.payload.price }
      for name in pairs(BIG) do state[name] = ev.payload[name] end
      return state
    end,
    posted = function(s, ev) s.count = s.count + 1 s.last = ev.payload.amount return s end,
  },
}

-- The read-model item as DynamoDB holds it: AttributeValues.
local function raw_read_model(c, spec, pk)
  local resp = assert(c:call("GetItem", { TableName = spec.table, Key = { pk = { S = pk }, sk = { S = pk } },
                                          ConsistentRead = true }))
  return resp.Item
end

for _, mode in ipairs({ "version", "ulid" }) do
  for _, numbers in ipairs({ "number", "string" }) do
    describe(("dynlog.handler (%s mode, numbers = %q)"):format(mode, numbers), function()
      it("keeps every number an N with its digits, delivery after delivery", function()
        local c = ddb.ready_client({ sort_key = mode, numbers = numbers ~= "number" and numbers or nil })
        local spec = { table = ddb.table_name("core"), handlers = ledger.handlers }
        assert(handler.create_table(c, spec.table))
        local payload = { price = 19.99 }
        for name, text in pairs(BIG) do payload[name] = dynlog.number(text) end
        local keys = { assert(c:append("ledger", "1", "opened", payload)) }
        assert.are.equal(1, assert(handler.project(c, delivery(c:get("ledger", "1", keys[1].sk)), spec)).applied)
        for i = 2, 3 do
          keys[i] = assert(c:append("ledger", "1", "posted", { amount = 5 }))
          local result = assert(handler.project(c, delivery(c:get("ledger", "1", keys[i].sk)), spec))
          assert.are.equal(1, result.applied)
        end
        local item = raw_read_model(c, spec, "ledger#1")
        for name, text in pairs(BIG) do assert.are.same({ N = text }, item[name], name) end
        assert.are.same({ N = "19.99" }, item.price)
        assert.are.same({ N = "3" }, item.count)
        assert.are.same({ N = "5" }, item.last)
        if mode == "version" then assert.are.same({ N = "3" }, item.version) end
      end)
    end)
  end
end

describe("dynlog.handler in version mode", function()
  it("stops at a missing version and reports the gap", function()
    local c = ddb.ready_client({ sort_key = "version" })
    local spec = { table = ddb.table_name("core"), handlers = users.handlers }
    assert(handler.create_table(c, spec.table))
    assert(c:append("users", "7", "signup", { name = "Gap" }, { expected_version = 0 }))
    assert(c:append("users", "7", "addPhoneNumber", { phoneNumber = "+3" }, { expected_version = 2 })) -- writes 3
    local result, err = handler.project(c, delivery(c:get("users", "7", 3)), spec)
    assert.is_nil(result)
    assert.are.equal("gap", err.code)
    assert.matches("version 3 follows 1", err.message)
    assert.are.equal(1, read_model(c, spec, "users#7").version, "version 1 was applied before the gap")
  end)

  it("returns an encoding failure of the read-model key, and sends nothing", function()
    local real, ops = require("dynlog.transport.curl").new(), {}
    local c = ddb.ready_client({ transport = { request = function(_, req)
      ops[#ops + 1] = req.headers["X-Amz-Target"]
      return real:request(req)
    end } })
    local spec = { table = ddb.table_name("core"), handlers = users.handlers,
                   key = function() return "users#\255" end }
    local k = assert(c:append("users", "11", "signup", { name = "Bad key" }))
    local event = delivery(c:get("users", "11", k.sk))
    ops = {}
    local result, err = handler.project(c, event, spec)
    assert.is_nil(result)
    assert.are.equal("invalid_argument", err.code)
    assert.matches("not valid UTF-8 (use dynlog.binary for bytes) at Key.", err.message, 1, true)
    assert.are.same({}, ops)
  end)

  it("returns the error of a stream the log cannot name, rather than raise", function()
    local c = ddb.ready_client()
    local spec = { table = ddb.table_name("core"), handlers = users.handlers,
                   key = function() return "users#long" end }
    assert(handler.create_table(c, spec.table))
    local event = { detail = { key = { pk = "users#" .. string.rep("x", 2100) .. "#stream", sk = "x" } } }
    local result, err = handler.project(c, event, spec)
    assert.is_nil(result)
    assert.are.equal("too_large", err.code)
  end)

  it("says when a detail is not JSON", function()
    local result, err = handler.project(ddb.client(), { detail = "{not json" }, { table = "t", handlers = {} })
    assert.is_nil(result)
    assert.are.equal("invalid_argument", err.code)
    assert.matches("event.detail is not JSON", err.message, 1, true)
  end)

  it("logs a failed write of the events applied before a handler that raised", function()
    local c = ddb.ready_client()
    local spec = { table = ddb.table_name("core"), handlers = {
      signup = function() return { score = 0 / 0 } end,          -- DynamoDB cannot hold NaN
      addPhoneNumber = function() error("phone service down", 0) end,
    } }
    assert(handler.create_table(c, spec.table))
    local k = assert(c:append("users", "12", "signup", { name = "NaN" }))
    assert(c:append("users", "12", "addPhoneNumber", { phoneNumber = "+7" }))
    local lines = {}
    logger.set_handler(function(level, message) lines[#lines + 1] = level .. " " .. message end)
    local ok, message = pcall(handler.project, c, delivery(c:get("users", "12", k.sk)), spec)
    logger.set_handler(nil)
    assert.is_false(ok)
    assert.are.equal("phone service down", message)
    assert.matches("error handler: users#12: the events applied before addPhoneNumber .* were not written: "
      .. "invalid_argument: NaN", lines[1])
  end)

  it("raises at the caller's line on an unknown spec key, naming the nearest known one", function()
    local c = ddb.client()
    local event = { detail = { key = { pk = "users#1#stream", sk = "x" } } }
    local ok, message = pcall(function()
      local result = handler.project(c, event, { table = "t", handlers = {}, keys = function() end })
      return result
    end)
    assert.is_false(ok)
    assert.matches('^spec/ddb/handler_spec%.lua:%d+: project: spec: unknown option "keys" %(did you mean "key"%?%)',
      message)
    local line = tonumber(message:match(":(%d+):"))
    assert.are.equal(debug.getinfo(1, "l").currentline - 7, line, "blames the line that called project")
  end)

  it("creates a read-model table only by a name, raising at the caller's line for anything else", function()
    local c = ddb.client()
    local ok, message = pcall(function()
      local desc = handler.create_table(c, 42)
      return desc
    end)
    assert.is_false(ok)
    assert.matches("create_table: name must be a string", message, 1, true)
    local line = tonumber(message:match("^spec/ddb/handler_spec%.lua:(%d+): "))
    assert.are.equal(debug.getinfo(1, "l").currentline - 6, line, "blames the line that called create_table")
  end)

  it("refuses an event without a stream key", function()
    local c = ddb.client()
    local result, err = handler.project(c, { detail = { key = { pk = "nonsense" } } }, { table = "t", handlers = {} })
    assert.is_nil(result)
    assert.are.equal("invalid_argument", err.code)
  end)
end)
