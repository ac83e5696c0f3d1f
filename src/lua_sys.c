/* Small system services the Lua layer needs and plain Lua lacks: a clock with
 * sub-second resolution, sleep, CRC-32 (DynamoDB's x-amz-crc32), UTF-8
 * validation, base64 and setting an environment variable. */
#include "base64.h"
#include "dynlog.h"
#include "lua_util.h"
#include "marshal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zlib.h>

/* now() -> seconds since the epoch, with fractions */
static int l_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

/* monotonic() -> seconds on a clock that never goes back, for durations */
static int l_monotonic(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

/* sleep(seconds): blocks the thread. Never used inside nginx, where dynlog
 * sleeps with ngx.sleep instead. */
static int l_sleep(lua_State *L)
{
    lua_Number s = luaL_checknumber(L, 1);
    if (!(s >= 0) || s > 3600)
        return luaL_argerror(L, 1, "seconds must be in [0, 3600]");
    struct timespec ts;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (lua_Number)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return 0;
}

/* crc32(s) -> CRC-32 (zlib's, as in x-amz-crc32) as an integer */
static int l_crc32(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    uLong crc = crc32(0L, Z_NULL, 0);
    /* zlib takes uInt lengths: feed long strings in slices */
    while (len > 0) {
        uInt n = len > 0x40000000u ? 0x40000000u : (uInt)len;
        crc = crc32(crc, (const Bytef *)s, n);
        s += n;
        len -= n;
    }
    lua_pushinteger(L, (lua_Integer)crc);
    return 1;
}

/* utf8_valid(s) -> true, or false and the 1-based byte position of the
 * first invalid sequence */
static int l_utf8_valid(lua_State *L)
{
    size_t len;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
    size_t i = 0;
    while (i < len) {
        if (s[i] < 0x80) { /* dl_utf8_sequence reads multi-byte sequences only */
            i++;
            continue;
        }
        size_t n = dl_utf8_sequence(s + i, len - i);
        if (n == 0) {
            lua_pushboolean(L, 0);
            lua_pushinteger(L, (lua_Integer)i + 1);
            return 2;
        }
        i += n;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int push_buf_or_fail(lua_State *L, dl_buf *b, int rc)
{
    if (rc == 0)
        lua_pushlstring(L, b->data ? b->data : "", b->len);
    dl_buf_free(b);
    if (rc == -1)
        return luaL_error(L, "dynlog.core: out of memory");
    if (rc != 0)
        return dl_push_failure(L, "invalid_argument", "not valid base64");
    return 1;
}

/* base64_encode(s) -> text (standard alphabet, padded) */
static int l_base64_encode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    dl_buf b = DL_BUF_INIT;
    return push_buf_or_fail(L, &b, dl_base64_encode(&b, s, len));
}

/* base64_decode(text) -> bytes, or nil, "invalid_argument", message */
static int l_base64_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    dl_buf b = DL_BUF_INIT;
    return push_buf_or_fail(L, &b, dl_base64_decode(&b, s, len));
}

/* setenv(name, value) sets a variable of the process's environment (what
 * os.getenv and child processes see); setenv(name, nil) removes it. Not for
 * threads or nginx workers: the Lambda runtime sets _X_AMZN_TRACE_ID per
 * invocation. Raises on a name that is empty or holds '=' or NUL. */
static int l_setenv(lua_State *L)
{
    size_t nlen, vlen = 0;
    const char *name = luaL_checklstring(L, 1, &nlen);
    const char *value = lua_isnoneornil(L, 2) ? NULL : luaL_checklstring(L, 2, &vlen);
    if (nlen == 0 || strlen(name) != nlen || strchr(name, '='))
        return luaL_error(L, "dynlog.core: setenv: invalid variable name");
    if (value && strlen(value) != vlen)
        return luaL_error(L, "dynlog.core: setenv: the value holds a NUL byte");
    if ((value ? setenv(name, value, 1) : unsetenv(name)) != 0)
        return dl_push_failure(L, "out_of_memory", strerror(errno));
    lua_pushboolean(L, 1);
    return 1;
}

void dl_open_sys(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "now", l_now },
        { "monotonic", l_monotonic },
        { "sleep", l_sleep },
        { "crc32", l_crc32 },
        { "utf8_valid", l_utf8_valid },
        { "base64_encode", l_base64_encode },
        { "base64_decode", l_base64_decode },
        { "setenv", l_setenv },
        { NULL, NULL },
    };
    luaL_setfuncs(L, funcs, 0);
}
