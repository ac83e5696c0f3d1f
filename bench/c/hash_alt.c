/* Drop-in replacement for src/hash.c, used only by bench/run.sh to measure
 * what avoiding OpenSSL 3's per-call fetch + allocation would gain.
 *  -DALT_EVP_MD : HMAC built on an EVP_MD fetched once and one reused
 *                 EVP_MD_CTX (no allocation per call);
 *  -DALT_EVP_MAC: an EVP_MAC fetched once, one EVP_MAC_CTX reused (re-keyed
 *                 with EVP_MAC_init each call).
 * Single-threaded here (static state); in src/ the state would live in the
 * dl_sigv4_signer (or be thread-local). */
#include "hash.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/sha.h>

static EVP_MD *md;
static EVP_MD_CTX *mdctx;

static int ensure_md(void)
{
    if (!md) {
        md = EVP_MD_fetch(NULL, "SHA256", NULL);
        mdctx = EVP_MD_CTX_new();
    }
    return md && mdctx ? 0 : -1;
}

int dl_sha256(const void *data, size_t len, unsigned char out[DL_SHA256_LEN])
{
    if (ensure_md() != 0) return -1;
    return EVP_DigestInit_ex2(mdctx, md, NULL) && EVP_DigestUpdate(mdctx, data, len)
                   && EVP_DigestFinal_ex(mdctx, out, NULL)
               ? 0
               : -1;
}

#if defined(ALT_EVP_MAC)
static EVP_MAC *mac;
static EVP_MAC_CTX *macctx;
int dl_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                   unsigned char out[DL_SHA256_LEN])
{
    size_t out_len = 0;
    if (!mac) {
        OSSL_PARAM p[2] = { OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                            OSSL_PARAM_construct_end() };
        mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        if (!mac || !(macctx = EVP_MAC_CTX_new(mac)) || !EVP_MAC_CTX_set_params(macctx, p)) return -1;
    }
    if (!EVP_MAC_init(macctx, key, key_len, NULL) || !EVP_MAC_update(macctx, data, len)
        || !EVP_MAC_final(macctx, out, &out_len, DL_SHA256_LEN))
        return -1;
    return out_len == DL_SHA256_LEN ? 0 : -1;
}
#else
int dl_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                   unsigned char out[DL_SHA256_LEN])
{
    unsigned char pad[64], inner[DL_SHA256_LEN];
    if (ensure_md() != 0) return -1;
    memset(pad, 0, sizeof pad);
    if (key_len > 64) {
        if (dl_sha256(key, key_len, pad) != 0) return -1;
    } else {
        memcpy(pad, key, key_len);
    }
    for (int i = 0; i < 64; i++) pad[i] ^= 0x36;
    if (!EVP_DigestInit_ex2(mdctx, md, NULL) || !EVP_DigestUpdate(mdctx, pad, 64)
        || !EVP_DigestUpdate(mdctx, data, len) || !EVP_DigestFinal_ex(mdctx, inner, NULL))
        return -1;
    for (int i = 0; i < 64; i++) pad[i] ^= 0x36 ^ 0x5c;
    if (!EVP_DigestInit_ex2(mdctx, md, NULL) || !EVP_DigestUpdate(mdctx, pad, 64)
        || !EVP_DigestUpdate(mdctx, inner, sizeof inner) || !EVP_DigestFinal_ex(mdctx, out, NULL))
        return -1;
    OPENSSL_cleanse(pad, sizeof pad);
    OPENSSL_cleanse(inner, sizeof inner);
    return 0;
}
#endif
