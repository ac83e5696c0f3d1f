--- When to try a failed AWS request again, and how long to wait first.
--
-- Throttling, 5xx, transaction conflicts, timeouts and dropped connections
-- are retried with exponential backoff and full jitter: before attempt n+1
-- the wait is uniform in [0, min(max_delay, base_delay * 2^(n-1))]. Anything
-- else (validation, conditional checks, missing tables, access denied) is
-- final.
local math_min, math_random = math.min, math.random

local _M = {}

-- The codes by which AWS services say "too many requests: slow down".
local THROTTLING_CODES = {
  ProvisionedThroughputExceededException = true,
  ThrottlingException = true,
  Throttling = true,
  ThrottledException = true,
  RequestLimitExceeded = true,
  LimitExceededException = true,
  TooManyRequestsException = true,
}

local RETRYABLE_CODES = {
  TransactionInProgressException = true,
  TransactionConflictException = true,
  InternalServerError = true,
  InternalFailure = true,
  ServiceUnavailable = true,
  ServiceUnavailableException = true,
  crc32_mismatch = true,
  timeout = true,
  connection = true,
}

local RETRYABLE_STATUS = { [500] = true, [502] = true, [503] = true, [504] = true }

--- Is an AWS error code one of throttling?
function _M.throttling(code)
  return THROTTLING_CODES[code] == true
end

--- Is an AWS error (code, HTTP status) worth another attempt?
function _M.retryable(code, status)
  return THROTTLING_CODES[code] == true or RETRYABLE_CODES[code] == true or RETRYABLE_STATUS[status] == true
end

--- Seconds to wait before the attempt after `attempt` (1-based).
function _M.delay(attempt, base_delay, max_delay)
  local cap = math_min(max_delay, base_delay * 2 ^ (attempt - 1))
  return math_random() * cap
end

return _M
