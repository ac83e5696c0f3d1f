-- The ULID part of dynlog.core, checked against the vectors in
-- spec/vectors/ulid (busted runs from the repository root).
--
-- The spec also runs under LuaJIT (busted --lua=luajit
-- --cpath='buildjit/?.so'), which is the only place the fork spec can run:
-- Lua 5.4 has no fork without a C helper (see "forked child" below).
local cjson = require "cjson"
local core = require "dynlog.core"

local VECTORS_PATH = "spec/vectors/ulid/vectors.json"

local ZERO_RANDOM = ("\0"):rep(10)

local function read_vectors()
  local f = assert(io.open(VECTORS_PATH, "rb"))
  local text = f:read("*a")
  f:close()
  return cjson.decode(text)
end

-- cjson decodes every number as a float under 5.4; compare integers.
local to_integer = math.tointeger or function(x) return x end

local function to_hex(s)
  return (s:gsub(".", function(c) return ("%02X"):format(c:byte()) end))
end

local function random_part(ulid)
  local _, bytes = core.ulid_decode(ulid)
  return bytes:sub(7)
end

local function assert_invalid(input, ...)
  local value, code, message = core.ulid_decode(input)
  assert.is_nil(value, ("accepted %q"):format(input))
  assert.are.equal("invalid_argument", code)
  assert.is_string(message)
  for _, fragment in ipairs({ ... }) do
    assert.is_truthy(message:find(fragment, 1, true),
      ("message %q lacks %q"):format(message, fragment))
  end
end

