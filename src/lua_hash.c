/* Hashing primitives for Lua: the building blocks of SigV4, exposed so that
 * Lua code (and specs) can check signatures without another library. */
#include "dynlog.h"
#include "hash.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/opensslv.h>
#include <openssl/rand.h>

#include <stdio.h>

static void push_hex(lua_State *L, const unsigned char *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    char out[2 * DL_SHA256_LEN];
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    lua_pushlstring(L, out, 2 * n);
}

/* sha256_hex(data) -> 64 hex characters */
static int l_sha256_hex(lua_State *L)
{
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    unsigned char md[DL_SHA256_LEN];
    if (dl_sha256(data, len, md) != 0)
        return luaL_error(L, "dynlog.core: SHA-256 failed in libcrypto");
    push_hex(L, md, sizeof md);
    return 1;
}

/* hmac_sha256(key, data [, "hex"]) -> 32 raw bytes, or 64 hex characters */
static int l_hmac_sha256(lua_State *L)
{
    size_t key_len, len;
    const char *key = luaL_checklstring(L, 1, &key_len);
    const char *data = luaL_checklstring(L, 2, &len);
    const char *form = luaL_optstring(L, 3, "raw");
    unsigned char md[DL_SHA256_LEN];
    if (dl_hmac_sha256(key, key_len, data, len, md) != 0)
        return luaL_error(L, "dynlog.core: HMAC-SHA256 failed in libcrypto");
    if (strcmp(form, "hex") == 0)
        push_hex(L, md, sizeof md);
    else if (strcmp(form, "raw") == 0)
        lua_pushlstring(L, (const char *)md, sizeof md);
    else
        return luaL_argerror(L, 3, "expected \"raw\" or \"hex\"");
    return 1;
}

/* constant_time_equal(a, b) -> boolean, in a time that does not depend on
 * where a and b differ: for comparing secrets (API keys, passwords). */
static int l_constant_time_equal(lua_State *L)
{
    size_t alen, blen;
    const char *a = luaL_checklstring(L, 1, &alen);
    const char *b = luaL_checklstring(L, 2, &blen);
    /* Compare digests so that the time does not depend on the lengths
     * either; only whether they are equal shows. */
    unsigned char da[DL_SHA256_LEN], db[DL_SHA256_LEN];
    if (dl_sha256(a, alen, da) != 0 || dl_sha256(b, blen, db) != 0)
        return luaL_error(L, "dynlog.core: SHA-256 failed in libcrypto");
    lua_pushboolean(L, CRYPTO_memcmp(da, db, sizeof da) == 0 && alen == blen);
    return 1;
}

/* uuid4() -> a random (version 4) UUID, as EventBridge gives event ids */
static int l_uuid4(lua_State *L)
{
    unsigned char r[16];
    if (RAND_bytes(r, sizeof r) != 1)
        return luaL_error(L, "dynlog.core: the OS random generator failed");
    r[6] = (unsigned char)((r[6] & 0x0F) | 0x40);
    r[8] = (unsigned char)((r[8] & 0x3F) | 0x80);
    char out[37];
    snprintf(out, sizeof out, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14],
             r[15]);
    lua_pushlstring(L, out, 36);
    return 1;
}

static int l_openssl_version(lua_State *L)
{
    lua_pushstring(L, OpenSSL_version(OPENSSL_VERSION));
    return 1;
}

void dl_open_hash(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "sha256_hex", l_sha256_hex },
        { "hmac_sha256", l_hmac_sha256 },
        { "openssl_version", l_openssl_version },
        { "constant_time_equal", l_constant_time_equal },
        { "uuid4", l_uuid4 },
        { NULL, NULL },
    };
    luaL_setfuncs(L, funcs, 0);
}
