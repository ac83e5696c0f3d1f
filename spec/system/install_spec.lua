-- The install path a user takes: luarocks builds and installs dynlog into a
-- fresh tree without reaching the LuaRocks server, and it loads from there.
local run = require("spec.support.run").run

-- Both C modules are in the tree and load: dynlog.curl (the libcurl
-- transport) beside dynlog.core, from the tree's lib/lua/<v>/dynlog/, the
-- curl transport works from there, and dynlog.core alone maps no libcurl.
local function assert_curl_module(lua, lua_version, tree)
  local status, out = run("cd / && eval \"$(luarocks --lua-version=" .. lua_version .. " --tree=" .. tree
    .. " path)\" && " .. lua .. " -e '"
    .. "local function curl_mapped() for l in io.lines(\"/proc/self/maps\") do "
    .. "if l:find(\"libcurl\") then return true end end return false end "
    .. "local core = require \"dynlog.core\"; local alone = curl_mapped(); "
    .. "local curl = require \"dynlog.curl\"; require(\"dynlog.transport.curl\").new():close(); "
    .. "print(alone, curl._VERSION == core._VERSION, curl_mapped(), "
    .. "package.searchpath(\"dynlog.curl\", package.cpath))'")
  assert.are.equal(0, status, out)
  assert.are.equal("false\ttrue\ttrue\t" .. tree .. "/lib/lua/" .. lua_version .. "/dynlog/curl.so\n", out)
end

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
    assert_curl_module("lua5.4", "5.4", tree)

    -- Every module of lua/, folders included, and nothing else.
    local _, wanted = run("cd lua && find dynlog -name '*.lua' | LC_ALL=C sort")
    local _, installed = run("cd " .. tree .. "/share/lua/5.4 && find dynlog -name '*.lua' | LC_ALL=C sort")
    assert.are.equal(wanted, installed)
    assert.matches("dynlog/client/events.lua", installed, 1, true)

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
    assert_curl_module("luajit", "5.1", tree51)
  end)

  it("passes luarocks lint", function()
    local status, out = run("luarocks --lua-version=5.4 lint dynlog-scm-1.rockspec")
    assert.are.equal(0, status, out)
  end)
end)

