-- The `dynlog` command, driven as a user drives it: bin/dynlog run by lua5.4
-- as a subprocess, against DynamoDB Local and a loopback EventBridge.
local ddb = require "spec.support.ddb"
local env = require "spec.support.env"
local json = require "dynlog.json"
local run = require "spec.support.run"
local server = require "spec.support.server"
local socket = require "socket"

local ACCESS_KEY, SECRET_KEY = "AKIDSPEC", "spec-secret-key" -- those of spec.support.ddb's clients

local read_file, write_file = run.read_file, run.write_file

-- The environment of a command run against DynamoDB Local: variables set
-- to "" count as unset for dynlog, which is how a spec takes one away.
local function cli_env(table_name, extra)
  local e = run.lua_env({
    AWS_ENDPOINT_URL_DYNAMODB = env.dynamodb_endpoint(), AWS_REGION = "us-east-1",
    AWS_ACCESS_KEY_ID = ACCESS_KEY, AWS_SECRET_ACCESS_KEY = SECRET_KEY, AWS_SESSION_TOKEN = "",
    AWS_PROFILE = "", AWS_ENDPOINT_URL = "", AWS_ENDPOINT_URL_EVENTBRIDGE = "",
    AWS_EC2_METADATA_DISABLED = "true", DYNLOG_TABLE = table_name or "", DYNLOG_SORT_KEY = "",
  })
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

--- dynlog(args, env [, stdin_text]) -> status, stdout, stderr
local function dynlog(args, e, stdin_text)
  local err_file = os.tmpname()
  local line = "lua5.4 bin/dynlog " .. args .. " 2>" .. err_file
  if stdin_text then line = "printf '%s' " .. run.quote(stdin_text) .. " | " .. line end
  local status, out = run.run("sh -c " .. run.quote(line), e)
  local err = read_file(err_file) or ""
  os.remove(err_file)
  require("spec.support.leakwatch").check(err, "the stderr of `dynlog " .. args:sub(1, 40) .. "`")
  return status, out, err
end

-- A loopback port nothing listens on.
local unused_port = run.free_port

