/* Shared by the fuzz harnesses that reach dynlog.core through Lua.
 *
 * One lua_State per fuzzer process (liblua5.4 is not instrumented, the core
 * is): dynlog.core is the instrumented luaopen_dynlog_core, installed in
 * package.preload, so `require "dynlog.core"` and the Lua modules under
 * lua/ (found through DYNLOG_LUA_DIR) all use it. A harness hands a Lua
 * chunk that returns a check function; each input is passed to it as a
 * string under lua_pcall. The check function raises only when something is
 * wrong (an invariant broke, or dynlog raised where it must return nil, err),
 * and then the harness aborts, so libFuzzer records the input as a crash. */
#ifndef DYNLOG_FUZZ_LUA_H
#define DYNLOG_FUZZ_LUA_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <yajl/yajl_parse.h>

#include "marshal.h"

#ifndef DYNLOG_LUA_DIR
#define DYNLOG_LUA_DIR "lua"
#endif

int luaopen_dynlog_core(lua_State *L);

/* fuzz_utf8_valid(s) -> boolean: the core's own strict UTF-8 check, so that
 * the Lua checks can tell "refused because the text is not UTF-8" from a
 * refusal that has no cause. */
static int fz_utf8_valid(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_pushboolean(L, dl_utf8_valid(s, len));
    return 1;
}

/* Helpers every check chunk may use (globals):
 *  fuzz_fail(fmt, ...)  raises "INVARIANT: ..." (the harness then aborts);
 *  fuzz_same(a, b)      deep equality of decoded values: numbers by value
 *                       (1 == 1.0), tables key by key with the same
 *                       metatable (the array/set/binary marks);
 *  fuzz_scan(v)         -> depth in tables, holds a string or key that is
 *                       not strict UTF-8, holds NaN or an infinity. */
static const char FZ_PRELUDE[] =
    "function fuzz_fail(fmt, ...) error('INVARIANT: ' .. string.format(fmt, ...), 2) end\n"
    "function fuzz_same(a, b)\n"
    "  if rawequal(a, b) then return true end\n"
    "  if type(a) ~= 'table' or type(b) ~= 'table' then return a == b end\n"
    "  if getmetatable(a) ~= getmetatable(b) then return false end\n"
    "  for k, v in pairs(a) do\n"
    "    local w = rawget(b, k)\n"
    "    if w == nil or not fuzz_same(v, w) then return false end\n"
    "  end\n"
    "  for k in pairs(b) do if rawget(a, k) == nil then return false end end\n"
    "  return true\n"
    "end\n"
    "function fuzz_scan(v, depth)\n"
    "  depth = depth or 0\n"
    "  local t = type(v)\n"
    "  if t == 'string' then return depth, not fuzz_utf8_valid(v), false end\n"
    "  if t == 'number' then return depth, false, v ~= v or v == math.huge or v == -math.huge end\n"
    "  if t ~= 'table' then return depth, false, false end\n"
    "  local maxd, bad, nonfinite = depth + 1, false, false\n"
    "  for k, x in pairs(v) do\n"
    "    if type(k) == 'string' and not fuzz_utf8_valid(k) then bad = true end\n"
    "    local d, b, n = fuzz_scan(x, depth + 1)\n"
    "    if d > maxd then maxd = d end\n"
    "    bad, nonfinite = bad or b, nonfinite or n\n"
    "  end\n"
    "  return maxd, bad, nonfinite\n"
    "end\n";

static lua_State *fz_L;
static int fz_check_ref = LUA_NOREF;
static unsigned long fz_runs;

/* fuzz_duplicate_keys(text) -> boolean: does some object of the JSON text
 * name a member twice? (A plain decoding keeps the last one, while a
 * streaming decoder checks them all.) One Lua table per open object holds
 * the keys seen; false when the text is not JSON. */
static int fz_dup_start_map(void *ctx)
{
    lua_State *L = ctx;
    if (!lua_checkstack(L, 4))
        return 0;
    lua_newtable(L);
    return 1;
}

static int fz_dup_map_key(void *ctx, const unsigned char *key, size_t len)
{
    lua_State *L = ctx;
    lua_pushlstring(L, (const char *)key, len);
    lua_pushvalue(L, -1);
    lua_rawget(L, -3);
    int seen = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (seen) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
        lua_setfield(L, LUA_REGISTRYINDEX, "fuzz.duplicate");
        return 0; /* stop the parse */
    }
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    return 1;
}

static int fz_dup_end_map(void *ctx)
{
    lua_pop((lua_State *)ctx, 1);
    return 1;
}

