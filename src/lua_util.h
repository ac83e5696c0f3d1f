/* What every Lua binding (lua_*.c) shares, whatever its concern. */
#ifndef DYNLOG_LUA_UTIL_H
#define DYNLOG_LUA_UTIL_H

#include "compat.h"

/* Pushes nil, code, message and returns 3: the shape of every expected
 * failure that crosses from C into Lua. The Lua layer turns code and message
 * into dynlog's error table (dynlog.errors.from_core). */
int dl_push_failure(lua_State *L, const char *code, const char *message);

#endif
