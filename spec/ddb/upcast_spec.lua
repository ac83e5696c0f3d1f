-- Upcasters on DynamoDB Local: events stored at schema versions 1, 2 and 3
-- read back at version 3 through get, head, query, query_page and
-- handler.project, in both sort-key modes, with the stored items unchanged.
local ddb = require "spec.support.ddb"
local dynlog = require "dynlog"
local handler = require "dynlog.handler"
local json = require "dynlog.json"
local server = require "spec.support.server"
local stream = require "spec.support.stream"
local trigger = require "dynlog.trigger"

-- "named": version 1 {fullName}, version 2 {name}, version 3 {first, last}.
local calls
local function v1_to_v2(payload, event)
  calls[#calls + 1] = "1>2 " .. tostring(event.sk)
  assert(event.payload == payload)
  payload.name, payload.fullName = payload.fullName, nil
  return payload
end
local function v2_to_v3(payload, event)
  calls[#calls + 1] = "2>3 " .. tostring(event.sk)
  assert(tonumber(event.meta.schema_version) == 2) -- "2" when numbers = "string"
  local first, last = payload.name:match("^(%S+)%s+(.+)$")
  return { first = first, last = last } -- id is filled in
end

local function registry()
  return dynlog.upcasters():add("named", 1, v1_to_v2):add("named", 2, v2_to_v3)
end

-- The stored item, as DynamoDB holds it.
local function raw(c, key)
  local resp = assert(c:call("GetItem", { TableName = c.table, ConsistentRead = true,
                                          Key = dynlog.marshal({ pk = key.pk, sk = key.sk }).M }))
  return assert(dynlog.unmarshal({ M = resp.Item }))
end

for _, mode in ipairs({ "ulid", "version" }) do
  describe("upcasters (" .. mode .. " mode)", function()
    local c, keys, last

    -- An event written as another version of the code would have: with
    -- its meta (until appends take metadata, by PutItem).
    local function put(event_type, payload, meta)
      local sk
      if mode == "version" then sk = last + 1 else sk = assert(dynlog.ulid()) end
      payload.id = "42"
      local item = { pk = "users#42#stream", sk = sk, type = event_type, log = "users", payload = payload,
                     meta = meta }
      assert(c:call("PutItem", { TableName = c.table, Item = dynlog.marshal(item).M,
                                 ConditionExpression = "attribute_not_exists(pk)" }))
      last = sk
      keys[#keys + 1] = { pk = item.pk, sk = sk }
    end

    before_each(function()
      calls = {}
      c = ddb.ready_client({ sort_key = mode, upcasters = registry() })
      keys = {}
      local key = assert(c:append("users", "42", "named", { fullName = "Ada Lovelace" }))    -- 1: no meta
      keys[1], last = key, key.sk
      put("phone", { number = "+44 1" })                                                    -- 2: no upcasters
      put("named", { name = "Grace Hopper" }, { schema_version = 2, correlation_id = "c2" }) -- 3
      put("named", { first = "Alan", last = "Turing" }, { schema_version = 3 })              -- 4: the latest
      put("named", { fullName = "Edsger Dijkstra" }, { schema_version = 1 })                 -- 5
    end)

    local function check_story(events)
      assert.are.equal(5, #events)
      local names = {}
      for i, ev in ipairs(events) do
        assert.are.equal(keys[i].sk, ev.sk)
        assert.are.equal("42", ev.payload.id)
        if ev.type == "named" then
          assert.are.equal(3, ev.meta.schema_version)
          names[#names + 1] = ev.payload.first .. " " .. ev.payload.last
          assert.is_nil(ev.payload.name)
          assert.is_nil(ev.payload.fullName)
        end
      end
      assert.are.same({ "Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra" }, names)
      -- The event of a type without upcasters is as it was read: no meta added.
      assert.are.same({ id = "42", number = "+44 1" }, events[2].payload)
      assert.is_nil(events[2].meta)
      -- Other keys of the meta stay.
      assert.are.equal("c2", events[3].meta.correlation_id)
    end

    it("query brings every event through the missing steps, 1 → 2 → 3", function()
      check_story(assert(assert(c:query("users", "42")):all()))
      -- Version 1 took two steps, version 2 one, version 3 none.
      assert.are.same({ "1>2 " .. tostring(keys[1].sk), "2>3 " .. tostring(keys[1].sk),
                        "2>3 " .. tostring(keys[3].sk),
                        "1>2 " .. tostring(keys[5].sk), "2>3 " .. tostring(keys[5].sk) }, calls)
      local newest = assert(c:query("users", "42", { reverse = true, limit = 1 }):all())
      assert.are.equal("Edsger", newest[1].payload.first)
    end)

    it("query_page upcasts each page, and only the events it returns", function()
      local events, cursor = {}, nil
      repeat
        local page = assert(c:query_page("users", "42", { page_size = 2, cursor = cursor }))
        for _, ev in ipairs(page.items) do events[#events + 1] = ev end
        cursor = page.cursor
      until not cursor
      check_story(events)
      calls = {}
      local page = assert(c:query_page("users", "42", { page_size = 1 }))
      assert.is_truthy(page.cursor)
      assert.are.equal(2, #calls) -- the first event's two steps; the one beyond the page is not upcast
    end)

    it("get and head return the latest schema version", function()
      local events = {}
      for i, key in ipairs(keys) do events[i] = assert(c:get("users", "42", key.sk, { consistent = true })) end
      check_story(events)
      local head = assert(c:head("users", "42"))
      assert.are.same({ id = "42", first = "Edsger", last = "Dijkstra" }, head.payload)
      assert.are.equal(3, head.meta.schema_version)
      assert.is_nil(c:head("users", "nobody"))
      assert.is_nil(c:get("users", "42", mode == "version" and 99 or assert(dynlog.ulid())))
    end)

    it("never changes the stored items", function()
      assert(c:query("users", "42"):all())
      assert(c:head("users", "42"))
      local first = raw(c, keys[1])
      assert.are.same({ id = "42", fullName = "Ada Lovelace" }, first.payload)
      assert.is_nil(first.meta)
      local third = raw(c, keys[3])
      assert.are.same({ id = "42", name = "Grace Hopper" }, third.payload)
      assert.are.same({ schema_version = 2, correlation_id = "c2" }, third.meta)
      assert.are.same({ id = "42", fullName = "Edsger Dijkstra" }, raw(c, keys[5]).payload)
      -- A client without upcasters reads the stored events.
      local plain = ddb.client({ table = c.table, sort_key = mode })
      local events = assert(plain:query("users", "42"):all())
      assert.are.equal("Ada Lovelace", events[1].payload.fullName)
      assert.is_nil(events[1].meta)
      assert.are.equal(2, events[3].meta.schema_version)
    end)

    it("writes the resulting version as the read gives numbers", function()
      local ev = assert(c:get("users", "42", keys[1].sk, { numbers = "string" }))
      assert.are.equal("3", ev.meta.schema_version)
      ev = assert(c:get("users", "42", keys[3].sk, { numbers = "string" }))  -- stored as N "2"
      assert.are.equal("3", ev.meta.schema_version)
      assert.are.equal("Grace", ev.payload.first)
      ev = assert(c:get("users", "42", keys[3].sk, { numbers = "exact" }))
      assert.are.equal(3, ev.meta.schema_version)
    end)

    it("a missing step is an error naming the type and the versions", function()
      local gappy = ddb.client({ table = c.table, sort_key = mode,
                                 upcasters = dynlog.upcasters():add("named", 2, v2_to_v3) })
      local events = assert(gappy:query("users", "42"))
      local seen = 0
      for _ in events do seen = seen + 1 end
      assert.are.equal(0, seen)                    -- the first event is at version 1
      local err = events.err
      assert.are.equal("upcast_failed", err.code)
      assert.are.equal("named", err.type)
      assert.are.equal(1, err.stored_version)
      assert.are.equal(3, err.latest)
      assert.are.equal(1, err.from)
      assert.are.equal(2, err.to)
      assert.matches('users#42#stream ' .. tostring(keys[1].sk) .. ': event type "named" stored at schema version 1'
        .. ' (latest 3): no upcaster from version 1 to 2 is registered', err.message, 1, true)
      local _, qerr = gappy:query("users", "42"):all()
      assert.are.equal("upcast_failed", qerr.code)
      local none, perr = gappy:query_page("users", "42")
      assert.is_nil(none)
      assert.are.equal("upcast_failed", perr.code)
      local ev, gerr = gappy:get("users", "42", keys[1].sk)
      assert.is_nil(ev)
      assert.are.equal("upcast_failed", gerr.code)
      local _, herr = gappy:head("users", "42")
      assert.are.equal("upcast_failed", herr.code)
      -- The events the registry can bring up are read.
      assert.are.equal("Grace", assert(gappy:get("users", "42", keys[3].sk)).payload.first)
      assert.are.equal("Alan", assert(gappy:get("users", "42", keys[4].sk)).payload.first)
      local after = assert(gappy:query("users", "42", { after = keys[1].sk, limit = 3 }):all())
      assert.are.equal(3, #after)
    end)

    it("an upcaster that raises or returns no payload is an error naming the type and the versions", function()
      local broken = ddb.client({ table = c.table, sort_key = mode, upcasters = dynlog.upcasters()
        :add("named", 1, v1_to_v2):add("named", 2, function(payload) return payload.nothing.here end) })
      local _, err = broken:get("users", "42", keys[3].sk)
      assert.are.equal("upcast_failed", err.code)
      assert.matches('event type "named" stored at schema version 2 (latest 3): the upcaster from version 2 to 3'
        .. " raised: ", err.message, 1, true)
      assert.matches("upcast_spec.lua", tostring(err.cause), 1, true)
      local empty = ddb.client({ table = c.table, sort_key = mode, upcasters = dynlog.upcasters()
        :add("named", 1, function() end) })
      _, err = empty:head("users", "42")
      assert.matches("the upcaster from version 1 to 2 returned a nil, not the new payload (a table)", err.message,
        1, true)
      local thief = ddb.client({ table = c.table, sort_key = mode, upcasters = dynlog.upcasters()
        :add("named", 1, function(p) p.id = "43" return p end) })
      _, err = thief:head("users", "42")
      assert.matches("changed payload.id to 43", err.message, 1, true)
    end)

    it("returns an event stored at a version beyond the latest as it is", function()
      put("named", { given = "Barbara", family = "Liskov" }, { schema_version = 4 })
      local head = assert(c:head("users", "42"))
      assert.are.equal(4, head.meta.schema_version)
      assert.are.equal("Barbara", head.payload.given)
    end)

    it("refuses a stored schema version that is not one", function()
      put("named", { name = "Ada Lovelace" }, { schema_version = 1.5 })
      local _, err = c:head("users", "42")
      assert.are.equal("upcast_failed", err.code)
      assert.matches("stored at schema version 1.5 (latest 3): that is not a schema version", err.message, 1, true)
    end)

    it("handler.project builds its read model from upcast events", function()
      local spec = {
        table = ddb.table_name("core"),
        handlers = {
          named = function(state, ev)
            state = state or { names = {} }
            state.names[#state.names + 1] = ev.payload.last .. ", " .. ev.payload.first
            state.schema = ev.meta.schema_version
            return state
          end,
          phone = function(state, ev) state.phone = ev.payload.number return state end,
        },
      }
      assert(handler.create_table(c, spec.table))
      -- The detail carries the stored payload; the handler reads the log.
      local detail = json.decode(trigger.detail(raw(c, keys[1])))
      assert.are.equal("Ada Lovelace", detail.payload.fullName)
      local result = assert(handler.project(c, { detail = detail }, spec))
      assert.are.equal(5, result.applied)
      local resp = assert(c:call("GetItem", { TableName = spec.table, ConsistentRead = true,
        Key = { pk = { S = "users#42" }, sk = { S = "users#42" } } }))
      local model = dynlog.unmarshal({ M = resp.Item })
      assert.are.same({ "Lovelace, Ada", "Hopper, Grace", "Turing, Alan", "Dijkstra, Edsger" }, model.names)
      assert.are.equal("+44 1", model.phone)
      assert.are.equal(3, model.schema)
      assert.are.equal(keys[5].sk, model.version)
      -- A subscriber of the detail brings its payload up with c:upcast.
      local up = assert(c:upcast(detail))
      assert.are.equal(detail, up)
      assert.are.same({ id = "42", first = "Ada", last = "Lovelace" }, up.payload)
      assert.are.equal(3, up.meta.schema_version)
      assert.are.same({ id = "42", fullName = "Ada Lovelace" }, raw(c, keys[1]).payload)

      -- A missing step stops the projection with the read's error.
      put("named", { fullName = "Niklaus Wirth" })
      local gappy = ddb.client({ table = c.table, sort_key = mode,
                                 upcasters = dynlog.upcasters():add("named", 2, v2_to_v3) })
      local none, err = handler.project(gappy, { detail = json.decode(trigger.detail(raw(c, keys[6]))) }, spec)
      assert.is_nil(none)
      assert.are.equal("upcast_failed", err.code)
      assert.are.equal(keys[5].sk, dynlog.unmarshal({ M = assert(c:call("GetItem", { TableName = spec.table,
        ConsistentRead = true, Key = { pk = { S = "users#42" }, sk = { S = "users#42" } } })).Item }).version)
    end)

    it("the trigger publishes the stored payload; the handler projects the upcast events", function()
      local srv = server.start({ { method = "POST", path = "/", responses = { { putevents = true } } } })
      local ok, err = pcall(function()
        local tc = ddb.client({ table = c.table, sort_key = mode, events_endpoint = srv.url, upcasters = registry() })
        local result = trigger.handle(tc, { Records = stream.all_records(c) })
        assert.are.same({}, result.batchItemFailures)
        local details = {}
        for _, req in ipairs(srv.requests()) do
          for _, e in ipairs(json.decode(req.body).Entries) do details[#details + 1] = json.decode(e.Detail) end
        end
        assert.are.equal(5, #details)
        assert.are.same({ id = "42", fullName = "Ada Lovelace" }, details[1].payload)
        assert.are.same({ id = "42", name = "Grace Hopper" }, details[3].payload)
        local spec = { table = ddb.table_name("core"), handlers = {
          named = function(state, ev)
            state = state or {}
            state.last = ev.payload.last
            return state
          end,
          phone = function(state) return state end,
        } }
        assert(handler.create_table(tc, spec.table))
        for _, detail in ipairs(details) do assert(handler.project(tc, { detail = detail }, spec)) end
        local model = assert(handler.project(tc, { detail = details[5] }, spec)).state
        assert.are.equal("Dijkstra", model.last)
        assert.are.equal(keys[5].sk, model.version)
      end)
      srv.stop()
      assert(ok, err)
    end)
  end)
end
