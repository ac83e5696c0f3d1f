-- The C core comes as two modules: dynlog.core (core.so), which nginx
-- workers load, links no libcurl; dynlog.curl (curl.so), the libcurl
-- transport, is loaded only when a curl transport or multi handle is made.
-- Each case runs in a fresh interpreter (the one running the specs: lua5.4
-- or luajit, with the same module paths) and reads its /proc/self/maps.
local runner = require "spec.support.run"

local LUA = rawget(_G, "jit") and "luajit" or "lua5.4"

-- Runs code in a fresh interpreter; returns the lines it printed.
local function fresh(code)
  local prelude = [[
    local function mapped(pattern)
      for line in io.lines("/proc/self/maps") do
        if line:find(pattern) then return true end
      end
      return false
    end
  ]]
  local status, out = runner.run(LUA .. " -e " .. runner.quote(prelude .. code),
    { LUA_PATH = package.path, LUA_CPATH = package.cpath })
  assert.are.equal(0, status, out)
  return out
end

describe("dynlog.core and dynlog.curl", function()
  it("require \"dynlog.core\" maps core.so and no libcurl", function()
    local out = fresh([[
      require "dynlog.core"
      print(mapped("/dynlog/core%.so$"), mapped("libcurl"), mapped("/dynlog/curl%.so$"))
    ]])
    assert.are.equal("true\tfalse\tfalse\n", out)
  end)

  -- What an nginx worker loads: the whole API, a client, the concurrent
  -- runs (append_many), all without a request through curl.
  it("the API, a client and dynlog.transport.concurrent load no libcurl until a curl transport is made", function()
    local out = fresh([[
      local dynlog = require "dynlog"
      require "dynlog.transport.concurrent"
      local c = dynlog.new{ table = "events", region = "us-east-1", endpoint = "http://127.0.0.1:1",
        credentials = { access_key_id = "AKIDSPEC", secret_access_key = "spec-secret-key" } }
      print(mapped("libcurl"), package.loaded["dynlog.curl"] ~= nil)
      require("dynlog.transport.curl").new():close()
      print(mapped("libcurl"), mapped("/dynlog/curl%.so$"), c ~= nil)
    ]])
    assert.are.equal("false\tfalse\ntrue\ttrue\ttrue\n", out)
  end)

  it("dynlog.curl has the curl transport's functions and dynlog.core none of them", function()
    local out = fresh([[
      local core, curl = require "dynlog.core", require "dynlog.curl"
      print(type(curl.http_client), type(curl.http_multi), type(curl.curl_version), curl._VERSION == core._VERSION)
      print(core.http_client, core.http_multi, core.curl_version)
    ]])
    assert.are.equal("function\tfunction\tfunction\ttrue\nnil\tnil\tnil\n", out)
  end)
end)
