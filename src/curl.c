/* dynlog.curl: the libcurl transport, a module of its own so that a process
 * that never makes a request with libcurl (an nginx worker: its requests go
 * over cosockets) does not map libcurl and the libraries it pulls in. Only
 * dynlog.transport.curl and dynlog.transport.concurrent (outside nginx)
 * require it. curl.so holds the HTTP bindings and what they share with the
 * core (buf.c, lua_util.c), compiled in again: the two modules share no C
 * symbols, and it exports luaopen_dynlog_curl alone. libcurl's global set-up
 * (curl_global_init) happens here, at the first client or multi handle. */
#include "dynlog.h"

DL_EXPORT int luaopen_dynlog_curl(lua_State *L)
{
    lua_newtable(L);
    lua_pushliteral(L, DYNLOG_VERSION);
    lua_setfield(L, -2, "_VERSION");
    dl_open_http(L);
    dl_open_http_multi(L);
    return 1;
}
