-- A writer process for the feed specs: COUNT events over STREAMS streams of
-- log "burst", one in four as an append_batch of three, then "done N" on
-- stdout (N: the events written).
--   lua5.4 spec/support/feed_writer.lua TABLE COUNT STREAMS
local dynlog = require "dynlog"

local table_name, count, streams = arg[1], tonumber(arg[2]), tonumber(arg[3])
local c = dynlog.new({
  table = table_name, endpoint = os.getenv("DYNLOG_TEST_ENDPOINT"), region = "us-east-1",
  credentials = { access_key_id = "AKIDSPEC", secret_access_key = "spec-secret-key" },
  base_delay = 0.001, max_delay = 0.05,
})

io.stdout:setvbuf("line")
local written, i = 0, 0
while written < count do
  i = i + 1
  local id = "s" .. (i % streams)
  if i % 4 == 0 then
    local batch = {}
    for j = 1, math.min(3, count - written) do batch[j] = { type = "b", payload = { n = written + j } } end
    assert(c:append_batch("burst", id, batch))
    written = written + #batch
  else
    written = written + 1
    assert(c:append("burst", id, "e", { n = written }))
  end
end
print("done " .. written)
