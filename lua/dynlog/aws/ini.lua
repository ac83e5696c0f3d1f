--- Parser for the AWS shared files (~/.aws/credentials and ~/.aws/config).
-- Follows what the AWS CLI accepts (Python's configparser as botocore uses
-- it): `[section]` headers, `key = value` or `key: value`, whole-line comments
-- starting with `#` or `;`, keys lower-cased, section names kept as written,
-- and indented `key = value` lines under a key with an empty value forming a
-- nested table (the `s3 =` style). Inline comments are NOT stripped, exactly
-- like the CLI, because secrets may legitimately contain `#` or `;`.
--
-- Error messages carry line numbers only, never line contents: the
-- credentials file holds secrets.
local errors = require("dynlog.errors")

local error, pairs, type = error, pairs, type
local str_find, str_gmatch, str_gsub, str_lower, str_match =
  string.find, string.gmatch, string.gsub, string.lower, string.match

local _M = {}

local function trim(s)
  return str_match(s, "^%s*(.-)%s*$")
end

-- Splits `key = value` / `key: value` at the first delimiter. Returns nil
-- when the line has no delimiter or an empty key.
local function split_assignment(line)
  local key, value = str_match(line, "^([^=:]*)[=:](.*)$")
  if not key then return nil end
  key = trim(key)
  if key == "" then return nil end
  return str_lower(key), trim(value)
end

local function is_blank_or_comment(line)
  return str_find(line, "^%s*$") or str_find(line, "^%s*[#;]")
end

-- An indented line: a nested property (`s3 =` followed by indented keys) or
-- a continuation of the previous value, as configparser reads it.
local function add_indented(state, line)
  local section, last_key = state.section, state.last_key
  if not (section and last_key) then
    return nil, "indented line without a key above it"
  end
  local current = section[last_key]
  local key, value = split_assignment(line)
  if key and (current == "" or type(current) == "table") then
    if current == "" then
      current = {}
      section[last_key] = current
    end
    current[key] = value
  elseif type(current) == "string" then
    section[last_key] = current .. "\n" .. trim(line)
  else
    return nil, "expected an indented 'key = value'"
  end
  return true
end

local function parse_line(state, line)
  if is_blank_or_comment(line) then return true end
  if str_find(line, "^%s") then return add_indented(state, line) end
  local header = str_match(line, "^%[(.+)%]")
  if header then
    header = trim(header)
    -- A repeated header continues the same section.
    state.section = state.sections[header] or {}
    state.sections[header] = state.section
    state.last_key = nil
    return true
  end
  local key, value = split_assignment(line)
  if not key then return nil, "expected '[section]' or 'key = value'" end
  if not state.section then return nil, "'key = value' before any [section]" end
  state.section[key] = value
  state.last_key = key
  return true
end

--- Parses the text of one shared file.
-- @param text the file's contents
-- @param name what to call the file in error messages (e.g. its path)
-- @return table section name → { key → value | { subkey → value } },
--   or nil, err (code "config") for a malformed line.
function _M.parse(text, name)
  if type(text) ~= "string" then
    error("ini.parse: text must be a string", 2)
  end
  local state = { sections = {}, section = nil, last_key = nil }
  local line_no = 0
  -- Append a newline so the last line is matched like the others.
  for line in str_gmatch(text .. "\n", "([^\n]*)\n") do
    line_no = line_no + 1
    line = str_gsub(line, "\r$", "")
    if line_no == 1 then
      line = str_gsub(line, "^\239\187\191", "") -- UTF-8 byte order mark
    end
    local ok, what = parse_line(state, line)
    if not ok then
      return nil, errors.new("config",
        (name or "shared file") .. " line " .. line_no .. ": " .. what)
    end
  end
  return state.sections
end

--- The section of a config file (`[profile name]`, `[default]`) for a profile.
-- `[default]` is the canonical spelling for the default profile, but the CLI
-- also accepts `[profile default]`; a `[name]` without the prefix is ignored
-- in the config file, as the CLI does.
function _M.config_section(sections, profile)
  if profile == "default" then
    return sections["default"] or _M.profile_section(sections, "default")
  end
  return _M.profile_section(sections, profile)
end

-- `[profile   name]` with any amount of whitespace after "profile".
function _M.profile_section(sections, profile)
  for header, section in pairs(sections) do
    local name = str_match(header, "^profile%s+(.+)$")
    if name and name == profile then return section end
  end
  return nil
end

return _M
