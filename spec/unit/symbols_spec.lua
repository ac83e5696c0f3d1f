-- Each C module exports one symbol, its entry point: dynlog.core
-- luaopen_dynlog_core, dynlog.curl luaopen_dynlog_curl. Both are compiled
-- with -fvisibility=hidden (DL_EXPORT in src/dynlog.h marks the entry
-- points), so none of their dl_* functions can clash with, or be called by,
-- another library loaded into the same process (nginx, a Lua interpreter with
-- other C modules), nor with each other: the helpers both hold (buf.c,
-- lua_util.c) stay private to each.
local runner = require "spec.support.run"
local run, quote = runner.run, runner.quote

-- The dynamic symbols the shared object defines, as "<kind> <name>".
local function exported(path)
  local status, out = run("nm -D --defined-only " .. quote(path))
  assert.are.equal(0, status, out)
  local symbols = {}
  for line in out:gmatch("[^\n]+") do
    local kind, name = line:match("^%x*%s+(%a)%s+(%S+)$")
    assert.is_not_nil(kind, "unexpected nm line: " .. line)
    symbols[#symbols + 1] = kind .. " " .. name
  end
  table.sort(symbols)
  return symbols
end

-- The libraries the shared object names as NEEDED (readelf -d), by soname.
local function needed(path)
  local status, out = run("readelf -d " .. quote(path))
  assert.are.equal(0, status, out)
  local libs = {}
  for name in out:gmatch("%(NEEDED%)[^\n]-%[([^%]]+)%]") do libs[#libs + 1] = name end
  return libs
end

local function has_libcurl(libs)
  for _, name in ipairs(libs) do
    if name:find("^libcurl") then return true end
  end
  return false
end

describe("the C modules' exported symbols", function()
  setup(function()
    -- The plain builds, whatever build the specs run against.
    for _, target in ipairs({ "", " luajit" }) do
      local status, out = run("env -u BUILD -u CFLAGS -u LDFLAGS make -s" .. target)
      assert.are.equal(0, status, out)
    end
  end)

  for _, build in ipairs({ "build54", "buildjit" }) do
    local lua = build == "build54" and "Lua 5.4" or "LuaJIT"
    for _, name in ipairs({ "core", "curl" }) do
      it(("are luaopen_dynlog_%s alone in %s/dynlog/%s.so (%s)"):format(name, build, name, lua), function()
        assert.are.same({ "T luaopen_dynlog_" .. name }, exported(build .. "/dynlog/" .. name .. ".so"))
      end)
    end

    -- A process that loads only dynlog.core (an nginx worker) maps no libcurl.
    it(("leave libcurl out of %s/dynlog/core.so and link it into curl.so (%s)"):format(build, lua), function()
      local core, curl = needed(build .. "/dynlog/core.so"), needed(build .. "/dynlog/curl.so")
      assert.is_false(has_libcurl(core), "core.so needs " .. table.concat(core, " "))
      assert.is_true(has_libcurl(curl), "curl.so needs " .. table.concat(curl, " "))
    end)
  end

  it("are the entry points alone in the modules these specs load", function()
    for _, name in ipairs({ "core", "curl" }) do
      local path = assert(package.searchpath("dynlog." .. name, package.cpath))
      assert.are.same({ "T luaopen_dynlog_" .. name }, exported(path))
    end
  end)
end)
