#include "hash.h"

#include <limits.h>

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
