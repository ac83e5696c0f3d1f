-- Every snippet of docs/deploying.md is run or checked here, by the kind of
-- its fence (spec/system/docs_spec.lua runs the ```lua blocks):
--   ```sh     run in order with bash (set -euo pipefail), in one temporary
--             directory holding a copy of examples/, with `dynlog` on the
--             PATH (bin/dynlog under lua5.4 with this checkout's lua/ and
--             build54/), DynamoDB Local as AWS_ENDPOINT_URL_DYNAMODB, a
--             loopback CloudFormation (spec/support/cloudformation_server.lua
--             through httpd) as AWS_ENDPOINT_URL_CLOUDFORMATION, test keys.
--             The port 8088 of `dynlog up` is replaced by a free one; what a
--             block leaves running (its process group) is killed after it.
--   ```nginx  checked with `nginx -t` in a prefix, after the load_module
--             lines of Debian's Lua module (as spec/support/nginx.lua writes
--             them), with /etc/nginx/tls/ replaced by a self-signed
--             certificate made for the test.
--   ```json   parsed, and each must be a part of the users example's
--             template as `dynlog deploy --template` writes it.
--   ```text   not run: each must say why ("not run here") or which spec
--             runs it (spec/...): lambda_spec.lua runs the zip `make lambda`
--             builds; nothing here has S3 or a container runtime.
-- Any other fence is a failure. The table of the template's resources is
-- checked against the template too.
local env = require "spec.support.env"
local json = require "dynlog.json"
local run = require "spec.support.run"
local server = require "spec.support.server"

local DOC = "docs/deploying.md"
local EXAMPLE = "examples/users/pipeline.lua"
local BLOCK_TIMEOUT = 300
local HANDLED = { lua = true, sh = true, nginx = true, json = true, text = true }
local MODULES = { "/usr/lib/nginx/modules/ndk_http_module.so", "/usr/lib/nginx/modules/ngx_http_lua_module.so" }

-- The fences of a Markdown text: { {line=, kind=, code=}, ... }, and
-- problems (a fence left open).
local function fences(text)
  local found, problems = {}, {}
  local open, lines, n = nil, nil, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if open then
      if line:match("^```%s*$") then
        open.code = table.concat(lines, "\n") .. "\n"
        found[#found + 1] = open
        open = nil
      else
        lines[#lines + 1] = line
      end
    elseif line:match("^%s*```") then
      open, lines = { line = n, kind = line:match("^%s*```(.*)$"), indented = line:match("^%s") ~= nil }, {}
    end
  end
  if open then problems[#problems + 1] = DOC .. ":" .. open.line .. ": fence never closed" end
  return found, problems
end

local function deep_equal(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= "table" then return a == b end
  for k, v in pairs(a) do
    if not deep_equal(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

-- Whether node is deep-equal to some value inside tree.
local function part_of(node, tree)
  if deep_equal(node, tree) then return true end
  if type(tree) ~= "table" then return false end
  for _, v in pairs(tree) do
    if part_of(node, v) then return true end
  end
  return false
end

-- The users example's template as written to a file (JSON, decoded again).
local function users_template()
  local d = assert(require("dynlog.deploy.description").load(EXAMPLE))
  local template = require "dynlog.deploy.template"
  return assert(json.decode(template.encode(assert(template.build(d)))))
end

local text = assert(run.read_file(DOC), DOC)
local blocks, problems = fences(text)
local repo = assert(io.popen("pwd")):read("*l")

describe(DOC, function()
  it("has only fences of the kinds this spec (or docs_spec) runs or checks", function()
    local bad = {}
    for _, p in ipairs(problems) do bad[#bad + 1] = p end
    for _, b in ipairs(blocks) do
      if b.indented then
        bad[#bad + 1] = DOC .. ":" .. b.line .. ": indented fence"
      elseif not HANDLED[b.kind] then
        bad[#bad + 1] = DOC .. ":" .. b.line .. ": fence of kind '" .. b.kind .. "', which nothing runs"
      end
    end
    assert.are.same({}, bad)
    local kinds = {}
    for _, b in ipairs(blocks) do kinds[b.kind] = (kinds[b.kind] or 0) + 1 end
    assert.is_true((kinds.sh or 0) >= 3 and (kinds.json or 0) >= 1 and kinds.nginx == 1,
      "fences found: " .. json.encode(kinds))
  end)

  it("says of every text block why it is not run, or which spec runs it", function()
    local bad = {}
    for _, b in ipairs(blocks) do
      if b.kind == "text" and not (b.code:find("not run here", 1, true) or b.code:find("spec/", 1, true)) then
        bad[#bad + 1] = DOC .. ":" .. b.line
      end
    end
    assert.are.same({}, bad)
  end)

  it("lists the users example's resources as its template has them", function()
    local listed = {}
    for id, rtype in text:gmatch("\n| `(%w+)` | `(AWS::[%w:]+)` |") do listed[id] = rtype end
    local made = {}
    for id, r in pairs(users_template().Resources) do made[id] = r.Type end
    assert.are.same(made, listed)
  end)

  it("has every heading that links into it name", function()
    -- GitHub's anchors: lower case, punctuation dropped, spaces as hyphens.
    local anchors = {}
    for heading in text:gmatch("\n#+ ([^\n]+)") do
      anchors[(heading:lower():gsub("[^%w%- ]", ""):gsub(" ", "-"))] = true
    end
    local missing = {}
    local pipe = assert(io.popen("ls README.md docs/*.md"))
    for path in pipe:lines() do
      for anchor in assert(run.read_file(path)):gmatch("deploying%.md#([%w%-_]+)") do
        if not anchors[anchor] then missing[#missing + 1] = path .. ": #" .. anchor end
      end
    end
    pipe:close()
    assert.are.same({}, missing)
  end)

  for _, b in ipairs(blocks) do
    if b.kind == "json" then
      it(DOC .. ":" .. b.line .. " (json) is part of the users example's template", function()
        local value, err = json.decode(b.code)
        assert.is_not_nil(value, DOC .. ":" .. b.line .. ": " .. tostring(err))
        assert.is_true(part_of(value, users_template()),
          DOC .. ":" .. b.line .. " is not what `dynlog deploy --template` writes")
      end)
    end
  end

  for _, b in ipairs(blocks) do
    if b.kind == "nginx" then
      it(DOC .. ":" .. b.line .. " (nginx) passes nginx -t", function()
        local prefix = assert(io.popen("mktemp -d /tmp/dynlog-docnginx.XXXXXX")):read("*l")
        assert(run.succeeded("mkdir -p " .. run.quote(prefix .. "/conf") .. " " .. run.quote(prefix .. "/tls")
          .. " " .. run.quote(prefix .. "/logs")))
        assert(run.succeeded("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=app.example.com"
          .. " -keyout " .. run.quote(prefix .. "/tls/app.example.com.key")
          .. " -out " .. run.quote(prefix .. "/tls/app.example.com.crt") .. " >/dev/null 2>&1"))
        local conf = {}
        for _, m in ipairs(MODULES) do conf[#conf + 1] = "load_module " .. m .. ";" end
        conf[#conf + 1] = (b.code:gsub("/etc/nginx/tls/", prefix .. "/tls/"))
        run.write_file(prefix .. "/conf/nginx.conf", table.concat(conf, "\n"))
        local status, out = run.run("nginx -t -q -p " .. run.quote(prefix) .. " -c conf/nginx.conf -e stderr"
          .. " -g " .. run.quote("pid " .. prefix .. "/logs/nginx.pid;"))
        os.execute("rm -rf " .. run.quote(prefix))
        assert.are.equal(0, status, DOC .. ":" .. b.line .. " fails nginx -t:\n" .. out)
      end)
    end
  end

  describe("shell blocks", function()
    local dir, bin, srv

    setup(function()
      assert(run.succeeded("make -s luajit >/dev/null"), "make luajit failed") -- dynlog up's nginx
      dir = assert(io.popen("mktemp -d /tmp/dynlog-docsh.XXXXXX")):read("*l")
      bin = dir .. "/.bin"
      assert(run.succeeded("mkdir -p " .. run.quote(bin) .. " && cp -r examples " .. run.quote(dir .. "/")))
      run.write_file(bin .. "/dynlog", table.concat({
        "#!/bin/sh",
        ("LUA_PATH=%s LUA_CPATH=%s exec lua5.4 %s \"$@\""):format(
          run.quote(repo .. "/lua/?.lua;" .. repo .. "/lua/?/init.lua;;"),
          run.quote(repo .. "/build54/?.so;;"), run.quote(repo .. "/bin/dynlog")),
      }, "\n") .. "\n")
      assert(run.succeeded("chmod +x " .. run.quote(bin .. "/dynlog")))
      -- The stack settles at the first DescribeStacks after its change set runs.
      srv = server.start({ { method = "POST", path = "/", responses = { { cloudformation = { step = 1000 } } } } })
    end)

    teardown(function()
      if srv then srv.stop() end
      if dir then os.execute("rm -rf " .. run.quote(dir)) end
    end)

    local function block_env()
      return {
        PATH = bin .. ":" .. os.getenv("PATH"), HOME = dir,
        AWS_ENDPOINT_URL_DYNAMODB = env.dynamodb_endpoint(), AWS_ENDPOINT_URL_CLOUDFORMATION = srv.url,
        AWS_REGION = "eu-west-1", AWS_ACCESS_KEY_ID = "AKIDDEPLOYINGDOC",
        AWS_SECRET_ACCESS_KEY = "deploying-doc-secret", AWS_SESSION_TOKEN = "", AWS_PROFILE = "",
        AWS_DEFAULT_REGION = "", AWS_ENDPOINT_URL = "", AWS_ENDPOINT_URL_EVENTBRIDGE = "",
        AWS_EC2_METADATA_DISABLED = "true", DYNLOG_TABLE = "", LUA_PATH = "", LUA_CPATH = "",
      }
    end

    for _, b in ipairs(blocks) do
      if b.kind == "sh" then
        it(DOC .. ":" .. b.line .. " (sh) runs", function()
          local code = b.code:gsub("%-%-port 8088", "--port " .. run.free_port())
          local script = dir .. "/.block.sh"
          local pgid = dir .. "/.pgid"
          os.remove(pgid)
          run.write_file(script, "set -euo pipefail\necho $$ >" .. run.quote(pgid) .. "\n" .. code)
          local status, out = run.run("sh -c " .. run.quote("cd " .. run.quote(dir) .. " && timeout "
            .. BLOCK_TIMEOUT .. " setsid bash .block.sh"), block_env())
          local group = tonumber(run.read_file(pgid) or "")
          if group then os.execute("kill -KILL -- -" .. group .. " 2>/dev/null") end
          assert.are.equal(0, status, DOC .. ":" .. b.line .. " failed:\n" .. out)
        end)
      end
    end
  end)
end)
