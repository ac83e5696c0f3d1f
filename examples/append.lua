-- Appends the events of one user of the users example, then one more with
-- optimistic concurrency in a version-mode table.
--
--   lua5.4 examples/append.lua [USER_ID]
--
-- Configuration comes from the environment as in any AWS tool: AWS_REGION,
-- credentials, and AWS_ENDPOINT_URL_DYNAMODB for DynamoDB Local; the table
-- names from DYNLOG_TABLE (default "dynlog-example").
local dynlog = require "dynlog"

local table_name = os.getenv("DYNLOG_TABLE") or "dynlog-example"
local user = arg[1] or ("user-" .. dynlog.ulid():lower())

local function check(value, err)
  if value == nil and err then
    io.stderr:write("append.lua: ", tostring(err), "\n")
    os.exit(1)
  end
  return value
end

-- Time-ordered log: every event gets a ULID sort key.
local log = dynlog.new({ table = table_name })
check(log:create_table())

local events = {
  { "signup", { name = "Ada", email = user .. "@example.com" } },
  { "addPhoneNumber", { phoneNumber = "+44 20 7946 0000" } },
  { "verifyPhoneNumber", {} },
  { "addLocation", { lat = 51.5072, long = -0.1276 } },
}
for _, ev in ipairs(events) do
  local key = check(log:append("users", user, ev[1], ev[2]))
  print(key.pk, key.sk, ev[1])
end

-- Versioned log: the sort key is 1, 2, 3 … and a writer says which version it
-- saw; a concurrent writer that got there first makes it fail with "conflict".
local accounts = dynlog.new({ table = table_name .. "-versions", sort_key = "version" })
check(accounts:create_table())
local opened = check(accounts:append("accounts", user, "opened", { currency = "GBP" }))
local deposit = check(accounts:append("accounts", user, "deposited", { amount = 100 },
  { expected_version = opened.sk }))
print(deposit.pk, deposit.sk, "deposited")
local _, err = accounts:append("accounts", user, "deposited", { amount = 5 }, { expected_version = opened.sk })
print("a second writer at version " .. opened.sk .. " gets: " .. tostring(err))
