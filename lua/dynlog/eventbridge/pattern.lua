--- EventBridge event patterns, matched locally.
--
--   local pattern = require "dynlog.eventbridge.pattern"
--   local p, err = pattern.compile('{"source":["aws.ec2"],"detail":{"state":["terminated"]}}')
--   if p and p:match(event) then ... end
--
-- `compile` takes a pattern as JSON text or as a Lua table shaped like
-- decoded JSON, checks it the way EventBridge (aws/event-ruler) checks rules,
-- and returns a compiled pattern, or `nil, err` with err.code
-- "invalid_pattern" and a message naming what is wrong and where (field paths
-- are dotted; `$or[n]` counts branches from 1). `p:match(event)` takes an
-- event as decoded from its JSON envelope and returns true or false; it does
-- no I/O, never yields and keeps no state between calls.
--
-- Semantics (see the spec for cited examples):
--  * the fields of a pattern object are ANDed, the match values listed for one
--    field are ORed, nested objects match nested fields, and `"$or": [{..},
--    {..}]` ORs whole sub-patterns at any object level; a "$or" that is not an
--    array of at least two objects free of operator names is an ordinary field
--    name, as event-ruler keeps it for older rules;
--  * an event field whose value is an array matches when any element does
--    (arrays of arrays are flattened); a nested pattern object matched against
--    an array of objects must match within one element (event-ruler's "array
--    consistent" matching), except that a sub-pattern made only of
--    `{"exists": false}` tests asks that the field be absent from every element;
--  * a field is present when it holds a leaf value (string, number, boolean,
--    null, or an array holding at least one of those); objects and empty arrays
--    are not leaves, so only `{"exists": false}` matches them;
--  * exact values compare by type and value: numbers numerically (300 matches
--    300.0 and 3.0e2, as in event-ruler, which matches a pattern's number by
--    its value as well as by its text; the user guide says they differ),
--    null only with null, never a string with a number;
--  * equals-ignore-case (alone, in prefix, suffix and anything-but) matches
--    each character of the pattern as its lower or its upper case form, in
--    every script of the Basic Multilingual Plane (see ignore_case below);
--  * prefix, suffix, equals-ignore-case, wildcard and cidr see only strings;
--    numeric sees only numbers in [-5e9, 5e9]; anything-but matches any present
--    value (of any type) that is not excluded, and never a missing field.
local errors = require "dynlog.errors"
local json = require "dynlog.json"

local error, floor, getmetatable, ipairs, next, pairs, rawget, setmetatable, sort, tonumber, tostring, type =
  error, math.floor, getmetatable, ipairs, next, pairs, rawget, setmetatable, table.sort, tonumber, tostring, type
local byte, char, concat, find, format, gmatch, gsub, match, sub =
  string.byte, string.char, table.concat, string.find, string.format, string.gmatch, string.gsub, string.match,
  string.sub

local null = json.null
local json_is_array = json.is_array

local _M = {}

-- Numeric matching is limited to this range, as in EventBridge.
local NUMERIC_LIMIT = 5e9
-- Deeper patterns are refused (a guard against cyclic Lua tables).
local MAX_DEPTH = 100

-- Operator names that may not be field names inside "$or" (event-ruler's list,
-- including the names it reserves for later use).
local RESERVED_IN_OR = {}
for _, name in pairs({ "exactly", "equals-ignore-case", "prefix", "suffix", "anything-but", "exists",
  "wildcard", "numeric", "cidr", "=", "<", "<=", ">", ">=", "regex", "not-wildcard",
  "not-equals-ignore-case", "date-after", "date-on-or-after", "date-before", "date-on-or-before",
  "in-date-range", "ip-address-in-range", "ip-address-not-in-range" }) do
  RESERVED_IN_OR[name] = true
end

local EMPTY = setmetatable({}, { __newindex = function() error("read-only", 2) end })

-- Messages stay on one line whatever the pattern's names hold.
local function invalid(message)
  return nil, errors.new("invalid_pattern", (gsub(message, "[%z\1-\31\127]", "?")))
end

local function where(path)
  if path == "" then return "the top level" end
  return path
end

local function join(path, name)
  if path == "" then return name end
  return path .. "." .. name
end

local function quote(s)
  s = tostring(s)
  if #s > 60 then s = sub(s, 1, 57) .. "..." end
  return format("%q", s)
end

-- equals-ignore-case as aws/event-ruler does it: each character of the
-- pattern matches its lower case or its upper case form, as Java gives them
-- for a lone character (dynlog.unicase, every script of the Basic
-- Multilingual Plane; "ß" is "ß" or "SS"), byte for byte in the event. So a
-- titlecase letter such as "ǅ" matches "ǆ" and "Ǆ" but not itself, as in
-- EventBridge. Characters beyond the plane, and bytes that are not UTF-8,
-- match only themselves. The two forms of a character are never a prefix or
-- a suffix of each other, so at most one of them matches at any place: the
-- matchers below go through the event once, allocating nothing.
local case_lower, case_upper -- code point -> UTF-8 of its other form, built on first use

local function utf8_char(cp)
  if cp < 0x80 then return char(cp) end
  if cp < 0x800 then return char(0xC0 + floor(cp / 64), 0x80 + cp % 64) end
  return char(0xE0 + floor(cp / 4096), 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
end

local function case_tables()
  if not case_lower then
    local unicase = require "dynlog.eventbridge.unicase"
    local function load(runs, multi)
      local into = {}
      for i = 1, #runs, 4 do
        local delta = runs[i + 3]
        for cp = runs[i], runs[i + 1], runs[i + 2] do into[cp] = utf8_char(cp + delta) end
      end
      for cp, list in pairs(multi) do
        local parts = {}
        for j = 1, #list do parts[j] = utf8_char(list[j]) end
        into[cp] = concat(parts)
      end
      return into
    end
    case_lower, case_upper = load(unicase.lower, unicase.lower_multi), load(unicase.upper, unicase.upper_multi)
  end
  return case_lower, case_upper
end

-- The code point at byte i of s and its length in bytes; nil, 1 for a byte
-- that does not start well-formed UTF-8.
local function utf8_at(s, i)
  local c = byte(s, i)
  if c < 0x80 then return c, 1 end
  local need, cp, least
  if c >= 0xC2 and c <= 0xDF then
    need, cp, least = 1, c - 0xC0, 0x80
  elseif c >= 0xE0 and c <= 0xEF then
    need, cp, least = 2, c - 0xE0, 0x800
  elseif c >= 0xF0 and c <= 0xF4 then
    need, cp, least = 3, c - 0xF0, 0x10000
  else
    return nil, 1
  end
  for k = 1, need do
    local b = byte(s, i + k)
    if not b or b < 0x80 or b > 0xBF then return nil, 1 end
    cp = cp * 64 + b - 0x80
  end
  if cp < least or cp > 0x10FFFF then return nil, 1 end
  return cp, need + 1
end

-- Pattern text for equals-ignore-case, as steps of three kinds: a character
-- whose two forms are one byte each (ASCII letters), a literal run of bytes,
-- or a character whose forms differ otherwise. {n=, kind=, a=, b=, min=,
-- max=}: kind[k] is 1, 2 or 3; a[k] and b[k] are the two bytes (1), the run
-- (2, b[k] unused) or the two forms (3); min and max bound the bytes a match
-- spans.
local ONE_BYTE, LITERAL, FORMS = 1, 2, 3

local function ignore_case(text)
  local lower, upper = case_tables()
  local c = { n = 0, kind = {}, a = {}, b = {}, min = 0, max = 0 }
  local literal = {}
  local function add(kind, a, b)
    local n = c.n + 1
    c.n, c.kind[n], c.a[n], c.b[n] = n, kind, a, b
  end
  local function flush_literal()
    if #literal > 0 then
      add(LITERAL, concat(literal))
      literal = {}
    end
  end
  local function step(kind, a, b)
    flush_literal()
    add(kind, a, b)
  end
  local i, n = 1, #text
  while i <= n do
    local cp, len = utf8_at(text, i)
    local ch = sub(text, i, i + len - 1)
    local lo, up = ch, ch
    if cp and cp <= 0xFFFF then lo, up = lower[cp] or ch, upper[cp] or ch end
    if lo == up then
      literal[#literal + 1] = lo
      c.min, c.max = c.min + #lo, c.max + #lo
    else
      if #lo == 1 and #up == 1 then
        step(ONE_BYTE, byte(lo), byte(up))
      else
        step(FORMS, lo, up)
      end
      if #lo < #up then lo, up = up, lo end
      c.min, c.max = c.min + #up, c.max + #lo
    end
    i = i + len
  end
  flush_literal()
  return c
end

-- Are the n bytes of s from byte i those of p?
local function bytes_at(s, i, p, n)
  if i < 1 or i + n - 1 > #s then return false end
  for j = 1, n do
    if byte(s, i + j - 1) ~= byte(p, j) then return false end
  end
  return true
end

-- Where a match of c starting at byte pos of s ends (the byte after it), or nil.
local function ic_from(c, s, pos)
  local kind, a, b = c.kind, c.a, c.b
  for k = 1, c.n do
    local kk = kind[k]
    if kk == ONE_BYTE then
      local x = byte(s, pos)
      if x ~= a[k] and x ~= b[k] then return nil end
      pos = pos + 1
    elseif kk == LITERAL then
      local run = a[k]
      local len = #run
      if not bytes_at(s, pos, run, len) then return nil end
      pos = pos + len
    else
      local fa, fb = a[k], b[k]
      if bytes_at(s, pos, fa, #fa) then
        pos = pos + #fa
      elseif bytes_at(s, pos, fb, #fb) then
        pos = pos + #fb
      else
        return nil
      end
    end
  end
  return pos
end

-- Does a match of c end at the last byte of s?
local function ic_ends(c, s)
  local kind, a, b, last = c.kind, c.a, c.b, #s
  for k = c.n, 1, -1 do
    local kk = kind[k]
    if kk == ONE_BYTE then
      if last < 1 then return false end
      local x = byte(s, last)
      if x ~= a[k] and x ~= b[k] then return false end
      last = last - 1
    elseif kk == LITERAL then
      local run = a[k]
      local len = #run
      if not bytes_at(s, last - len + 1, run, len) then return false end
      last = last - len
    else
      local fa, fb = a[k], b[k]
      if bytes_at(s, last - #fa + 1, fa, #fa) then
        last = last - #fa
      elseif bytes_at(s, last - #fb + 1, fb, #fb) then
        last = last - #fb
      else
        return false
      end
    end
  end
  return true
end

local function ic_equals(c, s)
  local len = #s
  return len >= c.min and len <= c.max and ic_from(c, s, 1) == len + 1
end

-- Wildcards: "*" matches any run of characters (also none); "\*" is a
-- literal star and "\\" a literal backslash; "**" and other escapes are errors.
-- A parsed wildcard is the list of literal parts between the stars.
local function parse_wildcard(text)
  local parts, buf, i, n = {}, {}, 1, #text
  while i <= n do
    local c = sub(text, i, i)
    if c == "*" then
      if sub(text, i + 1, i + 1) == "*" then
        return nil, "consecutive wildcard characters at position " .. i
      end
      parts[#parts + 1] = concat(buf)
      buf = {}
    elseif c == "\\" then
      local e = sub(text, i + 1, i + 1)
      if e ~= "*" and e ~= "\\" then
        return nil, "invalid escape at position " .. i .. " (only \\* and \\\\ are allowed)"
      end
      buf[#buf + 1] = e
      i = i + 1
    else
      buf[#buf + 1] = c
    end
    i = i + 1
  end
  parts[#parts + 1] = concat(buf)
  return parts
end

local function wildcard_match(parts, s)
  local n = #parts
  local first = parts[1]
  if n == 1 then return s == first end
  local last = parts[n]
  local len, flen, llen = #s, #first, #last
  if len < flen + llen then return false end
  if flen > 0 and sub(s, 1, flen) ~= first then return false end
  if llen > 0 and sub(s, len - llen + 1) ~= last then return false end
  local pos, limit = flen + 1, len - llen
  for i = 2, n - 1 do
    local _, e = find(s, parts[i], pos, true)
    if not e or e > limit then return false end
    pos = e + 1
  end
  return true
end

-- IP addresses as lists of byte values (4 for IPv4, 16 for IPv6).
local function parse_ipv4(s)
  local a, b, c, d = match(s, "^([0-9]+)%.([0-9]+)%.([0-9]+)%.([0-9]+)$")
  if not a then return nil end
  local out = { tonumber(a), tonumber(b), tonumber(c), tonumber(d) }
  for i = 1, 4 do
    if out[i] > 255 then return nil end
  end
  return out
end

local function ipv6_groups(text, into)
  if text == "" then return true end
  for part in gmatch(text .. ":", "([^:]*):") do
    if not find(part, "^[0-9a-fA-F][0-9a-fA-F]?[0-9a-fA-F]?[0-9a-fA-F]?$") then return false end
    into[#into + 1] = tonumber(part, 16)
  end
  return true
end

local function parse_ipv6(s)
  if not find(s, "^[0-9a-fA-F:]+$") or not find(s, ":", 1, true) then return nil end
  local head, tail = {}, {}
  local gap = find(s, "::", 1, true)
  if gap then
    if find(s, "::", gap + 1, true) then return nil end
    if not ipv6_groups(sub(s, 1, gap - 1), head) or not ipv6_groups(sub(s, gap + 2), tail) then return nil end
    if #head + #tail > 7 then return nil end
  else
    if not ipv6_groups(s, head) or #head ~= 8 then return nil end
  end
  local groups = head
  for _ = 1, 8 - #head - #tail do groups[#groups + 1] = 0 end
  for i = 1, #tail do groups[#groups + 1] = tail[i] end
  local out = {}
  for i = 1, 8 do
    out[2 * i - 1] = floor(groups[i] / 256)
    out[2 * i] = groups[i] % 256
  end
  return out
end

-- An IPv4 address as one number, read without captures or tables (the event
-- side of cidr matching).
local function ipv4_value(s)
  local value, part, digits, dots = 0, 0, 0, 0
  for i = 1, #s do
    local b = byte(s, i)
    if b == 46 then
      if digits == 0 or dots == 3 then return nil end
      value, part, digits, dots = value * 256 + part, 0, 0, dots + 1
    elseif b >= 48 and b <= 57 then
      part, digits = part * 10 + b - 48, digits + 1
      if part > 255 then return nil end
    else
      return nil
    end
  end
  if dots ~= 3 or digits == 0 then return nil end
  return value * 256 + part
end

local function parse_ip(s)
  return parse_ipv4(s) or parse_ipv6(s)
end

local function compare_bytes(a, b)
  for i = 1, #a do
    if a[i] ~= b[i] then return a[i] < b[i] and -1 or 1 end
  end
  return 0
end

-- What a Lua table stands for: "array" (with its length), "object" (with its
-- number of keys), or nil and why not. An empty table is an array only when
-- it carries the JSON array mark.
local function shape(t)
  local strings, numbers = 0, 0
  for k in pairs(t) do
    local tk = type(k)
    if tk == "string" then
      strings = strings + 1
    elseif tk == "number" then
      numbers = numbers + 1
    else
      return nil, "keys must be strings (or 1..n in an array)"
    end
  end
  if strings > 0 and numbers > 0 then return nil, "a table must be either an array or an object" end
  if numbers > 0 then
    for k in pairs(t) do
      if k < 1 or k > numbers or k ~= floor(k) then return nil, "arrays must not have holes" end
    end
    return "array", numbers
  end
  if strings == 0 and json_is_array(t) then return "array", 0 end
  return "object", strings
end

local function is_number(v)
  return type(v) == "number" and v == v
end

local function in_numeric_range(v)
  return v >= -NUMERIC_LIMIT and v <= NUMERIC_LIMIT
end

local function only_key(t)
  local k = next(t)
  if k == nil then return nil, 0 end
  if next(t, k) ~= nil then return nil, 2 end
  return k, 1
end

-- Each operator compiles to a predicate on one scalar event value (or, for
-- "exists", to a flag). `at` names the field for error messages.

local function compile_string_list(value, what, at, allow_empty_string)
  local list
  if type(value) == "string" then
    list = { value }
  elseif type(value) == "table" and shape(value) == "array" then
    local _, n = shape(value)
    if n == 0 then return invalid(what .. " list must not be empty at " .. at) end
    list = {}
    for i = 1, n do
      if type(value[i]) ~= "string" then return invalid(what .. " values must be strings at " .. at) end
      list[i] = value[i]
    end
  else
    return invalid(what .. " must be a string or a list of strings at " .. at)
  end
  if not allow_empty_string then
    for i = 1, #list do
      if list[i] == "" then return invalid(what .. " must not be empty at " .. at) end
    end
  end
  return list
end

local function compile_prefix(value, at)
  if type(value) == "string" then
    local n = #value
    return function(s) return type(s) == "string" and sub(s, 1, n) == value end
  end
  if type(value) == "table" and shape(value) == "object" then
    local op, count = only_key(value)
    if count == 1 and op == "equals-ignore-case" then
      local p = value[op]
      if type(p) ~= "string" then return invalid("prefix equals-ignore-case must be a string at " .. at) end
      local c = ignore_case(p)
      return function(s) return type(s) == "string" and #s >= c.min and ic_from(c, s, 1) ~= nil end
    end
    if count == 1 then return invalid("prefix supports only equals-ignore-case, not " .. quote(op) .. " at " .. at) end
  end
  return invalid("prefix must be a string at " .. at)
end

local function compile_suffix(value, at)
  if type(value) == "string" then
    local n = #value
    if n == 0 then return function(s) return type(s) == "string" end end
    return function(s) return type(s) == "string" and sub(s, -n) == value end
  end
  if type(value) == "table" and shape(value) == "object" then
    local op, count = only_key(value)
    if count == 1 and op == "equals-ignore-case" then
      local p = value[op]
      if type(p) ~= "string" then return invalid("suffix equals-ignore-case must be a string at " .. at) end
      local c = ignore_case(p)
      return function(s) return type(s) == "string" and #s >= c.min and ic_ends(c, s) end
    end
    if count == 1 then return invalid("suffix supports only equals-ignore-case, not " .. quote(op) .. " at " .. at) end
  end
  return invalid("suffix must be a string at " .. at)
end

local function compile_wildcard(value, at)
  if type(value) ~= "string" then return invalid("wildcard must be a string at " .. at) end
  local parts, why = parse_wildcard(value)
  if not parts then return invalid("wildcard " .. quote(value) .. ": " .. why .. " at " .. at) end
  return function(s) return type(s) == "string" and wildcard_match(parts, s) end
end

local function compile_numeric(value, at)
  if type(value) ~= "table" or shape(value) ~= "array" then
    return invalid("numeric must be an array like [\">\", 0, \"<=\", 5] at " .. at)
  end
  local _, n = shape(value)
  if n ~= 2 and n ~= 4 then
    return invalid("numeric takes one or two comparisons (operator, number) at " .. at)
  end
  for i = 1, n, 2 do
    local op, num = value[i], value[i + 1]
    if op ~= "=" and op ~= "<" and op ~= "<=" and op ~= ">" and op ~= ">=" then
      return invalid("numeric operator must be one of =, <, <=, >, >= (got " .. quote(op) .. ") at " .. at)
    end
    if not is_number(num) then return invalid("numeric value after " .. op .. " must be a number at " .. at) end
    if not in_numeric_range(num) then
      return invalid("numeric values must be between -5e9 and 5e9 at " .. at)
    end
  end
  local op1, v1 = value[1], value[2]
  if op1 == "=" then
    if n ~= 2 then return invalid("numeric = takes no second comparison at " .. at) end
    return function(s) return s == v1 end
  end
  local lo, lo_open, hi, hi_open = -NUMERIC_LIMIT, false, NUMERIC_LIMIT, false
  if op1 == ">" or op1 == ">=" then
    lo, lo_open = v1, op1 == ">"
    if n == 4 then
      local op2 = value[3]
      if op2 ~= "<" and op2 ~= "<=" then
        return invalid("numeric range must be a lower bound (> or >=) then an upper bound (< or <=) at " .. at)
      end
      hi, hi_open = value[4], op2 == "<"
    end
  else
    if n == 4 then
      return invalid("numeric range must be a lower bound (> or >=) then an upper bound (< or <=) at " .. at)
    end
    hi, hi_open = v1, op1 == "<"
  end
  if not (lo < hi) then return invalid("numeric range is empty: lower bound must be below upper bound at " .. at) end
  return function(s)
    if type(s) ~= "number" then return false end
    if lo_open then
      if not (s > lo) then return false end
    elseif not (s >= lo) then
      return false
    end
    if hi_open then return s < hi end
    return s <= hi
  end
end

local function compile_cidr(value, at)
  if type(value) ~= "string" then return invalid("cidr must be a string at " .. at) end
  local ip, bits = match(value, "^([^/]*)/([^/]*)$")
  if not ip then return invalid("cidr " .. quote(value) .. " needs exactly one '/' at " .. at) end
  if not find(bits, "^[0-9]+$") then
    return invalid("cidr " .. quote(value) .. ": mask bits must be a whole number at " .. at)
  end
  local addr = parse_ip(ip)
  if not addr then return invalid("cidr " .. quote(value) .. ": not an IPv4 or IPv6 address at " .. at) end
  local total = #addr * 8
  bits = tonumber(bits)
  if bits >= total then
    return invalid("cidr " .. quote(value) .. ": mask bits must be below " .. total .. " at " .. at)
  end
  -- Like event-ruler, the range runs from the address as written to the
  -- address with every host bit set.
  local lo, hi, host = addr, {}, total - bits
  for i = #addr, 1, -1 do
    if host >= 8 then
      hi[i] = 255
    elseif host <= 0 then
      hi[i] = addr[i]
    else
      local span = 2 ^ host
      hi[i] = addr[i] - addr[i] % span + span - 1
    end
    host = host - 8
  end
  if #addr == 4 then
    local low = ((lo[1] * 256 + lo[2]) * 256 + lo[3]) * 256 + lo[4]
    local high = ((hi[1] * 256 + hi[2]) * 256 + hi[3]) * 256 + hi[4]
    return function(s)
      if type(s) ~= "string" then return false end
      local v = ipv4_value(s)
      return v ~= nil and v >= low and v <= high
    end
  end
  return function(s)
    if type(s) ~= "string" or not find(s, ":", 1, true) then return false end
    local a = parse_ipv6(s)
    return a ~= nil and compare_bytes(a, lo) >= 0 and compare_bytes(a, hi) <= 0
  end
end

local function compile_anything_but(value, at)
  local tv = type(value)
  if tv == "string" then
    return function(s) return s ~= value end
  end
  if is_number(value) then
    if not in_numeric_range(value) then
      return invalid("anything-but numbers must be between -5e9 and 5e9 at " .. at)
    end
    return function(s) return s ~= value end
  end
  if tv ~= "table" then
    return invalid("anything-but must be a string, a number, a list of either, or an operator object at " .. at)
  end
  local kind, n = shape(value)
  if kind == "array" then
    if n == 0 then return invalid("anything-but list must not be empty at " .. at) end
    local set, strings, numbers = {}, 0, 0
    for i = 1, n do
      local v = value[i]
      if type(v) == "string" then
        strings = strings + 1
      elseif is_number(v) then
        if not in_numeric_range(v) then
          return invalid("anything-but numbers must be between -5e9 and 5e9 at " .. at)
        end
        numbers = numbers + 1
      else
        return invalid("anything-but lists hold only strings or only numbers at " .. at)
      end
      set[v] = true
    end
    if strings > 0 and numbers > 0 then
      return invalid("anything-but lists hold only strings or only numbers, not both, at " .. at)
    end
    return function(s) return not set[s] end
  end
  if kind ~= "object" then
    return invalid("anything-but must be a string, a number, a list of either, or an operator object at " .. at)
  end
  local op, count = only_key(value)
  if count ~= 1 then
    return invalid("anything-but takes exactly one of prefix, suffix, equals-ignore-case, wildcard at " .. at)
  end
  local arg = value[op]
  if op == "prefix" or op == "suffix" then
    local list, err = compile_string_list(arg, "anything-but " .. op, at, false)
    if not list then return nil, err end
    local nl = #list
    if op == "prefix" then
      return function(s)
        if type(s) ~= "string" then return true end
        for i = 1, nl do
          local p = list[i]
          if sub(s, 1, #p) == p then return false end
        end
        return true
      end
    end
    return function(s)
      if type(s) ~= "string" then return true end
      for i = 1, nl do
        local p = list[i]
        if sub(s, -#p) == p then return false end
      end
      return true
    end
  elseif op == "equals-ignore-case" then
    local list, err = compile_string_list(arg, "anything-but equals-ignore-case", at, true)
    if not list then return nil, err end
    local nl = #list
    for i = 1, nl do list[i] = ignore_case(list[i]) end
    return function(s)
      if type(s) ~= "string" then return true end
      for i = 1, nl do
        if ic_equals(list[i], s) then return false end
      end
      return true
    end
  elseif op == "wildcard" then
    local list, err = compile_string_list(arg, "anything-but wildcard", at, true)
    if not list then return nil, err end
    local all = {}
    for i = 1, #list do
      local parts, why = parse_wildcard(list[i])
      if not parts then return invalid("wildcard " .. quote(list[i]) .. ": " .. why .. " at " .. at) end
      all[i] = parts
    end
    local nl = #all
    return function(s)
      if type(s) ~= "string" then return true end
      for i = 1, nl do
        if wildcard_match(all[i], s) then return false end
      end
      return true
    end
  end
  return invalid("anything-but does not support " .. quote(op) .. " at " .. at)
end

local function compile_equals_ignore_case(value, at)
  if type(value) ~= "string" then return invalid("equals-ignore-case must be a string at " .. at) end
  local c = ignore_case(value)
  return function(s) return type(s) == "string" and ic_equals(c, s) end
end

local OPERATORS = {
  prefix = compile_prefix,
  suffix = compile_suffix,
  wildcard = compile_wildcard,
  numeric = compile_numeric,
  cidr = compile_cidr,
  ["anything-but"] = compile_anything_but,
  ["equals-ignore-case"] = compile_equals_ignore_case,
}

-- A leaf: the list of match values for one field. Returns a checker
-- `function(obj) -> boolean` and whether the leaf only tests absence.
local function compile_leaf(name, list, n, at)
  local exact, preds, exists_true, exists_false = nil, {}, false, false
  for i = 1, n do
    local item = list[i]
    local ti = type(item)
    if ti == "string" or ti == "boolean" or item == null or ti == "number" then
      if ti == "number" and item ~= item then return invalid("match values must not be NaN at " .. at) end
      exact = exact or {}
      exact[item] = true
    elseif ti == "table" then
      local kind = shape(item)
      if kind ~= "object" then
        return invalid("match values must be strings, numbers, booleans, null or operator objects, not arrays, at "
          .. at)
      end
      local op, count = only_key(item)
      if count == 0 then return invalid("empty operator object at " .. at) end
      if count > 1 then return invalid("an operator object holds exactly one operator at " .. at) end
      local arg = item[op]
      if op == "exists" then
        if arg == true then
          exists_true = true
        elseif arg == false then
          exists_false = true
        else
          return invalid("exists must be true or false at " .. at)
        end
      else
        local compile_op = OPERATORS[op]
        if not compile_op then return invalid("unknown operator " .. quote(op) .. " at " .. at) end
        local pred, err = compile_op(arg, at)
        if not pred then return nil, err end
        preds[#preds + 1] = pred
      end
    else
      return invalid("match values must be strings, numbers, booleans, null or operator objects at " .. at)
    end
  end

  local npreds = #preds
  local function test(s)
    if exists_true or (exact and exact[s]) then return true end
    for i = 1, npreds do
      if preds[i](s) then return true end
    end
    return false
  end
  -- Any scalar in an (arbitrarily nested) array that matches; and whether the
  -- array held any scalar at all.
  local function scan(arr)
    local seen = false
    for i = 1, #arr do
      local e = arr[i]
      if type(e) == "table" then
        if rawget(e, 1) ~= nil then
          local m, s = scan(e)
          if m then return true, true end
          seen = seen or s
        end
      else
        seen = true
        if test(e) then return true, true end
      end
    end
    return false, seen
  end
  local check
  if npreds == 0 and not exists_true and not exists_false and exact then
    check = function(obj)
      local v = obj[name]
      if type(v) ~= "table" then return v ~= nil and exact[v] == true end
      if rawget(v, 1) == nil then return false end
      return (scan(v))
    end
  else
    check = function(obj)
      local v = obj[name]
      if v == nil then return exists_false end
      if type(v) == "table" then
        if rawget(v, 1) == nil then return exists_false end
        local m, seen = scan(v)
        if m then return true end
        return not seen and exists_false
      end
      return test(v)
    end
  end
  return check, exists_false and not exists_true and npreds == 0 and exact == nil
end

local compile_object

-- A nested pattern object against whatever the event holds there.
local function match_value(node, v)
  if type(v) == "table" then
    if rawget(v, 1) == nil then return node.eval(v) end
    if node.absence_only then
      for i = 1, #v do
        if not match_value(node, v[i]) then return false end
      end
      return true
    end
    for i = 1, #v do
      if match_value(node, v[i]) then return true end
    end
    return false
  end
  return node.eval(EMPTY)
end

local function compile_or(value, path, depth)
  local at = join(path, "$or")
  if type(value) ~= "table" or shape(value) ~= "array" then
    return invalid("$or must be an array of at least two objects at " .. at)
  end
  local _, n = shape(value)
  if n < 2 then return invalid("$or must be an array of at least two objects at " .. at) end
  local branches, absence_only = {}, true
  for i = 1, n do
    local b = value[i]
    if type(b) ~= "table" or shape(b) ~= "object" then
      return invalid("$or must hold only objects at " .. at .. "[" .. i .. "]")
    end
    local node, err = compile_object(b, at .. "[" .. i .. "]", depth + 1, true)
    if not node then return nil, err end
    branches[i] = node.eval
    absence_only = absence_only and node.absence_only
  end
  return function(obj)
    for i = 1, n do
      if branches[i](obj) then return true end
    end
    return false
  end, absence_only
end

-- A pattern object. `path` names it in messages: the dotted event path, with
-- "$or[n]" for the n-th branch of a "$or".
compile_object = function(pat, path, depth, in_or)
  local at = where(path)
  if depth > MAX_DEPTH then return invalid("pattern nests deeper than " .. MAX_DEPTH .. " levels at " .. at) end
  local kind, why = shape(pat)
  if not kind then return invalid(why .. " at " .. at) end
  if kind ~= "object" then return invalid("a pattern must be a JSON object at " .. at) end
  local names = {}
  for k in pairs(pat) do names[#names + 1] = k end
  if #names == 0 then
    if path == "" then return invalid("a pattern must not be an empty object") end
    return invalid("empty objects are not allowed at " .. at)
  end
  sort(names)
  local leaves, nested, ors = {}, {}, {}
  local absence_only = true
  -- An ordinary field: a leaf (an array of match values) or a nested object.
  local function add_field(name, v)
    local field = join(path, name)
    if in_or and RESERVED_IN_OR[name] then
      return invalid(quote(name) .. " is an operator name, not allowed as a field name inside $or at " .. field)
    end
    if type(v) ~= "table" then
      return invalid("value must be an array of match values or an object at " .. field)
    end
    local vkind, n = shape(v)
    if not vkind then return invalid(n .. " at " .. field) end
    if vkind == "array" then
      if n == 0 then return invalid("empty arrays are not allowed at " .. field) end
      local check, only_absent = compile_leaf(name, v, n, field)
      if not check then return nil, only_absent end
      leaves[#leaves + 1] = check
      absence_only = absence_only and only_absent
    else
      if n == 0 then return invalid("empty objects are not allowed at " .. field) end
      local node, err = compile_object(v, field, depth + 1, in_or)
      if not node then return nil, err end
      nested[#nested + 1] = function(obj) return match_value(node, obj[name]) end
      absence_only = absence_only and node.absence_only
    end
    return true
  end
  for j = 1, #names do
    local name = names[j]
    local v = pat[name]
    if name == "$or" and type(v) == "table" and shape(v) == "array" then
      local check, only_absent = compile_or(v, path, depth)
      if check then
        ors[#ors + 1] = check
        absence_only = absence_only and only_absent
      elseif not add_field(name, v) then
        -- Not an "$or" as event-ruler reads one (an array of at least two
        -- objects without operator names as fields), nor a field named
        -- "$or" holding match values: the "$or" error says more.
        return nil, only_absent
      end
    else
      -- Any other "$or" (an object, say) is an ordinary field name, as in
      -- event-ruler.
      local ok, err = add_field(name, v)
      if not ok then return nil, err end
    end
  end
  local checks = {}
  for _, group in ipairs({ leaves, nested, ors }) do
    for i = 1, #group do checks[#checks + 1] = group[i] end
  end
  local count = #checks
  local eval
  if count == 1 then
    eval = checks[1]
  else
    eval = function(obj)
      for i = 1, count do
        if not checks[i](obj) then return false end
      end
      return true
    end
  end
  return { eval = eval, absence_only = absence_only }
end

local Pattern = {}
Pattern.__index = Pattern

--- p:match(event) -> true when the event (a decoded JSON object) matches.
function Pattern:match(event)
  if type(event) ~= "table" then
    error("pattern:match expects an event table, got " .. type(event), 2)
  end
  return self.eval(event) == true
end

--- compile(pattern) -> compiled pattern, or nil, err ("invalid_pattern").
-- `pattern` is JSON text or a table shaped like decoded JSON (arrays may be
-- plain sequences; an empty table counts as an object unless json.array()).
function _M.compile(pat)
  if getmetatable(pat) == Pattern then return pat end
  if type(pat) == "string" then
    local decoded, err = json.decode(pat)
    if err then return invalid("pattern is not valid JSON: " .. tostring(err.message)) end
    pat = decoded
  end
  if type(pat) ~= "table" then return invalid("a pattern must be a JSON object") end
  local node, err = compile_object(pat, "", 1, false)
  if not node then return nil, err end
  return setmetatable({ eval = node.eval }, Pattern)
end

--- match(pattern, event) -> boolean, compiling `pattern` first (or nil, err).
function _M.match(pat, event)
  local p, err = _M.compile(pat)
  if not p then return nil, err end
  return p:match(event)
end

--- is(v) -> true when v is a compiled pattern.
function _M.is(v)
  return getmetatable(v) == Pattern
end

return _M
