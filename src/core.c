/* dynlog.core: the C half of dynlog. This file only assembles the module; each
 * concern registers its own functions (see dynlog.h). The libcurl transport
 * is another module, dynlog.curl (curl.c): core.so does not link libcurl. */
#include "dynlog.h"

DL_EXPORT int luaopen_dynlog_core(lua_State *L)
{
    lua_newtable(L);
    lua_pushliteral(L, DYNLOG_VERSION);
    lua_setfield(L, -2, "_VERSION");
    dl_open_hash(L);
    dl_open_cipher(L);
    dl_open_sys(L);
    dl_open_signal(L);
    dl_open_ulid(L);
    dl_open_sigv4(L);
    dl_open_marks(L);
    dl_open_json(L);
    dl_open_xml(L);
    dl_open_marshal(L);
    return 1;
}
