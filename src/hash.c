#include "hash.h"

#include <limits.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

int dl_sha256(const void *data, size_t len, unsigned char out[DL_SHA256_LEN])
{
    return SHA256(data, len, out) ? 0 : -1;
}

int dl_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                   unsigned char out[DL_SHA256_LEN])
{
    unsigned int out_len = 0;
    if (key_len > (size_t)INT_MAX)
        return -1;
    if (!HMAC(EVP_sha256(), key, (int)key_len, data, len, out, &out_len))
        return -1;
    return out_len == DL_SHA256_LEN ? 0 : -1;
}

void dl_hasher_init(dl_hasher *h)
{
    h->md = NULL;
    h->md_ctx = NULL;
    h->mac = NULL;
    h->mac_ctx = NULL;
}

void dl_hasher_free(dl_hasher *h)
{
    EVP_MD_CTX_free(h->md_ctx);
    EVP_MD_free(h->md);
    EVP_MAC_CTX_free(h->mac_ctx); /* also wipes the key it held */
    EVP_MAC_free(h->mac);
    dl_hasher_init(h);
}

static int ready_md(dl_hasher *h)
{
    if (!h->md)
        h->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (!h->md_ctx)
        h->md_ctx = EVP_MD_CTX_new();
    return h->md && h->md_ctx ? 0 : -1;
}

static int ready_mac(dl_hasher *h)
{
    if (!h->mac)
        h->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (h->mac && !h->mac_ctx) {
        char digest[] = "SHA256";
        OSSL_PARAM params[2];
        params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
        params[1] = OSSL_PARAM_construct_end();
        h->mac_ctx = EVP_MAC_CTX_new(h->mac);
        if (h->mac_ctx && !EVP_MAC_CTX_set_params(h->mac_ctx, params)) {
            EVP_MAC_CTX_free(h->mac_ctx);
            h->mac_ctx = NULL;
        }
    }
    return h->mac && h->mac_ctx ? 0 : -1;
}

int dl_hasher_sha256(dl_hasher *h, const void *data, size_t len, unsigned char out[DL_SHA256_LEN])
{
    if (ready_md(h) != 0)
        return -1;
    return EVP_DigestInit_ex2(h->md_ctx, h->md, NULL) && EVP_DigestUpdate(h->md_ctx, data, len) &&
                   EVP_DigestFinal_ex(h->md_ctx, out, NULL)
               ? 0
               : -1;
}

int dl_hasher_hmac(dl_hasher *h, const void *key, size_t key_len, const void *data, size_t len,
                   unsigned char out[DL_SHA256_LEN])
{
    size_t out_len = 0;
    if (ready_mac(h) != 0)
        return -1;
    /* Re-keying the one context costs far less than a fresh HMAC(). */
    if (!EVP_MAC_init(h->mac_ctx, key, key_len, NULL) || !EVP_MAC_update(h->mac_ctx, data, len) ||
        !EVP_MAC_final(h->mac_ctx, out, &out_len, DL_SHA256_LEN))
        return -1;
    return out_len == DL_SHA256_LEN ? 0 : -1;
}
