-- Erasing personal data without deleting a stream: crypto-shredding.
--
--   lua5.4 examples/forget.lua USER_ID
--
-- Events are never rewritten. So the personal fields of an event (name,
-- email) are stored sealed with AES-256-GCM under a key of the user's own,
-- kept in a key item of another table; the rest of the payload (the plan)
-- stays plain. Forgetting the user deletes the key item: every copy of the
-- sealed fields, in the log, in backups, in the DynamoDB Stream and in the
-- EventBridge details, can never be read again, while the stream, its
-- other fields and its read model's shape stay. Same configuration as
-- examples/append.lua; the keys live in the table <DYNLOG_TABLE>-keys.
local dynlog = require "dynlog"
local core = require "dynlog.core"
local handler = require "dynlog.handler"
local trigger = require "dynlog.trigger"

local user = assert(arg[1], "usage: lua5.4 examples/forget.lua USER_ID")
local log_table = os.getenv("DYNLOG_TABLE") or "dynlog-example"
local keys_table = log_table .. "-keys"
local core_table = log_table .. "-forget-core"
local c = dynlog.new({ table = log_table })
assert(c:create_table())
assert(handler.create_table(c, keys_table))
assert(handler.create_table(c, core_table))

-- The key items: {pk = "user#<id>", sk = "key", key = <32 random bytes>}.
local function key_of(id, create)
  local k = { pk = { S = "user#" .. id }, sk = { S = "key" } }
  local resp = assert(c:call("GetItem", { TableName = keys_table, Key = k, ConsistentRead = true }))
  if resp.Item then return core.base64_decode(resp.Item.key.B) end
  if not create then return nil end -- forgotten
  local key = core.random_bytes(32)
  local _, err = c:call("PutItem", { TableName = keys_table, ConditionExpression = "attribute_not_exists(pk)",
    Item = { pk = k.pk, sk = k.sk, key = { B = core.base64_encode(key) } } })
  if err and err.code == "ConditionalCheckFailedException" then return key_of(id, false) end
  assert(not err, tostring(err))
  return key
end

-- A field sealed for the user: base64 text, with the user and the field as
-- the associated data (a sealed value cannot be moved to another user).
local function seal(id, field, value)
  return core.base64_encode(core.aes_gcm_seal(key_of(id, true), value, id .. "/" .. field))
end

local function open(id, field, sealed)
  local key = key_of(id, false)
  if not key or sealed == nil then return nil end
  return assert(core.aes_gcm_open(key, core.base64_decode(sealed), id .. "/" .. field))
end

-- The read model: personal fields opened when the key is there, else nil.
local users = {
  table = core_table,
  handlers = {
    signup = function(_, ev)
      local id = ev.payload.id
      return { id = id, plan = ev.payload.plan, name = open(id, "name", ev.payload.name),
               email = open(id, "email", ev.payload.email) }
    end,
  },
}

local function project_all()
  for _, ev in ipairs(assert(c:query("users", user, { consistent = true })):all()) do
    assert(handler.project(c, { detail = dynlog.json.decode(trigger.detail(ev)) }, users))
  end
end

local function show(what)
  for ev in assert(c:query("users", user, { consistent = true })) do
    print(("%s: event %s: plan=%s name=%s email=%s"):format(what, ev.type, ev.payload.plan,
      tostring(open(user, "name", ev.payload.name)), tostring(open(user, "email", ev.payload.email))))
  end
end

assert(c:append("users", user, "signup", { plan = "free", name = seal(user, "name", "Ada Lovelace"),
                                          email = seal(user, "email", "ada@example.com") }))
show("stored")
project_all()

-- Forget the user: one DeleteItem.
assert(c:call("DeleteItem", { TableName = keys_table, Key = { pk = { S = "user#" .. user }, sk = { S = "key" } } }))
show("forgotten")

-- A read model rebuilt from the log (here: deleted and projected again) no
-- longer holds the personal fields.
assert(c:call("DeleteItem", { TableName = core_table,
  Key = { pk = { S = "users#" .. user }, sk = { S = "users#" .. user } } }))
project_all()
local item = assert(c:call("GetItem", { TableName = core_table, ConsistentRead = true,
  Key = { pk = { S = "users#" .. user }, sk = { S = "users#" .. user } } })).Item
print(("rebuilt read model: plan=%s name=%s"):format(item.plan.S, tostring(item.name)))