local function json_lines(text)
  local list = {}
  for line in text:gmatch("[^\n]+") do list[#list + 1] = assert(json.decode(line)) end
  return list
end

local function types_of(events)
  local types = {}
  for i, ev in ipairs(events) do types[i] = ev.type end
  return types
end

local function stream_types(c, log, id)
  return types_of(assert(assert(c:query(log, id)):all()))
end

-- A command in the background (spec.support.run.spawn).
local function spawn(args, e)
  return run.spawn("lua5.4 bin/dynlog " .. args, e)
end

describe("dynlog command", function()
  describe("help and usage errors", function()
    local e = cli_env(nil)

    it("--help lists every command and the global options, without needing a table", function()
      local status, out, err = dynlog("--help", e)
      assert.are.equal(0, status, err)
      for _, usage in ipairs({ "append LOG ID TYPE [JSON]", "query LOG ID", "head LOG ID", "tail", "import FILE",
                               "replay", "tables create|describe", "feed index|backfill|read|head", "up",
                               "deploy" }) do
        assert.matches("\n  " .. usage, out, 1, true)
      end
      for _, option in ipairs({ "--table NAME", "--sort-key ulid|version", "--endpoint URL", "--region R",
                                "--profile P", "--events-endpoint URL", "--json", "--version" }) do
        assert.matches(option, out, 1, true)
      end
      assert.matches("exit status: 0 success, 1 a failed operation, 2 a usage error", out, 1, true)
    end)

    it("COMMAND --help, -h and `help COMMAND` describe one command", function()
      for _, cmd in ipairs({ "append", "query", "head", "tail", "import", "replay", "tables", "feed", "up",
                             "deploy" }) do
        local status, out = dynlog(cmd .. " --help", e)
        assert.are.equal(0, status, out)
        assert.matches("^usage: dynlog " .. cmd, out)
      end
      local status, out = dynlog("import -h", e)
      assert.are.equal(0, status)
      assert.matches("--save-every N", out, 1, true)
      status, out = dynlog("help replay", e)
      assert.are.equal(0, status)
      assert.matches("--detail-type T", out, 1, true)
    end)

    it("--version prints the version of dynlog.core", function()
      local status, out = dynlog("--version", e)
      assert.are.equal(0, status)
      assert.are.equal("dynlog " .. require("dynlog.core")._VERSION .. "\n", out)
    end)

    local cases = {
      { "", "no command given", "try `dynlog --help`" },
      { "frobnicate", "unknown command frobnicate", "try `dynlog --help`" },
      { "--frob query users 1", "unknown option --frob", "try `dynlog --help`" },
      { "query users 1 --frob", "unknown option --frob", "try `dynlog query --help`" },
      { "query users", "missing argument: ID", "usage: dynlog query LOG ID" },
      { "append users", "missing argument: ID TYPE", "usage: dynlog append LOG ID TYPE [JSON]" },
      { "head users 1 2", "too many arguments: 2", "try `dynlog head --help`" },
      { "query users 1 --limit", "option --limit needs a value", "try `dynlog query --help`" },
      { "query users 1 --limit 0", "--limit must be a positive integer, got 0", "try `dynlog query --help`" },
      { "query users 1 --reverse=yes", "option --reverse takes no value", "try `dynlog query --help`" },
      { "append users 1 signup '{\"a\":'", "the payload argument is not valid JSON", "try `dynlog append --help`" },
      { "append users 1 signup '[1,2]'", "the payload argument must be a JSON object", "usage: dynlog append" },
      { "append users 1 signup '{}' --expected-version 3", "--expected-version is for version-mode tables",
        "try `dynlog append --help`" },
      { "tables frob", "unknown tables command frob (create or describe)", "try `dynlog tables --help`" },
      { "tables", "missing argument: create|describe", "try `dynlog tables --help`" },
      { "--sort-key sequence query users 1", "--sort-key must be ulid or version, got sequence",
        "try `dynlog query --help`" },
      { "--table ab query users 1", "invalid table name ab", "try `dynlog query --help`" },
      { "replay --since yesterday", "--since must be an RFC 3339 time", "try `dynlog replay --help`" },
      { "--sort-key version replay --until 2026-11-25", "--until must be an RFC 3339 time",
        "try `dynlog replay --help`" },
      { "tail --since soon", "--since must be an RFC 3339 time", "try `dynlog tail --help`" },
      { "query users 1 --until x", "--until must be an RFC 3339 time", "try `dynlog query --help`" },
      { "append users 1 signup '{}' --meta '[1]'", "--meta must be a JSON object", "try `dynlog append --help`" },
      { "--sort-key version query users 1 --after x", "--after must be a version number in version mode",
        "try `dynlog query --help`" },
      { "tail --count many", "--count must be a positive integer", "try `dynlog tail --help`" },
      { "--sort-key version append acct 7 x '{}' --expected-version 99999999999999999999",
        "--expected-version must be at most 9007199254740991", "try `dynlog append --help`" },
      { "--sort-key version query users 1 --after 9007199254740992", "--after must be at most 9007199254740991",
        "try `dynlog query --help`" },
      { "query users 1 --timeout 0", "--timeout must be a number of seconds above 0", "try `dynlog query --help`" },
      { "query users 1 --max-attempts x", "--max-attempts must be a positive integer", "try `dynlog query --help`" },
    }
    for _, case in ipairs(cases) do
      it("exits 2 for `dynlog " .. case[1] .. "`: " .. case[2], function()
        local status, out, err = dynlog(case[1], cli_env("cli-usage"))
        assert.are.equal(2, status, err)
        assert.are.equal("", out)
        assert.matches("dynlog: " .. case[2], err, 1, true)
        assert.matches(case[3], err, 1, true)
      end)
    end

    it("exits 2 when no table is named, by --table or DYNLOG_TABLE", function()
      local status, out, err = dynlog("query users 1", e)
      assert.are.equal(2, status, out)
      assert.matches("dynlog: no table: pass --table NAME or set DYNLOG_TABLE", err, 1, true)
    end)

    it("exits 2 for an invalid payload on stdin", function()
      local status, _, err = dynlog("append users 1 signup", cli_env("cli-usage"), "not json")
      assert.are.equal(2, status, err)
      assert.matches("the payload on stdin is not valid JSON", err, 1, true)
    end)
  end)

  describe("failures", function()
    it("exit 1 for a missing table, with a hint to create it", function()
      local name = ddb.table_name("cli-missing")
      local status, out, err = dynlog("query users 1", cli_env(name))
      assert.are.equal(1, status, out)
      assert.matches("dynlog: ResourceNotFoundException: ", err, 1, true)
      assert.matches("hint: table " .. name .. " does not exist", err, 1, true)
      assert.matches("create it with `dynlog tables create`", err, 1, true)
    end)

    it("exit 1 without a region, telling to set AWS_REGION or --region", function()
      local e = cli_env("cli-region", { AWS_REGION = "", AWS_DEFAULT_REGION = "",
                                        AWS_CONFIG_FILE = "/nonexistent/config",
                                        AWS_SHARED_CREDENTIALS_FILE = "/nonexistent/credentials" })
      local status, _, err = dynlog("head users 1", e)
      assert.are.equal(1, status, err)
      assert.matches("dynlog: config: no AWS region", err, 1, true)
      assert.matches("hint: set AWS_REGION or pass --region", err, 1, true)
      -- and --region is enough
      status, _, err = dynlog("--region us-east-1 --table " .. ddb.table_name("cli-missing") .. " head users 1", e)
      assert.are.equal(1, status, err)
      assert.matches("ResourceNotFoundException", err, 1, true)
    end)

    it("exit 1 without credentials, naming the variables to set", function()
      local e = cli_env("cli-creds", { AWS_ACCESS_KEY_ID = "", AWS_SECRET_ACCESS_KEY = "",
                                       AWS_CONFIG_FILE = "/nonexistent/config",
                                       AWS_SHARED_CREDENTIALS_FILE = "/nonexistent/credentials" })
      local status, _, err = dynlog("head users 1", e)
      assert.are.equal(1, status, err)
      assert.matches("dynlog: credentials: ", err, 1, true)
      assert.matches("hint: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", err, 1, true)
    end)

    it("exit 1 when the endpoint cannot be reached, and never prints the secret key", function()
      local port = unused_port()
      local e = cli_env("cli-unreachable", { AWS_ENDPOINT_URL_DYNAMODB = "http://127.0.0.1:" .. port })
      local status, out, err = dynlog("append users 1 signup '{}'", e)
      assert.are.equal(1, status, err)
      assert.matches("dynlog: connection: ", err, 1, true)
      assert.matches("could not reach the service at http://127.0.0.1:" .. port .. "/ in us-east-1", err, 1, true)
      assert.is_nil((out .. err):find(SECRET_KEY, 1, true))
    end)

    it("--timeout and --max-attempts bound the wait on an endpoint that never answers", function()
      local silent = assert(socket.bind("127.0.0.1", 0)) -- connections complete, nobody answers
      local _, port = silent:getsockname()
      local e = cli_env("cli-silent", { AWS_ENDPOINT_URL_DYNAMODB = "http://127.0.0.1:" .. port })
      local started = socket.gettime()
      local status, _, err = dynlog("head users 1 --timeout 0.3 --max-attempts 2", e)
      local took = socket.gettime() - started
      silent:close()
      assert.are.equal(1, status, err)
      assert.matches("dynlog: timeout: ", err, 1, true)
      assert.matches("within --timeout", err, 1, true)
      assert.is_true(took < 5, "took " .. took .. " s")
    end)

    it("an endpoint answering something that is not HTTP is a connection failure", function()
      local port_file = os.tmpname()
      local script = [[
        local socket = require "socket"
        local s = assert(socket.bind("127.0.0.1", 0))
        local _, port = s:getsockname()
        local f = io.open(arg[1], "w") f:write(port) f:close()
        s:settimeout(10)
        for _ = 1, 8 do
          local c = s:accept()
          if not c then break end
          c:settimeout(2) c:receive("*l") c:send("SSH-2.0-OpenSSH\r\ngarbage\r\n\r\n") c:close()
        end]]
      local script_file = os.tmpname()
      write_file(script_file, script)
      local proc = io.popen("lua5.4 " .. script_file .. " " .. port_file .. " >/dev/null 2>&1 & echo $!")
      local pid = proc:read("*l")
      proc:close()
      local port
      local deadline = socket.gettime() + 5
      repeat socket.sleep(0.05) port = tonumber(read_file(port_file) or "") until port or socket.gettime() > deadline
      local status, _, err = dynlog("head users 1 --max-attempts 1", cli_env("cli-garbage",
        { AWS_ENDPOINT_URL_DYNAMODB = "http://127.0.0.1:" .. tostring(port) }))
      os.execute("kill " .. pid .. " 2>/dev/null")
      os.remove(port_file)
      os.remove(script_file)
      assert.are.equal(1, status, err)
      assert.matches("dynlog: connection: the server's answer is not HTTP", err, 1, true)
      assert.is_nil(err:find("invalid_argument", 1, true))
    end)

    it("bad credentials and configuration get a clear error, never a Lua trace", function()
      local cases = {
        { { AWS_ACCESS_KEY_ID = ACCESS_KEY .. "\r" }, "credentials: ",
          "AWS_ACCESS_KEY_ID contains a carriage return" },
        { { AWS_SECRET_ACCESS_KEY = SECRET_KEY .. "\r" }, "credentials: ",
          "AWS_SECRET_ACCESS_KEY contains a carriage return" },
        { { AWS_SESSION_TOKEN = "token\r" }, "credentials: ", "AWS_SESSION_TOKEN contains a carriage return" },
        { { AWS_REGION = "us east 1" }, "config: ", "invalid AWS region" },
        { { AWS_ENDPOINT_URL_DYNAMODB = "http://127.0.0.1:99999" }, "config: ", "invalid endpoint URL" },
        { { AWS_ENDPOINT_URL_DYNAMODB = "http://exa mple.com" }, "config: ", "invalid endpoint URL" },
        { { AWS_ENDPOINT_URL_DYNAMODB = "http://[::1" }, "config: ", "invalid endpoint URL" },
      }
      for _, case in ipairs(cases) do
        local status, out, err = dynlog("head users 1", cli_env("cli-bad-config", case[1]))
        assert.are.equal(1, status, out .. err)
        assert.matches("dynlog: " .. case[2], err, 1, true)
        assert.matches(case[3], err, 1, true)
        assert.is_nil(err:find("traceback", 1, true), err)
        assert.is_nil(err:find("internal error", 1, true), err)
        assert.is_nil(err:find(SECRET_KEY, 1, true))
      end
    end)

    it("reads a credentials file with CRLF or CR line endings as the AWS CLI does", function()
      local c = ddb.ready_client()
      for _, eol in ipairs({ "\r\n", "\r" }) do
        local file = os.tmpname()
        write_file(file, table.concat({ "[default]", "aws_access_key_id = " .. ACCESS_KEY,
          "aws_secret_access_key = " .. SECRET_KEY, "" }, eol))
        local status, _, err = dynlog("head users 1", cli_env(c.table, {
          AWS_ACCESS_KEY_ID = "", AWS_SECRET_ACCESS_KEY = "", AWS_SHARED_CREDENTIALS_FILE = file,
          AWS_CONFIG_FILE = "/nonexistent/config" }))
        os.remove(file)
        assert.are.equal(0, status, err)
      end
    end)

    it("exit 1 for an invalid event, naming the problem", function()
      local c = ddb.ready_client()
      local status, _, err = dynlog("append users 1 signup '{\"id\":\"2\"}'", cli_env(c.table))
      assert.are.equal(1, status, err)
      assert.matches('dynlog: invalid_argument: payload.id is "2", but the event is for id "1"', err, 1, true)
      status, _, err = dynlog("append 'us#ers' 1 signup '{}'", cli_env(c.table))
      assert.are.equal(1, status, err)
      assert.matches("log must not contain '#'", err, 1, true)
    end)
  end)

  describe("tables", function()
    it("create makes the table with a stream, is idempotent, and describe shows it", function()
      local name = ddb.table_name("cli-tables")
      local status, out, err = dynlog("tables create", cli_env(name))
      assert.are.equal(0, status, err)
      assert.matches("table       " .. name .. "\n", out, 1, true)
      assert.matches("status      ACTIVE\n", out, 1, true)
      assert.matches("key schema  pk HASH (S), sk RANGE (S); ulid mode\n", out, 1, true)
      assert.matches("stream      arn:aws:dynamodb:[^\n]+ %(NEW_AND_OLD_IMAGES%)\n", out)

      status, out, err = dynlog("tables create --json", cli_env(name))
      assert.are.equal(0, status, err)
      local created = json.decode(out)

      status, out, err = dynlog("--json tables describe", cli_env(name))
      assert.are.equal(0, status, err)
      local d = json.decode(out)
      assert.are.equal(name, d.table)
      assert.are.equal("ACTIVE", d.status)
      assert.are.equal("ulid", d.sort_key)
      assert.are.same({ { name = "pk", key_type = "HASH", type = "S" },
                        { name = "sk", key_type = "RANGE", type = "S" } }, d.key_schema)
      assert.are.equal(created.stream_arn, d.stream_arn)
      assert.matches("^arn:aws:dynamodb:.*/stream/", d.stream_arn)
      assert.are.equal("NEW_AND_OLD_IMAGES", d.stream_view_type)
      assert.are.equal(0, d.item_count)
    end)

    it("create --sort-key version makes a numeric sort key; the other mode is a schema mismatch", function()
      local name = ddb.table_name("cli-tables-v")
      local status, out, err = dynlog("--sort-key version tables create --json", cli_env(name))
      assert.are.equal(0, status, err)
      local d = json.decode(out)
      assert.are.equal("version", d.sort_key)
      assert.are.equal("N", d.key_schema[2].type)
      status, out, err = dynlog("tables create", cli_env(name))
      assert.are.equal(1, status, err)
      assert.are.equal("", out)
      assert.matches("dynlog: schema_mismatch: table " .. name .. " exists but its sk is of type N", err, 1, true)
      assert.matches("hint: the table's sort key decides the mode: check --sort-key", err, 1, true)
    end)

    it("describe of a missing table exits 1", function()
      local status, _, err = dynlog("tables describe", cli_env(ddb.table_name("cli-none")))
      assert.are.equal(1, status, err)
      assert.matches("ResourceNotFoundException", err, 1, true)
    end)
  end)

  describe("append, query and head", function()
    local c, e

    setup(function()
      c = ddb.ready_client()
      e = cli_env(c.table)
    end)

    it("append prints the new key and stores the event", function()
      local status, out, err = dynlog("append users 42 signup '{\"email\":\"ada@example.com\"}'", e)
      assert.are.equal(0, status, err)
      local sk = out:match("^users#42#stream  (%w+)\n$")
      assert.is_truthy(sk, out)
      assert.are.equal(26, #sk)
      local ev = assert(c:get("users", "42", sk))
      assert.are.equal("signup", ev.type)
      assert.are.same({ id = "42", email = "ada@example.com" }, ev.payload)
    end)

    it("append --json prints {pk, sk}; the payload comes from stdin without JSON or with -", function()
      local status, out, err = dynlog("--json append users 43 signup", e, '{"name":"Grace"}')
      assert.are.equal(0, status, err)
      local key = json.decode(out)
      assert.are.equal("users#43#stream", key.pk)
      assert.are.same({ id = "43", name = "Grace" }, c:get("users", "43", key.sk).payload)
      status, out, err = dynlog("append users 43 addPhoneNumber - --json", e, '{"phoneNumber":"+1 555"}')
      assert.are.equal(0, status, err)
      key = json.decode(out)
      assert.are.same({ id = "43", phoneNumber = "+1 555" }, c:get("users", "43", key.sk).payload)
      assert.are.same({ "signup", "addPhoneNumber" }, stream_types(c, "users", "43"))
    end)

    describe("query", function()
      local keys = {}

      setup(function()
        for i, t in ipairs({ "one", "two", "three", "four" }) do
          keys[i] = assert(c:append("orders", "7", t, { n = i, nested = { b = true, a = "é" } })).sk
        end
      end)

      it("prints the events in order as an aligned table", function()
        local status, out, err = dynlog("query orders 7", e)
        assert.are.equal(0, status, err)
        local lines = {}
        for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
        assert.are.equal(5, #lines, out)
        assert.matches("^SK%s+TIME%s+TYPE%s+PAYLOAD$", lines[1])
        local type_column = lines[1]:find("TYPE", 1, true)
        for i, t in ipairs({ "one", "two", "three", "four" }) do
          local line = lines[i + 1]
          assert.are.equal(keys[i], line:sub(1, 26))
          assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ", line:sub(29))
          assert.are.equal(t, line:sub(type_column):match("^(%S+)"))
          assert.matches('{"id":"7","n":' .. i .. ',"nested":{"a":"é","b":true}}', line, 1, true)
        end
      end)

      it("--json prints one event per line", function()
        local status, out, err = dynlog("query orders 7 --json", e)
        assert.are.equal(0, status, err)
        local events = json_lines(out)
        assert.are.same({ "one", "two", "three", "four" }, types_of(events))
        -- every event carries the time it was appended, milliseconds since the epoch
        local at = events[1].appended_at
        assert.is_true(type(at) == "number" and at == math.floor(at) and at > 1.7e12, tostring(at))
        events[1].appended_at = nil
        assert.are.same({ pk = "orders#7#stream", sk = keys[1], log = "orders", type = "one",
                          payload = { id = "7", n = 1, nested = { a = "é", b = true } } }, events[1])
      end)

      it("--reverse, --limit, --after and --before choose the events", function()
        local function query(args)
          local status, out, err = dynlog("--json query orders 7 " .. args, e)
          assert.are.equal(0, status, err)
          return types_of(json_lines(out))
        end
        assert.are.same({ "four", "three", "two", "one" }, query("--reverse"))
        assert.are.same({ "one", "two" }, query("--limit 2"))
        assert.are.same({ "four", "three" }, query("--reverse --limit=2"))
        assert.are.same({ "two", "three", "four" }, query("--after " .. keys[1]))
        assert.are.same({ "two", "three" }, query("--after " .. keys[1] .. " --before " .. keys[4]))
        assert.are.same({ "three", "two", "one" }, query("--before " .. keys[4] .. " --reverse"))
      end)

      it("prints nothing for an empty stream", function()
        local status, out, err = dynlog("query orders nobody", e)
        assert.are.equal(0, status, err)
        assert.are.equal("", out)
      end)
    end)

    it("head prints the latest event, and nothing with status 0 for an empty stream", function()
      assert(c:append("carts", "1", "opened", {}))
      local last = assert(c:append("carts", "1", "closed", { total = 12.5 }))
      local status, out, err = dynlog("head carts 1", e)
      assert.are.equal(0, status, err)
      assert.matches("^SK%s+TIME%s+TYPE%s+PAYLOAD\n" .. last.sk
        .. "  [^\n]+  closed  {\"id\":\"1\",\"total\":12%.5}\n$", out)
      status, out, err = dynlog("head carts 1 --json", e)
      assert.are.equal(0, status, err)
      local ev = json.decode(out)
      assert.are.equal(last.sk, ev.sk)
      assert.are.equal("closed", ev.type)
      status, out, err = dynlog("head carts 2", e)
      assert.are.equal(0, status, err)
      assert.are.equal("", out)
      status, out, err = dynlog("head carts 2 --json", e)
      assert.are.equal(0, status, err)
      assert.are.equal("", out)
    end)

    it("append --event-id appends once: the same command again prints the key of the event written", function()
      local status, out, err = dynlog("append users 44 signup '{\"name\":\"Ada\"}' --event-id cmd-44", e)
      assert.are.equal(0, status, err)
      local first = out
      status, out, err = dynlog("append users 44 signup '{\"name\":\"Ada\"}' --event-id cmd-44", e)
      assert.are.equal(0, status, err)
      assert.are.equal(first, out)
      assert.are.equal(1, #assert(c:query("users", "44"):all()))
      status, out, err = dynlog("append users 44 signup '{\"name\":\"Bo\"}' --event-id cmd-44", e)
      assert.are.equal(1, status, out)
      assert.matches('dynlog: conflict: event id "cmd-44" is used already in users#44#stream', err, 1, true)
    end)

    it("in version mode, appends number the events and --expected-version guards them", function()
      local v = ddb.ready_client({ sort_key = "version" })
      local ve = cli_env(v.table, { DYNLOG_SORT_KEY = "version" })
      local status, out, err = dynlog("append acct 7 opened '{}' --expected-version no_stream", ve)
      assert.are.equal(0, status, err)
      assert.are.equal("acct#7#stream  1\n", out)
      status, out, err = dynlog("append acct 7 deposited '{\"amount\":5}' --expected-version 1 --json", ve)
      assert.are.equal(0, status, err)
      assert.are.same({ pk = "acct#7#stream", sk = 2 }, json.decode(out))
      status, out, err = dynlog("append acct 7 deposited '{\"amount\":6}' --expected-version 1", ve)
      assert.are.equal(1, status, out)
      assert.matches("dynlog: conflict: an event with sort key 2 already exists in acct#7#stream", err, 1, true)
      assert.matches("hint: another event took that position; read the stream with `dynlog head LOG ID`", err, 1, true)
      status, out, err = dynlog("append acct 7 closed '{}'", ve)
      assert.are.equal(0, status, err)
      assert.are.equal("acct#7#stream  3\n", out)

      status, out, err = dynlog("query acct 7 --after 1 --json", ve)
      assert.are.equal(0, status, err)
      local events = json_lines(out)
      assert.are.same({ "deposited", "closed" }, types_of(events))
      assert.are.equal(2, events[1].sk)
      status, out = dynlog("query acct 7", ve)
      assert.are.equal(0, status)
      -- the TIME column: appended_at, as versions carry no time
      assert.matches("^SK  TIME%s+TYPE%s+PAYLOAD\n1   %d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ  opened", out)
    end)
  end)

  describe("import", function()
    local c, e, dir

    setup(function()
      c = ddb.ready_client()
      e = cli_env(c.table)
      dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -p " .. dir))
    end)

    teardown(function()
      os.execute("rm -rf " .. dir)
    end)

    local function lines(list) return table.concat(list, "\n") .. "\n" end
    local function event_line(id, t, payload)
      return json.encode({ log = "imp", id = id, type = t, payload = payload })
    end

    it("appends every event, reports bad lines by number, and retries only them when rerun", function()
      local file = dir .. "/bad.jsonl"
      write_file(file, lines({
        event_line("a", "e1", { n = 1 }),
        '{"log":"imp","id":"a","type":"e2"}',
        "",
        '{"log":"imp","id":"a","type":"e3","payload":{"n":3}',  -- cut short
        '{"log":"imp","id":"a","type":"e4","payload":[1]}',      -- payload not an object
        event_line("a", "e5", { n = 5 }),
        '{"log":"imp","id":"a#b","type":"e6"}',                  -- refused by the library
        '{"log":"imp","id":"a","type":"e7"}',
      }))
      local status, out, err = dynlog("import " .. file, e)
      assert.are.equal(1, status, err)
      assert.matches("line 4: invalid JSON", err, 1, true)
      assert.matches('line 5: "payload" must be a JSON object', err, 1, true)
      assert.matches("line 7: invalid_argument: id must not contain '#'", err, 1, true)
      assert.matches("3 line(s) failed (4, 5, 7)", err, 1, true)
      assert.is_nil(err:find("line 2:", 1, true))
      assert.matches("imported 4 event(s); skipped 0 line(s) done before; 3 line(s) failed; progress in "
        .. file .. ".progress", out, 1, true)
      assert.are.same({ "e1", "e2", "e5", "e7" }, stream_types(c, "imp", "a"))
      assert.are.same({ file = file, line = 8, failed = { 4, 5, 7 } }, json.decode(read_file(file .. ".progress")))

      -- Fix two of the three and run the same command: only those are appended.
      write_file(file, lines({
        event_line("a", "e1", { n = 1 }), '{"log":"imp","id":"a","type":"e2"}', "",
        event_line("a", "e3", { n = 3 }), event_line("a", "e4", { n = 4 }), event_line("a", "e5", { n = 5 }),
        '{"log":"imp","id":"a#b","type":"e6"}', '{"log":"imp","id":"a","type":"e7"}',
      }))
      status, out, err = dynlog("import " .. file .. " --json", e)
      assert.are.equal(1, status, err)
      assert.are.same({ imported = 2, skipped = 5, failed = { 7 }, pending = {}, line = 8,
                        state = file .. ".progress" }, json.decode(out))
      assert.are.same({ "e1", "e2", "e5", "e7", "e3", "e4" }, stream_types(c, "imp", "a"))

      -- Once nothing fails, a rerun does nothing and succeeds.
      write_file(file, lines({
        event_line("a", "e1", { n = 1 }), '{"log":"imp","id":"a","type":"e2"}', "",
        event_line("a", "e3", { n = 3 }), event_line("a", "e4", { n = 4 }), event_line("a", "e5", { n = 5 }),
        event_line("a", "e6"), '{"log":"imp","id":"a","type":"e7"}',
      }))
      status, out, err = dynlog("import " .. file, e)
      assert.are.equal(0, status, err)
      assert.matches("imported 1 event(s); skipped 7 line(s) done before; 0 line(s) failed", out, 1, true)
      status, out, err = dynlog("import " .. file, e)
      assert.are.equal(0, status, err)
      assert.matches("imported 0 event(s); skipped 8 line(s) done before", out, 1, true)
      assert.are.same({ "e1", "e2", "e5", "e7", "e3", "e4", "e6" }, stream_types(c, "imp", "a"))
    end)

    it("lines with an event_id are appended once, even when the progress file is lost", function()
      local file = dir .. "/ids.jsonl"
      write_file(file, lines({
        '{"log":"imp","id":"ids","type":"e1","event_id":"i-1"}',
        '{"log":"imp","id":"ids","type":"e2","payload":{"n":2},"event_id":"i-2"}',
        '{"log":"imp","id":"ids","type":"e3","event_id":3}',
      }))
      local status, out, err = dynlog("import " .. file .. " --state " .. dir .. "/ids.a", e)
      assert.are.equal(1, status, err)
      assert.matches('line 3: "event_id" must be a string', err, 1, true)
      assert.matches("imported 2 event(s)", out, 1, true)
      status, out, err = dynlog("import " .. file .. " --state " .. dir .. "/ids.b", e)
      assert.are.equal(1, status, err)
      assert.matches("imported 0 event(s); 2 already there;", out, 1, true)
      assert.are.same({ "e1", "e2" }, stream_types(c, "imp", "ids"))
    end)

    it("appends a file with many requests in flight, each stream in the order of the file", function()
      local file = dir .. "/many.jsonl"
      local list = {}
      for i = 1, 300 do list[i] = event_line("m" .. (i % 7), "e" .. i) end
      write_file(file, lines(list))
      local status, out, err = dynlog("import " .. file .. " --concurrency 8 --save-every 120 --json", e)
      assert.are.equal(0, status, err)
      assert.are.same({ imported = 300, skipped = 0, failed = {}, pending = {}, line = 300,
                        state = file .. ".progress" }, json.decode(out))
      for s = 0, 6 do
        local expected = {}
        for i = 1, 300 do if i % 7 == s then expected[#expected + 1] = "e" .. i end end
        assert.are.same(expected, stream_types(c, "imp", "m" .. s))
      end
      local _
      status, _, err = dynlog("import " .. file .. " --concurrency 2000", e)
      assert.are.equal(2, status, err)
      assert.matches("--concurrency must be at most 1024", err, 1, true)
    end)

    it("--limit stops after N lines and the next run resumes after them, appending each event once", function()
      local file = dir .. "/limit.jsonl"
      local list = {}
      for i = 1, 7 do list[i] = event_line("b", "e" .. i, { i = i }) end
      write_file(file, lines(list))
      local state = dir .. "/limit.state"
      local status, out, err = dynlog("import " .. file .. " --state " .. state .. " --limit 3 --save-every 2", e)
      assert.are.equal(0, status, err)
      assert.matches("imported 3 event(s)", out, 1, true)
      assert.matches("stopped after --limit 3 line(s); rerun the same command to resume after line 3", err, 1, true)
      assert.are.equal(3, json.decode(read_file(state)).line)
      assert.is_nil(read_file(file .. ".progress"))
      assert.are.same({ "e1", "e2", "e3" }, stream_types(c, "imp", "b"))

      status, out, err = dynlog("import " .. file .. " --state=" .. state, e)
      assert.are.equal(0, status, err)
      assert.matches("imported 4 event(s); skipped 3 line(s) done before", out, 1, true)
      assert.are.same({ "e1", "e2", "e3", "e4", "e5", "e6", "e7" }, stream_types(c, "imp", "b"))
    end)

    it("follows a progress file written by hand, and reads stdin with -", function()
      local list = {}
      for i = 1, 5 do list[i] = event_line("c", "e" .. i) end
      local state = dir .. "/hand.state"
      write_file(state, '{"line": 2}')
      local status, out, err = dynlog("import - --state " .. state, e, lines(list))
      assert.are.equal(0, status, err)
      assert.matches("imported 3 event(s); skipped 2 line(s) done before", out, 1, true)
      assert.are.same({ "e3", "e4", "e5" }, stream_types(c, "imp", "c"))
      assert.are.same({ file = "-", line = 5, failed = {} }, json.decode(read_file(state)))

      write_file(state, "garbage")
      status, out, err = dynlog("import - --state " .. state, e, lines(list))
      assert.are.equal(1, status, err)
      assert.are.equal("", out)
      assert.matches("dynlog: bad_state: progress file " .. state, err, 1, true)
      assert.matches("hint: remove it to start from the first line", err, 1, true)
      assert.are.same({ "e3", "e4", "e5" }, stream_types(c, "imp", "c"))
    end)

    it("stops at an operation failure with the progress saved, and resumes from there", function()
      local name = ddb.table_name("cli-import-later")
      local file = dir .. "/later.jsonl"
      write_file(file, lines({ event_line("d", "e1"), event_line("d", "e2") }))
      local status, out, err = dynlog("import " .. file, cli_env(name))
      assert.are.equal(1, status, out)
      assert.matches("dynlog: import stopped at line 1", err, 1, true)
      assert.matches("dynlog: ResourceNotFoundException: ", err, 1, true)
      assert.matches("create it with `dynlog tables create`", err, 1, true)
      assert.matches("then rerun the same command to resume from line 1", err, 1, true)
      -- the batch held both lines: the second was kept back behind the first
      assert.are.same({ file = file, line = 2, failed = {}, pending = { 1, 2 } },
        json.decode(read_file(file .. ".progress")))

      status, out, err = dynlog("tables create", cli_env(name))
      assert.are.equal(0, status, err)
      assert.matches("status      ACTIVE", out, 1, true)
      status, out, err = dynlog("import " .. file, cli_env(name))
      assert.are.equal(0, status, err)
      assert.matches("imported 2 event(s)", out, 1, true)
    end)

    it("saves the progress when interrupted, even in the middle of a read, and exits 1", function()
      local fifo = dir .. "/input.fifo"
      local state = dir .. "/fifo.state"
      assert(os.execute("mkfifo " .. fifo))
      local p = spawn("import - --state " .. state .. " --save-every 100 <" .. fifo, e)
      local writer = assert(io.open(fifo, "w")) -- opens once the command reads
      writer:write(event_line("g", "e1"), "\n", event_line("g", "e2"), "\n")
      writer:flush()
      local deadline = socket.gettime() + 20
      while #stream_types(c, "imp", "g") < 2 and socket.gettime() < deadline do socket.sleep(0.05) end
      assert.are.same({ "e1", "e2" }, stream_types(c, "imp", "g"))
      p.kill("INT") -- it is waiting for the third line
      local status = p.wait(15)
      local err = p.stderr()
      writer:close()
      p.cleanup()
      assert.are.equal(1, status, err)
      assert.matches("dynlog: interrupted by SIGINT after line 2; rerun the same command to resume after line 2",
        err, 1, true)
      assert.are.equal(2, json.decode(read_file(state)).line)
    end)

    it("reads a pipe named as FILE once, as it comes, with --state; refuses it without", function()
      local state = dir .. "/pipe.state"
      local list = {}
      for i = 1, 5 do list[i] = event_line("pipe", "e" .. i) end
      local gz = dir .. "/pipe.jsonl.gz"
      local plain = dir .. "/pipe.jsonl"
      write_file(plain, lines(list))
      assert(os.execute("gzip -c " .. plain .. " >" .. gz))
      local function via_bash(args)
        local err_file = os.tmpname()
        local status, out = run.run("bash -c " .. run.quote("lua5.4 bin/dynlog " .. args .. " 2>" .. err_file), e)
        local err = read_file(err_file) or ""
        os.remove(err_file)
        return status, out, err
      end
      local status, out, err = via_bash("import <(zcat " .. gz .. ")")
      assert.are.equal(2, status, out .. err)
      assert.matches("is not a regular file (a pipe?)", err, 1, true)
      assert.matches("pass --state PATH", err, 1, true)
      assert.are.same({}, stream_types(c, "imp", "pipe"))

      status, out, err = via_bash("import <(zcat " .. gz .. ") --state " .. state)
      assert.are.equal(0, status, out .. err)
      assert.matches("imported 5 event(s)", out, 1, true)
      assert.are.same({ "e1", "e2", "e3", "e4", "e5" }, stream_types(c, "imp", "pipe"))
      assert.are.equal(5, json.decode(read_file(state)).line)
      -- the same content again: every line was done
      status, out, err = via_bash("import <(zcat " .. gz .. ") --state " .. state)
      assert.are.equal(0, status, out .. err)
      assert.matches("imported 0 event(s); skipped 5 line(s) done before", out, 1, true)

      -- a named FIFO: nothing read twice, nothing waited for after its writer closes
      local fifo = dir .. "/named.fifo"
      assert(os.execute("mkfifo " .. fifo))
      local p = spawn("import " .. fifo .. " --state " .. dir .. "/named.state", e)
      local writer = assert(io.open(fifo, "w"))
      writer:write(event_line("fifo", "e1"), "\n", event_line("fifo", "e2"), "\n")
      writer:close()
      local fstatus = p.wait(20)
      local ferr = p.stderr()
      p.cleanup()
      assert.are.equal(0, fstatus, ferr)
      assert.are.same({ "e1", "e2" }, stream_types(c, "imp", "fifo"))
    end)

    it("a directory or an unreadable file is an error, never a trace", function()
      local status, out, err = dynlog("import " .. dir, e)
      assert.are.equal(1, status, out)
      assert.matches("dynlog: io: cannot read " .. dir .. ": Is a directory", err, 1, true)
      assert.is_nil(err:find("traceback", 1, true))
    end)

    it("a numeric id beyond what a number holds exactly is a line error; the rest is imported, and a rerun too",
        function()
      local file = dir .. "/bigid.jsonl"
      write_file(file, lines({
        '{"log":"imp","id":"big","type":"e1"}',
        '{"log":"imp","id":99999999999999999999,"type":"e2"}',
        '{"log":"imp","id":9007199254740993,"type":"e3"}',
        '{"log":"imp","id":"big","type":"e4"}',
        '{"log":"imp","id":9007199254740991,"type":"e5"}',
      }))
      for _ = 1, 2 do
        local status, out, err = dynlog("import " .. file, e)
        assert.are.equal(1, status, out .. err)
        assert.is_nil(err:find("internal error", 1, true))
        assert.matches('line 2: "id" is a number that cannot be held exactly (integers up to 9007199254740991)',
          err, 1, true)
        assert.matches("line 3: ", err, 1, true)
        assert.matches("2 line(s) failed (2, 3)", err, 1, true)
      end
      assert.are.same({ "e1", "e4" }, stream_types(c, "imp", "big"))
      assert.are.same({ "e5" }, stream_types(c, "imp", "9007199254740991"))
    end)

    it("skips a UTF-8 byte order mark at the start of the file", function()
      local file = dir .. "/bom.jsonl"
      write_file(file, "\239\187\191" .. lines({ event_line("bom", "e1"), event_line("bom", "e2") }))
      local status, out, err = dynlog("import " .. file, e)
      assert.are.equal(0, status, out .. err)
      assert.matches("imported 2 event(s)", out, 1, true)
      assert.are.same({ "e1", "e2" }, stream_types(c, "imp", "bom"))
    end)

    for _, signal in ipairs({ "HUP", "PIPE" }) do
      it("stops on SIG" .. signal .. " after the batch, saved: resumed, every event is appended once", function()
        local file = dir .. "/sig" .. signal .. ".jsonl"
        local list, n = {}, 3000
        for i = 1, n do list[i] = event_line("sig" .. signal .. (i % 5), "e" .. i) end
        write_file(file, lines(list))
        local p = spawn("import " .. file .. " --save-every 100 --concurrency 4", e)
        local deadline = socket.gettime() + 30
        while socket.gettime() < deadline and #stream_types(c, "imp", "sig" .. signal .. "1") < 30 do
          socket.sleep(0.02)
        end
        p.kill(signal)
        local status = p.wait(30)
        local err = p.stderr()
        p.cleanup()
        assert.are.equal(1, status, err)
        assert.matches("dynlog: interrupted by SIG" .. signal .. " after line ", err, 1, true)
        local out
        status, out, err = dynlog("import " .. file, e)
        assert.are.equal(0, status, err)
        assert.matches("skipped %d+ line%(s%) done before", out)
        local total = 0
        for s5 = 0, 4 do
          local expected = {}
          for i = 1, n do if i % 5 == s5 then expected[#expected + 1] = "e" .. i end end
          local got = stream_types(c, "imp", "sig" .. signal .. s5)
          total = total + #got
          assert.are.same(expected, got)
        end
        assert.are.equal(n, total)
      end)
    end

    describe("the seed format", function()
      local function seed_line(log, id, sk, t, payload, pk)
        return json.encode({ pk = pk or (log .. "#" .. id .. "#stream"), sk = sk, type = t, log = log,
                             payload = payload })
      end

      it("appends seed lines as new events, or with --keep-keys at their own ULIDs, never twice", function()
        local ulid = require("dynlog.core").ulid
        local k1, k2, k3 = ulid(), ulid(), ulid()
        local file = dir .. "/events.ldjson"
        write_file(file, lines({
          seed_line("seed", "1", k1, "signup", { id = "1", name = "Ada" }),
          seed_line("seed", "1", k2, "renamed", { id = "1", name = "Ada L." }),
          seed_line("seed", "2", k3, "signup", { name = "Grace" }),
          seed_line("seed", "3", k3, "signup", { id = "4" }),                         -- payload.id disagrees
          seed_line("other", "3", k3, "signup", {}, "seed#3#stream"),                 -- log disagrees
          seed_line("seed", "3", k3, "signup", {}, "seed#3"),                         -- not a stream's pk
          seed_line("seed", "3", "not-a-ulid", "signup", {}),
        }))
        local status, out, err = dynlog("import " .. file .. " --keep-keys --json", e)
        assert.are.equal(1, status, err)
        assert.are.same({ imported = 3, existing = 0, skipped = 0, failed = { 4, 5, 6, 7 }, pending = {}, line = 7,
                          state = file .. ".progress" }, json.decode(out))
        assert.matches('line 4: "payload.id" is "4" but "pk" is of id "3"', err, 1, true)
        assert.matches('line 5: "log" is "other" but "pk" is of log "seed"', err, 1, true)
        assert.matches('line 6: "pk" must be "<log>#<id>#stream"', err, 1, true)
        assert.matches('line 7: "sk" must be a ULID to keep it in a ulid-mode table', err, 1, true)
        local events = assert(assert(c:query("seed", "1")):all())
        assert.are.same({ k1, k2 }, { events[1].sk, events[2].sk })
        assert.are.same({ id = "1", name = "Ada L." }, events[2].payload)
        assert.are.equal(k3, assert(c:head("seed", "2")).sk)

        -- the progress lost: the same file again writes nothing twice
        os.remove(file .. ".progress")
        status, out, err = dynlog("import " .. file .. " --keep-keys --json", e)
        assert.are.equal(1, status, err)
        local r = json.decode(out)
        assert.are.equal(0, r.imported)
        assert.are.equal(3, r.existing)
        assert.are.same({ "signup", "renamed" }, stream_types(c, "seed", "1"))
        assert.are.same({ "signup" }, stream_types(c, "seed", "2"))

        -- another event at a kept key is that line's conflict; the stream's next lines still go in
        local file2 = dir .. "/events2.ldjson"
        local k4 = ulid()
        write_file(file2, lines({
          seed_line("seed", "1", k2, "closed", { id = "1" }),
          seed_line("seed", "1", k4, "reopened", { id = "1" }),
        }))
        status, out, err = dynlog("import " .. file2 .. " --keep-keys", e)
        assert.are.equal(1, status, err)
        assert.matches("line 1: conflict: an event with sort key " .. k2 .. " already exists in seed#1#stream",
          err, 1, true)
        assert.matches("imported 1 event(s); 0 already there", out, 1, true)
        assert.are.same({ "signup", "renamed", "reopened" }, stream_types(c, "seed", "1"))

        -- without --keep-keys: new events with new sort keys
        os.remove(file2 .. ".progress")
        status, out, err = dynlog("import " .. file2, e)
        assert.are.equal(0, status, err)
        assert.matches("imported 2 event(s)", out, 1, true)
        events = assert(assert(c:query("seed", "1")):all())
        assert.are.same({ "signup", "renamed", "reopened", "closed", "reopened" }, types_of(events))
        assert.is_true(events[4].sk > k4)
      end)

      it("keeps version numbers in a version-mode table", function()
        local v = ddb.ready_client({ sort_key = "version" })
        local ve = cli_env(v.table, { DYNLOG_SORT_KEY = "version" })
        local file = dir .. "/versions.ldjson"
        write_file(file, lines({
          seed_line("acct", "7", 1, "opened", { id = "7" }),
          seed_line("acct", "7", 2, "deposited", { id = "7", amount = 5 }),
          seed_line("acct", "8", 3, "opened", {}),
          seed_line("acct", "9", "1", "opened", {}),
          seed_line("acct", "9", 99999999999999999999, "opened", {}),
        }))
        local status, out, err = dynlog("import " .. file .. " --keep-keys", ve)
        assert.are.equal(1, status, err)
        assert.matches("imported 3 event(s); 0 already there", out, 1, true)
        assert.matches('line 4: "sk" must be a version number (1 to 9007199254740991)', err, 1, true)
        assert.matches("line 5: ", err, 1, true)
        assert.are.equal(2, assert(v:head("acct", "7")).sk)
        assert.are.equal(3, assert(v:head("acct", "8")).sk)
        os.remove(file .. ".progress")
        status, out = dynlog("import " .. file .. " --keep-keys", ve)
        assert.are.equal(1, status, out)
        assert.matches("imported 0 event(s); 3 already there", out, 1, true)
        assert.are.same({ "opened", "deposited" }, stream_types(v, "acct", "7"))
      end)
    end)

    it("draws a progress bar on stderr when it is a terminal, and none otherwise", function()
      local file = dir .. "/bar.jsonl"
      write_file(file, lines({ event_line("f", "e1"), event_line("f", "e2"), event_line("f", "e3") }))
      local status, _, err = dynlog("import " .. file .. " --state " .. dir .. "/bar1.state", e)
      assert.are.equal(0, status, err)
      assert.is_nil(err:find("\r", 1, true))
      assert.is_nil(err:find("[###", 1, true))

      -- script(1) gives the command a terminal.
      local prefix = {}
      for k, v in pairs(e) do prefix[#prefix + 1] = k .. "=" .. run.quote(v) end
      local inner = "env " .. table.concat(prefix, " ") .. " lua5.4 bin/dynlog import " .. file .. " --state "
        .. dir .. "/bar2.state"
      local out
      status, out = run.run("script -qec " .. run.quote(inner) .. " /dev/null")
      assert.are.equal(0, status, out)
      assert.matches("\r  [##############################] 3/3 lines 100%", out, 1, true)
      assert.matches("imported 3 event(s)", out, 1, true)
    end)
  end)

  describe("tail", function()
    local c, e
    local procs = {}

    setup(function()
      c = ddb.ready_client()
      e = cli_env(c.table)
    end)

    after_each(function()
      for _, p in ipairs(procs) do p.cleanup() end
      procs = {}
    end)

    local function start(args)
      local p = spawn(args, e)
      procs[#procs + 1] = p
      assert.is_true(p.wait_for_stderr("dynlog: following the stream of " .. c.table, 20), p.stderr())
      return p
    end

    it("--from-start --count N prints the N oldest events and exits 0", function()
      assert(c:append("hist", "1", "first", { n = 1 }))
      assert(c:append("hist", "1", "second", { n = 2 }))
      local status, out, err = dynlog("tail --from-start --count 2 --log hist --json", e)
      assert.are.equal(0, status, err)
      local events = json_lines(out)
      assert.are.same({ "first", "second" }, types_of(events))
      assert.are.same({ id = "1", n = 2 }, events[2].payload)
    end)

    it("prints the events appended while it runs, filtered by --log, until --count", function()
      local p = start("tail --log live --count 2")
      assert(c:append("other", "9", "ignored", {}))
      local first = assert(c:append("live", "1", "created", { total = 3 }))
      local second = assert(c:append("live", "2", "paid", {}))
      local status = p.wait(30)
      assert.are.equal(0, status, p.stderr())
      local lines = {}
      for line in p.stdout():gmatch("[^\n]+") do lines[#lines + 1] = line end
      assert.are.equal(3, #lines, p.stdout())
      assert.matches("^LOG%s+ID%s+SK%s+TIME%s+TYPE%s+PAYLOAD$", lines[1])
      assert.matches("^live  1   " .. first.sk .. "  %S+  created  {\"id\":\"1\",\"total\":3}$", lines[2])
      assert.matches("^live  2   " .. second.sk .. "  %S+  paid%s+{\"id\":\"2\"}$", lines[3])
      assert.is_nil(p.stdout():find("ignored", 1, true))
    end)

    it("--json prints the new events only, one per line", function()
      assert(c:append("json", "1", "before", {}))
      local p = start("tail --json --count 1 --log json")
      assert(c:append("json", "1", "after", { x = 1 }))
      assert.are.equal(0, p.wait(30), p.stderr())
      local events = json_lines(p.stdout())
      assert.are.equal(1, #events)
      assert.are.same({ "after" }, types_of(events))
      assert.are.equal("json#1#stream", events[1].pk)
    end)

    for _, signal in ipairs({ "TERM", "INT" }) do
      it("stops on SIG" .. signal .. " with status 0", function()
        local p = start("tail")
        p.kill(signal)
        assert.are.equal(0, p.wait(15), p.stderr())
        assert.matches("dynlog: stopped by SIG" .. signal .. " after 0 event(s)", p.stderr(), 1, true)
      end)
    end

    it("exits 1 for a table without a stream, telling how to turn it on", function()
      local plain = ddb.client()
      assert(plain:create_table({ stream = false }))
      local status, _, err = dynlog("tail --count 1", cli_env(plain.table))
      assert.are.equal(1, status, err)
      assert.matches("dynlog: no_stream: table " .. plain.table .. " has no stream", err, 1, true)
      assert.matches("hint: enable it with `dynlog tables create`", err, 1, true)
      local out
      status, out, err = dynlog("tables create --json", cli_env(plain.table))
      assert.are.equal(0, status, err)
      assert.are.equal("NEW_AND_OLD_IMAGES", json.decode(out).stream_view_type)
    end)
  end)

  describe("replay", function()
    local c, e, srv
    local keys = {}
    local mark_ms

    setup(function()
      c = ddb.ready_client()
      e = cli_env(c.table)
      keys[1] = assert(c:append("users", "1", "signup", { name = "Ada" }))
      keys[2] = assert(c:append("users", "1", "rename", { name = "Ada L." }))
      keys[3] = assert(c:append("orders", "5", "created", { total = 10 }))
      socket.sleep(0.05)
      mark_ms = math.floor(socket.gettime() * 1000)
      socket.sleep(0.05)
      keys[4] = assert(c:append("users", "2", "signup", { name = "Grace" }))
      keys[5] = assert(c:append("orders", "5", "paid", { amount = 10 }))
      -- not an event: no "#stream" suffix
      assert(c:call("PutItem", { TableName = c.table, Item = { pk = { S = "users#1#snapshot" }, sk = { S = "x" } } }))
    end)

    before_each(function()
      srv = server.start({ { method = "POST", path = "/", responses = { { putevents = true } } } })
    end)

    after_each(function()
      srv.stop()
    end)

    local function published()
      local entries = {}
      for _, req in ipairs(srv.requests()) do
        assert.are.equal("AWSEvents.PutEvents", req.headers["x-amz-target"])
        for _, entry in ipairs(json.decode(req.body).Entries) do entries[#entries + 1] = entry end
      end
      return entries
    end

    local function by_sk(entries)
      local t = {}
      for _, entry in ipairs(entries) do t[json.decode(entry.Detail).key.sk] = entry end
      return t
    end

    it("publishes every stored event with the trigger's detail to dynamodb-log", function()
      local status, out, err = dynlog("replay", cli_env(c.table, { AWS_ENDPOINT_URL_EVENTBRIDGE = srv.url }))
      assert.are.equal(0, status, err)
      assert.matches("published 5 event(s) to bus dynamodb-log (6 item(s) scanned)", out, 1, true)
      local entries = published()
      assert.are.equal(5, #entries)
      local got = by_sk(entries)
      local trigger = require "dynlog.trigger"
      for _, key in ipairs(keys) do
        local entry = got[key.sk]
        assert.is_truthy(entry, key.sk)
        assert.are.equal("dynamodb-log", entry.EventBusName)
        assert.are.equal("dynamodb-log", entry.Source)
        assert.are.equal("stream changes", entry.DetailType)
        local item = assert(c:get(key.pk:match("^([^#]+)"), key.pk:match("^[^#]+#([^#]+)"), key.sk))
        assert.are.same(json.decode(trigger.detail(item)), json.decode(entry.Detail))
      end
      -- each stream's events in order
      local order = {}
      for i, entry in ipairs(entries) do order[json.decode(entry.Detail).key.sk] = i end
      assert.is_true(order[keys[1].sk] < order[keys[2].sk])
      assert.is_true(order[keys[3].sk] < order[keys[5].sk])
    end)

    it("--log, --since (RFC 3339 or epoch seconds) and --bus/--source/--detail-type", function()
      local e2 = cli_env(c.table)
      local status, out, err = dynlog("replay --log users --events-endpoint " .. srv.url .. " --json", e2)
      assert.are.equal(0, status, err)
      assert.are.same({ published = 3, scanned = 4, bus = "dynamodb-log" }, json.decode(out))
      local got = by_sk(published())
      assert.is_truthy(got[keys[1].sk] and got[keys[2].sk] and got[keys[4].sk])

      local since = os.date("!%Y-%m-%dT%H:%M:%S", math.floor(mark_ms / 1000)) .. (".%03dZ"):format(mark_ms % 1000)
      status, out, err = dynlog("replay --since " .. since .. " --bus other --source me --detail-type 'replayed'"
        .. " --events-endpoint " .. srv.url, e2)
      assert.are.equal(0, status, err)
      assert.matches("published 2 event(s) to bus other", out, 1, true)
      local entries = published()
      assert.are.equal(3 + 2, #entries)
      for i = 4, 5 do
        assert.are.equal("other", entries[i].EventBusName)
        assert.are.equal("me", entries[i].Source)
        assert.are.equal("replayed", entries[i].DetailType)
      end
      got = by_sk({ entries[4], entries[5] })
      assert.is_truthy(got[keys[4].sk] and got[keys[5].sk])

      status, out, err = dynlog(("replay --since %.3f --log orders --events-endpoint %s")
        :format(mark_ms / 1000, srv.url), e2)
      assert.are.equal(0, status, err)
      assert.matches("published 1 event(s)", out, 1, true)
      entries = published()
      assert.are.equal(keys[5].sk, json.decode(entries[#entries].Detail).key.sk)
    end)

    it("exits 1 when EventBridge refuses an entry", function()
      srv.stop()
      srv = server.start({ { method = "POST", path = "/", responses = {
        { putevents = true, fail = { { index = 1, code = "MalformedDetail", message = "no" } } } } } })
      local status, _, err = dynlog("replay --log orders --events-endpoint " .. srv.url, e)
      assert.are.equal(1, status, err)
      assert.matches("dynlog: replay stopped after publishing 1 event(s)", err, 1, true)
      assert.matches("dynlog: publish_failed: 1 of 2 entries were not published (first: MalformedDetail:"
        .. " entries[1]: no)", err, 1, true)
      assert.matches("hint: check --events-endpoint", err, 1, true)

      local port = unused_port()
      status, _, err = dynlog("replay --log orders --events-endpoint http://127.0.0.1:" .. port, e)
      assert.are.equal(1, status, err)
      assert.matches("dynlog: publish_failed: ", err, 1, true)
      assert.matches("hint: could not reach EventBridge at http://127.0.0.1:" .. port .. "/; check --events-endpoint",
        err, 1, true)
    end)
  end)

  describe("time and metadata, version mode", function()
    local c, e, srv
    local t1, t2

    -- RFC 3339 with milliseconds
    local function rfc(ms)
      return os.date("!%Y-%m-%dT%H:%M:%S", math.floor(ms / 1000)) .. (".%03dZ"):format(ms % 1000)
    end

    local function mark()
      socket.sleep(0.05)
      local t = math.floor(socket.gettime() * 1000)
      socket.sleep(0.05)
      return t
    end

    setup(function()
      c = ddb.ready_client({ sort_key = "version" })
      e = cli_env(c.table, { DYNLOG_SORT_KEY = "version" })
      assert(c:append("acct", "7", "opened", {}))
      t1 = mark()
      local status, out, err = dynlog("append acct 7 deposited '{\"amount\":5}' --json --meta "
        .. "'{\"correlation_id\":\"req-1\",\"trace_id\":\"Root=1-abc\",\"schema_version\":2,\"who\":\"ops\"}'", e)
      assert.are.equal(0, status, err)
      assert.are.same({ pk = "acct#7#stream", sk = 2 }, json.decode(out))
      t2 = mark()
      assert(c:append("acct", "7", "closed", {}))
    end)

    after_each(function() if srv then srv.stop() end srv = nil end)

    it("append --meta stores the metadata; query --json shows it with appended_at", function()
      local ev = assert(c:get("acct", "7", 2))
      assert.are.same({ correlation_id = "req-1", trace_id = "Root=1-abc", schema_version = 2, who = "ops" }, ev.meta)
      assert.is_true(ev.appended_at > t1 and ev.appended_at < t2)
      local status, out, err = dynlog("query acct 7 --json", e)
      assert.are.equal(0, status, err)
      local events = json_lines(out)
      assert.are.equal("req-1", events[2].meta.correlation_id)
      assert.are.equal(ev.appended_at, events[2].appended_at)
      -- an invalid one is refused, and nothing is written
      local _
      status, _, err = dynlog("append acct 7 x '{}' --meta '{\"schema_version\":\"two\"}'", e)
      assert.are.equal(1, status)
      assert.matches("meta.schema_version must be a positive integer", err, 1, true)
      assert.are.equal(3, assert(c:head("acct", "7")).sk)
    end)

    it("query --since/--until in version mode", function()
      local status, out, err = dynlog("query acct 7 --json --since " .. rfc(t1) .. " --until " .. rfc(t2), e)
      assert.are.equal(0, status, err)
      assert.are.same({ "deposited" }, types_of(json_lines(out)))
      status, out, err = dynlog(("query acct 7 --json --since %.3f"):format(t2 / 1000), e)
      assert.are.equal(0, status, err)
      assert.are.same({ "closed" }, types_of(json_lines(out)))
    end)

    it("replay --since/--until in version mode, with Time and TraceHeader", function()
      srv = server.start({ { method = "POST", path = "/", responses = { { putevents = true } } } })
      local status, out, err = dynlog("replay --json --since " .. rfc(t1) .. " --until " .. rfc(t2)
        .. " --events-endpoint " .. srv.url, e)
      assert.are.equal(0, status, err)
      assert.are.equal(1, json.decode(out).published)
      local entries = json.decode(srv.requests()[1].body).Entries
      assert.are.equal(1, #entries)
      local d = json.decode(entries[1].Detail)
      assert.are.equal("deposited", d.type)
      assert.are.equal("req-1", d.meta.correlation_id)
      assert.are.equal(d.appended_at / 1000, entries[1].Time)
      assert.are.equal("Root=1-abc", entries[1].TraceHeader)
    end)

    it("tail --since starts at the oldest records and shows events of that time or later", function()
      local status, out, err = dynlog("tail --json --count 2 --since " .. rfc(t1), e)
      assert.are.equal(0, status, err)
      assert.are.same({ "deposited", "closed" }, types_of(json_lines(out)))
    end)

    it("import: lines with meta; --keep-keys keeps a line's appended_at, else none in version mode", function()
      local path = os.tmpname()
      write_file(path, table.concat({
        '{"log":"imp","id":"1","type":"a","meta":{"correlation_id":"batch-9"}}',
        '{"pk":"seed#1#stream","sk":1,"type":"s","log":"seed","payload":{"id":"1"},"appended_at":1700000000000,'
          .. '"meta":{"causation_id":"x"}}',
        '{"pk":"seed#1#stream","sk":2,"type":"s","log":"seed","payload":{"id":"1"}}',
        '{"log":"imp","id":"1","type":"b","meta":{"schema_version":0}}',
        '{"log":"imp","id":"1","type":"c","meta":[1]}',
      }, "\n") .. "\n")
      local status, _, err = dynlog("import --keep-keys --json " .. path, e)
      os.remove(path)
      os.remove(path .. ".progress")
      assert.are.equal(1, status, err)
      assert.matches("line 4: invalid_argument: meta.schema_version must be a positive integer", err, 1, true)
      assert.matches('line 5: "meta" must be a JSON object', err, 1, true)
      local imp = assert(c:query("imp", "1"):all())
      assert.are.equal(1, #imp)
      assert.are.same({ correlation_id = "batch-9" }, imp[1].meta)
      assert.is_number(imp[1].appended_at)
      local seed = assert(c:query("seed", "1"):all())
      assert.are.equal(1700000000000, seed[1].appended_at)
      assert.are.same({ causation_id = "x" }, seed[1].meta)
      assert.is_nil(seed[2].appended_at)
    end)
  end)

  describe("feed", function()
    local c, e
    local procs = {}

    setup(function()
      c = ddb.ready_client()
      e = cli_env(c.table)
    end)

    after_each(function()
      for _, p in ipairs(procs) do p.cleanup() end
      procs = {}
    end)

    local function positions_of(events)
      local list = {}
      for i, ev in ipairs(events) do list[i] = ev.position end
      return list
    end

    it("backfill adds the events written before, with progress and a --json summary; head prints the head", function()
      for i = 1, 5 do assert(c:append("orders", tostring(i % 2), "placed", { n = i })) end
      assert(c:append("users", "1", "signup", { n = 6 }))
      local status, out, err = dynlog("feed head", e)
      assert.are.equal(1, status, out)
      assert.matches("hint: the feed table " .. c.table .. "-feed", err, 1, true)
      status, out, err = dynlog("feed backfill --json --page-size 2", e)
      assert.are.equal(0, status, err)
      local summary = json.decode(out)
      assert.are.equal(6, summary.added)
      assert.are.equal(6, summary.head)
      assert.are.equal(3, summary.streams)
      assert.is_false(summary.resumed)
      assert.matches("dynlog: backfill: page 1: 2 item(s) scanned", err, 1, true)
      status, out, err = dynlog("feed backfill", e)
      assert.are.equal(0, status, err)
      assert.are.equal("added 0 event(s) of 6 in 3 stream(s) to " .. c.table .. "-feed (head 6)\n", out)
      status, out, err = dynlog("feed head", e)
      assert.are.equal(0, status, err)
      assert.are.equal("6\n", out)
      status, out = dynlog("feed head --json", e)
      assert.are.equal(0, status, out)
      assert.are.same({ head = 6, feed_table = c.table .. "-feed" }, json.decode(out))
    end)

    it("read prints the events in feed order as JSON lines with positions: --after, --limit, --logs, --types",
      function()
      local status, out, err = dynlog("feed read", e)
      assert.are.equal(0, status, err)
      local events = json_lines(out)
      assert.are.same({ 1, 2, 3, 4, 5, 6 }, positions_of(events))
      assert.are.same(assert(c:read_all{}), events)
      status, out = dynlog("feed read --after 2 --limit 3", e)
      assert.are.equal(0, status, out)
      assert.are.same({ 3, 4, 5 }, positions_of(json_lines(out)))
      status, out = dynlog("feed read --logs users", e)
      assert.are.equal(0, status, out)
      assert.are.same(assert(c:read_all{ logs = { "users" } }), json_lines(out))
      assert.are.equal(1, #json_lines(out))
      status, out = dynlog("feed read --types placed,nothing --after 3", e)
      assert.are.equal(0, status, out)
      local placed = positions_of(assert(c:read_all{ types = { "placed" }, after = 3 }))
      assert.is_true(#placed >= 2)
      assert.are.same(placed, positions_of(json_lines(out)))
      for _, bad in ipairs({ "feed read --after -1", "feed read --after x", "feed read --limit 0",
                             "feed read --logs a,,b", "feed head --limit 3", "feed nothing", "feed" }) do
        status, _, err = dynlog(bad, e)
        assert.are.equal(2, status, bad .. ": " .. err)
      end
    end)

    it("index runs the indexer until SIGTERM; read --follow prints the new events as they come", function()
      local cp = ddb.table_name("cp")
      local ix = spawn("feed index --checkpoint-table " .. cp .. " --worker-id cli --json", e)
      procs[#procs + 1] = ix
      assert.is_true(ix.wait_for_stderr("dynlog: indexing the stream of " .. c.table .. " into " .. c.table
        .. "-feed", 30), ix.stderr())
      local follow = spawn("feed read --follow --after 6", e)
      procs[#procs + 1] = follow
      assert(c:append("orders", "7", "placed", { n = 7 }))
      assert(c:append_batch("orders", "8", { { type = "placed", payload = { n = 8 } },
                                              { type = "paid", payload = { n = 9 } } }))
      local deadline = socket.gettime() + 30
      while socket.gettime() < deadline and #json_lines(follow.stdout()) < 3 do socket.sleep(0.1) end
      local events = json_lines(follow.stdout())
      assert.are.same({ 7, 8, 9 }, positions_of(events), follow.stderr() .. ix.stderr())
      assert.are.same({ "placed", "placed", "paid" }, types_of(events))
      follow.kill("TERM")
      assert.are.equal(0, follow.wait(15), follow.stderr())
      ix.kill("TERM")
      assert.are.equal(0, ix.wait(15), ix.stderr())
      local stats = json.decode(ix.stdout())
      assert.are.equal(3, stats.indexed, ix.stdout())
      assert.are.equal(9, stats.seen) -- the stream holds the backfilled events too
      assert.are.equal(9, stats.head)
      assert.matches("dynlog: stopped after indexing 3 event(s)", ix.stderr(), 1, true)
      -- Its leases are handed back, in the feed's group.
      local leases = assert(require("dynlog.pipeline.leases").read_all(c, cp, c.table .. "#feed"))
      local n = 0
      for _, lease in pairs(leases) do n = n + 1 assert.is_nil(lease.owner) end
      assert.are.equal(1, n)
    end)
  end)

  describe("in-process", function()
    local cli = require "dynlog.cli"

    local function buffer()
      local b = { text = "" }
      function b:write(...) for _, s in ipairs({ ... }) do self.text = self.text .. s end return self end
      function b.flush() end
      return b
    end

    it("main returns the exit status and writes to the streams it is given", function()
      local out, err = buffer(), buffer()
      local status = cli.main({ "query" }, function(name) return name == "DYNLOG_TABLE" and "t-in" or nil end,
        { stdout = out, stderr = err, stdin = buffer(), isatty = function() return false end })
      assert.are.equal(2, status)
      assert.are.equal("", out.text)
      assert.matches("dynlog: missing argument: LOG ID\nusage: dynlog query LOG ID [options]\n", err.text, 1, true)
      out = buffer()
      assert.are.equal(0, cli.main({ "--version" }, os.getenv, { stdout = out, stderr = err }))
      assert.matches("^dynlog %d+%.%d+%.%d+\n$", out.text)
    end)

    it("encodes JSON with sorted keys", function()
      assert.are.equal('{"a":[1,{"c":null,"d":"x"}],"b":{}}',
        cli.encode({ b = {}, a = { 1, { d = "x", c = json.null } } }))
    end)
  end)
end)
