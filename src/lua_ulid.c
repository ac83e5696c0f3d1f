/* ULIDs for Lua: core.ulid() draws from the process-wide generator (see
 * ulid.c for why it is shared); the codecs and private generators exist for
 * specs and for callers that must control time or randomness. */
#include "dynlog.h"
#include "lua_util.h"
#include "ulid.h"

#define GENERATOR_MT "dynlog.ulid_generator"

static void push_ulid(lua_State *L, const dl_ulid *u)
{
    char text[DL_ULID_LEN];
    dl_ulid_encode(u, text);
    lua_pushlstring(L, text, sizeof text);
}

/* Overflow is the one generation failure a caller can meet in a healthy
 * process; the others mean the clock or the CSPRNG is broken, so they raise. */
static int push_generation_failure(lua_State *L, dl_ulid_status st)
{
    if (st == DL_ULID_ERR_OVERFLOW)
        return dl_push_failure(L, "overflow", dl_ulid_status_message(st));
    return luaL_error(L, "dynlog.core: %s", dl_ulid_status_message(st));
}

/* ULID text comes from outside (stored keys, requests), so a bad one is an
 * expected failure: returns 0 when decoded, else pushes the failure triple
 * and returns its count. Only a non-string argument raises. */
static int decode_arg(lua_State *L, int arg, dl_ulid *out)
{
    size_t len, bad_pos = 0;
    luaL_checktype(L, arg, LUA_TSTRING);
    const char *s = lua_tolstring(L, arg, &len);
    dl_ulid_status st = dl_ulid_decode(s, len, out, &bad_pos);
    if (st == DL_ULID_OK)
        return 0;
    char reason[128];
    dl_ulid_describe_decode_error(st, s, len, bad_pos, reason, sizeof reason);
    return dl_push_failure(L, "invalid_argument", reason);
}

/* Checked by hand: LuaJIT's luaL_checkinteger truncates 100.1 silently and
 * 5.4's accepts numeric strings. The range test comes first so that the
 * cast to uint64_t is defined (it also rejects NaN). */
static uint64_t check_time_ms(lua_State *L, int arg)
{
    luaL_checktype(L, arg, LUA_TNUMBER);
    lua_Number n = lua_tonumber(L, arg);
    if (!(n >= 0 && n <= (lua_Number)DL_ULID_TIME_MAX)) {
        luaL_argerror(L, arg, "time_ms must be in 0 .. 2^48-1");
        return 0;
    }
    if ((lua_Number)(uint64_t)n != n) {
        luaL_argerror(L, arg, "time_ms must be an integer");
        return 0;
    }
    return (uint64_t)n;
}

static const unsigned char *check_random(lua_State *L, int arg)
{
    size_t len;
    luaL_checktype(L, arg, LUA_TSTRING);
    const char *random = lua_tolstring(L, arg, &len);
    if (len != DL_ULID_RANDOM_BYTES) {
        luaL_argerror(L, arg, "random must be exactly 10 bytes");
        return NULL;
    }
    return (const unsigned char *)random;
}

/* ulid() -> 26 characters | nil, "overflow", message */
static int l_ulid(lua_State *L)
{
    dl_ulid u;
    dl_ulid_status st = dl_ulid_next_default(&u);
    if (st != DL_ULID_OK)
        return push_generation_failure(L, st);
    push_ulid(L, &u);
    return 1;
}

/* ulid_decode(s) -> time_ms, 16 big-endian bytes, canonical text
 *                 | nil, "invalid_argument", message */
static int l_ulid_decode(lua_State *L)
{
    dl_ulid u;
    int failure = decode_arg(L, 1, &u);
    if (failure)
        return failure;
    unsigned char bytes[DL_ULID_BYTES];
    dl_ulid_to_bytes(&u, bytes);
    lua_pushinteger(L, (lua_Integer)u.time_ms);
    lua_pushlstring(L, (const char *)bytes, sizeof bytes);
    push_ulid(L, &u);
    return 3;
}

/* ulid_encode(time_ms, random10) -> 26 characters */
static int l_ulid_encode(lua_State *L)
{
    uint64_t time_ms = check_time_ms(L, 1);
    const unsigned char *random = check_random(L, 2);
    dl_ulid u;
    if (dl_ulid_from_parts(time_ms, random, &u) != DL_ULID_OK)
        return luaL_argerror(L, 1, "time_ms must be in 0 .. 2^48-1");
    push_ulid(L, &u);
    return 1;
}

/* ulid_increment(s) -> next ULID of the same millisecond
 *                    | nil, "overflow" | "invalid_argument", message */
static int l_ulid_increment(lua_State *L)
{
    dl_ulid u;
    int failure = decode_arg(L, 1, &u);
    if (failure)
        return failure;
    dl_ulid_status st = dl_ulid_increment(&u);
    if (st != DL_ULID_OK)
        return push_generation_failure(L, st);
    push_ulid(L, &u);
    return 1;
}

/* ulid_generator([last]) -> generator | nil, "invalid_argument", message */
static int l_ulid_generator(lua_State *L)
{
    dl_ulid last;
    bool seeded = !lua_isnoneornil(L, 1);
    if (seeded) {
        int failure = decode_arg(L, 1, &last);
        if (failure)
            return failure;
    }
    dl_ulid_gen *g = lua_newuserdata(L, sizeof *g);
    dl_ulid_gen_init(g);
    if (seeded)
        dl_ulid_gen_seed(g, &last);
    luaL_setmetatable(L, GENERATOR_MT);
    return 1;
}

/* gen:next([time_ms [, random10]]) -> 26 characters | nil, "overflow", message */
static int l_generator_next(lua_State *L)
{
    dl_ulid_gen *g = luaL_checkudata(L, 1, GENERATOR_MT);
    uint64_t time_ms;
    if (lua_isnoneornil(L, 2)) {
        dl_ulid_status st = dl_ulid_now_ms(&time_ms);
        if (st != DL_ULID_OK)
            return push_generation_failure(L, st);
    } else {
        time_ms = check_time_ms(L, 2);
    }
    const unsigned char *fresh = lua_isnoneornil(L, 3) ? NULL : check_random(L, 3);
    dl_ulid u;
    dl_ulid_status st = dl_ulid_gen_next(g, time_ms, fresh, &u);
    if (st != DL_ULID_OK)
        return push_generation_failure(L, st);
    push_ulid(L, &u);
    return 1;
}

static void register_generator_metatable(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "next", l_generator_next },
        { NULL, NULL },
    };
    if (luaL_newmetatable(L, GENERATOR_MT)) {
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
}

void dl_open_ulid(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "ulid", l_ulid },
        { "ulid_decode", l_ulid_decode },
        { "ulid_encode", l_ulid_encode },
        { "ulid_increment", l_ulid_increment },
        { "ulid_generator", l_ulid_generator },
        { NULL, NULL },
    };
    register_generator_metatable(L);
    luaL_setfuncs(L, funcs, 0);
}