describe("dynlog.core ulid", function()
  local vectors = read_vectors()

  describe("encoding", function()
    it("writes the time as the 10-character prefix (encode_time)", function()
      for _, case in ipairs(vectors.encode_time) do
        local ulid = core.ulid_encode(to_integer(case.time_ms), ZERO_RANDOM)
        assert.are.equal(case.prefix, ulid:sub(1, 10))
        assert.are.equal(case.prefix .. ("0"):rep(16), ulid)
      end
    end)

    it("raises for times outside 0 .. 2^48-1 and fractional times (encode_time_invalid)", function()
      assert.are.equal(3, #vectors.encode_time_invalid)
      for _, case in ipairs(vectors.encode_time_invalid) do
        assert.has_error(function() core.ulid_encode(case.time_ms, ZERO_RANDOM) end)
      end
      assert.error_matches(function() core.ulid_encode(100.1, ZERO_RANDOM) end, "integer")
      assert.error_matches(function() core.ulid_encode(2 ^ 48, ZERO_RANDOM) end, "2^48", 1, true)
      assert.error_matches(function() core.ulid_encode(0 / 0, ZERO_RANDOM) end, "2^48", 1, true)
      assert.has_error(function() core.ulid_encode("1000", ZERO_RANDOM) end)
    end)

    it("raises unless the random part is exactly 10 bytes", function()
      assert.error_matches(function() core.ulid_encode(0, ("\0"):rep(9)) end, "10 bytes")
      assert.error_matches(function() core.ulid_encode(0, ("\0"):rep(11)) end, "10 bytes")
      assert.has_error(function() core.ulid_encode(0) end)
    end)

    it("round-trips every decode vector", function()
      for _, case in ipairs(vectors.decode) do
        local time_ms, bytes = core.ulid_decode(case.ulid)
        assert.are.equal(case.ulid, core.ulid_encode(time_ms, bytes:sub(7)))
      end
    end)
  end)

  describe("decoding", function()
    it("returns the time, the 16 big-endian bytes and the canonical text (decode)", function()
      for _, case in ipairs(vectors.decode) do
        local time_ms, bytes, canonical = core.ulid_decode(case.ulid)
        assert.are.equal(to_integer(case.time_ms), time_ms)
        assert.are.equal(16, #bytes)
        assert.are.equal(case.value_hex, to_hex(bytes))
        assert.are.equal(case.ulid, canonical)
        assert.are.equal(case.prefix, canonical:sub(1, 10))
      end
    end)

    it("returns the time as an integer", function()
      local time_ms = core.ulid_decode("7ZZZZZZZZZZZZZZZZZZZZZZZZZ")
      if math.type then assert.are.equal("integer", math.type(time_ms)) end
      assert.are.equal(2 ^ 48 - 1, time_ms)
    end)

    it("accepts lower and mixed case and answers in upper case (decode_case_insensitive)", function()
      for _, case in ipairs(vectors.decode_case_insensitive) do
        local time_ms, bytes, canonical = core.ulid_decode(case.input)
        local want_time, want_bytes = core.ulid_decode(case.canonical)
        assert.are.equal(case.canonical, canonical)
        assert.are.equal(want_time, time_ms)
        assert.are.equal(want_bytes, bytes)
      end
    end)

    it("rejects every invalid input with nil, invalid_argument (invalid)", function()
      assert.are.equal(15, #vectors.invalid)
      for _, case in ipairs(vectors.invalid) do
        assert_invalid(case.input)
      end
    end)

    it("rejects an embedded NUL byte by length, not at the NUL", function()
      local with_nul
      for _, case in ipairs(vectors.invalid) do
        if case.input:find("\0", 1, true) then with_nul = case.input end
      end
      assert.are.equal(26, #with_nul)
      assert_invalid(with_nul, "0x00", "position 6")
    end)

    it("says what is wrong: length, character and position, overflow", function()
      assert_invalid("", "26", "got 0")
      assert_invalid("2D9RW50MA499CMAGHM6DD42DT", "26", "got 25")
      assert_invalid("2D9RW50MA499CMAGHM6DD42DTPP", "got 27")
      assert_invalid("2D9RW50[A499CMAGHM6DD42DTP", "'['", "position 8")
      assert_invalid("2D9RW50LA499CMAGHM6DD42DTP", "'L'", "position 8")
      assert_invalid("2d9rw50ua499cmaghm6dd42dtp", "'u'", "position 8")
      assert_invalid("2D9RW50MA499CMAGHM6DD42DT-", "'-'", "position 26")
      assert_invalid("8ZZZZZZZZZZZZZZZZZZZZZZZZZ", "128 bits", "'8'")
      assert_invalid("ZZZZZZZZZZZZZZZZZZZZZZZZZZ", "128 bits")
    end)

    it("does not normalise Crockford look-alikes (lenient_normalisation)", function()
      for _, case in ipairs(vectors.lenient_normalisation.cases) do
        assert_invalid(case.input)
        local _, _, canonical = core.ulid_decode(case.normalised)
        assert.are.equal(case.normalised, canonical)
      end
    end)

    it("raises for a non-string argument", function()
      assert.has_error(function() core.ulid_decode(42) end)
      assert.has_error(function() core.ulid_decode(nil) end)
      assert.has_error(function() core.ulid_decode({}) end)
    end)
  end)

  describe("incrementing", function()
    it("adds one to the random part (monotonic_increment)", function()
      for _, case in ipairs(vectors.monotonic_increment) do
        assert.are.equal(case.next, core.ulid_increment(case.previous))
      end
    end)

    it("fails with overflow instead of carrying into the time (monotonic_overflow)", function()
      for _, case in ipairs(vectors.monotonic_overflow) do
        local value, code, message = core.ulid_increment(case.previous)
        assert.is_nil(value)
        assert.are.equal("overflow", code)
        assert.is_string(message)

        local time_ms = core.ulid_decode(case.previous)
        local gen = core.ulid_generator(case.previous)
        for _, t in ipairs({ time_ms, time_ms - 1, 0 }) do
          if t >= 0 then
            local ulid, gen_code = gen:next(t, ZERO_RANDOM)
            assert.are_not.equal(case.must_not_return, ulid)
            assert.is_nil(ulid)
            assert.are.equal("overflow", gen_code)
          end
        end
      end
    end)

    -- base32_increment covers bare base32 strings, which the API does not
    -- take; the same cases run here as the random part of a ULID (the
    -- random part is exactly 16 base32 characters). "ZZZ" cannot overflow
    -- once padded, so its equivalent is a random part made only of Z.
    it("increments like a bare base32 string (base32_increment, via the random part)", function()
      local time_prefix = "0000000000"
      for _, case in ipairs(vectors.base32_increment.cases) do
        if case.output == cjson.null or case.output == nil then
          local value, code = core.ulid_increment(time_prefix .. ("Z"):rep(16))
          assert.is_nil(value)
          assert.are.equal("overflow", code)
        else
          local pad = ("0"):rep(16 - #case.input)
          assert.are.equal(time_prefix .. pad .. case.output,
            core.ulid_increment(time_prefix .. pad .. case.input))
        end
      end
    end)

    it("rejects invalid input with nil, invalid_argument", function()
      for _, case in ipairs(vectors.invalid) do
        local value, code = core.ulid_increment(case.input)
        assert.is_nil(value)
        assert.are.equal("invalid_argument", code)
      end
      assert.has_error(function() core.ulid_increment(7) end)
    end)
  end)

  describe("generator", function()
    local function y_random()
      return random_part("0000000000YYYYYYYYYYYYYYYY")
    end

    it("stays strictly increasing when the clock goes back (monotonic_sequence)", function()
      local gen = core.ulid_generator()
      local fresh = y_random()
      for _, call in ipairs(vectors.monotonic_sequence.calls) do
        assert.are.equal(call.ulid, gen:next(to_integer(call.time_ms), fresh))
      end
    end)

    it("stays strictly increasing over a jittering clock", function()
      local gen = core.ulid_generator()
      local previous = gen:next(1000000)
      for i = 1, 10000 do
        local ulid = gen:next(1000000 + i % 7 - 3 + math.floor(i / 100))
        assert.is_true(ulid > previous)
        previous = ulid
      end
    end)

    it("takes fresh CSPRNG randomness for a later millisecond", function()
      local gen = core.ulid_generator()
      local a = gen:next(5000)
      local b = gen:next(5001)
      assert.are.equal("00000004W8", a:sub(1, 10)) -- 5000 = 4*32^2 + 28*32 + 8
      assert.are.equal("00000004W9", b:sub(1, 10))
      assert.are_not.equal(random_part(a), random_part(b))
      assert.are_not.equal(ZERO_RANDOM, random_part(b))
    end)

    it("continues from a given last ULID", function()
      local gen = core.ulid_generator("01BX5ZZKBKACTAV9WEVGEMMVRY")
      local time_ms = core.ulid_decode("01BX5ZZKBKACTAV9WEVGEMMVRY")
      assert.are.equal("01BX5ZZKBKACTAV9WEVGEMMVRZ", gen:next(time_ms))
      assert.are.equal("01BX5ZZKBKACTAV9WEVGEMMVS0", gen:next(0))
      assert.are.equal("01BX5ZZKBM" .. ("Y"):rep(16), gen:next(time_ms + 1, y_random()))
    end)

    it("keeps its state after an overflow", function()
      local gen = core.ulid_generator("0000000000ZZZZZZZZZZZZZZZZ")
      assert.is_nil((gen:next(0)))
      assert.are.equal("0000000001" .. ("Y"):rep(16), gen:next(1, y_random()))
    end)

    it("uses the real clock when no time is given", function()
      local before = math.floor(core.now() * 1000) -- the ULIDs' clock (os.time() reads a coarse one)
      local ulid = core.ulid_generator():next()
      local after = math.floor(core.now() * 1000)
      local time_ms = core.ulid_decode(ulid)
      -- ±1 ms: core.now() is a double, which may round across a millisecond.
      assert.is_true(time_ms >= before - 1 and time_ms <= after + 1)
    end)

    it("has its own state, apart from core.ulid()", function()
      core.ulid()
      local gen = core.ulid_generator()
      assert.are.equal("0000000000" .. ("Y"):rep(16), gen:next(0, y_random()))
      assert.is_true(core.ulid() > "01")
    end)

    it("rejects a bad last ULID with nil, invalid_argument", function()
      local gen, code, message = core.ulid_generator("2D9RW50LA499CMAGHM6DD42DTP")
      assert.is_nil(gen)
      assert.are.equal("invalid_argument", code)
      assert.is_truthy(message:find("position 8", 1, true))
      assert.has_error(function() core.ulid_generator(12) end)
    end)

    it("raises for bad arguments to next", function()
      local gen = core.ulid_generator()
      assert.has_error(function() gen:next(-1) end)
      assert.has_error(function() gen:next(100.1) end)
      assert.has_error(function() gen:next(2 ^ 48) end)
      assert.has_error(function() gen:next(1, "short") end)
      assert.has_error(function() gen.next({}, 1) end)
    end)
  end)

  describe("ulid()", function()
    it("returns 26 canonical characters stamped with the current time", function()
      -- The same clock as the ULIDs' (os.time() may lag it by a few
      -- milliseconds: glibc reads a coarse clock there).
      local before = math.floor(core.now() * 1000)
      local ulid = core.ulid()
      local after = math.floor(core.now() * 1000)
      assert.are.equal(26, #ulid)
      local time_ms, _, canonical = core.ulid_decode(ulid)
      assert.are.equal(ulid, canonical)
      -- ±1 ms: core.now() is a double, which may round across a millisecond.
      assert.is_true(time_ms >= before - 1 and time_ms <= after + 1,
        ("time %d not within [%d, %d]"):format(time_ms, before - 1, after + 1))
    end)

    it("is strictly increasing over 1,000,000 calls", function()
      local ulid = core.ulid
      local previous = ulid()
      local bad, first_bad = 0, nil
      for _ = 1, 1000000 do
        local current = ulid()
        if #current ~= 26 or current <= previous then
          bad = bad + 1
          first_bad = first_bad or (previous .. " then " .. current)
        end
        previous = current
      end
      assert.are.equal(0, bad, first_bad)
    end)

    -- Lua 5.4 has no fork here: Debian 12's lua-posix is built for Lua
    -- 5.1-5.3 only. LuaJIT's FFI can call fork(2), so this runs under
    -- `busted --lua=luajit --cpath='buildjit/?.so'` and is pending on 5.4.
    describe("in a forked child", function()
      local has_ffi, ffi = pcall(require, "ffi")
      if has_ffi then
        pcall(ffi.cdef, [[
          int fork(void);
          void _exit(int status);
          int waitpid(int pid, int *status, int options);
        ]])
      end

      -- ULIDs from `milliseconds` consecutive clock ticks, long enough for
      -- parent and child to share milliseconds.
      local function ulids_for(milliseconds)
        local list, n, ms, ticks = {}, 0, nil, 0
        while true do
          local ulid = core.ulid()
          local prefix = ulid:sub(1, 10)
          if prefix ~= ms then
            ticks = ticks + 1
            if ticks > milliseconds then return list end
            ms = prefix
          end
          n = n + 1
          list[n] = ulid
        end
      end

      -- The child writes its generator's ULID on the first line, then the
      -- ULIDs of core.ulid().
      local function run_child(path, gen, time_ms)
        local ok = pcall(function()
          local from_gen = assert(gen:next(time_ms))
          local list = ulids_for(20)
          local f = assert(io.open(path, "wb"))
          assert(f:write(from_gen, "\n", table.concat(list, "\n")))
          assert(f:close())
        end)
        -- _exit: the child must never return into busted nor flush its buffers.
        ffi.C._exit(ok and 0 or 1)
      end

      local function child_exited_cleanly(pid)
        local status = ffi.new("int[1]")
        return ffi.C.waitpid(pid, status, 0) == pid and status[0] == 0
      end

      it("does not repeat the parent's next ULIDs, nor its generators'", function()
        if not has_ffi then
          pending("needs fork: run this spec under LuaJIT")
          return
        end
        local path = os.tmpname()
        -- Both generators now have a last ULID and there is buffered randomness.
        core.ulid()
        local gen = core.ulid_generator()
        local gen_time = core.ulid_decode(gen:next())
        local pid = ffi.C.fork()
        assert.is_true(pid >= 0, "fork failed")
        if pid == 0 then run_child(path, gen, gen_time) end
        local mine_from_gen = gen:next(gen_time)
        local mine = ulids_for(20)
        local child_ok = child_exited_cleanly(pid)

        local f = assert(io.open(path, "rb"))
        local child_from_gen = f:read("*l")
        local text = f:read("*a")
        f:close()
        os.remove(path)
        assert.is_true(child_ok, "child failed")
        assert.are_not.equal(mine_from_gen, child_from_gen)

        local parent_set, parent_ms = {}, {}
        for _, ulid in ipairs(mine) do
          parent_set[ulid] = true
          parent_ms[ulid:sub(1, 10)] = true
        end
        local child_count, shared_ms, repeats, previous = 0, {}, 0, ""
        for ulid in text:gmatch("[^\n]+") do
          child_count = child_count + 1
          assert.is_true(#ulid == 26 and ulid > previous)
          previous = ulid
          if parent_set[ulid] then repeats = repeats + 1 end
          if parent_ms[ulid:sub(1, 10)] then shared_ms[ulid:sub(1, 10)] = true end
        end
        assert.is_true(child_count > 0)
        -- Without shared milliseconds the check below would prove nothing.
        assert.is_not_nil(next(shared_ms), "parent and child shared no millisecond")
        assert.are.equal(0, repeats)
      end)
    end)
  end)
end)
