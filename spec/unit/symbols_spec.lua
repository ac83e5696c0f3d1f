-- dynlog.core exports one symbol, its entry point luaopen_dynlog_core: the C
-- core is compiled with -fvisibility=hidden (DL_EXPORT in src/dynlog.h marks
-- the entry point), so none of its dl_* functions can clash with, or be
-- called by, another library loaded into the same process (nginx, a Lua
-- interpreter with other C modules).
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

describe("dynlog.core's exported symbols", function()
  setup(function()
    -- The plain builds, whatever build the specs run against.
    for _, target in ipairs({ "", " luajit" }) do
      local status, out = run("env -u BUILD -u CFLAGS -u LDFLAGS make -s" .. target)
      assert.are.equal(0, status, out)
    end
  end)

  for _, build in ipairs({ "build54", "buildjit" }) do
    it(("are luaopen_dynlog_core alone in %s/ (%s)"):format(build,
      build == "build54" and "Lua 5.4" or "LuaJIT"), function()
      assert.are.same({ "T luaopen_dynlog_core" }, exported(build .. "/dynlog/core.so"))
    end)
  end

  it("are luaopen_dynlog_core alone in the module these specs load", function()
    local path = assert(package.searchpath("dynlog.core", package.cpath))
    assert.are.same({ "T luaopen_dynlog_core" }, exported(path))
  end)
end)
