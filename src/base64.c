#include "base64.h"

#include <limits.h>

#include <openssl/evp.h>

int dl_base64_encode(dl_buf *out, const void *data, size_t n)
{
    if (n > (size_t)INT_MAX / 4 * 3)
        return -1;
    size_t need = 4 * ((n + 2) / 3);
    if (dl_buf_reserve(out, need) != 0)
        return -1;
    int written = EVP_EncodeBlock((unsigned char *)out->data + out->len, data, (int)n);
    out->len += (size_t)written;
    out->data[out->len] = '\0';
    return 0;
}

static int is_alphabet(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/';
}

/* EVP_DecodeBlock skips leading and trailing white space and does not tell
 * how much padding it met, so the text is checked here first: groups of four
 * characters, padding only at the very end. */
static int padding_of(const char *text, size_t len)
{
    if (len % 4 != 0)
        return -1;
    size_t pad = 0;
    while (pad < 2 && pad < len && text[len - 1 - pad] == '=')
        pad++;
    for (size_t i = 0; i < len - pad; i++)
        if (!is_alphabet((unsigned char)text[i]))
            return -1;
    return (int)pad;
}

int dl_base64_decode(dl_buf *out, const char *text, size_t len)
{
    int pad = padding_of(text, len);
    if (pad < 0)
        return -2;
    if (len == 0)
        return dl_buf_reserve(out, 0);
    if (len > (size_t)INT_MAX)
        return -1;
    if (dl_buf_reserve(out, len / 4 * 3) != 0)
        return -1;
    int n = EVP_DecodeBlock((unsigned char *)out->data + out->len, (const unsigned char *)text, (int)len);
    if (n < 0)
        return -2;
    out->len += (size_t)n - (size_t)pad;
    out->data[out->len] = '\0';
    return 0;
}
