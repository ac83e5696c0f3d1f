/* Fuzzes EventBridge pattern matching (lua/dynlog/pattern.lua, Lua code)
 * through Lua 5.4, with the instrumented dynlog.core underneath (its JSON
 * decoder builds both inputs).
 *
 * Input: pattern JSON, a NUL byte, event JSON. Without a NUL the text is
 * both the pattern and the event. Inputs whose pattern is not JSON are
 * skipped.
 *
 * Beyond "no crash, no sanitizer report", each input checks:
 *  - pattern.compile(decoded pattern) never raises: it returns a compiled
 *    pattern, or nil and an error with code "invalid_pattern" and a
 *    one-line message;
 *  - compiling the JSON text instead of the decoded table gives the same
 *    verdict;
 *  - p:match(event) never raises for any decoded event table (arrays, null,
 *    numbers of any size, any nesting) and returns a boolean, the same from
 *    both compiled forms, from pattern.match(pattern, event), and twice in a
 *    row (no state kept between calls).
 * A non-table event is skipped: match raises on it by contract.
 * The line coverage of pattern.lua guides the fuzzer, besides the C
 * coverage of the JSON decoder.
 */
#include <stddef.h>
#include <stdint.h>

/* libFuzzer also sees which lines of pattern.lua run (see fuzz_lua.h). */
#define FZ_LUA_COVERAGE "dynlog/pattern.lua"
#include "fuzz_lua.h"

static const char CHECK[] =
    "local core = ...\n"
    "local pattern = require 'dynlog.pattern'\n"
    "local decode, fail = core.json_decode, fuzz_fail\n"
    "\n"
    "local function compile(what, pat)\n"
    "  local ok, p, err = pcall(pattern.compile, pat)\n"
    "  if not ok then fail('pattern.compile(%s) raised: %s', what, tostring(p)) end\n"
    "  if p ~= nil then\n"
    "    if not pattern.is(p) then fail('pattern.compile(%s) returned a %s', what, type(p)) end\n"
    "    return p\n"
    "  end\n"
    "  if type(err) ~= 'table' or err.code ~= 'invalid_pattern' or type(err.message) ~= 'string'\n"
    "      or err.message:find('[%z\\1-\\31\\127]') then\n"
    "    fail('pattern.compile(%s): bad error %s', what, tostring(err))\n"
    "  end\n"
    "  return nil, err\n"
    "end\n"
    "\n"
    "local function match(what, f, ...)\n"
    "  local ok, r, err = pcall(f, ...)\n"
    "  if not ok then fail('%s raised: %s', what, tostring(r)) end\n"
    "  if type(r) ~= 'boolean' then fail('%s returned %s, %s', what, tostring(r), tostring(err)) end\n"
    "  return r\n"
    "end\n"
    "\n"
    "return function(data)\n"
    "  local cut = data:find('\\0', 1, true)\n"
    "  local ptext, etext = data, data\n"
    "  if cut then ptext, etext = data:sub(1, cut - 1), data:sub(cut + 1) end\n"
    "  local pat = decode(ptext)\n"
    "  if pat == nil then return end\n"
    "  local p, err = compile('table', pat)\n"
    "  local p2, err2 = compile('text', ptext)\n"
    "  if (p == nil) ~= (p2 == nil) then\n"
    "    fail('compile(table) and compile(text) disagree: %s / %s', tostring(err), tostring(err2))\n"
    "  end\n"
    "  if p == nil then return end\n"
    "  local event = decode(etext)\n"
    "  if type(event) ~= 'table' then return end\n"
    "  local r = match('p:match(event)', p.match, p, event)\n"
    "  if match('p:match(event) again', p.match, p, event) ~= r\n"
    "      or match('compile(text):match(event)', p2.match, p2, event) ~= r\n"
    "      or match('pattern.match(pattern, event)', pattern.match, pat, event) ~= r then\n"
    "    fail('match results disagree')\n"
    "  end\n"
    "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_init("fuzz_pattern", CHECK);
    fz_check(data, size);
    return 0;
}
