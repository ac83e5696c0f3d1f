/* dynlog.core.http_multi: many requests in flight from one Lua state, for
 * the scheduler of dynlog.concurrent. Same options, headers checks and
 * response shape as core.http_client.
 *
 *   local m = core.http_multi{connect_timeout=, timeout=, cafile=, max_response_bytes=}
 *   local id = m:start(method, url [, headers [, body [, timeout]]])
 *                                       -- or nil, code, message
 *   local id, res = m:next(seconds)     -- a request that ended: res as
 *   local id, nil, code, message,       -- http_client's, or the failure
 *         unsent                        -- (unsent as http_client's);
 *                                       -- nil when none ended in time
 *   m:in_flight() -> n;  m:cancel();  m:close()
 *
 * Ids are small integers, reused once a request has been collected. */
#include "dynlog.h"
#include "http_multi.h"
#include "lua_http.h"
#include "lua_util.h"

#include <string.h>

#define MULTI_MT "dynlog.http_multi"

typedef struct {
    dl_http_multi multi;
    dl_http_headers building; /* a request's headers, read before it starts */
    int closed;
} multi_ud;

static multi_ud *check_multi(lua_State *L)
{
    multi_ud *u = luaL_checkudata(L, 1, MULTI_MT);
    if (u->closed)
        luaL_error(L, "dynlog.curl: http multi is closed");
    return u;
}

static int l_multi_gc(lua_State *L)
{
    multi_ud *u = luaL_checkudata(L, 1, MULTI_MT);
    if (!u->closed) {
        dl_http_headers_free(&u->building);
        dl_http_multi_cleanup(&u->multi);
        u->closed = 1;
    }
    return 0;
}

/* http_multi([opts]) -> multi */
static int l_http_multi(lua_State *L)
{
    multi_ud *u = lua_newuserdata(L, sizeof *u);
    memset(u, 0, sizeof *u);
    dl_http_headers_init(&u->building);
    u->closed = 1; /* until curl is set up, __gc has nothing to free */
    luaL_setmetatable(L, MULTI_MT);
    if (dl_http_global_init() != 0 || dl_http_multi_init(&u->multi) != 0)
        return luaL_error(L, "dynlog.curl: libcurl could not be initialised");
    u->closed = 0;
    dl_http_read_options(L, 1, &u->multi.config);
    return 1;
}

/* multi:start(method, url [, headers [, body [, timeout]]]) -> id */
static int l_start(lua_State *L)
{
    multi_ud *u = check_multi(L);
    dl_http_request req;
    dl_http_read_request(L, &req, &u->building);
    const char *code = NULL, *message = NULL;
    long id = dl_http_multi_start(&u->multi, &req, &u->building, &code, &message);
    if (id < 0)
        return dl_push_failure(L, code, message);
    lua_pushinteger(L, (lua_Integer)id + 1);
    return 1;
}

/* multi:next([seconds]) -> id, res | id, nil, code, message, unsent | nil */
static int l_next(lua_State *L)
{
    multi_ud *u = check_multi(L);
    lua_Number seconds = luaL_optnumber(L, 2, 1);
    if (!(seconds >= 0) || seconds > 86400)
        return luaL_error(L, "dynlog.curl: next expects a number of seconds in [0, 86400]");
    long i = dl_http_multi_next(&u->multi, (long)(seconds * 1000 + 0.5));
    if (i < 0) {
        lua_pushnil(L);
        return 1;
    }
    dl_http_response *r;
    const char *code = NULL, *message = NULL;
    lua_pushinteger(L, (lua_Integer)i + 1);
    int n;
    if (dl_http_multi_finish(&u->multi, i, &r, &code, &message) == 0) {
        dl_http_push_response(L, r);
        n = 2;
    } else {
        lua_pushnil(L);
        lua_pushstring(L, code);
        lua_pushstring(L, message); /* may live in the slot: copy before release */
        lua_pushboolean(L, r->unsent);
        n = 5;
    }
    dl_http_multi_release(&u->multi, i);
    return n;
}

static int l_in_flight(lua_State *L)
{
    multi_ud *u = check_multi(L);
    lua_pushinteger(L, (lua_Integer)u->multi.in_flight);
    return 1;
}

static int l_cancel(lua_State *L)
{
    dl_http_multi_cancel(&check_multi(L)->multi);
    return 0;
}

static int l_close(lua_State *L)
{
    return l_multi_gc(L);
}

void dl_open_http_multi(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "start", l_start },
        { "next", l_next },
        { "in_flight", l_in_flight },
        { "cancel", l_cancel },
        { "close", l_close },
        { NULL, NULL },
    };
    luaL_newmetatable(L, MULTI_MT);
    luaL_setfuncs(L, methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_multi_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_http_multi);
    lua_setfield(L, -2, "http_multi");
}
