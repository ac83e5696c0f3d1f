--- One rule for every options table dynlog takes: a key it does not know is
-- a programming error, raised at the caller's line, naming the key and the
-- nearest known one (a misspelt `expected_verison` must never run as if it
-- were absent).
--
--   local options = require "dynlog.base.options"
--   local APPEND = options.known{ "expected_version", "condition" }
--   function _M.append(self, log, id, type, payload, opts)
--     options.check(opts, APPEND, "append")    -- raises at append's caller
--
-- `level` (default 2) is counted as error() counts it, from the function
-- that called check: 2 blames the caller of that function.
local error, pairs, tostring, type = error, pairs, tostring, type
local math_min = math.min
local str_byte, str_format = string.byte, string.format
local table_sort = table.sort

local _M = {}

--- A set from a list of option names: { "a", "b" } -> { a = true, b = true }.
-- The list is kept (`names`) for messages.
function _M.known(list)
  local set = {}
  for i = 1, #list do set[list[i]] = true end
  local names = {}
  for i = 1, #list do names[i] = list[i] end
  table_sort(names)
  return { set = set, names = names }
end

-- Levenshtein distance, two rows. Option names are short.
local function distance(a, b)
  local la, lb = #a, #b
  local prev, cur = {}, {}
  for j = 0, lb do prev[j] = j end
  for i = 1, la do
    cur[0] = i
    local ca = str_byte(a, i)
    for j = 1, lb do
      local cost = (ca == str_byte(b, j)) and 0 or 1
      cur[j] = math_min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev, cur = cur, prev
  end
  return prev[lb]
end

--- The known name nearest to `name`, or nil when none is near (more than a
-- third of the longer name would have to change).
function _M.nearest(name, known)
  if type(name) ~= "string" then return nil end
  local best, best_d
  for _, candidate in pairs(known.names) do
    local d = distance(name, candidate)
    if not best_d or d < best_d or (d == best_d and candidate < best) then
      best, best_d = candidate, d
    end
  end
  if best and best_d * 3 <= (#name > #best and #name or #best) then return best end
  return nil
end

--- valid(opts, known) -> true when `opts` is nil or a table whose keys are
-- all in `known`: the check without a message, for loops over many tables,
-- which call check (for its message) only when this says no.
function _M.valid(opts, known)
  if opts == nil then return true end
  if type(opts) ~= "table" then return false end
  local set = known.set
  for name in pairs(opts) do
    if not set[name] then return false end
  end
  return true
end

--- Raises unless `opts` is nil or a table whose keys are all in `known`.
-- `where` names the public function ("append", "dynlog.new").
function _M.check(opts, known, where, level)
  level = (level or 2) + 1
  if opts == nil then return end
  if type(opts) ~= "table" then
    error(str_format("%s: options must be a table, got %s", where, type(opts)), level)
  end
  for name in pairs(opts) do
    if not known.set[name] then
      local near = _M.nearest(name, known)
      local shown = type(name) == "string" and str_format("%q", name) or tostring(name)
      error(str_format("%s: unknown option %s%s", where, shown,
        near and str_format(" (did you mean %q?)", near) or
        " (known: " .. (#known.names > 0 and table.concat(known.names, ", ") or "none") .. ")"), level)
    end
  end
end

return _M
