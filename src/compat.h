/* One C source for Lua 5.4 and LuaJIT 2.1 (Lua 5.1 C API).
 *
 * Only what dynlog uses is bridged here. LuaJIT already provides luaL_setfuncs,
 * luaL_newlib, luaL_testudata and luaL_setmetatable, so those need no shim.
 * We test LUA_VERSION_NUM rather than LUAJIT_VERSION because the latter needs
 * <luajit.h>. */
#ifndef DYNLOG_COMPAT_H
#define DYNLOG_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM == 501

#define lua_rawlen(L, i) lua_objlen((L), (i))

static inline int lua_absindex(lua_State *L, int i)
{
    return (i > 0 || i <= LUA_REGISTRYINDEX) ? i : lua_gettop(L) + i + 1;
}

/* LuaJIT stores every number as a double: an integer is a number whose value
 * survives the round trip through lua_Integer. */
static inline int lua_isinteger(lua_State *L, int i)
{
    if (lua_type(L, i) != LUA_TNUMBER)
        return 0;
    lua_Number n = lua_tonumber(L, i);
    return n >= -9007199254740992.0 && n <= 9007199254740992.0 && (lua_Number)(lua_Integer)n == n;
}

#endif /* LUA_VERSION_NUM == 501 */

#endif
