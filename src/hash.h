/* SHA-256 and HMAC-SHA256 over OpenSSL's libcrypto. */
#ifndef DYNLOG_HASH_H
#define DYNLOG_HASH_H

#include <stddef.h>

#define DL_SHA256_LEN 32

/* Both return 0 on success, -1 if libcrypto failed. */
int dl_sha256(const void *data, size_t len, unsigned char out[DL_SHA256_LEN]);
int dl_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                   unsigned char out[DL_SHA256_LEN]);

/* SHA-256 and HMAC-SHA256 with the algorithm fetched once (EVP_MD_fetch) and
 * one digest context reused: OpenSSL 3's one-shot SHA256() and HMAC() look
 * the algorithm up and allocate contexts on every call, which is most of
 * the cost of a SigV4 signature. HMAC is built on the digest (RFC 2104):
 * H(K^opad || H(K^ipad || data)). One hasher serves one thread at a time
 * (each signer owns one). Fetching happens on first use. */
struct evp_md_st;
struct evp_md_ctx_st;

typedef struct dl_hasher {
    struct evp_md_st *md;
    struct evp_md_ctx_st *md_ctx;
} dl_hasher;

/* An HMAC-SHA256 key made ready once: the digest states after the inner
 * (K^ipad) and the outer (K^opad) block. An HMAC with it copies the two
 * states instead of hashing the key's two blocks again. */
typedef struct dl_hmac_key {
    struct evp_md_ctx_st *inner;
    struct evp_md_ctx_st *outer;
} dl_hmac_key;

void dl_hasher_init(dl_hasher *h);
void dl_hasher_free(dl_hasher *h);
/* All return 0 on success, -1 if libcrypto failed. */
int dl_hasher_sha256(dl_hasher *h, const void *data, size_t len, unsigned char out[DL_SHA256_LEN]);
int dl_hasher_hmac(dl_hasher *h, const void *key, size_t key_len, const void *data, size_t len,
                   unsigned char out[DL_SHA256_LEN]);

void dl_hmac_key_init(dl_hmac_key *k);
/* Frees (and so wipes) the two states. Idempotent. */
void dl_hmac_key_free(dl_hmac_key *k);
/* Keys k with key[0 .. key_len). On failure k is freed. */
int dl_hasher_hmac_key(dl_hasher *h, dl_hmac_key *k, const void *key, size_t key_len);
int dl_hasher_hmac_keyed(dl_hasher *h, const dl_hmac_key *k, const void *data, size_t len,
                         unsigned char out[DL_SHA256_LEN]);

#endif
