-- Replays the fuzzers' inputs through the Lua API: every file under
-- spec/fuzz/corpus/<target>/ (the seeds) and spec/fuzz/regressions/<target>/
-- (inputs that once crashed a harness or broke one of its checks; see
-- scripts/fuzz.sh). Each target's inputs go to the functions its harness
-- (spec/fuzz/fuzz_<target>.c) fuzzes, which must return a value or nil and
-- an error, never raise an unexpected error, and never crash.
local core = require "dynlog.core"
local dynlog = require "dynlog"
local pattern = require "dynlog.pattern"
local sigv4 = require "dynlog.sigv4"

local function input_files()
  local pipe = assert(io.popen("find spec/fuzz/corpus spec/fuzz/regressions -type f 2>/dev/null | sort"))
  local files = {}
  for path in pipe:lines() do
    local target = path:match("^spec/fuzz/%a+/([^/]+)/[^/]+$")
    if target then files[#files + 1] = { path = path, target = target } end
  end
  pipe:close()
  return files
end

local function read(path) return (assert(require("spec.support.run").read_file(path), path)) end

-- value, or nil, code, message: the shape of every expected failure of the core
local function assert_result(code, v, got_code, message)
  if v == nil then
    assert.are.equal(code, got_code)
    assert.is_string(message)
  end
  return v
end

-- The fuzz inputs of sigv4: flag byte, 5 time bytes, then
-- method \0 target \0 body \0 name \0 value ... (see fuzz_sigv4.c).
local TIME_MAX = 253402300800
local function sigv4_request(data)
  local flags = data:byte(1) or 0
  local t = 0
  for i = 2, 6 do t = t * 256 + (data:byte(i) or 0) end
  if #data < 6 then t = 0 end
  local fields, pos = {}, 7
  while pos <= #data + 1 do
    local nul = data:find("\0", pos, true)
    fields[#fields + 1] = data:sub(pos, (nul or #data + 1) - 1)
    if not nul then break end
    pos = nul + 1
  end
  local target = fields[2] or ""
  local headers, first_name, first_value = {}, fields[4], fields[5] or ""
  for i = 4, #fields, 2 do headers[fields[i]] = fields[i + 1] or "" end
  local url = target
  if target == "" or target:find("^[/?#]") then url = "https://example.amazonaws.com" .. target end
  local bit = function(b) return flags % (2 * b) >= b end
  local token = bit(4) and "AQoDYXdzEPT//////////wEXAMPLE" or nil
  return {
    method = fields[1] or "GET", url = url, body = fields[3] or "", headers = headers,
    region = bit(32) and first_name or "us-east-1", service = bit(32) and first_name and first_value or "dynamodb",
    credentials = { access_key_id = "AKIDEXAMPLE", secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
      session_token = token },
    time = t % TIME_MAX, normalize_path = bit(1), content_sha256_header = bit(2), sign_session_token = bit(8),
  }
end

local REPLAY = {
  json_decode = function(text)
    local v = assert_result("invalid_json", core.json_decode(text))
    assert_result("invalid_json", core.json_decode(text, true))
    assert_result("invalid_json", core.json_decode(text, true, "string"))
    local is_object, why = core.json_is_object(text)
    assert.is_boolean(is_object)
    if not is_object then assert.is_string(why) end
    if v ~= nil then pcall(core.json_encode, v) end -- it raises on what JSON cannot hold
  end,

  unmarshal = function(text)
    local v = core.json_decode(text)
    if v == nil then return end
    assert_result("invalid_argument", core.unmarshal(v))
    assert_result("invalid_argument", core.unmarshal(v, "string"))
    if type(v) == "table" then
      assert_result("invalid_argument", core.unmarshal_item(v))
      assert_result("invalid_argument", core.unmarshal_item(v, "string"))
    end
  end,

  ulid = function(text)
    local time_ms, bytes, canonical = core.ulid_decode(text)
    assert_result("invalid_argument", time_ms, bytes, canonical)
    if time_ms then
      assert.are.equal(text:upper(), canonical)
      assert.are.equal(16, #bytes)
      assert.are.equal(time_ms, dynlog.ulid_time(text))
      local next_id = assert_result("overflow", core.ulid_increment(text))
      if next_id then assert.is_true(next_id > canonical) end
    else
      local none, err = dynlog.ulid_time(text)
      assert.is_nil(none)
      assert.are.equal("invalid_argument", err.code)
    end
  end,

  sigv4 = function(data)
    local req = sigv4_request(data)
    local signer = sigv4.new_signer()
    local ok, headers, err = pcall(signer.sign, signer, req)
    if not ok then
      -- malformed requests raise, naming the field
      assert.is_truthy(tostring(headers):find("sigv4: ", 1, true), tostring(headers))
    elseif headers == nil then
      assert.is_string(err.code)
    else
      assert.is_truthy(headers.Authorization:find("^AWS4%-HMAC%-SHA256 Credential="))
    end
  end,

  pattern = function(data)
    local cut = data:find("\0", 1, true)
    local ptext, etext = data, data
    if cut then ptext, etext = data:sub(1, cut - 1), data:sub(cut + 1) end
    local p, err = pattern.compile(ptext)
    if not p then
      assert.are.equal("invalid_pattern", err.code)
      return
    end
    local event = core.json_decode(etext)
    if type(event) == "table" then
      assert.is_boolean(p:match(event))
      assert.are.equal(p:match(event), pattern.match(core.json_decode(ptext), event))
    end
  end,

  -- base64 is reached through B and BS values
  base64 = function(text)
    local b = assert_result("invalid_argument", core.unmarshal({ B = text }))
    if b ~= nil then assert.is_true(core.is_binary(b)) end
    local item = assert_result("invalid_json",
      core.json_decode('{"Item":{"b":' .. core.json_encode({ B = text }) .. '}}', true))
    if b ~= nil and item ~= nil then assert.are.equal(b.value, item.Item.b.value) end
    assert_result("invalid_argument", core.unmarshal({ BS = core.array({ text }) }))
  end,
}

describe("fuzz inputs replayed through the Lua API", function()
  local files = input_files()

  it("finds the seed corpora", function()
    assert.is_true(#files > 0)
  end)

  for _, file in ipairs(files) do
    local replay = REPLAY[file.target]
    it(file.path, function()
      assert.is_function(replay, "no replay for target " .. file.target)
      replay(read(file.path))
    end)
  end
end)
