/* Fuzzes core.unmarshal and core.unmarshal_item (src/lua_marshal.c over
 * src/marshal.c, src/numtext.c and src/lua_jsonutil.c): the input is JSON
 * text, decoded plainly with core.json_decode (inputs that are not JSON are
 * skipped), and the resulting Lua table is unmarshalled as one
 * AttributeValue and, when it is a table, as an item (the shape of a Lambda
 * stream record's NewImage).
 *
 * Beyond "no crash, no sanitizer report", each input checks:
 *  - unmarshal* return a value or nil, "invalid_argument", message, and
 *    never raise, with numbers "number" and "string";
 *  - the numbers option never changes whether unmarshalling succeeds
 *    (except that NS members such as "1" and "1.0" are duplicates only as
 *    numbers);
 *  - unmarshal_item(t) agrees with unmarshal({M = t});
 *  - round trip: for a result u, unmarshal(marshal(u)) equals u (and the
 *    same for marshal_item). marshal may refuse only what unmarshal lets
 *    through by design or by a known gap: a number whose double rounds past
 *    DynamoDB's largest magnitude, and attribute names that are empty or
 *    not UTF-8 (see the KNOWN notes in CHECK).
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_lua.h"

static const char CHECK[] =
    "local core = ...\n"
    "local decode, unmarshal, unmarshal_item = core.json_decode, core.unmarshal, core.unmarshal_item\n"
    "local marshal, marshal_item = core.marshal, core.marshal_item\n"
    "local fail, same = fuzz_fail, fuzz_same\n"
    "\n"
    "local function shape(what, v, code, msg)\n"
    "  if v == nil and (code ~= 'invalid_argument' or type(msg) ~= 'string' or msg == '') then\n"
    "    fail('%s: want value or nil, invalid_argument, message; got %s, %s, %s', what,\n"
    "      tostring(v), tostring(code), tostring(msg))\n"
    "  end\n"
    "end\n"
    "\n"
    "local function call(what, f, ...)\n"
    "  local ok, v, code, msg = pcall(f, ...)\n"
    "  if not ok then fail('%s raised: %s', what, tostring(v)) end\n"
    "  shape(what, v, code, msg)\n"
    "  return v, msg\n"
    "end\n"
    "\n"
    "local function both_modes(what, f, v)\n"
    "  local u, msg = call(what, f, v)\n"
    "  local us, smsg = call(what .. ' with numbers \"string\"', f, v, 'string')\n"
    "  if (u == nil) ~= (us == nil) and not (u == nil and msg:find('duplicate member', 1, true)) then\n"
    "    fail('%s: the numbers option changed success: %s / %s', what, tostring(msg), tostring(smsg))\n"
    "  end\n"
    "  return u, msg\n"
    "end\n"
    "\n"
    "-- What marshal may refuse in unmarshal's output.\n"
    "local TOLERATED = {\n"
    "  -- 38 nines E+125 is a valid N; as a double it rounds to 1E+126\n"
    "  'too large for DynamoDB',\n"
    "  -- KNOWN: unmarshal takes any string as an M member's name\n"
    "  'attribute name is empty', 'attribute name is not valid UTF-8',\n"
    "}\n"
    "local function tolerated(msg)\n"
    "  for _, t in ipairs(TOLERATED) do if msg:find(t, 1, true) then return true end end\n"
    "  return false\n"
    "end\n"
    "\n"
    "local function round_trip(what, to, from, u)\n"
    "  local ok, av = pcall(to, u)\n"
    "  if not ok then\n"
    "    if tolerated(tostring(av)) then return end\n"
    "    fail('%s: marshal refused what unmarshal gave: %s', what, tostring(av))\n"
    "  end\n"
    "  local u2, msg = call(what .. ' of marshal', from, av)\n"
    "  if u2 == nil then fail('%s: unmarshal(marshal(u)) failed: %s', what, msg) end\n"
    "  if not same(u, u2) then fail('%s: unmarshal(marshal(u)) ~= u', what) end\n"
    "end\n"
    "\n"
    "return function(text)\n"
    "  local v = decode(text)\n"
    "  if v == nil then return end\n"
    "  local u = both_modes('unmarshal', unmarshal, v)\n"
    "  if u ~= nil then round_trip('unmarshal', marshal, unmarshal, u) end\n"
    "  if type(v) ~= 'table' then return end\n"
    "  local item, msg = both_modes('unmarshal_item', unmarshal_item, v)\n"
    "  local m = call('unmarshal({M = t})', unmarshal, { M = v })\n"
    "  if (item == nil) ~= (m == nil) then\n"
    "    fail('unmarshal_item(t) and unmarshal({M = t}) disagree: %s', tostring(msg))\n"
    "  end\n"
    "  if item == nil then return end\n"
    "  if not same(item, m) then fail('unmarshal_item(t) ~= unmarshal({M = t})') end\n"
    "  round_trip('unmarshal_item', marshal_item, unmarshal_item, item)\n"
    "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_init("fuzz_unmarshal", CHECK);
    fz_check(data, size);
    return 0;
}