-- A release: `make dist` writes a source rock that installs on a machine that
-- has never seen the repository (a scratch directory holding only the rock,
-- no network), for Lua 5.4 and for LuaJIT, with the command.
describe("make dist", function()
  local env = require "spec.support.env"
  local scratch, version

  setup(function()
    scratch = os.tmpname()
    os.remove(scratch)
    local f = assert(io.open("src/dynlog.h", "rb"))
    version = f:read("*a"):match('#define DYNLOG_VERSION "([^"]+)"')
    f:close()
  end)

  teardown(function()
    os.execute("rm -rf " .. scratch)
  end)

  it("writes the tarball, the versioned rockspec and a source rock", function()
    local status, out = run("scripts/dist.sh " .. scratch .. "/dist")
    assert.are.equal(0, status, out)
    for _, name in ipairs({ "dynlog-" .. version .. ".tar.gz", "dynlog-" .. version .. "-1.src.rock",
                            "dynlog-" .. version .. "-1.rockspec" }) do
      assert.is_not_nil(io.open(scratch .. "/dist/" .. name, "rb"), name)
    end
    -- The committed versioned rockspec is the one released, and lint takes it.
    status, out = run("cmp dynlog-" .. version .. "-1.rockspec "
      .. scratch .. "/dist/dynlog-" .. version .. "-1.rockspec")
    assert.are.equal(0, status, out)
    status, out = run("luarocks --lua-version=5.4 lint dynlog-" .. version .. "-1.rockspec")
    assert.are.equal(0, status, out)
    -- The rock holds the rockspec and the sources, nothing from a checkout.
    status, out = run("unzip -l " .. scratch .. "/dist/dynlog-" .. version .. "-1.src.rock")
    assert.are.equal(0, status, out)
    assert.matches("dynlog%-" .. version:gsub("%p", "%%%0") .. "%.tar%.gz", out)
    status, out = run("tar tzf " .. scratch .. "/dist/dynlog-" .. version .. ".tar.gz")
    assert.are.equal(0, status, out)
    assert.matches("dynlog%-[%d.]+/lua/dynlog/init%.lua", out)
    assert.matches("dynlog%-[%d.]+/bin/dynlog", out)
    assert.is_nil(out:find("/.git/", 1, true))
  end)

  it("installs the source rock for Lua 5.4 away from the repository, and its command works", function()
    local box = scratch .. "/box54"
    local rock = "dynlog-" .. version .. "-1.src.rock"
    assert.are.equal(0, (run("mkdir -p " .. box .. " && cp " .. scratch .. "/dist/" .. rock .. " " .. box)))
    local status, out = run("cd " .. box .. " && env -u LUA_PATH -u LUA_CPATH "
      .. "luarocks --lua-version=5.4 --tree=" .. box .. "/tree install ./" .. rock)
    assert.are.equal(0, status, out)
    assert.matches("dynlog " .. version:gsub("%p", "%%%0") .. "%-1 is now installed", out)

    status, out = run("cd / && env -u LUA_PATH -u LUA_CPATH " .. box .. "/tree/bin/dynlog --version")
    assert.are.equal(0, status, out)
    assert.matches("dynlog " .. version, out, 1, true)
    assert_curl_module("lua5.4", "5.4", box .. "/tree")

    -- The installed command against DynamoDB Local: create, append, read back.
    local tbl = require("spec.support.ddb").table_name("dist")
    local e = "env -u LUA_PATH -u LUA_CPATH AWS_ENDPOINT_URL_DYNAMODB=" .. env.dynamodb_endpoint()
      .. " AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=AKIDSPEC AWS_SECRET_ACCESS_KEY=spec-secret-key DYNLOG_TABLE=" .. tbl
    local bin = "cd / && " .. e .. " " .. box .. "/tree/bin/dynlog "
    status, out = run(bin .. "tables create")
    assert.are.equal(0, status, out)
    status, out = run(bin .. "append users 42 signup '{\"name\":\"Ada\"}'")
    assert.are.equal(0, status, out)
    status, out = run(bin .. "query users 42 --json")
    assert.are.equal(0, status, out)
    assert.matches('"name":"Ada"', out, 1, true)
  end)

  it("installs the source rock for LuaJIT, and the command runs under luajit", function()
    local box = scratch .. "/boxjit"
    local rock = "dynlog-" .. version .. "-1.src.rock"
    assert.are.equal(0, (run("mkdir -p " .. box .. " && cp " .. scratch .. "/dist/" .. rock .. " " .. box)))
    -- The configuration README.md gives for LuaJIT.
    local f = assert(io.open(box .. "/luajit.lua", "wb"))
    f:write('lua_interpreter = "luajit"\n',
      'variables = { LUA = "/usr/bin/luajit", LUA_BINDIR = "/usr/bin", LUA_INCDIR = "/usr/include/luajit-2.1" }\n')
    f:close()
    local status, out = run("cd " .. box .. " && env -u LUA_PATH -u LUA_CPATH LUAROCKS_CONFIG=" .. box
      .. "/luajit.lua luarocks --lua-version=5.1 --tree=" .. box .. "/tree install ./" .. rock)
    assert.are.equal(0, status, out)

    status, out = run("cd / && env -u LUA_PATH -u LUA_CPATH " .. box .. "/tree/bin/dynlog --version")
    assert.are.equal(0, status, out)
    assert.matches("dynlog " .. version, out, 1, true)
    status, out = run("head -c 400 " .. box .. "/tree/bin/dynlog")
    assert.are.equal(0, status, out)
    assert.matches("/usr/bin/luajit", out, 1, true)

    status, out = run("cd / && eval \"$(luarocks --lua-version=5.1 --tree=" .. box .. "/tree path)\" && "
      .. "luajit -e 'local d = require \"dynlog\"; print(d._VERSION, #d.ulid(), "
      .. "package.searchpath(\"dynlog.core\", package.cpath))'")
    assert.are.equal(0, status, out)
    assert.matches(version .. "\t26\t" .. box .. "/tree/lib/lua/5.1/dynlog/core.so", out, 1, true)
    assert_curl_module("luajit", "5.1", box .. "/tree")
  end)
end)
