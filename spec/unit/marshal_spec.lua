local core = require "dynlog.core"
local marshal = require "dynlog.marshal"
local env = require "spec.support.env"

-- Lua 5.4 has 64-bit integers; LuaJIT holds every number in a double.
local has_integers = math.type ~= nil

local function read_vectors()
  local f = assert(io.open(env.vector("dynamodb/attribute-values.json"), "rb"))
  local text = f:read("a")
  f:close()
  return assert(core.json_decode(text))
end

local vectors = read_vectors()

---------------------------------------------------------------------------
-- Helpers
---------------------------------------------------------------------------

local function sorted_strings(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = tostring(v) end
  table.sort(out)
  return out
end

-- Sets are unordered: SS/NS/BS compare as multisets, numbers by value.
local function same_set(expected, actual)
  if #expected ~= #actual then return false end
  local used = {}
  for _, x in ipairs(expected) do
    local found = false
    for j, y in ipairs(actual) do
      if not used[j] and x == y then used[j], found = true, true break end
    end
    if not found then return false end
  end
  return true
end

local SET_TYPES = { SS = true, NS = true, BS = true }

-- Deep comparison of AttributeValue tables, with sets as multisets.
local function same_av(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k in pairs(b) do if a[k] == nil then return false end end
  for k, v in pairs(a) do
    if SET_TYPES[k] then
      if type(b[k]) ~= "table" or not same_set(v, b[k]) then return false end
    elseif not same_av(v, b[k]) then
      return false
    end
  end
  return true
end

local function assert_same_av(expected, actual)
  assert(same_av(expected, actual),
    ("AttributeValues differ:\nexpected %s\nactual   %s"):format(core.json_encode(expected),
      core.json_encode(actual)))
end

-- The plain Lua value a vector case stands for.
local function plain_of(case)
  if case.plain_bytes_utf8 ~= nil then
    if type(case.plain_bytes_utf8) == "string" then return core.binary(case.plain_bytes_utf8) end
    local members = {}
    for i, s in ipairs(case.plain_bytes_utf8) do members[i] = core.binary(s) end
    return core.set(members)
  end
  if case.plain_kind then
    local members = {}
    for i, v in ipairs(case.plain) do members[i] = v end
    return core.set(members)
  end
  return case.plain
end

-- Plain values compared deeply; sets as multisets, binaries by bytes.
local function same_plain(a, b)
  if core.is_binary(a) or core.is_binary(b) then
    return core.is_binary(a) and core.is_binary(b) and a.value == b.value
  end
  if core.is_set(a) or core.is_set(b) then
    if not (core.is_set(a) and core.is_set(b)) or #a ~= #b then return false end
    local used = {}
    for _, x in ipairs(a) do
      local found = false
      for j, y in ipairs(b) do
        if not used[j] and same_plain(x, y) then used[j], found = true, true break end
      end
      if not found then return false end
    end
    return true
  end
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k in pairs(b) do if a[k] == nil then return false end end
  for k, v in pairs(a) do
    if not same_plain(v, b[k]) then return false end
  end
  return true
end

local function assert_same_plain(expected, actual)
  assert(same_plain(expected, actual),
    ("plain values differ:\nexpected %s\nactual   %s"):format(core.json_encode(expected),
      core.json_encode(actual)))
end

-- Like assert(f(...)), but false (BOOL) is a value, not a failure.
local function ok_value(value, err, message)
  assert(err == nil, tostring(message or err))
  return value
end

local raised = require("spec.support.run").raised

-- A request body that holds v as the attribute "v" of an item.
local function encode_item_value(v)
  return core.json_encode({ Item = core.attribute_map({ v = v }) })
end

local function decode_item_value(av_json)
  local doc, code, message = core.json_decode('{"Item":{"v":' .. av_json .. '}}', true)
  if doc == nil then return nil, code, message end
  return doc.Item.v
end

local function nested_lists(levels, leaf)
  local v = leaf
  for _ = 1, levels do v = { v } end
  return v
end

---------------------------------------------------------------------------

describe("dynlog.core AttributeValues", function()
  describe("the shared vectors", function()
    it("are all here", function()
      assert.are.equal(16, #vectors.cases)
      assert.are.equal(2, #vectors.items)
      assert.are.equal(6, #vectors.numbers.valid)
      assert.are.equal(3, #vectors.numbers.invalid)
      assert.are.equal(7, #vectors.invalid)
    end)

    for i, case in ipairs(vectors.cases) do
      local name = ("case %d (%s)"):format(i, case.type)

      it(name .. " marshals to its AttributeValue", function()
        assert_same_av(case.attribute_value, core.marshal(plain_of(case)))
      end)

      it(name .. " unmarshals from its AttributeValue", function()
        assert_same_plain(plain_of(case), ok_value(marshal.unmarshal(case.attribute_value)))
      end)

      it(name .. " is written as its AttributeValue JSON inside an attribute map", function()
        local doc = assert(core.json_decode(encode_item_value(plain_of(case))))
        assert_same_av(case.attribute_value, doc.Item.v)
      end)

      it(name .. " is read back from its AttributeValue JSON when unwrapping", function()
        assert_same_plain(plain_of(case), ok_value(decode_item_value(core.json_encode(case.attribute_value))))
      end)
    end

    for i, case in ipairs(vectors.items) do
      it(("item %d marshals and unmarshals whole, without an M wrapper"):format(i), function()
        assert_same_av(case.item, core.marshal_item(case.plain))
        assert_same_plain(case.plain, assert(marshal.unmarshal_item(case.item)))
        local body = core.json_encode({ TableName = "t", Item = core.attribute_map(case.plain) })
        assert_same_av(case.item, assert(core.json_decode(body)).Item)
        local doc = assert(core.json_decode(core.json_encode({ Item = case.item }), true))
        assert_same_plain(case.plain, doc.Item)
      end)
    end

    for _, text in ipairs(vectors.numbers.valid) do
      it(("accepts the N %q and reads it back"):format(text), function()
        assert.is_true(core.valid_number(text))
        assert.are.equal(text, marshal.unmarshal({ N = text }, "string"))
        local v = marshal.unmarshal({ N = text })
        if type(v) == "string" then
          -- LuaJIT: an integer a double cannot hold stays its text
          assert.is_false(has_integers)
          assert.are.equal(text, v)
        else
          assert.are.equal(tonumber(text), v)
        end
        assert.are.equal(v, decode_item_value('{"N":"' .. text .. '"}'))
      end)
    end

    for _, case in ipairs(vectors.numbers.invalid) do
      it(("refuses the N %q (%s)"):format(case.N, case.reason), function()
        local ok, code, message = core.valid_number(case.N)
        assert.is_nil(ok)
        assert.are.equal("invalid_argument", code)
        assert.is_string(message)
        local v, err = marshal.unmarshal({ N = case.N })
        assert.is_nil(v)
        assert.are.equal("invalid_argument", err.code)
        local doc, jcode = decode_item_value('{"N":"' .. case.N .. '"}')
        assert.is_nil(doc)
        assert.are.equal("invalid_json", jcode)
      end)
    end

    for _, case in ipairs(vectors.invalid) do
      if case.attribute_value then
        it(("refuses the AttributeValue %s (%s)"):format(core.json_encode(case.attribute_value), case.reason),
          function()
            local v, err = marshal.unmarshal(case.attribute_value)
            assert.is_nil(v)
            assert.are.equal("invalid_argument", err.code)
            local doc, code = decode_item_value(core.json_encode(case.attribute_value))
            assert.is_nil(doc)
            assert.are.equal("invalid_json", code)
          end)
      else
        it(("refuses the plain number %s (%s)"):format(case.plain_number, case.reason), function()
          local x = ({ NaN = 0 / 0, Infinity = math.huge })[case.plain_number]
          assert.is_number(x)
          assert.matches("cannot be stored in DynamoDB", raised(core.marshal, x))
          assert.matches("cannot be stored in DynamoDB at Item%.v", raised(encode_item_value, x))
        end)
      end
    end
  end)

  describe("json_encode", function()
    it("writes attribute maps wherever they sit in a request, and the rest as plain JSON", function()
      local body = core.json_encode({
        TableName = "t",
        Item = core.attribute_map({ pk = "a#b#stream", sk = "01H", payload = { id = "b", n = 1 } }),
        ConditionExpression = "attribute_not_exists(pk)",
        ExpressionAttributeValues = core.attribute_map({ [":pk"] = "x", [":v"] = 3 }),
        TransactItems = { { Put = { TableName = "t", Item = core.attribute_map({ k = true }) } } },
      })
      local doc = assert(core.json_decode(body))
      assert.are.equal("t", doc.TableName)
      assert.are.equal("attribute_not_exists(pk)", doc.ConditionExpression)
      assert.are.same({ pk = { S = "a#b#stream" }, sk = { S = "01H" },
        payload = { M = { id = { S = "b" }, n = { N = "1" } } } }, doc.Item)
      assert.are.same({ [":pk"] = { S = "x" }, [":v"] = { N = "3" } }, doc.ExpressionAttributeValues)
      assert.are.same({ k = { BOOL = true } }, doc.TransactItems[1].Put.Item)
    end)

    it("writes an attribute map nested inside a value as a plain M", function()
      local doc = assert(core.json_decode(encode_item_value(core.attribute_map({ a = 1 }))))
      assert.are.same({ M = { a = { N = "1" } } }, doc.Item.v)
    end)

    it("writes an empty string as S, an empty table as M and core.array() as L", function()
      assert.are.equal('{"Item":{"v":{"S":""}}}', encode_item_value(""))
      assert.are.equal('{"Item":{"v":{"M":{}}}}', encode_item_value({}))
      assert.are.equal('{"Item":{"v":{"L":[]}}}', encode_item_value(core.array()))
      assert.are.equal('{"Item":{"v":{"NULL":true}}}', encode_item_value(core.null))
      assert.are.equal('{"Item":{"v":{"BOOL":false}}}', encode_item_value(false))
    end)

    it("writes every number as N text: integers exactly, floats bit-identical", function()
      for _, x in ipairs({ 0.1, 1 / 3, 1e125, 1e-130, -1e-130, 9.99999999999999e125, 2 ^ 53, -0.5 }) do
        local doc = assert(core.json_decode(encode_item_value(x)))
        assert.is_string(doc.Item.v.N)
        assert.are.equal(x, tonumber(doc.Item.v.N))
        assert.are.equal(x, decode_item_value(core.json_encode(doc.Item.v)))
      end
      assert.are.equal('{"Item":{"v":{"N":"0.1"}}}', encode_item_value(0.1))
      if has_integers then
        assert.are.equal('{"Item":{"v":{"N":"9223372036854775807"}}}', encode_item_value(math.maxinteger))
        assert.are.equal('{"Item":{"v":{"N":"-9223372036854775808"}}}', encode_item_value(math.mininteger))
      end
    end)

    it("writes binaries as base64 and sets by member type", function()
      assert.are.equal('{"Item":{"v":{"B":"AAH/"}}}', encode_item_value(core.binary("\0\1\255")))
      assert.are.equal('{"Item":{"v":{"B":""}}}', encode_item_value(core.binary("")))
      assert.are.equal('{"Item":{"v":{"SS":["a"]}}}', encode_item_value(core.set({ "a" })))
      assert.are.equal('{"Item":{"v":{"NS":["1.5"]}}}', encode_item_value(core.set({ 1.5 })))
      assert.are.equal('{"Item":{"v":{"BS":["eA=="]}}}', encode_item_value(core.set({ core.binary("x") })))
    end)

    it("writes binaries as base64 text and sets as arrays outside attribute maps", function()
      local doc = assert(core.json_decode(core.json_encode({ b = core.binary("\0\1\255"), s = core.set({ "a" }) })))
      assert.are.equal("AAH/", doc.b)
      assert.are.same({ "a" }, doc.s)
      assert.are.equal("[]", core.json_encode(core.set({})))
    end)

    it("does not mark the tables it reads, so a decoded item encodes as plain JSON", function()
      local doc = assert(core.json_decode('{"Item":{"a":{"N":"1"},"m":{"M":{"x":{"S":"y"}}}}}', true))
      assert.is_false(core.is_attribute_map(doc.Item))
      assert.is_false(core.is_attribute_map(doc.Item.m))
      local again = assert(core.json_decode(core.json_encode(doc.Item)))
      assert.are.same({ a = 1, m = { x = "y" } }, again)
    end)
  end)

  describe("json_decode with unwrap", function()
    local query = [[{"Count":2,"ScannedCount":2,
      "Items":[{"pk":{"S":"log#1#stream"},"sk":{"S":"01A"},"n":{"N":"42"},"f":{"N":"0.5"}},
               {"pk":{"S":"log#1#stream"},"sk":{"S":"01B"},"tags":{"SS":["x","y"]},"l":{"L":[]},
                "m":{"M":{"Item":{"S":"not a trigger here"}}},"nothing":{"NULL":true},"b":{"B":"AAH/"}}],
      "LastEvaluatedKey":{"pk":{"S":"log#1#stream"},"sk":{"S":"01B"}}}]]

    it("reads a Query response as plain items, keeping the rest plain", function()
      local doc = assert(core.json_decode(query, true))
      assert.are.equal(2, doc.Count)
      assert.are.equal(2, doc.ScannedCount)
      assert.is_true(core.is_array(doc.Items))
      assert.are.equal(2, #doc.Items)
      assert.are.same({ pk = "log#1#stream", sk = "01A", n = 42, f = 0.5 }, doc.Items[1])
      if has_integers then assert.are.equal("integer", math.type(doc.Items[1].n)) end
      local second = doc.Items[2]
      assert.is_true(core.is_set(second.tags))
      assert.are.same({ "x", "y" }, sorted_strings(second.tags))
      assert.is_true(core.is_array(second.l))
      assert.are.equal(0, #second.l)
      assert.are.same({ Item = "not a trigger here" }, second.m)
      assert.are.equal(core.null, second.nothing)
      assert.is_true(core.is_binary(second.b))
      assert.are.equal("\0\1\255", second.b.value)
      assert.are.same({ pk = "log#1#stream", sk = "01B" }, doc.LastEvaluatedKey)
    end)

    it("leaves the typed JSON alone when unwrap is off", function()
      local doc = assert(core.json_decode(query))
      assert.are.same({ S = "01A" }, doc.Items[1].sk)
      assert.are.same({ N = "42" }, doc.Items[1].n)
    end)

    it("reads GetRecords-shaped bodies: NewImage, OldImage and Keys of each record", function()
      local body = [[{"NextShardIterator":"it","Records":[
        {"eventID":"1","eventName":"INSERT","dynamodb":{"SequenceNumber":"100","SizeBytes":40,
          "Keys":{"pk":{"S":"a"},"sk":{"S":"1"}},"NewImage":{"pk":{"S":"a"},"sk":{"S":"1"},"n":{"N":"7"}},
          "StreamViewType":"NEW_AND_OLD_IMAGES"}},
        {"eventID":"2","eventName":"MODIFY","dynamodb":{"SequenceNumber":"101",
          "Keys":{"pk":{"S":"a"},"sk":{"S":"1"}},"OldImage":{"pk":{"S":"a"},"sk":{"S":"1"},"n":{"N":"7"}},
          "NewImage":{"pk":{"S":"a"},"sk":{"S":"1"},"n":{"N":"8"}}}}]}]]
      local doc = assert(core.json_decode(body, true))
      assert.are.equal("it", doc.NextShardIterator)
      local first, second = doc.Records[1].dynamodb, doc.Records[2].dynamodb
      assert.are.equal("100", first.SequenceNumber)
      assert.are.equal(40, first.SizeBytes)
      assert.are.same({ pk = "a", sk = "1" }, first.Keys)
      assert.are.same({ pk = "a", sk = "1", n = 7 }, first.NewImage)
      assert.are.same({ pk = "a", sk = "1", n = 7 }, second.OldImage)
      assert.are.same({ pk = "a", sk = "1", n = 8 }, second.NewImage)
    end)

    it("reads every attribute map member DynamoDB sends", function()
      for _, name in ipairs({ "Item", "Attributes", "LastEvaluatedKey", "ExclusiveStartKey", "Key",
                              "NewImage", "OldImage", "Keys" }) do
        local doc = assert(core.json_decode(('{"%s":{"a":{"S":"x"}}}'):format(name), true))
        assert.are.same({ a = "x" }, doc[name], name)
      end
      local batch = assert(core.json_decode('{"UnprocessedKeys":{"t":{"Keys":[{"k":{"N":"1"}}]}}}', true))
      assert.are.same({ { k = 1 } }, batch.UnprocessedKeys.t.Keys)
    end)

    it("keeps every N as its decimal text with numbers = \"string\"", function()
      local doc = assert(core.json_decode(query, true, "string"))
      assert.are.equal("42", doc.Items[1].n)
      assert.are.equal("0.5", doc.Items[1].f)
      assert.are.equal(2, doc.Count, "plain JSON numbers stay numbers")
      local set = assert(decode_item_value('{"NS":["1","2.50"]}'))
      assert.are.same({ 1, 2.5 }, { math.min(set[1], set[2]), math.max(set[1], set[2]) })
      local texts = assert(core.json_decode('{"Item":{"v":{"NS":["1","2.50"]}}}', true, "string")).Item.v
      assert.are.same({ "1", "2.50" }, sorted_strings(texts))
      assert.has_error(function() core.json_decode("{}", true, "decimal") end)
    end)

    if has_integers then
      it("reads integers up to 2^63-1 and down to -2^63 exactly (Lua 5.4)", function()
        assert.are.equal(math.maxinteger, decode_item_value('{"N":"9223372036854775807"}'))
        assert.are.equal(math.mininteger, decode_item_value('{"N":"-9223372036854775808"}'))
        assert.are.equal("integer", math.type(decode_item_value('{"N":"9007199254740993"}')))
        assert.are.equal(9007199254740993, decode_item_value('{"N":"9007199254740993"}'))
        assert.are.equal("float", math.type(decode_item_value('{"N":"9223372036854775808"}')))
        assert.are.equal("float", math.type(decode_item_value('{"N":"1.0"}')))
        assert.are.equal(math.maxinteger, core.unmarshal({ N = "9223372036854775807" }))
      end)
    else
      it("reads integers a double cannot hold as their text (LuaJIT)", function()
        assert.are.equal(9007199254740992, decode_item_value('{"N":"9007199254740992"}'))
        assert.are.equal("9007199254740993", decode_item_value('{"N":"9007199254740993"}'))
        assert.are.equal("9223372036854775807", decode_item_value('{"N":"9223372036854775807"}'))
        assert.are.equal("-9223372036854775808", decode_item_value('{"N":"-9223372036854775808"}'))
        assert.are.equal("9223372036854775807", core.unmarshal({ N = "9223372036854775807" }))
      end)
    end

    it("reads floats bit-identical", function()
      for _, x in ipairs({ 0.1, 1 / 3, 1e125, 1e-130, math.pi }) do
        assert.are.equal(x, decode_item_value(core.json_encode(core.marshal(x))))
      end
    end)

    local function refused(av_json)
      local v, code, message = decode_item_value(av_json)
      assert.is_nil(v, av_json)
      assert.are.equal("invalid_json", code)
      return message
    end

    it("refuses malformed AttributeValues as invalid_json", function()
      assert.matches("no type descriptor", refused("{}"))
      assert.matches('unknown AttributeValue type descriptor "FOO"', refused('{"FOO":"bar"}'))
      assert.matches("several type descriptors", refused('{"S":"a","N":"1"}'))
      assert.matches("S must hold a string", refused('{"S":1}'))
      assert.matches("N must hold a string", refused('{"N":1}'))
      assert.matches("not a DynamoDB number", refused('{"N":"abc"}'))
      assert.matches("not valid base64", refused('{"B":"abc"}'))
      assert.matches("BOOL must hold a boolean", refused('{"BOOL":"true"}'))
      assert.matches("NULL must hold true", refused('{"NULL":false}'))
      assert.matches("M must hold an object", refused('{"M":[]}'))
      assert.matches("L must hold an array", refused('{"L":{}}'))
      assert.matches("expected an AttributeValue object", refused('{"L":["x"]}'))
      assert.matches("members of SS must be strings", refused('{"SS":[1]}'))
      assert.matches("SS is empty", refused('{"SS":[]}'))
      assert.matches("NS holds a duplicate", refused('{"NS":["1","1.0"]}'))
      assert.matches("BS holds a duplicate", refused('{"BS":["eA==","eA=="]}'))
      assert.matches("expected an AttributeValue object", refused('"x"'))
      local v, code = core.json_decode('{"Items":[1]}', true)
      assert.is_nil(v)
      assert.are.equal("invalid_json", code)
      v, code = core.json_decode('{"Item":"x"}', true)
      assert.is_nil(v)
      assert.are.equal("invalid_json", code)
    end)
  end)

  describe("marshal and unmarshal", function()
    it("build AttributeValue tables with lists and sets marked as arrays", function()
      assert.are.same({ S = "x" }, core.marshal("x"))
      assert.are.same({ M = { Name = { S = "Joe" } } }, core.marshal({ Name = "Joe" }))
      assert.are.same({ NULL = true }, core.marshal(core.null))
      assert.are.same({ B = "aGk=" }, core.marshal(core.binary("hi")))
      local list = core.marshal({ 1, "a" })
      assert.is_true(core.is_array(list.L))
      assert.are.same({ { N = "1" }, { S = "a" } }, list.L)
      local set = core.marshal(core.set({ "a", "b" }))
      assert.is_true(core.is_array(set.SS))
      assert.are.same({ "a", "b" }, sorted_strings(set.SS))
      assert.is_true(core.is_array(core.marshal(core.array()).L))
      assert.are.same({ M = {} }, core.marshal({}))
    end)

    it("marshal_item and unmarshal_item work on whole items", function()
      local item = core.marshal_item({ pk = "a", n = 2, ok = true })
      assert.are.same({ pk = { S = "a" }, n = { N = "2" }, ok = { BOOL = true } }, item)
      assert.are.same({ pk = "a", n = 2, ok = true }, core.unmarshal_item(item))
      assert.are.same({ pk = "a", n = "2", ok = true }, core.unmarshal_item(item, "string"))
    end)

    it("unmarshal reads stream records that arrive as Lua tables (Lambda's shape)", function()
      -- what a JSON library without array marks gives for an event record
      local image = { pk = { S = "a" }, l = { L = {} }, m = { M = {} }, ns = { NS = { "1", "2" } },
                      nested = { L = { { M = { x = { N = "1.5" } } } } } }
      local plain = assert(marshal.unmarshal_item(image))
      assert.are.equal("a", plain.pk)
      assert.is_true(core.is_array(plain.l))
      assert.are.same({}, plain.m)
      assert.is_true(core.is_set(plain.ns))
      assert.are.equal(1.5, plain.nested[1].x)
    end)

    it("unmarshal returns invalid_argument for malformed AttributeValues, naming where", function()
      local function refused(av)
        local v, code, message = core.unmarshal(av)
        assert.is_nil(v)
        assert.are.equal("invalid_argument", code)
        return message
      end
      assert.matches("must be a table", refused("x"))
      assert.matches("no type descriptor", refused({}))
      assert.matches("several type descriptors", refused({ S = "a", N = "1" }))
      assert.matches('unknown AttributeValue type descriptor "FOO"', refused({ FOO = "bar" }))
      assert.matches("S cannot hold a number", refused({ S = 1 }))
      assert.matches("not valid UTF%-8", refused({ S = "\255" }))
      assert.matches("NULL must be true", refused({ NULL = false }))
      assert.matches("not valid base64 at value%.b$", refused({ M = { b = { B = "!!" } } }))
      assert.matches('"X" at value%[2%]$', refused({ L = { { S = "a" }, { X = "y" } } }))
      assert.matches("expected a list", refused({ L = { a = { S = "x" } } }))
      assert.matches("BS holds a duplicate", refused({ BS = { "eA==", "eA==" } }))
      local v, err = marshal.unmarshal({ FOO = "bar" })
      assert.is_nil(v)
      assert.are.equal("invalid_argument", err.code)
      assert.is_nil(marshal.unmarshal_item({ a = {} }))
    end)
  end)

  describe("refused values", function()
    -- every way a value can be refused, each checked through marshal,
    -- json_encode inside an attribute map, and item_size
    local cases = {
      { "NaN", function() return 0 / 0 end, "NaN cannot be stored in DynamoDB" },
      { "infinity", function() return math.huge end, "infinity cannot be stored" },
      { "-infinity", function() return -math.huge end, "infinity cannot be stored" },
      { "a number below 1E-130", function() return 1e-131 end, "too close to zero" },
      { "a number of 1E+126", function() return 1e126 end, "too large for DynamoDB" },
      { "bytes in a string", function() return "\255\254" end, "not valid UTF%-8 %(use dynlog%.binary for bytes%)" },
      { "a function", function() return print end, "a function cannot be stored" },
      { "a userdata", function() return io.stdout end, "a userdata cannot be stored" },
      { "a thread", function() return coroutine.create(print) end, "a thread cannot be stored" },
      { "mixed keys", function() return { 1, x = 2 } end, "mixes string keys and array positions" },
      { "a boolean key", function() return { [true] = 1 } end, "neither a string nor a number" },
      { "holes", function() return { [1] = 1, [3] = 3 } end, "holes" },
      { "an empty set", function() return core.set({}) end, "set is empty" },
      { "a mixed set", function() return core.set({ "a", 1 }) end, "set mixes member types" },
      { "a duplicate in a set", function() return core.set({ "a", "a" }) end, "duplicate" },
      { "an equal number twice in a set", function() return core.set({ 1, 1.0 }) end, "duplicate" },
      { "a table in a set", function() return core.set({ {} }) end, "set members must be" },
      { "an empty attribute name", function() return { [""] = 1 } end, "attribute name is empty" },
      { "an attribute name in bytes", function() return { ["\255"] = 1 } end, "attribute name is not valid UTF%-8" },
      { "a binary holding a number", function() return setmetatable({ value = 1 }, getmetatable(core.binary(""))) end,
        "binary's value must be a string" },
    }

    for _, case in ipairs(cases) do
      local what, make, message = case[1], case[2], case[3]
      it(("refuses %s, naming the path"):format(what), function()
        local value = { scores = { 1, make() } }
        assert.matches(message .. ".* at value%.scores%[2%]", raised(core.marshal, value))
        assert.matches(message .. ".* at Item%.payload%.scores%[2%]",
          raised(core.json_encode, { Item = core.attribute_map({ payload = value }) }))
        assert.matches(message .. ".* at Item%.payload%.scores%[2%]", raised(core.item_size, { payload = value }))
        assert.matches(message .. ".* at Item%.payload%.scores%[2%]", raised(core.marshal_item, { payload = value }))
      end)
    end

    it("names the list position of a bad value", function()
      local request = { TableName = "t", Item = core.attribute_map({ payload = { scores = { 1, 0 / 0 } } }) }
      assert.matches("NaN cannot be stored in DynamoDB at Item%.payload%.scores%[2%]$",
        raised(core.json_encode, request))
      assert.matches("duplicate member at Item%.tags%[3%]$",
        raised(core.json_encode, { Item = core.attribute_map({ tags = core.set({ "a", "b", "a" }) }) }))
    end)

    it("refuses nil and non-string attribute names at the top of an item", function()
      assert.matches("nil cannot be stored", raised(core.marshal, nil))
      assert.matches("attribute names must be strings", raised(core.json_encode, core.attribute_map({ 1, 2 })))
      assert.matches("attribute names must be strings", raised(core.marshal_item, { 1 }))
    end)

    it("allows 32 levels of nesting and refuses 33, which also stops cycles", function()
      assert.is_table(core.marshal(nested_lists(32, 1)))
      assert.is_string(encode_item_value(nested_lists(32, 1)))
      assert.is_number(core.item_size({ v = nested_lists(32, 1) }))
      assert.matches("nested deeper than 32 levels", raised(core.marshal, nested_lists(33, 1)))
      assert.matches("nested deeper than 32 levels", raised(encode_item_value, nested_lists(33, 1)))
      assert.matches("nested deeper than 32 levels", raised(core.item_size, { v = nested_lists(33, 1) }))
      local cycle = {}
      cycle.self = cycle
      assert.matches("a cycle", raised(encode_item_value, cycle))
      assert.matches("a cycle", raised(core.marshal, cycle))
    end)

    it("keeps json_encode usable after a refusal", function()
      raised(encode_item_value, 0 / 0)
      assert.are.equal('{"Item":{"v":{"N":"1"}}}', encode_item_value(1))
    end)
  end)

  describe("item_size", function()
    -- computed by hand from the Developer Guide's rules
    it("counts names and scalar values", function()
      -- "pk"(2) + "abc"(3) = 5; "ok"(2) + BOOL(1) = 3; "z"(1) + NULL(1) = 2; "b"(1) + 3 raw bytes = 4
      assert.are.equal(14, core.item_size({ pk = "abc", ok = true, z = core.null, b = core.binary("\0\1\2") }))
      -- UTF-8 bytes, not characters: "é" is 2 bytes, "名前" 6
      assert.are.equal(1 + 2, core.item_size({ a = "é" }))
      assert.are.equal(6 + 1, core.item_size({ ["名前"] = "x" }))
    end)

    it("counts numbers as digit pairs plus one byte, negative ones plus one more", function()
      -- 35: one pair + 1 = 2; 123.45: pairs 01|23|45 + 1 = 4; -7: 1 + 1 + 1 = 3; 0: 1
      assert.are.equal(1 + 2, core.item_size({ n = 35 }))
      assert.are.equal(1 + 4, core.item_size({ n = 123.45 }))
      assert.are.equal(1 + 3, core.item_size({ n = -7 }))
      assert.are.equal(1 + 1, core.item_size({ n = 0 }))
      -- 1000000 is 1 significant digit: one pair + 1 = 2
      assert.are.equal(1 + 2, core.item_size({ n = 1000000 }))
    end)

    it("adds 3 bytes per list or map and 1 per element", function()
      -- l: "l"(1) + 3 + (1 + "x"(1)) + (1 + N 5 (2)) = 9
      assert.are.equal(9, core.item_size({ l = { "x", 5 } }))
      -- m: "m"(1) + 3 + (1 + "ab"(2) + "cd"(2)) = 9
      assert.are.equal(9, core.item_size({ m = { ab = "cd" } }))
      -- empty list and map: name + 3
      assert.are.equal(4, core.item_size({ e = {} }))
      assert.are.equal(4, core.item_size({ e = core.array() }))
    end)

    it("counts sets as the sum of their members", function()
      -- "s"(1) + "ab"(2) + "c"(1) = 4; "n"(1) + 1 (2) + 22 (2) = 5; "b"(1) + 2 + 1 bytes = 4
      assert.are.equal(4, core.item_size({ s = core.set({ "ab", "c" }) }))
      assert.are.equal(5, core.item_size({ n = core.set({ 1, 22 }) }))
      assert.are.equal(4, core.item_size({ b = core.set({ core.binary("xy"), core.binary("z") }) }))
    end)

    it("sizes a whole event item", function()
      local item = { pk = "orders#42#stream", sk = "01ARZ3NDEKTSV4RRFFQ69G5FAV", type = "created",
                     payload = { id = "42", total = 19.99, lines = { "a" } } }
      -- pk 2+16, sk 2+26, type 4+7, payload 7 + 3 + (1+2+2) + (1+5+3) + (1+5+(3+1+1)) = 35
      assert.are.equal(18 + 28 + 11 + 35, core.item_size(item))
    end)
  end)

  describe("valid_number", function()
    it("accepts decimal syntax within DynamoDB's limits", function()
      for _, s in ipairs({ "0", "-0", "1", "-1.5", "1e5", "1E-5", "0.000", "00012", "1.50E+3" }) do
        assert.is_true(core.valid_number(s), s)
      end
    end)

    it("refuses other syntax", function()
      for _, s in ipairs({ "", "-", "abc", "1e", "--1", "1.2.3", " 1", "1 ", "0x10", "inf", "NaN", "1e+", "." }) do
        local ok, code, message = core.valid_number(s)
        assert.is_nil(ok, s)
        assert.are.equal("invalid_argument", code)
        assert.matches("not a DynamoDB number", message)
      end
      local ok, err = marshal.valid_number("1E+126")
      assert.is_nil(ok)
      assert.are.equal("invalid_argument", err.code)
    end)

    it("counts significant digits, not zeros", function()
      assert.is_true(core.valid_number("1" .. string.rep("0", 100)))
      assert.is_true(core.valid_number("0.00000" .. string.rep("9", 38) .. "000"))
      assert.is_nil(core.valid_number("0.00000" .. string.rep("9", 39)))
      assert.is_nil(core.valid_number("1e99999999999999999999999"))
      assert.is_true(core.valid_number("0e99999999999999999999999"))
    end)
  end)

  describe("value types", function()
    it("binary wraps bytes, prints its size and compares by value", function()
      local b = core.binary("\0abc")
      assert.is_true(core.is_binary(b))
      assert.are.equal("\0abc", b.value)
      assert.are.equal("binary(4 bytes)", tostring(b))
      assert.is_true(b == core.binary("\0abc"))
      assert.is_false(b == core.binary("abc"))
      assert.is_false(core.is_binary("abc"))
      assert.has_error(function() core.binary(1) end)
    end)

    it("set, attribute_map and array mark their table and return it", function()
      local t = { "a" }
      assert.are.equal(t, core.set(t))
      assert.is_true(core.is_set(t))
      local m = {}
      assert.are.equal(m, core.attribute_map(m))
      assert.is_true(core.is_attribute_map(m))
      assert.is_true(core.is_attribute_map(core.attribute_map()))
      assert.is_false(core.is_set({}))
      assert.is_true(core.is_array(core.array(nil)))
    end)

    it("number keeps a number as its exact text, for N and for JSON", function()
      local n = core.number("+0012345678901234567890.50")
      assert.is_true(core.is_number(n))
      assert.is_false(core.is_number("1"))
      assert.are.equal("12345678901234567890.50", n.text, "JSON's form: no sign, no leading zeros")
      assert.are.equal("12345678901234567890.50", tostring(n))
      assert.is_true(n == core.number("12345678901234567890.5"), "the same number")
      assert.is_false(n == core.number("12345678901234567890.51"))
      assert.are.equal("0.5", core.number(".5").text)
      assert.are.equal("5", core.number("5.").text)
      assert.are.same({ N = "12345678901234567890.50" }, core.marshal(n))
      local big = core.number("99999999999999999999")
      assert.are.same({ NS = { "99999999999999999999" } }, core.marshal(core.set{ big }))
      assert.are.equal('{"a":123456789012345678901234567890123456.78}',
        core.json_encode({ a = core.number("123456789012345678901234567890123456.78") }))
      assert.are.equal('[1]', core.json_encode({ core.number("1") }))
      assert.are.equal('{"a":{"N":"-1E+125"}}', core.json_encode(core.attribute_map({ a = core.number("-1E+125") })))
      -- 1 byte of name, 19 significant digits: 10 pairs and 1 byte
      assert.are.equal(12, core.item_size({ a = core.number("12345678901234567890") }))
      assert.has_error(function() core.number("1e200") end)
      assert.has_error(function() core.number(5) end)
      n.text = "bad"
      assert.has_error(function() core.json_encode({ n }) end)
      assert.has_error(function() core.marshal(n) end)
    end)

    it("numbers = \"exact\" gives a Lua number only when it holds the N exactly", function()
      local function exact(text) return assert(core.unmarshal({ N = text }, "exact")) end
      for _, text in ipairs({ "1", "-42", "1.5", "19.99", "0.1", "1E-130", "9007199254740992" }) do
        assert.are.equal("number", type(exact(text)), text)
        assert.are.equal(tonumber(text), exact(text), text)
      end
      for _, text in ipairs({ "12345678901234567890123", "0.1000000000000000055511151231257827",
                              "9.9999999999999999999999999999999999999E+125", "123456789.123456789123" }) do
        assert.is_true(core.is_number(exact(text)), text)
        assert.is_true(core.number(text) == exact(text), text)
      end
      -- 2^53 + 1: a Lua 5.4 integer, but no double holds it.
      if has_integers then
        assert.are.equal(9007199254740993, exact("9007199254740993"))
      else
        assert.are.equal("9007199254740993", exact("9007199254740993").text)
      end
      local item = assert(core.json_decode('{"Item":{"a":{"N":"123456789012345678901234567890"},'
        .. '"b":{"NS":["2.5","99999999999999999999"]}}}', true, "exact")).Item
      assert.are.equal("123456789012345678901234567890", item.a.text)
      assert.are.equal('{"N":"123456789012345678901234567890"}', core.json_encode(core.marshal(item.a)))
      assert.has_error(function() core.unmarshal({ N = "1" }, "decimal") end)
    end)

    it("the Lua module exports the same functions", function()
      for _, name in ipairs({ "marshal", "marshal_item", "binary", "set", "null", "array",
                              "attribute_map", "item_size", "number", "is_number" }) do
        assert.are.equal(core[name], marshal[name], name)
      end
      assert.is_function(marshal.unmarshal)
      assert.is_function(marshal.unmarshal_item)
    end)
  end)
end)
