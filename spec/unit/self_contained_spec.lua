-- A clone of dynlog has nothing beside it: every file the specs, the build
-- and the docs use lives inside the repository.
local run = require "spec.support.run"

-- Spelled in two parts so that this file does not match itself.
local OUTSIDE = ".." .. "/shared"

describe("the repository", function()
  it("has no tracked file that refers to a folder beside it", function()
    local status, out = run.run("git grep -n -F -e '" .. OUTSIDE .. "'")
    -- git grep exits 1 when nothing matches, 0 when something does.
    assert.are.equal(1, status, "tracked files refer to " .. OUTSIDE .. ":\n" .. out)
  end)

  it("keeps the test vectors it reads, with their provenance", function()
    for _, set in ipairs({ "sigv4", "sigv4-extra", "ulid", "dynamodb" }) do
      local f = io.open("spec/vectors/" .. set .. "/README.md", "rb")
      assert.is_not_nil(f, "spec/vectors/" .. set .. "/README.md is missing")
      local text = f:read("*a")
      f:close()
      assert.is_truthy(text:find("Licence", 1, true) or text:find("licence", 1, true), set .. ": no licence named")
    end
  end)
end)
