local dynlog = require "dynlog"
local ddb = require "spec.support.ddb"

local has_integers = math.type ~= nil

describe("dynlog.new", function()
  local base = { table = "events", region = "us-east-1", endpoint = "http://127.0.0.1:1" }
  local function with(changes)
    local o = {}
    for k, v in pairs(base) do o[k] = v end
    for k, v in pairs(changes) do o[k] = v end
    return o
  end

  it("raises on invalid configuration, saying which option", function()
    assert.has_error(function() dynlog.new() end, "dynlog.new: expects a table of options")
    assert.error_matches(function() dynlog.new(with({ table = "ab" })) end, "table must be 3%-255")
    assert.error_matches(function() dynlog.new(with({ table = "a b c" })) end, "table must be")
    assert.error_matches(function() dynlog.new(with({ sort_key = "time" })) end, "sort_key")
    assert.error_matches(function() dynlog.new(with({ max_attempts = 0 })) end, "max_attempts")
    assert.error_matches(function() dynlog.new(with({ timeout = "10" })) end, "timeout")
    assert.error_matches(function() dynlog.new(with({ credentials = "secret" })) end, "credentials")
    -- A misspelt option is an error, not a silent default.
    assert.error_matches(function() dynlog.new(with({ sortkey = "version" })) end,
      'dynlog.new: unknown option "sortkey" (did you mean "sort_key"?)', 1, true)
    assert.error_matches(function() dynlog.new(with({ max_attempt = 3 })) end,
      'unknown option "max_attempt" %(did you mean "max_attempts"%?%)')
    -- ... also inside the credentials, blamed on the caller's line.
    local line = debug.getinfo(1, "l").currentline + 2
    local ok, err = pcall(function()
      dynlog.new(with({ credentials = { access_key_id = "AKID", secret_acess_key = "s" } }))
    end)
    assert.is_false(ok)
    assert.matches('client_spec.lua:' .. line .. ': dynlog.new: credentials: unknown option "secret_acess_key" '
      .. '(did you mean "secret_access_key"?)', err, 1, true)
  end)

  it("raises when no region can be found", function()
    assert.error_matches(function()
      dynlog.new({ table = "events", getenv = function() return nil end, read_file = function() return nil end })
    end, "region")
  end)

  it("uses its own DynamoDB endpoint for streams too, unless told otherwise", function()
    assert.are.equal("http://127.0.0.1:1/", dynlog.new(with({})).services.streams.url)
    assert.are.equal("http://127.0.0.1:2/",
      dynlog.new(with({ streams_endpoint = "http://127.0.0.1:2" })).services.streams.url)
    local regional = dynlog.new({ table = "events", region = "eu-west-1", getenv = function() return nil end })
    assert.are.equal("https://streams.dynamodb.eu-west-1.amazonaws.com/", regional.services.streams.url)
    assert.are.equal("https://events.eu-west-1.amazonaws.com/", regional.services.events.url)
  end)

  it("makes no request when created", function()
    local c = dynlog.new(with({}))
    assert.is_nil(rawget(c, "transport"))
    assert.matches("dynlog.client%(events, ulid, http://127.0.0.1:1/%)", tostring(c))
  end)
end)

