-- The install path a user takes: luarocks builds and installs dynlog into a
-- fresh tree without reaching the LuaRocks server, and it loads from there.
local run = require("spec.support.run").run

describe("luarocks install", function()
  local tree, tree51

  setup(function()
    tree, tree51 = os.tmpname(), os.tmpname()
    os.remove(tree)
    os.remove(tree51)
  end)

  teardown(function()
    os.execute("rm -rf " .. tree .. " " .. tree51 .. " build-rocks")
  end)

  it("builds, installs and loads dynlog from a fresh tree", function()
    local status, out = run("luarocks --lua-version=5.4 --tree=" .. tree .. " make dynlog-scm-1.rockspec")
    assert.are.equal(0, status, out)
    assert.matches("dynlog scm%-1 is now installed", out)

    -- A clean interpreter that sees only the tree (and the system paths).
    status, out = run("cd / && eval \"$(luarocks --lua-version=5.4 --tree=" .. tree .. " path)\" && "
      .. "lua5.4 -e 'local d = require \"dynlog\"; local c = require \"dynlog.core\"; "
      .. "print(d._VERSION, #d.ulid(), package.searchpath(\"dynlog.core\", package.cpath))'")
    assert.are.equal(0, status, out)
    assert.matches("^%d+%.%d+%.%d+\t26\t" .. tree:gsub("%p", "%%%0") .. "/lib/lua/5%.4/dynlog/core%.so", out)

    -- The command, from the tree's bin/.
    status, out = run(tree .. "/bin/dynlog --help")
    assert.are.equal(0, status, out)
    assert.matches("append LOG ID TYPE", out, 1, true)
    status, out = run(tree .. "/bin/dynlog --version")
    assert.are.equal(0, status, out)
  end)

  -- The build and the install step both run make: the install must not
  -- rebuild the module against another Lua's headers on the way.
  it("builds for LuaJIT (Lua 5.1 ABI) with the LuaJIT headers, and loads in luajit from that tree", function()
    local status, out = run("luarocks --lua-version=5.1 --tree=" .. tree51
      .. " make dynlog-scm-1.rockspec LUA_INCDIR=/usr/include/luajit-2.1")
    assert.are.equal(0, status, out)
    assert.matches("dynlog scm%-1 is now installed", out)

    status, out = run("cd / && eval \"$(luarocks --lua-version=5.1 --tree=" .. tree51 .. " path)\" && "
      .. "luajit -e 'local d = require \"dynlog\"; "
      .. "print(d._VERSION, #d.ulid(), d.json.decode(\"{\\\"n\\\":7}\").n, "
      .. "package.searchpath(\"dynlog.core\", package.cpath))'")
    assert.are.equal(0, status, out)
    assert.matches("^%d+%.%d+%.%d+\t26\t7\t" .. tree51:gsub("%p", "%%%0") .. "/lib/lua/5%.1/dynlog/core%.so", out)
  end)

  it("passes luarocks lint", function()
    local status, out = run("luarocks --lua-version=5.4 lint dynlog-scm-1.rockspec")
    assert.are.equal(0, status, out)
  end)
end)
