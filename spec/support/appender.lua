-- A writer process for the concurrency specs.
--   lua5.4 spec/support/appender.lua TABLE MODE WRITER COUNT KIND
-- KIND "race": version i is tried with expected_version = i - 1, so every
-- writer competes for every version; prints "won I" or "lost I CODE".
-- KIND "any": plain appends (ulid mode, or "any" in version mode); prints
-- "ok SK" or "err CODE".
-- KIND "eventid": event i is the same event with event id "e<i>" in every
-- writer (ulid mode, or "any" in version mode); prints "ok I SK" or
-- "err I CODE".
local dynlog = require "dynlog"

local table_name, mode, writer, count, kind = arg[1], arg[2], arg[3], tonumber(arg[4]), arg[5]
local c = dynlog.new({
  table = table_name, sort_key = mode, endpoint = os.getenv("DYNLOG_TEST_ENDPOINT"), region = "us-east-1",
  credentials = { access_key_id = "AKIDSPEC", secret_access_key = "spec-secret-key" },
  base_delay = 0.001, max_delay = 0.05,
})

io.stdout:setvbuf("line")
for i = 1, count do
  local payload = { writer = writer, i = i }
  if kind == "eventid" then
    local key, err = c:append("idem", "x", "e", { i = i }, { event_id = "e" .. i })
    print(key and ("ok " .. i .. " " .. tostring(key.sk)) or ("err " .. i .. " " .. tostring(err.code)))
  elseif kind == "race" then
    local key, err = c:append("race", "r", "e", payload, { expected_version = i - 1 })
    print(key and ("won " .. i) or ("lost " .. i .. " " .. err.code))
  else
    local key, err = c:append("conc", "c", "e", payload)
    print(key and ("ok " .. tostring(key.sk)) or ("err " .. tostring(err.code)))
  end
end
