/* SHA-256 and HMAC-SHA256 over OpenSSL's libcrypto. */
#ifndef DYNLOG_HASH_H
#define DYNLOG_HASH_H

#include <stddef.h>

#define DL_SHA256_LEN 32

/* Both return 0 on success, -1 if libcrypto failed. */
int dl_sha256(const void *data, size_t len, unsigned char out[DL_SHA256_LEN]);
int dl_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                   unsigned char out[DL_SHA256_LEN]);

/* A SHA-256 digest and an HMAC-SHA256 whose OpenSSL algorithm objects and
 * contexts are fetched once and reused: OpenSSL 3's one-shot SHA256() and
 * HMAC() look the algorithm up and allocate contexts on every call, which
 * is most of the cost of a SigV4 signature. One hasher serves one thread at
 * a time (each signer owns one). Fetching happens on first use. */
struct evp_md_st;
struct evp_md_ctx_st;
struct evp_mac_st;
struct evp_mac_ctx_st;

typedef struct dl_hasher {
    struct evp_md_st *md;
    struct evp_md_ctx_st *md_ctx;
    struct evp_mac_st *mac;
    struct evp_mac_ctx_st *mac_ctx;
} dl_hasher;

void dl_hasher_init(dl_hasher *h);
void dl_hasher_free(dl_hasher *h);
/* Both return 0 on success, -1 if libcrypto failed. */
int dl_hasher_sha256(dl_hasher *h, const void *data, size_t len, unsigned char out[DL_SHA256_LEN]);
int dl_hasher_hmac(dl_hasher *h, const void *key, size_t key_len, const void *data, size_t len,
                   unsigned char out[DL_SHA256_LEN]);

#endif
