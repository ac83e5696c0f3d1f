/* AES-256-GCM and random bytes for Lua: the primitives of crypto-shredding
 * (personal data sealed under a per-subject key; deleting the key erases
 * it from every event, which is never rewritten). */
#include "dynlog.h"
#include "cipher.h"
#include "lua_util.h"

#include <stdlib.h>

#define MAX_RANDOM 1024

static const unsigned char *check_key(lua_State *L, int arg)
{
    size_t len;
    const char *key = luaL_checklstring(L, arg, &len);
    if (len != DL_GCM_KEY_LEN)
        luaL_argerror(L, arg, "the key must be 32 bytes (AES-256)");
    return (const unsigned char *)key;
}

/* random_bytes(n) -> n random bytes (1 to 1024) from OpenSSL's CSPRNG */
static int l_random_bytes(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= MAX_RANDOM, 1, "expected 1 to 1024 bytes");
    unsigned char out[MAX_RANDOM];
    if (dl_random_bytes(out, (size_t)n) != 0)
        return luaL_error(L, "dynlog.core: the OS random generator failed");
    lua_pushlstring(L, (const char *)out, (size_t)n);
    return 1;
}

/* aes_gcm_seal(key, plaintext [, aad]) -> nonce .. ciphertext .. tag (raw
 * bytes, 28 more than the plaintext), with a random 12-byte nonce */
static int l_aes_gcm_seal(lua_State *L)
{
    const unsigned char *key = check_key(L, 1);
    size_t len, aad_len = 0;
    const char *in = luaL_checklstring(L, 2, &len);
    const char *aad = luaL_optlstring(L, 3, "", &aad_len);
    size_t out_len = len + DL_GCM_OVERHEAD;
    if (out_len < len)
        return luaL_argerror(L, 2, "too long");
    unsigned char *out = malloc(out_len);
    if (!out)
        return luaL_error(L, "dynlog.core: out of memory");
    int rc = dl_gcm_seal(key, aad, aad_len, in, len, out);
    if (rc == 0)
        lua_pushlstring(L, (const char *)out, out_len);
    free(out);
    if (rc != 0)
        return luaL_error(L, "dynlog.core: AES-256-GCM failed in libcrypto");
    return 1;
}

/* aes_gcm_open(key, sealed [, aad]) -> plaintext, or nil, "invalid_argument",
 * message when sealed was not sealed with this key and aad (or was altered) */
static int l_aes_gcm_open(lua_State *L)
{
    const unsigned char *key = check_key(L, 1);
    size_t len, aad_len = 0;
    const char *in = luaL_checklstring(L, 2, &len);
    const char *aad = luaL_optlstring(L, 3, "", &aad_len);
    if (len < DL_GCM_OVERHEAD)
        return dl_push_failure(L, "invalid_argument", "sealed text is shorter than a nonce and a tag (28 bytes)");
    unsigned char *out = malloc(len - DL_GCM_OVERHEAD + 1);
    if (!out)
        return luaL_error(L, "dynlog.core: out of memory");
    int rc = dl_gcm_open(key, aad, aad_len, (const unsigned char *)in, len, out);
    if (rc == 0)
        lua_pushlstring(L, (const char *)out, len - DL_GCM_OVERHEAD);
    free(out);
    if (rc < 0)
        return luaL_error(L, "dynlog.core: AES-256-GCM failed in libcrypto");
    if (rc > 0)
        return dl_push_failure(L, "invalid_argument",
                               "authentication failed: not sealed with this key and aad, or altered");
    return 1;
}

void dl_open_cipher(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "random_bytes", l_random_bytes },
        { "aes_gcm_seal", l_aes_gcm_seal },
        { "aes_gcm_open", l_aes_gcm_open },
        { NULL, NULL },
    };
    luaL_setfuncs(L, funcs, 0);
}
