--- What specs need to know about the services `make test` started.
local _M = {}

--- The DynamoDB Local endpoint; raises with a clear message when the spec
-- is run outside `make test`, rather than passing without testing anything.
function _M.dynamodb_endpoint()
  local endpoint = os.getenv("DYNLOG_TEST_ENDPOINT")
  if not endpoint or endpoint == "" then
    error("DYNLOG_TEST_ENDPOINT is not set: run the specs with `make test`", 2)
  end
  return endpoint
end

--- Path of a file in the test vectors kept in spec/vectors (busted runs
-- from the repository root).
function _M.vector(path)
  return "spec/vectors/" .. path
end

return _M
