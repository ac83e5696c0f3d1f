/* SHA-256 and HMAC-SHA256 over OpenSSL's libcrypto. */
#ifndef DYNLOG_HASH_H
#define DYNLOG_HASH_H

#include <stddef.h>

#define DL_SHA256_LEN 32

/* Both return 0 on success, -1 if libcrypto failed. */
int dl_sha256(const void *data, size_t len, unsigned char out[DL_SHA256_LEN]);
int dl_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                   unsigned char out[DL_SHA256_LEN]);

#endif
