/* AES-256-GCM over OpenSSL's EVP functions. */
#include "cipher.h"

#include <limits.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

int dl_random_bytes(unsigned char *out, size_t n)
{
    if (n > INT_MAX)
        return -1;
    return RAND_bytes(out, (int)n) == 1 ? 0 : -1;
}

int dl_gcm_seal(const unsigned char key[DL_GCM_KEY_LEN], const void *aad, size_t aad_len, const void *in,
                size_t len, unsigned char *out)
{
    if (len > INT_MAX || aad_len > INT_MAX)
        return -1;
    unsigned char *nonce = out, *ct = out + DL_GCM_NONCE_LEN, *tag = out + DL_GCM_NONCE_LEN + len;
    if (dl_random_bytes(nonce, DL_GCM_NONCE_LEN) != 0)
        return -1;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        return -1;
    int n = 0, rc = -1;
    if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1
        && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, DL_GCM_NONCE_LEN, NULL) == 1
        && EVP_EncryptInit_ex(ctx, NULL, NULL, key, nonce) == 1
        && (aad_len == 0 || EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aad_len) == 1)
        && EVP_EncryptUpdate(ctx, ct, &n, in, (int)len) == 1
        && EVP_EncryptFinal_ex(ctx, ct + n, &n) == 1
        && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, DL_GCM_TAG_LEN, tag) == 1)
        rc = 0;
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

int dl_gcm_open(const unsigned char key[DL_GCM_KEY_LEN], const void *aad, size_t aad_len, const unsigned char *in,
                size_t len, unsigned char *out)
{
    if (len < DL_GCM_OVERHEAD || len > INT_MAX || aad_len > INT_MAX)
        return 1;
    size_t ct_len = len - DL_GCM_OVERHEAD;
    const unsigned char *nonce = in, *ct = in + DL_GCM_NONCE_LEN, *tag = in + DL_GCM_NONCE_LEN + ct_len;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        return -1;
    int n = 0, rc = -1;
    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1
        && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, DL_GCM_NONCE_LEN, NULL) == 1
        && EVP_DecryptInit_ex(ctx, NULL, NULL, key, nonce) == 1
        && (aad_len == 0 || EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aad_len) == 1)
        && EVP_DecryptUpdate(ctx, out, &n, ct, (int)ct_len) == 1
        && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, DL_GCM_TAG_LEN, (void *)tag) == 1) {
        /* The tag is checked here: a mismatch is a refusal, not a failure. */
        rc = EVP_DecryptFinal_ex(ctx, out + n, &n) == 1 ? 0 : 1;
    }
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}
