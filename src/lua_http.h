/* What the two HTTP bindings (lua_http.c, lua_http_multi.c) share. */
#ifndef DYNLOG_LUA_HTTP_H
#define DYNLOG_LUA_HTTP_H

#include "compat.h"
#include "http.h"

/* Seconds at idx (in (0, 86400]) as milliseconds; raises otherwise. */
long dl_seconds_to_ms(lua_State *L, int idx, const char *field);

/* Reads {connect_timeout=, timeout=, max_response_bytes=, cafile=} at idx
 * (nil: the defaults) into h. Raises on a bad option. */
void dl_http_read_options(lua_State *L, int idx, dl_http *h);

/* Replaces *list with the headers of the Lua table at idx (nil: none), with
 * curl's own additions switched off. Raises on a header that could inject
 * another; *list must belong to a userdata, so that nothing leaks then. */
void dl_http_build_headers(lua_State *L, int idx, dl_http_headers *list);

/* Reads the arguments (method, url [, headers [, body [, timeout]]]) at
 * stack positions 2 to 6 into *req, its headers into *headers (see
 * dl_http_build_headers). Raises on a bad argument. */
void dl_http_read_request(lua_State *L, dl_http_request *req, dl_http_headers *headers);

/* Pushes {status=, headers=, body=, new_connections=, local_port=}. */
void dl_http_push_response(lua_State *L, const dl_http_response *r);

#endif
