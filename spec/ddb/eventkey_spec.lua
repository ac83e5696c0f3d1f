-- dynlog.client.eventkey: the one owner of `<log>#<id>#stream`.
local ddb = require "spec.support.ddb"
local eventkey = require "dynlog.client.eventkey"

local raised, here = require("spec.support.run").raised, require("spec.support.run").here

describe("dynlog.client.eventkey", function()
  describe("build", function()
    it("makes <log>#<id>#stream", function()
      assert.are.equal("users#42#stream", eventkey.build("users", "42"))
      assert.are.equal("ü#é#stream", eventkey.build("ü", "é"))
    end)

    it("refuses an empty log or id, invalid UTF-8 and '#', naming which", function()
      for _, case in ipairs({
        { "", "1", "log must not be empty" },
        { "users", "", "id must not be empty" },
        { "us\255ers", "1", "log is not valid UTF-8 (byte 3)" },
        { "users", "\192", "id is not valid UTF-8 (byte 1)" },
        { "us#ers", "1", "log must not contain '#'" },
        { "users", "a#b", "id must not contain '#'" },
      }) do
        local pk, err = eventkey.build(case[1], case[2])
        assert.is_nil(pk)
        assert.are.equal("invalid_argument", err.code)
        assert.are.equal(case[3], err.message)
      end
    end)

    it("refuses a key beyond DynamoDB's 2048 bytes, and takes one of exactly 2048", function()
      local id = string.rep("x", 2048 - #"users##stream")
      assert.are.equal(2048, #eventkey.build("users", id))
      local pk, err = eventkey.build("users", id .. "x")
      assert.is_nil(pk)
      assert.are.equal("too_large", err.code)
      assert.are.equal("partition key is 2049 bytes; DynamoDB allows 2048", err.message)
    end)

    it("begins every message with `at`", function()
      local at, msg
      local _, err = eventkey.build("users", "", "events[3]: ")
      assert.are.equal("events[3]: id must not be empty", err.message)
      at, msg = here(), raised(function() eventkey.build(nil, "1", "events[3]: ") end)
      assert.matches(at .. "events[3]: log must be a string, got nil", msg, 1, true)
    end)

    it("raises at the caller's line for a log or id that is not a string", function()
      local at, msg
      at, msg = here(), raised(function() eventkey.build(42, "1") end)
      assert.matches(at .. "log must be a string, got number", msg, 1, true)
      at, msg = here(), raised(function() eventkey.build("users", {}) end)
      assert.matches(at .. "id must be a string, got table", msg, 1, true)
    end)

    it("is what the client writes, its mistakes blamed on the line that called the client", function()
      local c = ddb.client()
      local at, msg
      at, msg = here(), raised(function() c:append(42, "1", "t", {}) end)
      assert.matches(at .. "log must be a string, got number", msg, 1, true)
      at, msg = here(), raised(function() c:query("users") end)
      assert.matches(at .. "id must be a string, got nil", msg, 1, true)
      at, msg = here(), raised(function() c:head("users", true) end)
      assert.matches(at .. "id must be a string, got boolean", msg, 1, true)
      assert.matches("events[1]: log must be a string, got number",
        raised(function() c:append_many({ { log = 7, id = "1", type = "t" } }) end), 1, true)
    end)
  end)

  describe("parse", function()
    it("reads back the log and id of every key build makes", function()
      for _, case in ipairs({ { "users", "42" }, { "ü", "é" }, { "a", "stream" }, { "x", string.rep("y", 2000) } }) do
        local log, id = eventkey.parse(eventkey.build(case[1], case[2]))
        assert.are.same(case, { log, id })
      end
    end)

    it("gives nil for anything else", function()
      for _, pk in ipairs({ "users#42", "users#42#stream#x", "#42#stream", "users##stream", "users#a#b#stream",
                            "x#stream", "#stream", "", "users#42#Stream", 42, false }) do
        assert.is_nil(eventkey.parse(pk), tostring(pk))
      end
      assert.is_nil(eventkey.parse(nil))
    end)
  end)

  describe("is_event", function()
    it("knows an event item by its pk ending in #stream", function()
      assert.is_true(eventkey.is_event({ pk = "users#42#stream", sk = "x" }))
      -- written by other means, yet an event to the trigger, tail and replay
      assert.is_true(eventkey.is_event({ pk = "a#b#c#stream" }))
      assert.is_false(eventkey.is_event({ pk = "meta#x" }))
      assert.is_false(eventkey.is_event({ pk = "users#42#stream ", sk = "x" }))
      assert.is_false(eventkey.is_event({ pk = 42 }))
      assert.is_false(eventkey.is_event({}))
      assert.is_false(eventkey.is_event("users#42#stream"))
      assert.is_false(eventkey.is_event(nil))
    end)

    it("knows a stream record of an event by its new image", function()
      local function record(image)
        return { eventName = "INSERT", dynamodb = { SequenceNumber = "1", NewImage = image } }
      end
      assert.is_true(eventkey.is_event(record({ pk = { S = "users#42#stream" }, sk = { S = "x" } })))
      assert.is_false(eventkey.is_event(record({ pk = { S = "meta#x" } })))
      assert.is_false(eventkey.is_event(record({ pk = { N = "1" } })))
      assert.is_false(eventkey.is_event(record(nil)))
      assert.is_false(eventkey.is_event({ eventName = "REMOVE", dynamodb = { Keys = { pk = { S = "u#1#stream" } } } }))
    end)
  end)
end)