static int fz_duplicate_keys(lua_State *L)
{
    static const yajl_callbacks callbacks = {
        NULL, NULL, NULL, NULL, NULL, NULL,
        fz_dup_start_map, fz_dup_map_key, fz_dup_end_map, NULL, NULL,
    };
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    lua_settop(L, 1);
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "fuzz.duplicate");
    yajl_handle h = yajl_alloc(&callbacks, NULL, L);
    if (!h)
        return luaL_error(L, "out of memory");
    if (yajl_parse(h, (const unsigned char *)text, len) == yajl_status_ok)
        yajl_complete_parse(h);
    yajl_free(h);
    lua_settop(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz.duplicate");
    lua_pushboolean(L, lua_toboolean(L, -1));
    return 1;
}

static int fz_traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
    return 1;
}

#ifdef FZ_LUA_COVERAGE
/* Coverage of Lua code for libFuzzer: liblua is not instrumented, so a line
 * hook counts (previous line, line) pairs of the chunks whose source name
 * ends with FZ_LUA_COVERAGE (e.g. "dynlog/pattern.lua") into an extra
 * counters section, which libFuzzer reads like its own edge counters. */
#define FZ_LUA_COUNTERS 65536
__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t fz_lua_counters[FZ_LUA_COUNTERS];
static unsigned fz_prev_line;
static const char *fz_cover_hit, *fz_cover_miss;

static void fz_line_hook(lua_State *L, lua_Debug *ar)
{
    if (!lua_getinfo(L, "S", ar))
        return;
    if (ar->source != fz_cover_hit) {
        if (ar->source == fz_cover_miss)
            return;
        size_t n = strlen(ar->source), m = strlen(FZ_LUA_COVERAGE);
        if (n < m || memcmp(ar->source + n - m, FZ_LUA_COVERAGE, m) != 0) {
            fz_cover_miss = ar->source;
            return;
        }
        fz_cover_hit = ar->source;
    }
    unsigned line = (unsigned)ar->currentline;
    unsigned idx = ((line * 2654435761u) ^ fz_prev_line) % FZ_LUA_COUNTERS;
    if (fz_lua_counters[idx] < 255)
        fz_lua_counters[idx]++;
    fz_prev_line = line * 7919u;
}
#endif

/* Builds the state and runs `chunk`, which must return the check function.
 * The chunk gets core as its first argument (...). */
static void fz_init(const char *chunk_name, const char *chunk)
{
    if (fz_L)
        return;
    lua_State *L = luaL_newstate();
    if (!L)
        abort();
    luaL_openlibs(L);
    const char *dir = getenv("DYNLOG_LUA_DIR");
    if (!dir)
        dir = DYNLOG_LUA_DIR;
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua", dir, dir);
    lua_setfield(L, -2, "path");
    lua_pushliteral(L, "");
    lua_setfield(L, -2, "cpath"); /* never load an uninstrumented core.so */
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_dynlog_core);
    lua_setfield(L, -2, "dynlog.core");
    lua_pop(L, 2);
    lua_pushcfunction(L, fz_utf8_valid);
    lua_setglobal(L, "fuzz_utf8_valid");
    lua_pushcfunction(L, fz_duplicate_keys);
    lua_setglobal(L, "fuzz_duplicate_keys");
    if (luaL_dostring(L, FZ_PRELUDE) != LUA_OK) {
        fprintf(stderr, "fuzz: prelude failed: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_pushcfunction(L, fz_traceback);
    if (luaL_loadbuffer(L, chunk, strlen(chunk), chunk_name) != LUA_OK) {
        fprintf(stderr, "fuzz: %s does not compile: %s\n", chunk_name, lua_tostring(L, -1));
        abort();
    }
    lua_getglobal(L, "require");
    lua_pushliteral(L, "dynlog.core");
    if (lua_pcall(L, 1, 1, -4) != LUA_OK) {
        fprintf(stderr, "fuzz: require dynlog.core failed: %s\n", lua_tostring(L, -1));
        abort();
    }
    if (lua_pcall(L, 1, 1, -3) != LUA_OK || !lua_isfunction(L, -1)) {
        fprintf(stderr, "fuzz: %s failed: %s\n", chunk_name, lua_tostring(L, -1));
        abort();
    }
    fz_check_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, 0);
    fz_L = L;
#ifdef FZ_LUA_COVERAGE
    lua_sethook(L, fz_line_hook, LUA_MASKLINE, 0);
#endif
}

/* Runs the check function on one input; aborts when it raises. */
static inline void fz_check(const uint8_t *data, size_t size)
{
    lua_State *L = fz_L;
    lua_settop(L, 0);
#ifdef FZ_LUA_COVERAGE
    fz_prev_line = 0;
#endif
    lua_pushcfunction(L, fz_traceback);
    lua_rawgeti(L, LUA_REGISTRYINDEX, fz_check_ref);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 1) != LUA_OK) {
        fprintf(stderr, "\n==fuzz== check failed on a %zu-byte input:\n%s\n", size,
                lua_tostring(L, -1));
        abort();
    }
    lua_settop(L, 0);
    /* Keep the heap small and the runs independent of each other. */
    if (++fz_runs % 64 == 0)
        lua_gc(L, LUA_GCCOLLECT, 0);
}

#endif
