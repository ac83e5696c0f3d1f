/* How core.c and curl.c assemble the two C modules from their Lua bindings:
 * dynlog.core (core.so: everything but HTTP) and dynlog.curl (curl.so: the
 * libcurl transport, lua_http.c and lua_http_multi.c), so that core.so does
 * not link libcurl and a process without curl requests (an nginx worker)
 * does not map it.
 *
 * Each concern has one binding file (lua_ulid.c, lua_sigv4.c, lua_http.c,
 * lua_json.c, …) that exports one dl_open_* function. core.c (or curl.c)
 * calls them in turn; each adds its functions to the module table on top of
 * the stack and registers its metatables, if any. No binding keeps C globals
 * that belong to one Lua state: per-state data lives in userdata or the
 * registry. What the bindings share among themselves is in lua_util.h, not
 * here: this header only declares what core.c and curl.c call.
 *
 * Everything is compiled with -fvisibility=hidden: each shared object exports
 * its luaopen_* alone (DL_EXPORT), and no dl_* symbol can clash with
 * another library loaded into the same process. */
#ifndef DYNLOG_H
#define DYNLOG_H

#include "compat.h"

#define DYNLOG_VERSION "0.1.0"

#if defined(__GNUC__) || defined(__clang__)
#define DL_EXPORT __attribute__((visibility("default")))
#else
#define DL_EXPORT
#endif

/* The modules' entry points, the one symbol each of core.so and curl.so exports. */
DL_EXPORT int luaopen_dynlog_core(lua_State *L);
DL_EXPORT int luaopen_dynlog_curl(lua_State *L);

void dl_open_hash(lua_State *L);
void dl_open_cipher(lua_State *L);
void dl_open_ulid(lua_State *L);
void dl_open_sigv4(lua_State *L);
void dl_open_marks(lua_State *L);
void dl_open_json(lua_State *L);
void dl_open_xml(lua_State *L);
void dl_open_marshal(lua_State *L);
void dl_open_sys(lua_State *L);
void dl_open_signal(lua_State *L);

/* dynlog.curl's (curl.c). */
void dl_open_http(lua_State *L);
void dl_open_http_multi(lua_State *L);

#endif
