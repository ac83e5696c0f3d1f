/* AES-256-GCM over OpenSSL's EVP functions, and random bytes from its CSPRNG:
 * for sealing data under a key that can be deleted (crypto-shredding). */
#ifndef DYNLOG_CIPHER_H
#define DYNLOG_CIPHER_H

#include <stddef.h>

#define DL_GCM_KEY_LEN 32
#define DL_GCM_NONCE_LEN 12
#define DL_GCM_TAG_LEN 16
/* A sealed message: nonce, ciphertext (as long as the plaintext), tag. */
#define DL_GCM_OVERHEAD (DL_GCM_NONCE_LEN + DL_GCM_TAG_LEN)

/* Seals len bytes of in under key, with aad authenticated but not
 * encrypted, into out (len + DL_GCM_OVERHEAD bytes), with a random nonce.
 * Returns 0, or -1 if libcrypto failed. */
int dl_gcm_seal(const unsigned char key[DL_GCM_KEY_LEN], const void *aad, size_t aad_len, const void *in,
                size_t len, unsigned char *out);

/* Opens a sealed message of len bytes (at least DL_GCM_OVERHEAD) into out
 * (len - DL_GCM_OVERHEAD bytes). Returns 0, 1 when the message, the key or
 * the aad are not those it was sealed with, or -1 if libcrypto failed. */
int dl_gcm_open(const unsigned char key[DL_GCM_KEY_LEN], const void *aad, size_t aad_len, const unsigned char *in,
                size_t len, unsigned char *out);

/* n random bytes from OpenSSL's CSPRNG: 0, or -1 on failure. */
int dl_random_bytes(unsigned char *out, size_t n);

#endif
