/* benchfloor: the SigV4 hashing floor (bench/c/floor.h) as a Lua module, so
 * that bench/lua_bench.lua measures it in the same process and the same
 * moments as the signer it compares with it. Built by bench/run.sh for
 * Lua 5.4 and LuaJIT into bench/peers/; no part of dynlog.
 *   benchfloor.cached(body, creq_len, sts_len, n): n floors of one signature */
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>

#include "floor.h"

static int l_cached(lua_State *L)
{
    size_t body_len;
    const char *body = luaL_checklstring(L, 1, &body_len);
    size_t creq_len = (size_t)luaL_checkinteger(L, 2), sts_len = (size_t)luaL_checkinteger(L, 3);
    lua_Integer n = luaL_checkinteger(L, 4);
    unsigned char *creq = malloc(creq_len + 1), *sts = malloc(sts_len + 1);
    if (!creq || !sts) {
        free(creq);
        free(sts);
        return luaL_error(L, "benchfloor: out of memory");
    }
    memset(creq, 'c', creq_len);
    memset(sts, 's', sts_len);
    unsigned sink = 0;
    for (lua_Integer i = 0; i < n; i++)
        sink += floor_cached_once(body, body_len, creq, creq_len, sts, sts_len);
    free(creq);
    free(sts);
    lua_pushinteger(L, (lua_Integer)sink);
    return 1;
}

int luaopen_benchfloor(lua_State *L)
{
    lua_newtable(L);
    lua_pushcfunction(L, l_cached);
    lua_setfield(L, -2, "cached");
    return 1;
}
