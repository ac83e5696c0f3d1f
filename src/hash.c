#include "hash.h"

#include <limits.h>
#include <string.h>

#include <openssl/crypto.h>

#include <openssl/evp.h>
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

#define HMAC_BLOCK 64 /* SHA-256's block size */

void dl_hasher_init(dl_hasher *h)
{
    h->md = NULL;
    h->md_ctx = NULL;
}

void dl_hasher_free(dl_hasher *h)
{
    EVP_MD_CTX_free(h->md_ctx); /* wipes the state it held */
    EVP_MD_free(h->md);
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

static int digest(dl_hasher *h, const void *data, size_t len, unsigned char out[DL_SHA256_LEN])
{
    return EVP_DigestInit_ex2(h->md_ctx, h->md, NULL) && EVP_DigestUpdate(h->md_ctx, data, len)
                   && EVP_DigestFinal_ex(h->md_ctx, out, NULL)
               ? 0
               : -1;
}

int dl_hasher_sha256(dl_hasher *h, const void *data, size_t len, unsigned char out[DL_SHA256_LEN])
{
    if (ready_md(h) != 0)
        return -1;
    return digest(h, data, len, out);
}

void dl_hmac_key_init(dl_hmac_key *k)
{
    k->inner = NULL;
    k->outer = NULL;
}

void dl_hmac_key_free(dl_hmac_key *k)
{
    EVP_MD_CTX_free(k->inner);
    EVP_MD_CTX_free(k->outer);
    dl_hmac_key_init(k);
}

/* ctx := the digest state after one block of K ^ pad. */
/* HMAC's key as one block (RFC 2104): a key longer than a block is
 * replaced by its digest, a shorter one padded with zeros (block starts
 * zeroed). */
static int key_block(dl_hasher *h, const void *key, size_t key_len, unsigned char block[HMAC_BLOCK])
{
    if (key_len > HMAC_BLOCK)
        return digest(h, key, key_len, block);
    if (key_len > 0)
        memcpy(block, key, key_len);
    return 0;
}

static int keyed_state(dl_hasher *h, EVP_MD_CTX *ctx, const unsigned char block[HMAC_BLOCK], unsigned char pad)
{
    unsigned char x[HMAC_BLOCK];
    for (int i = 0; i < HMAC_BLOCK; i++)
        x[i] = (unsigned char)(block[i] ^ pad);
    int ok = EVP_DigestInit_ex2(ctx, h->md, NULL) && EVP_DigestUpdate(ctx, x, HMAC_BLOCK);
    OPENSSL_cleanse(x, sizeof x);
    return ok ? 0 : -1;
}

int dl_hasher_hmac_key(dl_hasher *h, dl_hmac_key *k, const void *key, size_t key_len)
{
    unsigned char block[HMAC_BLOCK] = { 0 };
    int rc = -1;
    if (ready_md(h) != 0)
        goto done;
    if (!k->inner)
        k->inner = EVP_MD_CTX_new();
    if (!k->outer)
        k->outer = EVP_MD_CTX_new();
    if (!k->inner || !k->outer)
        goto done;
    if (key_block(h, key, key_len, block) != 0)
        goto done;
    rc = keyed_state(h, k->inner, block, 0x36) == 0 && keyed_state(h, k->outer, block, 0x5c) == 0 ? 0 : -1;
done:
    OPENSSL_cleanse(block, sizeof block);
    if (rc != 0)
        dl_hmac_key_free(k);
    return rc;
}

int dl_hasher_hmac_keyed(dl_hasher *h, const dl_hmac_key *k, const void *data, size_t len,
                         unsigned char out[DL_SHA256_LEN])
{
    unsigned char inner[DL_SHA256_LEN];
    if (ready_md(h) != 0 || !k->inner || !k->outer)
        return -1;
    int ok = EVP_MD_CTX_copy_ex(h->md_ctx, k->inner) && EVP_DigestUpdate(h->md_ctx, data, len)
             && EVP_DigestFinal_ex(h->md_ctx, inner, NULL) && EVP_MD_CTX_copy_ex(h->md_ctx, k->outer)
             && EVP_DigestUpdate(h->md_ctx, inner, sizeof inner) && EVP_DigestFinal_ex(h->md_ctx, out, NULL);
    OPENSSL_cleanse(inner, sizeof inner);
    return ok ? 0 : -1;
}

/* One HMAC with a key used once: both blocks hashed in the one context. */
int dl_hasher_hmac(dl_hasher *h, const void *key, size_t key_len, const void *data, size_t len,
                   unsigned char out[DL_SHA256_LEN])
{
    unsigned char block[HMAC_BLOCK] = { 0 }, inner[DL_SHA256_LEN];
    int rc = -1;
    if (ready_md(h) != 0)
        goto done;
    if (key_block(h, key, key_len, block) != 0)
        goto done;
    if (keyed_state(h, h->md_ctx, block, 0x36) != 0 || !EVP_DigestUpdate(h->md_ctx, data, len)
        || !EVP_DigestFinal_ex(h->md_ctx, inner, NULL) || keyed_state(h, h->md_ctx, block, 0x5c) != 0
        || !EVP_DigestUpdate(h->md_ctx, inner, sizeof inner) || !EVP_DigestFinal_ex(h->md_ctx, out, NULL))
        goto done;
    rc = 0;
done:
    OPENSSL_cleanse(block, sizeof block);
    OPENSSL_cleanse(inner, sizeof inner);
    return rc;
}