describe("dynlog client against DynamoDB Local", function()
  describe("create_table", function()
    it("creates an ACTIVE table with a stream, and is idempotent", function()
      local c = ddb.client()
      local desc = assert(c:create_table())
      assert.are.equal("ACTIVE", desc.TableStatus)
      assert.is_true(desc.StreamSpecification.StreamEnabled)
      assert.are.equal("NEW_AND_OLD_IMAGES", desc.StreamSpecification.StreamViewType)
      assert.is_string(desc.LatestStreamArn)
      assert.truthy(c:create_table())
      assert.is_true(c:delete_table())
    end)

    it("refuses an existing table whose sort key has the other type", function()
      local c = ddb.ready_client()
      local v = ddb.client({ table = c.table, sort_key = "version" })
      local desc, err = v:create_table()
      assert.is_nil(desc)
      assert.are.equal("schema_mismatch", err.code)
      assert.matches("sk is of type S but version mode needs N", err.message)
    end)

    it("says so when DescribeTable answers without a Table", function()
      local c = ddb.client({ transport = { request = function()
        return { status = 200, headers = {}, body = "{}" }
      end } })
      local desc, err = c:describe_table()
      assert.is_nil(desc)
      assert.are.equal("bad_response", err.code)
      -- the same for a string-keyed table (read models, checkpoints)
      desc, err = c:create_string_keyed_table("read-model")
      assert.is_nil(desc)
      assert.are.equal("bad_response", err.code)
    end)

    it("enables the stream of an existing table that has none", function()
      local c = ddb.client()
      assert(c:create_table({ stream = false }))
      local desc = assert(c:create_table())
      assert.is_true(desc.StreamSpecification.StreamEnabled)
    end)
  end)

  for _, mode in ipairs({ "ulid", "version" }) do
    describe("in " .. mode .. " mode", function()
      local c
      setup(function() c = ddb.ready_client({ sort_key = mode }) end)

      it("reads 1000 appends back complete and in order", function()
        local keys = {}
        for i = 1, 1000 do
          keys[i] = assert(c:append("users", "u1000", "counted", { n = i }))
        end
        local n = 0
        local events = c:query("users", "u1000")
        local previous
        for ev in events do
          n = n + 1
          assert.are.equal(n, ev.payload.n)
          assert.are.equal(keys[n].sk, ev.sk)
          if previous then assert.is_true(previous < ev.sk) end
          previous = ev.sk
        end
        assert.is_nil(events.err)
        assert.are.equal(1000, n)
        if mode == "version" then assert.are.equal(1000, previous) end
      end)

      it("stores the item layout of the original design", function()
        local key = assert(c:append("users", "42", "signup", { name = "Ada" }))
        assert.are.equal("users#42#stream", key.pk)
        local raw = assert(c:call("GetItem", { TableName = c.table, Key = { pk = { S = key.pk },
          sk = mode == "ulid" and { S = key.sk } or { N = tostring(key.sk) } } }))
        assert.are.same({ S = "users#42#stream" }, raw.Item.pk)
        assert.are.same({ S = "signup" }, raw.Item.type)
        assert.are.same({ S = "users" }, raw.Item.log)
        assert.are.same({ M = { id = { S = "42" }, name = { S = "Ada" } } }, raw.Item.payload)
        if mode == "ulid" then
          assert.are.equal(26, #raw.Item.sk.S)
        else
          assert.are.same({ N = "1" }, raw.Item.sk)
        end
      end)

      it("fills in payload.id and refuses a different one", function()
        local payload = { x = 1 }
        local key = assert(c:append("users", "p1", "t", payload))
        assert.is_nil(payload.id, "the caller's table is left alone")
        assert.are.equal("p1", c:get("users", "p1", key.sk).payload.id)
        assert(c:append("users", "p1", "t", { id = "p1" }))
        local k, err = c:append("users", "p1", "t", { id = "p2" })
        assert.is_nil(k)
        assert.are.equal("invalid_argument", err.code)
        assert.matches('payload.id is "p2", but the event is for id "p1"', err.message, 1, true)
        -- A number that prints like the id is not the id: the message shows why.
        k, err = c:append("users", "42", "t", { id = 42 })
        assert.is_nil(k)
        assert.matches('payload.id is the number 42 (not a string), but the event is for id "42"', err.message, 1, true)
      end)

      it("gets one event and the head of a stream", function()
        assert.is_nil(c:head("users", "nobody"))
        local k1 = assert(c:append("users", "h1", "first", {}))
        local k2 = assert(c:append("users", "h1", "second", {}))
        assert.are.equal("second", c:head("users", "h1").type)
        assert.are.equal(k2.sk, c:head("users", "h1").sk)
        assert.are.equal("first", c:get("users", "h1", k1.sk).type)
        local missing = mode == "ulid" and dynlog.ulid() or 99
        local ev, err = c:get("users", "h1", missing)
        assert.is_nil(ev)
        assert.is_nil(err)
      end)
    end)
  end

  describe("version mode", function()
    local c
    setup(function() c = ddb.ready_client({ sort_key = "version" }) end)

    it("writes exactly expected_version + 1, and reports a taken version as a conflict", function()
      local first = assert(c:append("acct", "a", "opened", {}, { expected_version = 0 }))
      assert.are.same({ pk = "acct#a#stream", sk = 1 }, first)
      assert.are.equal(2, assert(c:append("acct", "a", "deposit", {}, { expected_version = 1 })).sk)
      local k, err = c:append("acct", "a", "deposit", {}, { expected_version = 1 })
      assert.is_nil(k)
      assert.are.equal("conflict", err.code)
      assert.matches("^conflict: ", tostring(err))
      -- Nothing was overwritten.
      assert.are.equal("deposit", c:get("acct", "a", 2).type)
    end)

    it("no_stream writes version 1 only when the stream is empty", function()
      assert.are.equal(1, assert(c:append("acct", "b", "opened", {}, { expected_version = "no_stream" })).sk)
      local _, err = c:append("acct", "b", "opened", {}, { expected_version = "no_stream" })
      assert.are.equal("conflict", err.code)
    end)

    it("any appends after the current head", function()
      assert(c:append("acct", "c", "one", {}, { expected_version = 0 }))
      assert(c:append("acct", "c", "two", {}, { expected_version = 1 }))
      assert.are.equal(3, assert(c:append("acct", "c", "three", {}, { expected_version = "any" })).sk)
      assert.are.equal(4, assert(c:append("acct", "c", "four", {})).sk)
    end)

    it("raises on an expected_version that is not a version", function()
      assert.has_error(function() c:append("acct", "d", "x", {}, { expected_version = -1 }) end)
      assert.has_error(function() c:append("acct", "d", "x", {}, { expected_version = 1.5 }) end)
      assert.has_error(function() c:append("acct", "d", "x", {}, { expected_version = "latest" }) end)
    end)
  end)

  it("keeps version sort keys numbers with numbers = \"string\", so cursors and head still work", function()
    local v = ddb.ready_client({ sort_key = "version", numbers = "string" })
    for i = 1, 5 do assert(v:append("n", "s", "e", { n = i })) end
    assert.are.equal(5, v:head("n", "s").sk)
    assert.are.equal("5", v:head("n", "s").payload.n)
    local page = assert(v:query_page("n", "s", { page_size = 2 }))
    local next_page = assert(v:query_page("n", "s", { page_size = 2, cursor = page.cursor }))
    assert.are.same({ 3, 4 }, { next_page.items[1].sk, next_page.items[2].sk })
    assert.are.equal(6, assert(v:append("n", "s", "e", {})).sk)
  end)

  describe("append_batch", function()
    it("writes every event or none (ulid mode)", function()
      local c = ddb.ready_client()
      local keys = assert(c:append_batch("orders", "o1", {
        { type = "created", payload = { total = 10 } },
        { type = "paid", payload = { amount = 10 } },
        { type = "shipped" },
      }))
      assert.are.equal(3, #keys)
      local list = assert(c:query("orders", "o1"):all())
      assert.are.same({ "created", "paid", "shipped" }, { list[1].type, list[2].type, list[3].type })
      assert.are.equal(keys[3].sk, list[3].sk)
    end)

    it("honours expected_version and writes nothing on a conflict (version mode)", function()
      local c = ddb.ready_client({ sort_key = "version" })
      local keys = assert(c:append_batch("orders", "o2", { { type = "a" }, { type = "b" } },
        { expected_version = "no_stream" }))
      assert.are.same({ 1, 2 }, { keys[1].sk, keys[2].sk })
      local k, err = c:append_batch("orders", "o2", { { type = "c" }, { type = "d" } }, { expected_version = 1 })
      assert.is_nil(k)
      assert.are.equal("conflict", err.code)
      assert.are.equal(2, #assert(c:query("orders", "o2"):all()), "nothing of the failed batch was written")
      keys = assert(c:append_batch("orders", "o2", { { type = "c" }, { type = "d" } }))
      assert.are.same({ 3, 4 }, { keys[1].sk, keys[2].sk })
    end)

    it("refuses more than 100 events and more than 4 MB before sending", function()
      local c = ddb.client() -- no table: nothing may be sent
      local events = {}
      for i = 1, 101 do events[i] = { type = "e" } end
      local k, err = c:append_batch("orders", "o3", events)
      assert.is_nil(k)
      assert.are.equal("too_large", err.code)
      events = {}
      local big = string.rep("x", 300 * 1024)
      for i = 1, 15 do events[i] = { type = "e", payload = { blob = big } } end
      k, err = c:append_batch("orders", "o3", events)
      assert.is_nil(k)
      assert.are.equal("too_large", err.code)
      assert.matches("4 MB", err.message)
    end)

    it("counts the items' sizes against 4 MB, not the longer JSON text", function()
      local c = ddb.ready_client()
      -- 10 events of 300 KB of quotes: 3 MB of items, over 6 MB as JSON.
      local events = {}
      for i = 1, 10 do events[i] = { type = "e", payload = { blob = string.rep('"', 300 * 1024) } } end
      local keys = assert(c:append_batch("orders", "quotes", events))
      assert.are.equal(10, #keys)
      assert.are.equal(300 * 1024, #c:head("orders", "quotes").payload.blob)
    end)

    it("raises on expected_version in ulid mode, where it has no meaning", function()
      local c = ddb.client()
      assert.error_matches(function() c:append_batch("orders", "o4", { { type = "e" } }, { expected_version = 1 }) end,
        "expected_version applies to version%-mode clients")
      assert.error_matches(function() c:append("orders", "o4", "e", {}, { expected_version = "no_stream" }) end,
        "expected_version applies to version%-mode clients")
    end)
  end)

  describe("query", function()
    local c
    local keys = {}
    setup(function()
      c = ddb.ready_client()
      for i = 1, 30 do keys[i] = assert(c:append("q", "s", "e", { n = i })).sk end
    end)

    local function ns(events)
      local out = {}
      for ev in events do out[#out + 1] = ev.payload.n end
      return out
    end

    it("honours after, before, limit and reverse, with exclusive bounds", function()
      assert.are.same({ 11, 12, 13 }, ns(c:query("q", "s", { after = keys[10], limit = 3 })))
      assert.are.same({ 1, 2 }, ns(c:query("q", "s", { before = keys[3] })))
      assert.are.same({ 6, 7, 8, 9 }, ns(c:query("q", "s", { after = keys[5], before = keys[10] })))
      assert.are.same({ 30, 29 }, ns(c:query("q", "s", { reverse = true, limit = 2 })))
      assert.are.same({ 9, 8, 7, 6 }, ns(c:query("q", "s", { after = keys[5], before = keys[10], reverse = true })))
      assert.are.same({}, ns(c:query("q", "s", { after = keys[10], before = keys[5] })))
      assert.are.same({}, ns(c:query("q", "s", { after = keys[10], before = keys[11] })))
    end)

    it("follows DynamoDB pages of a given size", function()
      local list = {}
      for ev in c:query("q", "s", { page_size = 7 }) do list[#list + 1] = ev.payload.n end
      assert.are.equal(30, #list)
      assert.are.equal(30, list[30])
    end)

    it("pages with opaque cursors, forwards and in reverse", function()
      for _, reverse in ipairs({ false, true }) do
        local seen, cursor, pages = {}, nil, 0
        repeat
          local page = assert(c:query_page("q", "s", { page_size = 8, cursor = cursor, reverse = reverse }))
          pages = pages + 1
          for _, ev in ipairs(page.items) do seen[#seen + 1] = ev.payload.n end
          cursor = page.cursor
        until not cursor
        assert.are.equal(4, pages)
        assert.are.equal(30, #seen)
        assert.are.equal(reverse and 30 or 1, seen[1])
        assert.are.equal(reverse and 1 or 30, seen[30])
      end
    end)

    it("refuses a cursor of another stream, of the other direction, or made up", function()
      local page = assert(c:query_page("q", "s", { page_size = 5 }))
      local _, err = c:query_page("q", "other", { cursor = page.cursor })
      assert.are.equal("invalid_argument", err.code)
      assert.matches("another stream", err.message)
      _, err = c:query_page("q", "s", { cursor = page.cursor, reverse = true })
      assert.matches("other direction", err.message)
      _, err = c:query_page("q", "s", { cursor = "not-a-cursor" })
      assert.are.equal("invalid_argument", err.code)
    end)

    it("returns nil, err for an invalid log or id", function()
      local events, err = c:query("q#x", "s")
      assert.is_nil(events)
      assert.are.equal("invalid_argument", err.code)
    end)
  end)

  for _, mode in ipairs({ "version", "ulid" }) do
    describe("a stream larger than one 1 MB page (" .. mode .. " mode)", function()
      local c
      local N = 40
      local sks = {} -- sks[i]: the sort key of event n = i
      setup(function()
        c = ddb.ready_client({ sort_key = mode })
        local blob = string.rep("e", 60 * 1024) -- 40 x 60 KB = 2.4 MB: three DynamoDB pages
        for i = 1, N do sks[i] = assert(c:append("big", "b", "chunk", { n = i, blob = blob })).sk end
      end)

      local function numbers(events)
        local out = {}
        for _, ev in ipairs(events) do out[#out + 1] = ev.payload.n end
        return out
      end

      local function range(from, to)
        local out, step = {}, from <= to and 1 or -1
        for i = from, to, step do out[#out + 1] = i end
        return out
      end

      it("reads back whole through the iterator, forwards and in reverse", function()
        for _, reverse in ipairs({ false, true }) do
          local n, last = 0, nil
          for ev in c:query("big", "b", { reverse = reverse }) do
            n = n + 1
            last = ev.payload.n
            assert.are.equal(60 * 1024, #ev.payload.blob)
          end
          assert.are.equal(N, n)
          assert.are.equal(reverse and 1 or N, last)
        end
      end)

      it("reads a range with limit across pages, forwards and in reverse", function()
        local forwards = assert(c:query("big", "b", { after = sks[5], before = sks[36], limit = 25 }):all())
        assert.are.same(range(6, 30), numbers(forwards))
        local backwards = assert(c:query("big", "b", { after = sks[5], before = sks[36], limit = 25,
                                                       reverse = true }):all())
        assert.are.same(range(35, 11), numbers(backwards))
      end)

      it("reads back whole through cursors, forwards and in reverse, within bounds", function()
        local function paged(opts)
          local got, cursor = {}, nil
          repeat
            opts.cursor = cursor
            local page = assert(c:query_page("big", "b", opts))
            for _, n in ipairs(numbers(page.items)) do got[#got + 1] = n end
            cursor = page.cursor
          until not cursor
          return got
        end
        assert.are.same(range(1, N), paged({ page_size = 17 }))
        assert.are.same(range(N, 1), paged({ page_size = 17, reverse = true }))
        assert.are.same(range(6, 35), paged({ page_size = 7, after = sks[5], before = sks[36] }))
        assert.are.same(range(35, 6), paged({ page_size = 7, after = sks[5], before = sks[36], reverse = true }))
      end)
    end)
  end

  describe("round trips", function()
    local c
    setup(function() c = ddb.ready_client() end)

    local function round_trip(payload)
      local key = assert(c:append("rt", "x", "value", payload))
      return c:get("rt", "x", key.sk, { consistent = true }).payload
    end

    it("keeps Unicode, empty strings, nested maps and lists", function()
      local p = round_trip({ name = "Zoë 日本 😀", empty = "", nested = { list = { 1, "two", { three = true } } },
                             flag = false, nothing = dynlog.json.null, emptylist = dynlog.json.array() })
      assert.are.equal("Zoë 日本 😀", p.name)
      assert.are.equal("", p.empty)
      assert.are.same({ three = true }, p.nested.list[3])
      assert.are.equal("two", p.nested.list[2])
      assert.is_false(p.flag)
      assert.are.equal(dynlog.json.null, p.nothing)
      assert.are.equal(0, #p.emptylist)
      assert.is_true(dynlog.json.is_array(p.emptylist))
    end)

    it("keeps binary values and sets", function()
      local core = require "dynlog.core"
      local bytes = "\0\1\2\255\254 binary"
      local p = round_trip({ blob = core.binary(bytes), tags = core.set({ "a", "b", "c" }),
                             scores = core.set({ 1, 2.5, 3 }) })
      assert.is_true(core.is_binary(p.blob))
      assert.are.equal(bytes, p.blob.value)
      assert.is_true(core.is_set(p.tags))
      table.sort(p.tags)
      assert.are.same({ "a", "b", "c" }, { p.tags[1], p.tags[2], p.tags[3] })
      assert.is_true(core.is_set(p.scores))
      table.sort(p.scores)
      assert.are.same({ 1, 2.5, 3 }, { p.scores[1], p.scores[2], p.scores[3] })
      local q = round_trip({ blobs = core.set({ core.binary("\0a"), core.binary("\255b") }) })
      assert.is_true(core.is_set(q.blobs))
      local got = {}
      for i, b in ipairs(q.blobs) do
        assert.is_true(core.is_binary(b))
        got[i] = b.value
      end
      table.sort(got)
      assert.are.same({ "\0a", "\255b" }, got)
    end)

    it("keeps integers and floats exact", function()
      local p = round_trip({ small = 1, negative = -42, float = 0.1, third = 1 / 3, big = 1e125, tiny = 1e-130,
                             exact53 = 2 ^ 53 })
      assert.are.equal(1, p.small)
      assert.are.equal(-42, p.negative)
      assert.are.equal(0.1, p.float)
      assert.are.equal(1 / 3, p.third)
      assert.are.equal(1e125, p.big)
      assert.are.equal(1e-130, p.tiny)
      assert.are.equal(2 ^ 53, p.exact53)
    end)

    if has_integers then
      it("keeps integers up to 2^63-1 exact (Lua 5.4)", function()
        local p = round_trip({ max = math.maxinteger, min = math.mininteger, odd = 9007199254740993 })
        assert.are.equal(math.maxinteger, p.max)
        assert.are.equal(math.mininteger, p.min)
        assert.are.equal(9007199254740993, p.odd)
        assert.are.equal("integer", math.type(p.max))
      end)
    end

    it("keeps every number as its decimal string with numbers = \"string\"", function()
      -- 38 digits, as another tool may write them: more than any Lua number holds.
      local digits = "12345678901234567890123456789012345678"
      local sk = dynlog.ulid()
      assert(c:call("PutItem", { TableName = c.table, Item = {
        pk = { S = "rt#y#stream" }, sk = { S = sk }, type = { S = "value" }, log = { S = "rt" },
        payload = { M = { id = { S = "y" }, n = { N = digits }, f = { N = "0.5" } } } } }))
      local s = ddb.client({ table = c.table, numbers = "string" })
      local p = s:get("rt", "y", sk).payload
      assert.are.equal(digits, p.n)
      assert.are.equal("0.5", p.f)
      assert.are.equal("number", type(c:get("rt", "y", sk).payload.f), "the default reads numbers")
    end)

    it("reads numbers another way for one call with opts.numbers, whatever the client's option", function()
      local digits = "12345678901234567890123456789012345678"
      local sk = dynlog.ulid()
      assert(c:call("PutItem", { TableName = c.table, Item = {
        pk = { S = "rt#z#stream" }, sk = { S = sk }, type = { S = "value" }, log = { S = "rt" },
        payload = { M = { id = { S = "z" }, n = { N = digits }, f = { N = "0.5" } } } } }))
      local s = ddb.client({ table = c.table, numbers = "string" })
      for _, reader in ipairs({ c, s }) do
        local evs = {
          reader:get("rt", "z", sk, { numbers = "exact" }),
          reader:head("rt", "z", { numbers = "exact" }),
          assert(reader:query("rt", "z", { numbers = "exact" }):all())[1],
          assert(reader:query_page("rt", "z", { numbers = "exact" })).items[1],
        }
        for _, ev in ipairs(evs) do
          assert.are.equal(0.5, ev.payload.f)
          assert.are.equal(dynlog.number(digits), ev.payload.n, "beyond a double: a dynlog.number")
          assert.are.equal(digits, tostring(ev.payload.n))
        end
        assert.are.equal("0.5", reader:get("rt", "z", sk, { numbers = "string" }).payload.f)
      end
      assert.error_matches(function() c:get("rt", "z", sk, { numbers = "float" }) end,
        'numbers must be nil, "string" or "exact", got float')
    end)
  end)

  it("reads an item written by a plain PutItem in the original layout", function()
    local c = ddb.ready_client()
    local sk = dynlog.ulid()
    assert(c:call("PutItem", { TableName = c.table, Item = {
      pk = { S = "users#legacy#stream" }, sk = { S = sk }, type = { S = "signup" }, log = { S = "users" },
      payload = { M = { id = { S = "legacy" }, email = { S = "a@example.com" } } },
    } }))
    local list = assert(c:query("users", "legacy"):all())
    assert.are.equal(1, #list)
    assert.are.equal("signup", list[1].type)
    assert.are.equal("a@example.com", list[1].payload.email)
    assert.are.equal(sk, list[1].sk)
  end)

  describe("bad input, refused before anything is written", function()
    local c
    setup(function() c = ddb.ready_client() end)

    local function refused(code, pattern, ...)
      local key, err = c:append(...)
      assert.is_nil(key)
      assert.are.equal(code, err.code)
      if pattern then assert.matches(pattern, err.message) end
    end

    it("checks log, id and type", function()
      refused("invalid_argument", "log must not be empty", "", "1", "t", {})
      refused("invalid_argument", "id must not contain '#'", "users", "a#b", "t", {})
      refused("invalid_argument", "log is not valid UTF%-8", "us\255ers", "1", "t", {})
      refused("invalid_argument", "type must not be empty", "users", "1", "", {})
      refused("too_large", "2048", "users", string.rep("i", 2100), "t", {})
      assert.has_error(function() c:append("users", 42, "t", {}) end)
      assert.has_error(function() c:append("users", "1", "t", "payload") end)
    end)

    it("names the path of a value DynamoDB cannot hold", function()
      refused("invalid_argument", "payload%.scores%[2%]", "users", "1", "t", { scores = { 1, 0 / 0 } })
      refused("invalid_argument", "payload%.f", "users", "1", "t", { f = print })
      local cyclic = {}
      cyclic.self = cyclic
      refused("invalid_argument", nil, "users", "1", "t", { c = cyclic })
      refused("invalid_argument", nil, "users", "1", "t", { mixed = { 1, x = 2 } })
    end)

    it("refuses an item over 400 KB", function()
      refused("too_large", "409600", "users", "1", "t", { blob = string.rep("x", 410 * 1024) })
      assert.is_nil(c:head("users", "1"), "nothing was written")
    end)

    it("counts the size as DynamoDB does, not as the longer JSON text", function()
      -- every quote is escaped in JSON: the request is twice the item's size
      local quotes = string.rep('"', 300 * 1024)
      local key = assert(c:append("users", "quotes", "t", { blob = quotes }))
      assert.are.equal(quotes, c:get("users", "quotes", key.sk).payload.blob)
      refused("too_large", "409600", "users", "quotes", "t", { blob = quotes .. string.rep('"', 110 * 1024) })
    end)
  end)

  describe("call", function()
    it("runs any DynamoDB operation and returns its response as sent", function()
      local c = ddb.ready_client()
      local resp = assert(c:call("DescribeTable", { TableName = c.table }))
      assert.are.equal(c.table, resp.Table.TableName)
    end)

    it("returns AWS errors with their name, status and request id", function()
      local c = ddb.client()
      local resp, err = c:call("DescribeTable", { TableName = "no-such-table-" .. dynlog.ulid() })
      assert.is_nil(resp)
      assert.are.equal("ResourceNotFoundException", err.code)
      assert.are.equal(400, err.status)
      assert.is_false(err.retryable)
      assert.is_string(err.request_id)
      assert.are.equal(1, err.attempts, "not retried")
      assert.matches("^ResourceNotFoundException: ", tostring(err))
    end)
  end)
end)

-- The line a raised error blames, and the line of the call that raised.
local raised, here = require("spec.support.run").raised, require("spec.support.run").here

describe("a client on a table of the other sort-key mode", function()
  local ULID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
  for _, case in ipairs({
    { mode = "version", table_mode = "ulid", own = 1, table_type = "S" },
    { mode = "ulid", table_mode = "version", own = ULID, table_type = "N" },
  }) do
    for _, numbers in ipairs({ false, "string" }) do
      local title = case.mode .. " mode on a " .. case.table_mode .. " table"
        .. (numbers and ' (numbers = "string")' or "")
      it("answers schema_mismatch for every operation: " .. title, function()
        local owner = ddb.ready_client({ sort_key = case.table_mode })
        assert(owner:append("users", "42", "signup", {}))
        local c = ddb.client({ table = owner.table, sort_key = case.mode, numbers = numbers or nil })
        local function mismatch(what, value, err)
          assert.is_nil(value, what)
          assert.is_table(err, what)
          assert.are.equal("schema_mismatch", err.code, what .. ": " .. tostring(err))
          -- both types named: the client's mode and the table's sk type
          assert.matches('sort_key = "' .. case.mode .. '"', err.message, 1, true)
          assert.matches("sort keys of type " .. case.table_type, err.message, 1, true)
        end
        for _, id in ipairs({ "42", "new" }) do -- a stream with events, and an empty one
          mismatch("append " .. id, c:append("users", id, "t", {}))
          mismatch("append_batch " .. id, c:append_batch("users", id, { { type = "t" }, { type = "u" } }))
          local none, errs, results = c:append_many({ { log = "users", id = id, type = "t" } })
          assert.is_nil(none)
          assert.is_nil(results[1])
          mismatch("append_many " .. id, nil, errs[1])
          mismatch("get " .. id, c:get("users", id, case.own))
          mismatch("query after " .. id, c:query("users", id, { after = case.own }):all())
        end
        if case.mode == "version" then
          mismatch("append no_stream", c:append("users", "new2", "t", {}, { expected_version = "no_stream" }))
          mismatch("append at 1", c:append("users", "42", "t", {}, { expected_version = 1 }))
          mismatch("append_batch at 0", c:append_batch("users", "42", { { type = "t" } }, { expected_version = 0 }))
        end
        mismatch("head", c:head("users", "42"))
        mismatch("query", c:query("users", "42"):all())
        mismatch("query_page", c:query_page("users", "42"))
        local events = c:query("users", "42")
        for _ in events do error("no event should come out") end
        mismatch("query loop", nil, events.err)
        -- nothing was written
        assert.are.equal(1, #assert(owner:query("users", "42"):all()))
        assert.are.equal(0, #assert(owner:query("users", "new"):all()))
      end)
    end
  end
end)

describe("versions", function()
  local MAX = 9007199254740991 -- 2^53 - 1
  local c
  setup(function() c = ddb.ready_client({ sort_key = "version" }) end)

  it("are refused, raising at the caller's line, when they cannot be stored and incremented exactly", function()
    local too_big = { 2 ^ 53, 2 ^ 53 - 1, 2 ^ 60, math.huge, -1, 0.5, 0 / 0 }
    if has_integers then too_big[#too_big + 1] = math.maxinteger end
    for _, v in ipairs(too_big) do
      local at, msg = here(), raised(function() c:append("acct", "max", "t", {}, { expected_version = v }) end)
      assert.matches(at, msg, 1, true)
      assert.matches("expected_version must be an integer from 0 to 9007199254740990", msg, 1, true)
      local batch = { { type = "t" } }
      at, msg = here(), raised(function() c:append_batch("acct", "max", batch, { expected_version = v }) end)
      assert.matches(at, msg, 1, true)
      msg = raised(function()
        c:append_many({ { log = "acct", id = "max", type = "t" },
                        { log = "acct", id = "max", type = "t", expected_version = v } })
      end)
      assert.matches("events[2]: expected_version", msg, 1, true)
    end
    assert.are.equal(0, #assert(c:query("acct", "max"):all()), "nothing written")
  end)

  it("go up to 2^53 - 1 exactly, and no further", function()
    local key = assert(c:append("acct", "top", "t", {}, { expected_version = MAX - 1 }))
    assert.are.equal(MAX, key.sk)
    local ev = assert(c:head("acct", "top"))
    assert.are.equal(MAX, ev.sk)
    assert.are.equal(string.format("%.0f", MAX), string.format("%.0f", ev.sk))
    local again, err = c:append("acct", "top", "t", {})
    assert.is_nil(again)
    assert.are.equal("too_large", err.code)
    assert.matches("2^53 - 1", err.message, 1, true)
    local two = { { type = "a" }, { type = "b" } }
    local keys, berr = c:append_batch("acct", "top2", two, { expected_version = MAX - 1 })
    assert.is_nil(keys)
    assert.are.equal("too_large", berr.code)
    assert.are.equal(0, #assert(c:query("acct", "top2"):all()))
  end)
end)

describe("a failed signature", function()
  it("is an error of its own, and no unsigned request goes out", function()
    local c = ddb.ready_client()
    local calls = 0
    local transport = c:_transport()
    c.transport = { request = function(_, req) calls = calls + 1 return transport:request(req) end }
    c.signer = { sign_post = function() return nil, "signing_failed", "HMAC failed" end }
    local key, err = c:append("users", "unsigned", "t", {})
    assert.is_nil(key)
    assert.are.equal("signing_failed", err.code)
    assert.matches("could not be signed", err.message, 1, true)
    assert.matches("HMAC failed", err.message, 1, true)
    assert.is_false(err.ambiguous)
    assert.are.equal(0, calls, "requests sent")
  end)
end)

describe("ambiguous", function()
  local socket = require "socket"
  local run = require "spec.support.run"

  it("is false when no attempt could connect (refused)", function()
    local c = ddb.client({ endpoint = "http://127.0.0.1:1", max_attempts = 3 })
    local key, err = c:append("users", "refused", "t", {})
    assert.is_nil(key)
    assert.are.equal("connection", err.code)
    assert.are.equal(3, err.attempts)
    assert.is_false(err.ambiguous)
  end)

  it("is false when every connect timed out", function()
    local port, close = run.full_listener()
    local c = ddb.client({ endpoint = "http://127.0.0.1:" .. port, max_attempts = 2, connect_timeout = 0.2 })
    local key, err = c:append("users", "slow", "t", {})
    close()
    assert.is_nil(key)
    assert.are.equal("timeout", err.code)
    assert.matches("connect", err.message)
    assert.are.equal(2, err.attempts)
    assert.is_false(err.ambiguous)
  end)

  it("is true when a request went out and no answer came", function()
    local listener = assert(socket.bind("127.0.0.1", 0))
    local _, port = listener:getsockname()
    local c = ddb.client({ endpoint = "http://127.0.0.1:" .. port, max_attempts = 1, timeout = 0.3 })
    local key, err = c:append("users", "lost", "t", {})
    listener:close()
    assert.is_nil(key)
    assert.are.equal("timeout", err.code)
    assert.is_true(err.ambiguous)
  end)
end)

describe("arguments of the wrong type", function()
  it("raise at the caller's line in every method, before anything is sent", function()
    local c, v = ddb.client(), ddb.client({ sort_key = "version" })
    local function event(fields)
      local ev = { log = "l", id = "1", type = "t" }
      for k, x in pairs(fields) do ev[k] = x end
      return { ev }
    end
    local cases = {
      function() local _ = c:append("l", 1, "t", {}) end,
      function() local _ = c:append("l", "1", "t", 5) end,
      function() local _ = c:append("l", "1", "t", {}, { expected_version = 1 }) end,
      function() local _ = v:append("l", "1", "t", {}, { expected_version = -1 }) end,
      function() local _ = c:append_batch("l", "1", 5) end,
      function() local _ = c:append_batch("l", "1", { 5 }) end,
      function() local _ = c:append_batch("l", "1", { { type = 5 } }) end,
      function() local _ = c:append_batch("l", "1", { { type = "t", payload = 5 } }) end,
      function() local _ = c:append_batch(5, "1", { { type = "t" } }) end,
      function() local _ = v:append_batch("l", "1", { { type = "t" } }, { expected_version = -1 }) end,
      function() local _ = c:append_many(5) end,
      function() local _ = c:append_many({ 5 }) end,
      function() local _ = c:append_many(event({ log = 5 })) end,
      function() local _ = c:append_many(event({ type = 5 })) end,
      function() local _ = v:append_many(event({ payload = 5 })) end,
      function() local _ = v:append_many(event({ expected_version = -1 })) end,
      function() local _ = c:append_many(event({ expected_version = 1 })) end,
      function() local _ = c:append_many(event({ sk = 5 })) end,
      function() local _ = v:append_many(event({ sk = 1, expected_version = 1 })) end,
      function() local _ = c:append_many({}, { concurrency = 0 }) end,
      function() local _ = c:get("l", "1", 5) end,
      function() local _ = c:get("l", "1", "x", { numbers = "bad" }) end,
      function() local _ = c:head(5, "1") end,
      function() local _ = c:query("l", "1", { limit = 0 }) end,
      function() local _ = c:query("l", "1", { after = 5 }) end,
      function() local _ = c:query("l", 5) end,
      function() local _ = c:query_page("l", "1", { cursor = 5 }) end,
      function() local _ = c:query_page("l", "1", { page_size = 0 }) end,
      function() local _ = c:publish(5) end,
      function() local _ = c:publish({}, 5) end,
      function() local _ = c:create_table({ stream = "x" }) end,
      function() local _ = c:describe_stream(5) end,
      function() local _ = c:get_shard_iterator("a", "s", "x") end,
      function() local _ = c:get_records(5) end,
      function() local _ = c:call("x", {}) end,
      function() local _ = c:call("GetItem", 5) end,
    }
    for n, case in ipairs(cases) do
      local info = debug.getinfo(case, "S")
      local msg = raised(case)
      local line = tonumber(msg:match("^spec/ddb/client_spec%.lua:(%d+): "))
      assert.is_number(line, "case " .. n .. ": " .. msg)
      assert.are.equal(info.linedefined, line, "case " .. n .. ": " .. msg)
    end
  end)
end)

describe("unknown option keys", function()
  it("raise at the caller's line in every method, naming the key and the nearest known one", function()
    local c = ddb.ready_client()
    local v = ddb.ready_client({ sort_key = "version" })
    local key = assert(c:append("users", "opts", "t", {}))
    local cases = {
      { "expected_verison", "expected_version", function()
        v:append("users", "o", "t", {}, { expected_verison = 1 })
      end },
      { "expected_verison", "expected_version", function()
        v:append_batch("users", "o", { { type = "t" } }, { expected_verison = 1 })
      end },
      { "typ", "type", function() c:append_batch("users", "o", { { type = "t" }, { typ = "t" } }) end },
      { "concurency", "concurrency", function() c:append_many({}, { concurency = 2 }) end },
      { "expected_verison", "expected_version", function()
        v:append_many({ { log = "users", id = "o", type = "t", expected_verison = 0 } })
      end },
      { "revers", "reverse", function() c:query("users", "opts", { revers = true }) end },
      { "cursr", "cursor", function() c:query_page("users", "opts", { cursr = "x" }) end },
      { "consitent", "consistent", function() c:get("users", "opts", key.sk, { consitent = true }) end },
      { "consitent", "consistent", function() c:head("users", "opts", { consitent = true }) end },
      { "strem", "stream", function() c:create_table({ strem = false }) end },
      { "orderd", "ordered", function() c:publish({}, { orderd = true }) end },
      { "detailtype", "detail_type", function()
        c:publish({ { source = "s", detail_type = "d", detail = {}, detailtype = "d" } })
      end },
    }
    for _, case in ipairs(cases) do
      local info = debug.getinfo(case[3], "S")
      local msg = raised(case[3])
      assert.matches(('unknown option "%s" (did you mean "%s"?)'):format(case[1], case[2]), msg, 1, true)
      -- blamed on the line of the call in the function above
      local line = tonumber(msg:match("client_spec%.lua:(%d+): "))
      assert.is_number(line, msg)
      assert.is_true(line >= info.linedefined and line <= info.lastlinedefined, msg)
    end
    assert.are.equal(0, #assert(v:query("users", "o"):all()), "nothing written")
    assert.are.equal(0, #assert(c:query("users", "o"):all()), "nothing written")
  end)

  it("name the event of append_batch and append_many", function()
    local c = ddb.ready_client()
    assert.matches('append_batch: events[2]: unknown option "tpye"',
      raised(function() c:append_batch("users", "o", { { type = "t" }, { tpye = "t" } }) end), 1, true)
    assert.matches('append_many: events[3]: unknown option "paylod"', raised(function()
      c:append_many({ { log = "l", id = "1", type = "t" }, { log = "l", id = "2", type = "t" },
                      { log = "l", id = "3", type = "t", paylod = {} } })
    end), 1, true)
  end)
end)

describe("append_batch errors", function()
  it("name the event they are about", function()
    local c = ddb.ready_client()
    local keys, err = c:append_batch("users", "b", { { type = "t" }, { type = "t", payload = { x = 0 / 0 } } })
    assert.is_nil(keys)
    assert.are.equal("invalid_argument", err.code)
    assert.matches("^events%[2%]: ", err.message)
    assert.are.equal(2, err.index)
    keys, err = c:append_batch("users", "b", { { type = "t" }, { type = "" } })
    assert.is_nil(keys)
    assert.matches("^events%[2%]: type must not be empty", err.message)
    assert.are.equal(2, err.index)
    assert.matches("events[3]: type must be a string", raised(function()
      c:append_batch("users", "b", { { type = "t" }, { type = "t" }, { type = 42 } })
    end), 1, true)
    assert.matches("events[2]: payload must be a table", raised(function()
      c:append_batch("users", "b", { { type = "t" }, { type = "t", payload = "x" } })
    end), 1, true)
  end)

  it("name the event whose version is taken", function()
    local v = ddb.ready_client({ sort_key = "version" })
    assert(v:append("acct", "b", "second", {}, { expected_version = 1 })) -- version 2 only
    local keys, err = v:append_batch("acct", "b", { { type = "a" }, { type = "b" } }, { expected_version = 0 })
    assert.is_nil(keys)
    assert.are.equal("conflict", err.code)
    assert.are.equal(2, err.index)
    assert.matches("^events%[2%]: an event with sort key 2 already exists", err.message)
  end)
end)
