-- The Lua code passes luacheck with the project's .luacheckrc (Lua 5.4 and
-- LuaJIT share one standard library subset there).
local run = require "spec.support.run"

describe("luacheck", function()
  it("finds no warnings in lua/, spec/, bench/, examples/, scripts/ and bin/dynlog", function()
    local status, out = run.run("luacheck --no-color --codes lua spec bench examples scripts bin/dynlog")
    assert.are.equal(0, status, out)
  end)
end)
