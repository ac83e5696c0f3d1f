-- One list of dynlog's own error codes (dynlog.errors.CODES), and
-- docs/errors.md documents exactly that list: every code the Lua modules
-- or the C core give is in it, in one style.
local errors = require "dynlog.errors"

local DOC = "docs/errors.md"

local function read(path) return (assert(require("spec.support.run").read_file(path), path)) end

local function files(command)
  local list = {}
  local p = assert(io.popen(command))
  for path in p:lines() do list[#list + 1] = path end
  p:close()
  return list
end

-- The codes of the "dynlog's own codes" table: { code = line of the doc }.
local function documented()
  local section = assert(read(DOC):match("\n## dynlog's own codes\n(.-)\n## "), "no section of dynlog's own codes")
  local codes = {}
  for line in section:gmatch("[^\n]+") do
    local code = line:match("^| `([%w_]+)` |")
    if code then codes[code] = line end
  end
  return codes
end

-- Every code literal the source gives an error: { code = "file: text" }.
local function given()
  local codes = {}
  local function add(code, where) codes[code] = codes[code] or where end
  for _, path in ipairs(files("find lua -name '*.lua' | LC_ALL=C sort")) do
    local text = read(path)
    for call, code in text:gmatch('(errors%.new%s*%(%s*)"([^"]*)"') do add(code, path .. ": " .. call) end
    for code in text:gmatch('errors%.from_core%s*%(%s*nil%s*,%s*[%w_.]*%s*o?r?%s*"([^"]*)"') do
      add(code, path .. ": from_core")
    end
    if path:find("^lua/dynlog/transport/") then
      for call, code in text:gmatch('(%f[%w_]fail%s*%()"([^"]*)"') do add(code, path .. ": " .. call) end
      for call, code in text:gmatch('(failure%s*%()"([^"]*)"') do add(code, path .. ": " .. call) end
    end
  end
  for _, path in ipairs(files("find src -name '*.[ch]' | LC_ALL=C sort")) do
    local text = read(path)
    for code in text:gmatch('dl_push_failure%s*%(%s*L%s*,%s*"([^"]*)"') do add(code, path .. ": dl_push_failure") end
    for code in text:gmatch('#define%s+DL_HTTP_[%u_]+%s+"([^"]*)"') do add(code, path .. ": #define") end
  end
  return codes
end

describe("dynlog.errors.CODES", function()
  it("is one style: snake_case", function()
    for code in pairs(errors.CODES) do
      assert.truthy(code:find("^[a-z][a-z0-9_]*$"), code .. " is not snake_case")
    end
  end)

  it("are each documented in docs/errors.md, and that table lists no other", function()
    local docs = documented()
    for code in pairs(errors.CODES) do
      assert.truthy(docs[code], code .. " is in errors.CODES but not in " .. DOC)
    end
    for code in pairs(docs) do
      assert.truthy(errors.CODES[code], code .. " is in " .. DOC .. " but not in errors.CODES")
    end
  end)

  it("hold every code the Lua modules and the C core give", function()
    local codes = given()
    assert.truthy(codes.invalid_argument and codes.signing_failed and codes.timeout, "the source scan found nothing")
    for code, where in pairs(codes) do
      assert.truthy(errors.CODES[code], where .. '"' .. code .. '" is not in errors.CODES')
    end
  end)
end)
