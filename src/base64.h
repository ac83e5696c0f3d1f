/* Base64 (RFC 4648, standard alphabet, padded) over OpenSSL's EVP block
 * functions, with the length bookkeeping they leave to the caller. */
#ifndef DYNLOG_BASE64_H
#define DYNLOG_BASE64_H

#include "buf.h"

#include <stddef.h>

/* Appends the base64 form of n bytes. Returns 0, or -1 without memory. */
int dl_base64_encode(dl_buf *out, const void *data, size_t n);

/* Appends the bytes that text decodes to. Returns 0, -1 without memory, or
 * -2 when text is not padded base64 of the standard alphabet. */
int dl_base64_decode(dl_buf *out, const char *text, size_t len);

#endif
