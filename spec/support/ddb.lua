--- Clients of DynamoDB Local for specs: each spec gets tables of its own.
local dynlog = require "dynlog"
local env = require "spec.support.env"

local _M = {}

local counter = 0

--- A table name no other spec uses.
function _M.table_name(prefix)
  counter = counter + 1
  return ("%s-%s-%d"):format(prefix or "spec", dynlog.ulid():lower(), counter)
end

--- A client of DynamoDB Local; opts as for dynlog.new, with a fresh table
-- name unless one is given and short retry delays.
function _M.client(opts)
  local o = {
    table = _M.table_name(), endpoint = env.dynamodb_endpoint(), region = "us-east-1",
    credentials = { access_key_id = "AKIDSPEC", secret_access_key = "spec-secret-key" },
    base_delay = 0.001, max_delay = 0.01,
  }
  for k, v in pairs(opts or {}) do o[k] = v end
  return dynlog.new(o)
end

--- A client whose table exists (created, ACTIVE, with a stream).
function _M.ready_client(opts)
  local c = _M.client(opts)
  assert(c:create_table())
  return c
end

return _M
