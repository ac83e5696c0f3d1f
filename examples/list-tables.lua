-- Lists the DynamoDB tables of an endpoint with nothing but the foundation:
-- the credentials chain, region and endpoint resolution, SigV4 and the HTTP
-- transport.
--
--   AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:8000 lua5.4 examples/list-tables.lua
local config = require "dynlog.aws.config"
local credentials = require "dynlog.aws.credentials"
local http = require "dynlog.transport.curl"
local json = require "dynlog.json"
local sigv4 = require "dynlog.sigv4"

local region = assert(config.region({}))
local endpoint = assert(config.endpoint("dynamodb", { region = region }))
local creds = assert(credentials.provider({}):get())

local body = json.encode({})
local headers = sigv4.sign({
  method = "POST", url = endpoint.url .. "/", body = body,
  region = region, service = endpoint.signing_name, credentials = creds,
  headers = {
    ["Content-Type"] = "application/x-amz-json-1.0",
    ["X-Amz-Target"] = "DynamoDB_20120810.ListTables",
  },
})

local res = assert(http.new({ timeout = 10 }):request({
  method = "POST", url = endpoint.url .. "/", headers = headers, body = body,
}))
if res.status ~= 200 then
  io.stderr:write("ListTables failed: HTTP ", res.status, " ", res.body, "\n")
  os.exit(1)
end
for _, name in ipairs(assert(json.decode(res.body)).TableNames) do print(name) end
