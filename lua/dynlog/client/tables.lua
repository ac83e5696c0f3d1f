--- Table operations of the client: create_table, describe_table,
-- delete_table. The event table has the key schema {pk HASH (S), sk RANGE}
-- where sk is S in ulid mode and N in version mode.
local errors = require "dynlog.errors"
local options = require "dynlog.base.options"

local error, ipairs, next, tostring, type = error, ipairs, next, tostring, type
local array = require("dynlog.core").array

local _M = {}

local STREAM_VIEWS = { NEW_IMAGE = true, OLD_IMAGE = true, NEW_AND_OLD_IMAGES = true, KEYS_ONLY = true }
local BILLING = { PAY_PER_REQUEST = true, PROVISIONED = true }
local CREATE_TABLE = options.known{ "stream", "billing", "read_capacity", "write_capacity", "wait" }

local function sort_key_type(client)
  return client.sort_key == "ulid" and "S" or "N"
end

local function attribute_type(desc, name)
  for _, def in ipairs(desc.AttributeDefinitions or {}) do
    if def.AttributeName == name then return def.AttributeType end
  end
end

local function key_role(desc, name)
  for _, k in ipairs(desc.KeySchema or {}) do
    if k.AttributeName == name then return k.KeyType end
  end
end

-- An existing table is fine when its key schema is ours; anything else
-- would make every append fail later, so say it now.
local function schema_problem(client, desc)
  local want = sort_key_type(client)
  if #(desc.KeySchema or {}) ~= 2 or key_role(desc, "pk") ~= "HASH" or key_role(desc, "sk") ~= "RANGE" then
    return "its key schema is not {pk HASH, sk RANGE}"
  end
  if attribute_type(desc, "pk") ~= "S" then return "its pk is not a string (S)" end
  if attribute_type(desc, "sk") ~= want then
    return "its sk is of type " .. tostring(attribute_type(desc, "sk")) .. " but " .. client.sort_key
      .. " mode needs " .. want
  end
end

-- DescribeTable's Table, or nil, err.
local function describe(c, name)
  local resp, err = c:call("DescribeTable", { TableName = name })
  if not resp then return nil, err end
  if type(resp.Table) ~= "table" then
    return nil, errors.new("bad_response", "DescribeTable answered without a Table")
  end
  return resp.Table
end

