/* The hashing floor of a SigV4 signature (bench/c/cbench.c and, through
 * bench/c/lfloor.c, the Lua side of bench/run.sh): only the SHA-256 work no
 * signer can avoid, on the raw SHA256_CTX interface (OpenSSL 3's one-shot
 * SHA256() looks the algorithm up on every call, which is no part of it). */
#ifndef DYNLOG_BENCH_FLOOR_H
#define DYNLOG_BENCH_FLOOR_H

#include <stddef.h>
#include <string.h>

#include <openssl/sha.h>

/* HMAC-SHA256 from SHA256_CTX: just the compression-function work. */
static void raw_hmac(const unsigned char *key, size_t klen, const void *d, size_t n, unsigned char out[32])
{
    unsigned char pad[64], inner[32];
    SHA256_CTX c;
    memset(pad, 0x36, 64);
    for (size_t i = 0; i < klen; i++) pad[i] ^= key[i];
    SHA256_Init(&c); SHA256_Update(&c, pad, 64); SHA256_Update(&c, d, n); SHA256_Final(inner, &c);
    memset(pad, 0x5c, 64);
    for (size_t i = 0; i < klen; i++) pad[i] ^= key[i];
    SHA256_Init(&c); SHA256_Update(&c, pad, 64); SHA256_Update(&c, inner, 32); SHA256_Final(out, &c);
}

static void raw_sha256(const void *d, size_t n, unsigned char out[32])
{
    SHA256_CTX c;
    SHA256_Init(&c); SHA256_Update(&c, d, n); SHA256_Final(out, &c);
}

/* One signature's floor with a cached key: the body's and the canonical
 * request's SHA-256 and the HMAC of the string to sign. */
static unsigned floor_cached_once(const void *body, size_t body_len, const void *creq, size_t creq_len,
                                  const void *sts, size_t sts_len)
{
    unsigned char md[32], key[32] = { 1 };
    raw_sha256(body, body_len, md);
    raw_sha256(creq, creq_len, md);
    raw_hmac(key, 32, sts, sts_len, md);
    return md[0];
}

#endif
