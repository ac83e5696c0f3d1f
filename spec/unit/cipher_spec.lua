-- AES-256-GCM and random bytes of the C core: the primitives of crypto-shredding.
local core = require "dynlog.core"

local function unhex(s) return (s:gsub("..", function(h) return string.char(tonumber(h, 16)) end)) end

describe("dynlog.core AES-256-GCM", function()
  local key = core.random_bytes(32)

  it("opens what it sealed, with the associated data, and every seal is new", function()
    for _, text in ipairs({ "", "x", ("personal data "):rep(1000), "\0\255binary" }) do
      local sealed = core.aes_gcm_seal(key, text, "user/42")
      assert.are.equal(#text + 28, #sealed)
      assert.are.equal(text, core.aes_gcm_open(key, sealed, "user/42"))
      assert.are_not.equal(sealed, core.aes_gcm_seal(key, text, "user/42"), "a random nonce each time")
    end
    assert.are.equal("no aad", core.aes_gcm_open(key, core.aes_gcm_seal(key, "no aad")))
  end)

  it("matches the GCM specification's test cases 13 and 14 (AES-256, zero key and IV)", function()
    local zero_key, nonce = ("\0"):rep(32), ("\0"):rep(12)
    assert.are.equal("", core.aes_gcm_open(zero_key, nonce .. unhex("530f8afbc74536b9a963b4f1c4cb738b")))
    assert.are.equal(("\0"):rep(16), core.aes_gcm_open(zero_key,
      nonce .. unhex("cea7403d4d606b6e074ec5d3baf39d18") .. unhex("d0d1c8a799996bf0265b98b5d48ab919")))
  end)

  it("refuses another key, other associated data, an altered or a short text with invalid_argument", function()
    local sealed = core.aes_gcm_seal(key, "secret", "user/42")
    local function refused(...)
      local v, code, message = core.aes_gcm_open(...)
      assert.is_nil(v)
      assert.are.equal("invalid_argument", code)
      return message
    end
    assert.matches("authentication failed", refused(core.random_bytes(32), sealed, "user/42"))
    refused(key, sealed, "user/43")
    refused(key, sealed)
    for _, i in ipairs({ 1, 13, #sealed }) do
      local b = sealed:byte(i)
      refused(key, sealed:sub(1, i - 1) .. string.char((b + 1) % 256) .. sealed:sub(i + 1), "user/42")
    end
    assert.matches("shorter than a nonce and a tag", refused(key, ("x"):rep(27)))
  end)

  it("raises for a key that is not 32 bytes", function()
    assert.has_error(function() core.aes_gcm_seal("short", "x") end)
    assert.has_error(function() core.aes_gcm_open(("k"):rep(16), ("x"):rep(40)) end)
  end)

  it("gives random bytes, 1 to 1024", function()
    assert.are.equal(32, #core.random_bytes(32))
    assert.are_not.equal(core.random_bytes(16), core.random_bytes(16))
    assert.has_error(function() core.random_bytes(0) end)
    assert.has_error(function() core.random_bytes(1025) end)
  end)
end)
