-- Every example in examples/ runs against DynamoDB Local as the README shows it.
local env = require "spec.support.env"
local run = require "spec.support.run"

local ddb = require "spec.support.ddb"

local function example_env(table_name)
  return run.lua_env({
    AWS_ENDPOINT_URL_DYNAMODB = env.dynamodb_endpoint(), DYNLOG_TABLE = table_name,
    AWS_REGION = "us-east-1", AWS_ACCESS_KEY_ID = "AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY = "example-secret",
  })
end

describe("examples", function()
  local table_name = ddb.table_name("example")

  it("append.lua appends the users example and shows a version conflict", function()
    local status, out = run.run("lua5.4 examples/append.lua ada", example_env(table_name))
    assert.are.equal(0, status, out)
    assert.matches("users#ada#stream\t%w+\tsignup", out)
    assert.matches("users#ada#stream\t%w+\taddLocation", out)
    assert.matches("accounts#ada#stream\t2\tdeposited", out)
    assert.matches("a second writer at version 1 gets: conflict: ", out, 1, true)
  end)

  it("query.lua reads the events back in order, and by pages in reverse", function()
    local status, out = run.run("lua5.4 examples/query.lua ada", example_env(table_name))
    assert.are.equal(0, status, out)
    local types = {}
    for t in out:gmatch("\n?%w+\t(%a+)\t{") do types[#types + 1] = t end
    assert.are.same({ "signup", "addPhoneNumber", "verifyPhoneNumber", "addLocation" }, types)
    assert.matches("latest: addLocation", out, 1, true)
    assert.matches("page 1\taddLocation\npage 1\tverifyPhoneNumber\npage 2\taddPhoneNumber\npage 2\tsignup", out)
  end)

  it("trigger.lua publishes the stream's events and handler.lua projects them into the core table", function()
    local server = require "spec.support.server"
    local json = require "dynlog.json"
    local srv = server.start({ { method = "POST", path = "/", responses = { { putevents = true } } } })
    local trigger_env = example_env(table_name)
    trigger_env.AWS_ENDPOINT_URL_EVENTBRIDGE = srv.url
    local status, out = run.run("lua5.4 examples/trigger.lua", trigger_env)
    local requests = srv.requests()
    srv.stop()
    assert.are.equal(0, status, out)
    assert.matches("handed 4 stream record%(s%) to the trigger", out)

    -- What EventBridge would deliver to a rule's target, one event per line.
    local lines = {}
    for _, req in ipairs(requests) do
      for _, e in ipairs(json.decode(req.body).Entries) do
        lines[#lines + 1] = json.encode({ version = "0", id = tostring(#lines + 1), ["detail-type"] = e.DetailType,
          source = e.Source, account = "000000000000", time = "2026-11-25T12:00:00Z", region = "us-east-1",
          resources = json.array(), detail = json.decode(e.Detail) })
      end
    end
    assert.are.equal(4, #lines)
    local events_file = os.tmpname()
    local f = assert(io.open(events_file, "w"))
    f:write(table.concat(lines, "\n"), "\n")
    f:close()
    status, out = run.run("lua5.4 examples/handler.lua < " .. events_file, example_env(table_name))
    os.remove(events_file)
    assert.are.equal(0, status, out)
    -- The first delivery brings the read model up to date; the rest find nothing new.
    assert.matches("projected 4 event%(s%); users#ada is at version", out)
    assert.matches("projected 0 event%(s%)", out)

    local c = ddb.client({ table = table_name .. "-core",
                           credentials = { access_key_id = "AKIDEXAMPLE", secret_access_key = "example-secret" } })
    local resp = assert(c:call("GetItem", { TableName = table_name .. "-core",
      Key = { pk = { S = "users#ada" }, sk = { S = "users#ada" } }, ConsistentRead = true }))
    assert.are.same({ S = "Ada" }, resp.Item.name)
    assert.are.same({ BOOL = true }, resp.Item.verifiedPhoneNumber)
    assert.are.same({ S = "+44 20 7946 0000" }, resp.Item.phoneNumber)
  end)

  it("trigger.lua --envelopes writes what EventBridge would deliver, which handler.lua projects", function()
    local own_table = ddb.table_name("envelopes")
    local e = example_env(own_table)
    local status, out = run.run("lua5.4 examples/append.lua grace", e)
    assert.are.equal(0, status, out)
    local events_file = os.tmpname()
    status, out = run.run("sh -c " .. run.quote("lua5.4 examples/trigger.lua --envelopes > " .. events_file), e)
    assert.are.equal(0, status, out)
    assert.matches("handed 4 stream record%(s%) to the trigger", out)
    local json = require "dynlog.json"
    local types = {}
    for line in io.lines(events_file) do
      local event = json.decode(line)
      assert.are.equal("stream changes", event["detail-type"])
      assert.are.equal("dynamodb-log", event.source)
      assert.are.equal("users#grace#stream", event.detail.key.pk)
      types[#types + 1] = event.detail.type
    end
    assert.are.same({ "signup", "addPhoneNumber", "verifyPhoneNumber", "addLocation" }, types)
    status, out = run.run("lua5.4 examples/handler.lua < " .. events_file, e)
    os.remove(events_file)
    assert.are.equal(0, status, out)
    assert.matches("projected 4 event%(s%); users#grace is at version", out)
  end)

  it("stream-trigger.lua follows the stream until SIGTERM, publishing every event once", function()
    local server = require "spec.support.server"
    local json = require "dynlog.json"
    -- Its own table, so that it runs on its own too (busted --filter).
    local own_table = ddb.table_name("following")
    local e = example_env(own_table)
    local status, appended = run.run("lua5.4 examples/append.lua lin", e)
    assert.are.equal(0, status, appended)
    local srv = server.start({ { method = "POST", path = "/", responses = { { putevents = true } } } })
    e.AWS_ENDPOINT_URL_EVENTBRIDGE = srv.url
    local prefix = {}
    for k, v in pairs(e) do prefix[#prefix + 1] = k .. "=" .. run.quote(v) end
    local out = os.tmpname()
    local pipe = assert(io.popen(("env %s lua5.4 examples/stream-trigger.lua >%s 2>&1 & echo $!")
      :format(table.concat(prefix, " "), out)))
    local pid = assert(tonumber(pipe:read("*l")))
    pipe:close()
    local socket = require "socket"
    local function published()
      local n = 0
      for _, req in ipairs(srv.requests()) do n = n + #json.decode(req.body).Entries end
      return n
    end
    local deadline = socket.gettime() + 30
    while published() < 4 and socket.gettime() < deadline do socket.sleep(0.1) end
    os.execute("kill -TERM " .. pid)
    socket.sleep(1.5)
    local f = assert(io.open(out))
    local text = f:read("*a")
    f:close()
    os.remove(out)
    local count = published()
    srv.stop()
    assert.are.equal(4, count, text)
    assert.matches("following the stream of " .. own_table, text, 1, true)
    assert.matches("4 record%(s%) in %d+ batch%(es%)", text)
  end)

  it("delete.lua deletes a user's stream, and handler.lua deletes its read model from the trigger's event",
    function()
      local own_table = ddb.table_name("deleting")
      local e = example_env(own_table)
      local status, out = run.run("lua5.4 examples/append.lua nia", e)
      assert.are.equal(0, status, out)
      local function deliver()
        local events_file = os.tmpname()
        local s, o = run.run("sh -c " .. run.quote("lua5.4 examples/trigger.lua --envelopes > " .. events_file), e)
        assert.are.equal(0, s, o)
        s, o = run.run("lua5.4 examples/handler.lua < " .. events_file, e)
        os.remove(events_file)
        assert.are.equal(0, s, o)
        return o
      end
      assert.matches("projected 4 event%(s%); users#nia is at version", deliver())
      status, out = run.run("lua5.4 examples/delete.lua nia", e)
      assert.are.equal(0, status, out)
      assert.matches("users#nia: 4 event(s) deleted; the stream is deleted", out, 1, true)
      assert.matches("an append now gets: stream_deleted: ", out, 1, true)
      -- The stream again from the start: the four events (read back from the
      -- log, which has none now) and the deletion, whose read model goes.
      out = deliver()
      assert.matches("deleted the read model\n$", out)
      local c = ddb.client({ table = own_table .. "-core",
                             credentials = { access_key_id = "AKIDEXAMPLE", secret_access_key = "example-secret" } })
      local resp = assert(c:call("GetItem", { TableName = own_table .. "-core",
        Key = { pk = { S = "users#nia" }, sk = { S = "users#nia" } }, ConsistentRead = true }))
      assert.is_nil(resp.Item)
      status, out = run.run("lua5.4 examples/delete.lua nia --reopen", e)
      assert.are.equal(0, status, out)
      assert.matches("0 event(s) deleted; the stream is reopened", out, 1, true)
      assert.matches("an append now starts a new stream", out, 1, true)
    end)

  it("forget.lua erases a user's personal fields by deleting the user's key (crypto-shredding)", function()
    local own_table = ddb.table_name("forget")
    local status, out = run.run("lua5.4 examples/forget.lua ada", example_env(own_table))
    assert.are.equal(0, status, out)
    assert.matches("stored: event signup: plan=free name=Ada Lovelace email=ada@example.com", out, 1, true)
    assert.matches("forgotten: event signup: plan=free name=nil email=nil", out, 1, true)
    assert.matches("rebuilt read model: plan=free name=nil", out, 1, true)
    -- The log still holds the event, its personal fields sealed: no plain text anywhere.
    local c = ddb.client({ table = own_table,
                           credentials = { access_key_id = "AKIDEXAMPLE", secret_access_key = "example-secret" } })
    local events = assert(assert(c:query("users", "ada")):all())
    assert.are.equal(1, #events)
    assert.are.equal("free", events[1].payload.plan)
    assert.is_nil(events[1].payload.name:find("Ada", 1, true))
  end)

  it("list-tables.lua lists the tables of an endpoint", function()
    local status, out = run.run("lua5.4 examples/list-tables.lua", example_env(table_name))
    assert.are.equal(0, status, out)
    assert.matches(table_name, out, 1, true)
  end)
end)
