local json = require "dynlog.json"

-- Lua 5.4 has 64-bit integers; LuaJIT holds every number in a double.
local has_integers = math.type ~= nil

describe("dynlog.json", function()
  describe("decode", function()
    it("builds Lua values, with null as json.null and arrays marked", function()
      local v = assert(json.decode('{"a":[1,2,{"x":null}],"s":"\\u00e9\\ud83d\\ude00","t":true,"f":false}'))
      assert.are.equal(json.null, v.a[3].x)
      assert.are.equal("é😀", v.s)
      assert.is_true(v.t)
      assert.is_false(v.f)
      assert.is_true(json.is_array(v.a))
      assert.is_false(json.is_array(v))
    end)

    it("reads floats bit-identical", function()
      local v = assert(json.decode('[0.1,1e300,-0.0,5e-324,3.141592653589793]'))
      assert.are.same({ 0.1, 1e300, -0.0, 5e-324, math.pi }, v)
      assert.are.equal(-math.huge, 1 / v[3], "negative zero keeps its sign")
    end)

    if has_integers then
      it("keeps integers up to 2^63-1 exact (Lua 5.4)", function()
        local v = assert(json.decode('[9223372036854775807,-9223372036854775808,9007199254740993]'))
        assert.are.equal(math.maxinteger, v[1])
        assert.are.equal(math.mininteger, v[2])
        assert.are.equal(9007199254740993, v[3])
        assert.are.equal("integer", math.type(v[1]))
      end)

      it("reads integers beyond 64 bits as floats (Lua 5.4)", function()
        local v = assert(json.decode('123456789012345678901234'))
        assert.are.equal("float", math.type(v))
        assert.are.equal(1.2345678901234568e+23, v)
      end)
    else
      it("returns integers a double cannot hold exactly as strings (LuaJIT)", function()
        local v = assert(json.decode(
          '[9007199254740992,9007199254740993,-9223372036854775808,123456789012345678901234]'))
        assert.are.equal(9007199254740992, v[1])
        assert.are.same({ "9007199254740993", "-9223372036854775808", "123456789012345678901234" },
          { v[2], v[3], v[4] })
      end)
    end

    it("returns invalid_json for truncated text, trailing garbage, bad UTF-8 and empty input", function()
      for _, text in ipairs({ '{"a":', '{"a":1} x', '"\255"', "", "   ", "nul", "{'a':1}" }) do
        local v, err = json.decode(text)
        assert.is_nil(v)
        assert.are.equal("invalid_json", err.code)
        assert.is_string(err.message)
        assert.is_nil(err.message:find("\n"), "message is one line")
      end
    end)

    it("refuses nesting deeper than 1000 levels without crashing", function()
      assert.is_truthy(json.decode(string.rep("[", 1000) .. string.rep("]", 1000)))
      local v, err = json.decode(string.rep("[", 1001) .. string.rep("]", 1001))
      assert.is_nil(v)
      assert.matches("deeper than 1000", err.message)
    end)

    it("rejects non-string input as a programming error", function()
      assert.has_error(function() json.decode({}) end)
    end)

    it("reads short decimals exactly as tonumber (strtod) does, in plain JSON and in N values", function()
      local core = require "dynlog.core"
      local seed = 12345
      local function rand(n) -- a small LCG: the same numbers on every run and Lua
        seed = (seed * 1103515245 + 12345) % 2147483648
        return seed % n
      end
      local texts = { "0.1", "0.3", "-0.0", "0.0", "1.0", "2.5e-7", "123456789012345", "-123456789012345",
        "1234567890.12345", "0.000000000000001", "999999999999999", "1.7976931348623157",
        "0.1000000000000001", "42", "-7", "0", "-0" }
      for _ = 1, 3000 do
        local int, frac = tostring(rand(1000000000)), tostring(rand(1000000))
        local sign = rand(2) == 0 and "-" or ""
        texts[#texts + 1] = sign .. int:sub(1, 1 + rand(9)) .. "." .. ("0"):rep(rand(4)) .. frac:sub(1, 1 + rand(6))
      end
      for _, text in ipairs(texts) do
        local want = tonumber(text)
        local plain = assert(json.decode("[" .. text .. "]"))[1]
        local av = assert(core.json_decode('{"Item":{"n":{"N":"' .. text .. '"}}}', true)).Item.n
        for _, got in ipairs({ plain, av }) do
          assert.are.equal(want, got, text)
          if text:find(".", 1, true) then -- "-0" is the integer 0
            assert.are.equal(1 / want, 1 / got, text .. " (sign of zero)")
          end
          if has_integers then assert.are.equal(math.type(want), math.type(got), text) end
        end
      end
      -- N values may have forms JSON numbers may not
      local item = assert(core.json_decode('{"Item":{"a":{"N":"+5"},"b":{"N":"5."},"c":{"N":".5"},'
        .. '"d":{"N":"007"},"e":{"N":"-.25"}}}', true)).Item
      assert.are.same({ a = 5, b = 5.0, c = 0.5, d = 7, e = -0.25 }, item)
      if has_integers then
        assert.are.same({ "integer", "float", "float", "integer", "float" },
          { math.type(item.a), math.type(item.b), math.type(item.c), math.type(item.d), math.type(item.e) })
      end
    end)

    it("decodes siblings of any size, whatever the size of the ones before", function()
      local text = '[{"a":1,"b":2,"c":3},{"x":1},{},{"p":1,"q":2,"r":3,"s":4,"t":5,"u":6,"v":7,"w":8,"y":9},'
        .. '[1,2,3,4,5,6,7,8,9,10],[1],[],[1,2,3]]'
      for _ = 1, 3 do -- later documents start from the sizes of earlier ones
        local v = assert(json.decode(text))
        assert.are.same({ { a = 1, b = 2, c = 3 }, { x = 1 }, {}, { p = 1, q = 2, r = 3, s = 4, t = 5, u = 6, v = 7,
          w = 8, y = 9 }, { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, { 1 }, {}, { 1, 2, 3 } }, v)
        assert.are.equal(3, #v[8])
      end
    end)

    it("decodes after a failed decode as before it", function()
      local good = '{"a":{"b":[1,"x",{"c":true}]}}'
      for _, bad in ipairs({ '{"a":{"b":[1,', '{"a":{"b":[1,"\255"]}}', '[1,2', '{"a"' }) do
        assert.is_nil(json.decode(bad))
        assert.are.same({ a = { b = { 1, "x", { c = true } } } }, json.decode(good))
      end
    end)

    it("decodes in a finalizer that the collector runs in the middle of a decode", function()
      local core = require "dynlog.core"
      local in_decode, during, results = false, 0, {}
      local function on_gc()
        if in_decode then during = during + 1 end
        results[#results + 1] = core.json_decode('{"k":[1,2,{"z":"inner"}]}')
      end
      local newproxy = rawget(_G, "newproxy") -- LuaJIT: tables have no __gc
      local big = "[" .. string.rep('{"a":"aaaa","b":[1,2,3],"c":{"d":"e"}},', 2000) .. "1]"
      collectgarbage("collect")
      -- A collector that starts a cycle at once and does much work per step
      -- (1000: Lua 5.4 keeps the step multiplier in a byte, in fourths);
      -- the larger the heap the other specs left, the more decodes a cycle
      -- takes: decode until a finalizer has run during one.
      local pause = collectgarbage("setpause", 0)
      local stepmul = collectgarbage("setstepmul", 1000)
      for _ = 1, 2000 do
        if during > 0 then break end
        for _ = 1, 50 do
          if newproxy then
            local p = newproxy(true)
            getmetatable(p).__gc = on_gc
          else
            setmetatable({}, { __gc = on_gc })
          end
        end
        in_decode = true
        local v = core.json_decode(big)
        in_decode = false
        assert.are.equal(2001, #v)
        assert.are.equal("e", v[2000].c.d)
      end
      collectgarbage("setpause", pause)
      collectgarbage("setstepmul", stepmul)
      collectgarbage("collect")
      assert.is_true(during > 0, "no finalizer ran during a decode")
      for _, r in ipairs(results) do assert.are.same({ k = { 1, 2, { z = "inner" } } }, r) end
    end)
  end)

  describe("strictness found by fuzzing", function()
    local core = require "dynlog.core"
    it("keeps the sign of -0.0 through encode and decode", function()
      local zero = 0.0
      local negative_zero = -zero -- computed: LuaJIT folds the literal -0.0 to 0
      assert.are.equal("-0.0", core.json_encode(negative_zero))
      assert.are.equal(-math.huge, 1 / core.json_decode(core.json_encode(negative_zero)))
    end)
    it("refuses overlong and surrogate UTF-8 in strings and member names, as encode does", function()
      for _, text in ipairs({ '"\192\128"', '"\237\160\128"', '{"\192\128":1}', '["ok","\255"]' }) do
        local v, code, message = core.json_decode(text)
        assert.is_nil(v, text)
        assert.are.equal("invalid_json", code)
        assert.matches("not valid UTF%-8", message)
        assert.is_false(core.json_is_object(text), text)
      end
      assert.are.equal("é", core.json_decode('"\\u00e9"'))
    end)
  end)

  describe("core.json_is_object", function()
    local is_object = require("dynlog.core").json_is_object
    it("accepts one JSON object, whitespace around it allowed", function()
      assert.is_true(is_object('{"a":[1,{"b":null}],"c":"\\u00e9"}'))
      assert.is_true(is_object(" {} \n"))
      assert.is_true(is_object(string.rep('{"a":', 5000) .. "1" .. string.rep("}", 5000)))
    end)
    it("refuses lists, scalars, invalid and trailing text, and bad UTF-8", function()
      for _, text in ipairs({ "[1]", "1", '"s"', "", "{", '{"a":1}x', '{"a":1}{}', '{"a":"\255"}', "{'a':1}" }) do
        local ok, why = is_object(text)
        assert.is_false(ok, text)
        assert.is_string(why)
      end
      assert.has_error(function() is_object(nil) end)
    end)
  end)

  describe("encode", function()
    it("round-trips nested values", function()
      local value = { a = { 1, 2, { b = "c" } }, n = json.null, yes = true, s = "x\0y" }
      local back = assert(json.decode(json.encode(value)))
      assert.are.same({ 1, 2, { b = "c" } }, back.a)
      assert.are.equal(json.null, back.n)
      assert.are.equal("x\0y", back.s)
    end)

    it("writes an empty table as {} and a marked one as []", function()
      assert.are.equal("{}", json.encode({}))
      assert.are.equal("[]", json.encode(json.array()))
      assert.are.equal("[]", json.encode(json.array({})))
      assert.are.equal("[[]]", json.encode(json.decode("[[]]")))
    end)

    it("writes floats with the fewest digits that read back identical", function()
      assert.are.equal("0.1", json.encode(0.1))
      assert.are.equal("[1e+300,0.30000000000000004]", json.encode({ 1e300, 0.1 + 0.2 }))
      if has_integers then
        assert.are.equal("9223372036854775807", json.encode(math.maxinteger))
      end
      assert.are.equal("9007199254740992", json.encode(2 ^ 53))
      for _, x in ipairs({ math.pi, 1 / 3, 2 ^ 60 + 0.0, -1.5e-310, 5e-324, 1.7976931348623157e308 }) do
        assert.are.equal(x, json.decode(json.encode(x)))
      end
    end)

    it("does not escape the solidus", function()
      assert.are.equal('"a/b"', json.encode("a/b"))
    end)

    local function encode_error(value)
      local ok, err = pcall(json.encode, value)
      assert.is_false(ok)
      return err
    end

    it("names the path of a value JSON cannot hold", function()
      assert.matches("NaN and infinity cannot be encoded at value%.a%[2%]", encode_error({ a = { 1, 0 / 0 } }))
      assert.matches("NaN and infinity", encode_error(math.huge))
      assert.matches("cannot encode a function at value%.f", encode_error({ f = print }))
      assert.matches("cannot encode a userdata at value%.u", encode_error({ u = io.stdout }))
      assert.matches("not valid UTF%-8 at value%.s", encode_error({ s = "\255" }))
    end)

    it("refuses mixed, sparse and non-string-keyed tables", function()
      assert.matches("mixes string keys", encode_error({ 1, 2, x = 3 }))
      assert.matches("holes", encode_error({ [1] = 1, [3] = 3 }))
      assert.matches("not a positive integer", encode_error({ [1.5] = 1 }))
      assert.matches("neither a string nor a number", encode_error({ [true] = 1 }))
    end)

    it("stops on cycles with an error instead of recursing forever", function()
      local t = {}
      t.self = t
      assert.matches("a cycle", encode_error(t))
    end)
  end)

  -- The encoder that does not raise, for values that are input (a request's
  -- parameters) rather than a programming error, as cjson.safe does.
  describe("core.json_encode_safe", function()
    local core = require "dynlog.core"
    local encode_safe = core.json_encode_safe

    it("writes what json_encode writes", function()
      local big = {}
      for i = 1, 5000 do big[i] = ("%d:%s"):format(i, ("x"):rep(50)) end
      for _, value in ipairs({ 1, "é", json.null, {}, json.array(), { a = { 1, 2.5, { b = true } } }, big,
                               { Item = core.attribute_map({ n = core.number("1.50"), s = core.set({ "a" }),
                                                              b = core.binary("\0\1") }) } }) do
        local text, code, message = encode_safe(value)
        assert.are.equal(json.encode(value), text)
        assert.is_nil(code)
        assert.is_nil(message)
      end
    end)

    it("returns nil, invalid_argument and json_encode's message for what it refuses", function()
      local t = {}
      t.self = t
      local huge = {}
      for i = 1, 20000 do huge[i] = ("y"):rep(100) end
      huge[20001] = print -- refused after more than a megabyte of text
      for _, value in ipairs({ { a = { 1, 0 / 0 } }, { f = print }, { s = "\255" }, { 1, 2, x = 3 }, t, huge,
                               { Item = core.attribute_map({ tags = core.set({ "a", "a" }) }) },
                               { Item = core.attribute_map({ payload = { x = 0 / 0 } }) } }) do
        local ok, raised = pcall(json.encode, value)
        assert.is_false(ok)
        local text, code, message = encode_safe(value)
        assert.is_nil(text)
        assert.are.equal("invalid_argument", code)
        assert.are.equal(raised, message)
      end
      -- and the encoder is as good as new afterwards
      assert.are.equal('{"a":[1,2]}', encode_safe({ a = { 1, 2 } }))
    end)

    it("names the path the way the client reports it", function()
      local _, _, message = encode_safe({ Item = core.attribute_map({ payload = { x = 0 / 0 } }) })
      assert.are.equal("NaN cannot be stored in DynamoDB at Item.payload.x", message)
    end)

    it("raises when called without a value, a programming error", function()
      local ok, err = pcall(encode_safe)
      assert.is_false(ok)
      assert.matches("bad argument #1", err)
    end)
  end)
end)
