--- Calendar arithmetic without os.time, which reads a table as local time
-- and would shift every timestamp by the host's UTC offset.
local math_floor, str_match, tonumber, type = math.floor, string.match, tonumber, type

local _M = {}

--- Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
-- days_from_civil).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math_floor(y / 400)
  local yoe = y - era * 400                                  -- [0, 399]
  local mp = (m + 9) % 12                                    -- March = 0
  local doy = math_floor((153 * mp + 2) / 5) + d - 1         -- [0, 365]
  local doe = yoe * 365 + math_floor(yoe / 4) - math_floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local DAYS_IN_MONTH = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

local function is_leap(y)
  return (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
end

local function valid_date(y, m, d)
  if m < 1 or m > 12 or d < 1 or d > DAYS_IN_MONTH[m] then return false end
  return not (m == 2 and d == 29 and not is_leap(y))
end

-- "Z", "+hh:mm" or "-hh:mm" → seconds east of UTC, or nil.
local function parse_offset(s)
  if s == "Z" or s == "z" then return 0 end
  local sign, oh, om = str_match(s, "^([+-])(%d%d):(%d%d)$")
  if not sign then return nil end
  oh, om = tonumber(oh), tonumber(om)
  if oh > 23 or om > 59 then return nil end
  local offset = (oh * 60 + om) * 60
  if sign == "-" then offset = -offset end
  return offset
end

--- Parses an RFC 3339 timestamp ("2026-11-25T12:00:00Z", fractional seconds
-- and numeric offsets allowed) into whole epoch seconds (fractions dropped),
-- or nil.
function _M.parse_rfc3339(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, sec, rest =
    str_match(s, "^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(.*)$")
  if not y then return nil end
  rest = str_match(rest, "^%.%d+(.*)$") or rest
  local offset = parse_offset(rest)
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  h, mi, sec = tonumber(h), tonumber(mi), tonumber(sec)
  if not offset or not valid_date(y, mo, d) or h > 23 or mi > 59 or sec > 60 then
    return nil
  end
  return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset
end

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6,
                 Jul = 7, Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12 }

--- Parses an HTTP date (RFC 9110 IMF-fixdate, "Wed, 25 Nov 2026 12:00:00 GMT")
-- into epoch seconds, or nil.
function _M.parse_http_date(s)
  if type(s) ~= "string" then return nil end
  local d, mon, y, h, mi, sec = str_match(s, "^%a%a%a, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  local m = MONTHS[mon]
  if not m then return nil end
  y, d, h, mi, sec = tonumber(y), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec)
  if not valid_date(y, m, d) or h > 23 or mi > 59 or sec > 60 then return nil end
  return days_from_civil(y, m, d) * 86400 + h * 3600 + mi * 60 + sec
end

_M.days_from_civil = days_from_civil

return _M
