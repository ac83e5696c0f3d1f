-- docs/architecture.md's map of lua/dynlog/ is the truth of the tree: every
-- module is listed with its layer, and no module requires one of a higher
-- layer (or a public alias at the top instead of the module itself), nor the
-- C module dynlog.curl unless it is one of the curl transports.
local MAP = "docs/architecture.md"

local function read(path) return (assert(require("spec.support.run").read_file(path), path)) end

local function cells(line)
  local out = {}
  for cell in line:gmatch("|([^|]*)") do out[#out + 1] = cell:match("^%s*(.-)%s*$") end
  if out[#out] == "" then out[#out] = nil end
  return out
end

-- { layer = rank } and { module = layer } from the two tables of the section.
local function read_map()
  local text = read(MAP)
  local section = assert(text:match("### `lua/dynlog/`: the Lua modules, by layer\n(.-)\n## "), "no module map")
  local ranks, layers = {}, {}
  for line in section:gmatch("[^\n]+") do
    local c = cells(line)
    if #c == 4 and tonumber(c[1]) then
      ranks[c[2]] = tonumber(c[1])
    elseif #c == 3 and c[1]:find("^`dynlog") then
      for name in c[1]:gmatch("`([%w_.]+)`") do layers[name] = c[2] end
    end
  end
  return ranks, layers
end

-- Every module of the tree: { name = path }.
local function modules()
  local found = {}
  local p = assert(io.popen("cd lua && find dynlog -name '*.lua' | LC_ALL=C sort"))
  for path in p:lines() do
    local name = path:gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
    found[name] = "lua/" .. path
  end
  p:close()
  return found
end

local function requires_of(text)
  local deps = {}
  for name in text:gmatch("require%s*%(?%s*[\"']([%w_.]+)[\"']") do deps[#deps + 1] = name end
  return deps
end

describe("the layers of lua/dynlog (docs/architecture.md)", function()
  local ranks, layers = read_map()
  local tree = modules()

  it("reads a map with every layer ranked", function()
    for _, layer in ipairs({ "base", "values", "transport", "aws", "client", "pipeline", "eventbridge", "api",
                             "ngx", "cli", "lambda", "entry" }) do
      assert.is_number(ranks[layer], "layer " .. layer .. " has no rank")
    end
  end)

  it("lists every module of the tree, and no module that is not there", function()
    for name in pairs(tree) do
      assert.is_not_nil(layers[name], name .. " (" .. tree[name] .. ") is not in " .. MAP)
      assert.is_not_nil(ranks[layers[name]], name .. ": unknown layer " .. tostring(layers[name]))
    end
    for name in pairs(layers) do assert.is_not_nil(tree[name], MAP .. " lists " .. name .. ", which is not there") end
  end)

  it("has no module that requires one of a higher layer", function()
    local wrong = {}
    for name, path in pairs(tree) do
      local rank = ranks[layers[name]]
      for _, dep in ipairs(requires_of(read(path))) do
        if dep == "dynlog.curl" then
          -- The libcurl module: the curl transports' own, never loaded by
          -- what an nginx worker runs (spec/unit/c_modules_spec.lua).
          if name ~= "dynlog.transport.curl" and name ~= "dynlog.transport.concurrent" then
            wrong[#wrong + 1] = name .. " requires dynlog.curl, which only the curl transports may"
          end
        elseif dep:find("^dynlog") and dep ~= "dynlog.core" then
          local dep_rank = ranks[layers[dep]]
          if not dep_rank then
            wrong[#wrong + 1] = name .. " requires " .. dep .. ", which is not in the map"
          elseif dep_rank > rank then
            wrong[#wrong + 1] = ("%s (%s) requires %s (%s)"):format(name, layers[name], dep, layers[dep])
          end
        end
      end
    end
    table.sort(wrong)
    assert.are.same({}, wrong)
  end)

  it("keeps the top-level public names and deprecated names one line that names the module", function()
    for name, layer in pairs(layers) do
      if layer == "entry" then
        local code = read(tree[name]):gsub("%-%-[^\n]*\n", "")
        local target = code:match('^%s*return require "([%w_.]+)"%s*$')
        assert.is_not_nil(target, tree[name] .. " is more than a re-export")
        assert.are_not.equal("entry", layers[target], name .. " re-exports another alias")
      end
    end
  end)

  it("keeps every deprecated name working", function()
    for old, new in pairs({ ["dynlog.stream"] = "dynlog.pipeline.consumer", ["dynlog.http"] = "dynlog.transport.curl",
                            ["dynlog.concurrent"] = "dynlog.transport.concurrent",
                            ["dynlog.credentials"] = "dynlog.aws.credentials", ["dynlog.config"] = "dynlog.aws.config",
                            ["dynlog.leases"] = "dynlog.pipeline.leases", ["dynlog.log"] = "dynlog.logger",
                            ["dynlog.retry"] = "dynlog.aws.retry", ["dynlog.handler"] = "dynlog.pipeline.handler",
                            ["dynlog.trigger"] = "dynlog.pipeline.trigger",
                            ["dynlog.consumer"] = "dynlog.pipeline.consumer",
                            ["dynlog.pattern"] = "dynlog.eventbridge.pattern" }) do
      assert.are.equal(require(new), require(old), old)
    end
  end)
end)