--- describe_table() -> the table description (DescribeTable's Table), or nil, err.
function _M:describe_table()
  return describe(self, self.table)
end

local function wait_active(client, deadline)
  while true do
    local desc, err = client:describe_table()
    if not desc then return nil, err end
    if desc.TableStatus == "ACTIVE" then return desc end
    if client.now() > deadline then
      return nil, errors.new("timeout", "table " .. client.table .. " is still " .. tostring(desc.TableStatus))
    end
    client.sleep(0.2)
  end
end

local function enable_stream(client, view)
  local _, err = client:call("UpdateTable", {
    TableName = client.table, StreamSpecification = { StreamEnabled = true, StreamViewType = view },
  })
  return err == nil, err
end

--- create_table{stream=, billing=, read_capacity=, write_capacity=, wait=}
-- -> the table description once it is ACTIVE, or nil, err.
-- Idempotent: an existing table with our key schema is fine (its stream is
-- enabled if it has none); a different schema is an error (code
-- "schema_mismatch"). stream: a view type (default NEW_AND_OLD_IMAGES) or
-- false for none. billing: PAY_PER_REQUEST (default) or PROVISIONED.
function _M:create_table(opts)
  options.check(opts, CREATE_TABLE, "create_table")
  opts = opts or {}
  local view = opts.stream
  if view == nil then view = "NEW_AND_OLD_IMAGES" end
  if view ~= false and not STREAM_VIEWS[view] then
    error("create_table: stream must be NEW_IMAGE, OLD_IMAGE, NEW_AND_OLD_IMAGES, KEYS_ONLY or false", 2)
  end
  local billing = opts.billing or "PAY_PER_REQUEST"
  if not BILLING[billing] then error("create_table: billing must be PAY_PER_REQUEST or PROVISIONED", 2) end
  local params = {
    TableName = self.table,
    KeySchema = array({ { AttributeName = "pk", KeyType = "HASH" }, { AttributeName = "sk", KeyType = "RANGE" } }),
    AttributeDefinitions = array({ { AttributeName = "pk", AttributeType = "S" },
                                   { AttributeName = "sk", AttributeType = sort_key_type(self) } }),
    BillingMode = billing,
  }
  if billing == "PROVISIONED" then
    params.ProvisionedThroughput = { ReadCapacityUnits = opts.read_capacity or 5,
                                     WriteCapacityUnits = opts.write_capacity or 5 }
  end
  if view then params.StreamSpecification = { StreamEnabled = true, StreamViewType = view } end

  local _, err = self:call("CreateTable", params)
  if err and err.code ~= "ResourceInUseException" then return nil, err end
  local deadline = self.now() + (opts.wait or 120)
  local desc, werr = wait_active(self, deadline)
  if not desc then return nil, werr end
  local problem = schema_problem(self, desc)
  if problem then
    return nil, errors.new("schema_mismatch", "table " .. self.table .. " exists but " .. problem)
  end
  -- Events of a log with a max_age carry expires_at: DynamoDB TTL removes them.
  if self.max_age and next(self.max_age) ~= nil then
    local ok, terr = self:_enable_ttl()
    if not ok then return nil, terr end
  end
  local spec = desc.StreamSpecification
  if view and not (spec and spec.StreamEnabled) then
    local ok, serr = enable_stream(self, view)
    if not ok then return nil, serr end
    return wait_active(self, deadline)
  end
  if view and spec.StreamViewType ~= view then
    return nil, errors.new("schema_mismatch", "table " .. self.table .. " has a " .. tostring(spec.StreamViewType)
      .. " stream, not " .. view)
  end
  return desc
end

-- A table {pk HASH S, sk RANGE sk_type}, on demand, without a stream: the
-- description once ACTIVE, or nil, err. An existing table is only described.
local function create_keyed_table(c, name, sk_type)
  -- Look first: IAM refuses CreateTable to a role without it even when the
  -- table exists, and most roles that use a table need not create it.
  -- (Any failure here is left to CreateTable, which says what is wrong.)
  local existing = describe(c, name)
  if existing and existing.TableStatus == "ACTIVE" then return existing end
  local _, err = c:call("CreateTable", {
    TableName = name,
    KeySchema = array({ { AttributeName = "pk", KeyType = "HASH" }, { AttributeName = "sk", KeyType = "RANGE" } }),
    AttributeDefinitions = array({ { AttributeName = "pk", AttributeType = "S" },
                                   { AttributeName = "sk", AttributeType = sk_type } }),
    BillingMode = "PAY_PER_REQUEST",
  })
  if err and err.code ~= "ResourceInUseException" then return nil, err end
  local deadline = c.now() + 120
  while true do
    local desc, derr = describe(c, name)
    if not desc then return nil, derr end
    if desc.TableStatus == "ACTIVE" then return desc end
    if c.now() > deadline then return nil, errors.new("timeout", "table " .. name .. " did not become ACTIVE") end
    c.sleep(0.2)
  end
end

--- create_string_keyed_table(c, name) -> the description once ACTIVE, or
-- nil, err: a table {pk HASH S, sk RANGE S}, on demand, without a stream,
-- for read models and checkpoints. Idempotent: an existing table is only
-- described. (Called as a function with the client; the table is not the
-- client's own. Its callers are public functions that call it other than
-- as a tail call: a name that is not a string is blamed on their caller.)
function _M.create_string_keyed_table(c, name)
  if type(name) ~= "string" then error("create_table: name must be a string", 3) end
  return create_keyed_table(c, name, "S")
end

--- create_side_table(c, name, sk_type) -> as create_string_keyed_table,
-- with a sort key of type sk_type ("S" or "N"): the feed table is {pk S, sk N}.
function _M.create_side_table(c, name, sk_type)
  if type(name) ~= "string" then error("create_table: name must be a string", 3) end
  return create_keyed_table(c, name, sk_type)
end

--- delete_table() -> true, or nil, err. A missing table is not an error.
function _M:delete_table()
  local _, err = self:call("DeleteTable", { TableName = self.table })
  if err and err.code ~= "ResourceNotFoundException" then return nil, err end
  return true
end

return _M
