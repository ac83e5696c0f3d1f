-- Every ```lua example in docs/*.md runs as it is written: each block is a
-- separate lua5.4 process against DynamoDB Local, with a table of its own
-- (DYNLOG_TABLE), and must exit with status 0. Blocks check their own claims
-- with assert. Code that cannot run in plain Lua is fenced as ```nginx,
-- ```text, ```sh or ```json, never as an untested ```lua.
local ddb = require "spec.support.ddb"
local env = require "spec.support.env"
local run = require "spec.support.run"

local DOCS = "docs"
-- Seconds a block may take before it counts as hung.
local BLOCK_TIMEOUT = 120

local function read_file(path) return (assert(require("spec.support.run").read_file(path), path)) end

-- The Markdown files of docs/, sorted.
local function doc_files()
  local pipe = assert(io.popen("ls " .. DOCS .. "/*.md 2>/dev/null"))
  local files = {}
  for line in pipe:lines() do files[#files + 1] = line end
  pipe:close()
  table.sort(files)
  return files
end

-- The fenced code of a Markdown text: { lua = {{line=, code=}, ...},
-- fences = <number of fences of any kind>, problems = {{line=, what=}, ...} }.
-- A fence is a line starting with ``` (any info string after it). Fences
-- that look like Lua but would not be run (```Lua, ``` lua, indented) and
-- a fence left open are problems, so no example escapes the spec unnoticed.
local function extract(text)
  local found = { lua = {}, fences = 0, problems = {} }
  local open, open_line, lines = nil, nil, nil
  local n = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if open then
      if line:match("^```%s*$") then
        if open == "lua" then
          found.lua[#found.lua + 1] = { line = open_line, code = table.concat(lines, "\n") .. "\n" }
        end
        open = nil
      else
        lines[#lines + 1] = line
      end
    else
      local info = line:match("^```(.*)$")
      if info then
        found.fences = found.fences + 1
        info = info:match("^%s*(.-)%s*$")
        if info ~= "lua" and info:lower():match("^lua") then
          found.problems[#found.problems + 1] = { line = n, what = "fence tag " .. info .. " (write exactly ```lua)" }
        elseif info == "lua" and not line:match("^```lua%s*$") then
          found.problems[#found.problems + 1] = { line = n, what = "fence written as " .. line }
        end
        open, open_line, lines = info, n, {}
      elseif line:match("^%s+```%s*[Ll][Uu][Aa]") then
        found.problems[#found.problems + 1] = { line = n, what = "indented ```lua fence (it would not run)" }
      end
    end
  end
  if open then found.problems[#found.problems + 1] = { line = open_line, what = "fence never closed" } end
  return found
end

-- The environment of one block: DynamoDB Local, test keys, a fresh table.
-- Variables that could send a block elsewhere are set empty (dynlog reads an
-- empty variable as unset). The C core is build54's, or the Lua 5.4 build
-- the test run names (make memcheck builds into build-vg).
local function block_env()
  local cpath = os.getenv("DYNLOG_SPEC_CPATH")
  return run.lua_env({
    LUA_CPATH = cpath and cpath ~= "" and (cpath .. ";;") or nil,
    AWS_ENDPOINT_URL_DYNAMODB = env.dynamodb_endpoint(),
    AWS_REGION = "us-east-1",
    AWS_ACCESS_KEY_ID = "AKIDDOCSEXAMPLE",
    AWS_SECRET_ACCESS_KEY = "docs-example-secret-key",
    DYNLOG_TABLE = ddb.table_name("docs"),
    AWS_EC2_METADATA_DISABLED = "true",
    AWS_SESSION_TOKEN = "", AWS_PROFILE = "", AWS_DEFAULT_REGION = "", AWS_ENDPOINT_URL = "",
    AWS_ENDPOINT_URL_DYNAMODB_STREAMS = "", AWS_ENDPOINT_URL_EVENTBRIDGE = "",
  })
end

local function run_block(code)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(code)
  f:close()
  local status, out = run.run(("timeout %d lua5.4 %s"):format(BLOCK_TIMEOUT, run.quote(path)), block_env())
  os.remove(path)
  return status, out
end

local files = doc_files()

describe("docs", function()
  it("has the documentation files", function()
    local names = {}
    for _, path in ipairs(files) do names[path] = true end
    for _, name in ipairs({ "api", "architecture", "configuration", "consumer", "deploying", "errors" }) do
      assert.is_true(names[DOCS .. "/" .. name .. ".md"], DOCS .. "/" .. name .. ".md is missing")
    end
  end)

  for _, path in ipairs(files) do
    local found = extract(read_file(path))

    describe(path, function()
      it("has well-formed fences", function()
        local problems = {}
        for _, p in ipairs(found.problems) do problems[#problems + 1] = path .. ":" .. p.line .. ": " .. p.what end
        assert.are.same({}, problems)
      end)

      if found.fences > 0 then
        it("has at least one lua example", function()
          assert.is_true(#found.lua > 0, path .. " has examples but no ```lua block")
        end)
      end

      for _, block in ipairs(found.lua) do
        it(path .. ":" .. block.line .. " runs", function()
          local status, out = run_block(block.code)
          assert.are.equal(0, status, path .. ":" .. block.line .. " failed:\n" .. out)
        end)
      end
    end)
  end
end)

-- The statements of an nginx configuration, each as its words joined by one
-- space, a block's with its brace ("env AWS_REGION;", "location = /bus {"):
-- quoted words kept whole, comments dropped, the Lua code of *_by_lua_block
-- skipped.
local function nginx_statements(text)
  local out, words, i, n = {}, {}, 1, #text
  while i <= n do
    local c = text:sub(i, i)
    if c == "#" then
      i = (text:find("\n", i, true) or n) + 1
    elseif c:match("%s") then
      i = i + 1
    elseif c == '"' or c == "'" then
      local j = assert(text:find(c, i + 1, true), "unclosed quote")
      words[#words + 1] = text:sub(i, j)
      i = j + 1
    elseif c == ";" or c == "{" or c == "}" then
      i = i + 1
      if #words > 0 then
        out[#out + 1] = table.concat(words, " ") .. (c == "{" and " {" or ";")
        if c == "{" and words[1]:match("_by_lua_block$") then
          local depth = 1
          while depth > 0 do
            local p = assert(text:find("[{}]", i), "unclosed Lua block")
            depth = depth + (text:sub(p, p) == "{" and 1 or -1)
            i = p + 1
          end
        end
        words = {}
      end
    else
      local j = text:find("[%s;{}\"'#]", i) or n + 1
      words[#words + 1] = text:sub(i, j - 1)
      i = j
    end
  end
  return out
end

-- The code of a Markdown text: fenced blocks and `spans`, one per line.
local function code_of(markdown)
  local code = {}
  local prose = markdown:gsub("\n```[^\n]*\n(.-)\n```", function(block)
    code[#code + 1] = block
    return "\n"
  end)
  for span in prose:gmatch("`([^`]+)`") do code[#code + 1] = span end
  return table.concat(code, "\n")
end

describe("README's OpenResty section", function()
  local readme = read_file("README.md")
  local section = assert(readme:match("\n## OpenResty\n(.-)\n## "), "README.md has no OpenResty section")

  it("explains every statement of examples/nginx.conf, in code", function()
    local statements = nginx_statements(read_file("examples/nginx.conf"))
    assert.is_true(#statements > 20, "statements found: " .. #statements)
    local code = code_of(section)
    local missing = {}
    for _, statement in ipairs(statements) do
      if not code:find(statement, 1, true) then missing[#missing + 1] = statement end
    end
    assert.are.same({}, missing)
  end)

  it("runs the example after creating the log table, which the consumer reads", function()
    local recipe = assert(section:match("\n```sh\n(.-)\n```"), "no sh block")
    local created = recipe:find("tables create", 1, true)
    local started = recipe:find("nginx -p", 1, true)
    assert.is_truthy(created, "the recipe creates no table")
    assert.is_truthy(started, "the recipe starts no nginx")
    assert.is_true(created < started, "the table is created after nginx starts")
  end)
end)
