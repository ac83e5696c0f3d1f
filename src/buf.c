#include "buf.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

void dl_buf_init(dl_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void dl_buf_free(dl_buf *b)
{
    free(b->data);
    dl_buf_init(b);
}

void dl_buf_free_secret(dl_buf *b)
{
    if (b->data)
        OPENSSL_cleanse(b->data, b->cap);
    dl_buf_free(b);
}

void dl_buf_reset(dl_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

int dl_buf_reserve(dl_buf *b, size_t extra)
{
    if (extra >= (size_t)-1 - b->len)
        return -1;
    size_t need = b->len + extra + 1; /* + NUL */
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (cap > (size_t)-1 / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int dl_buf_add(dl_buf *b, const void *p, size_t n)
{
    if (dl_buf_reserve(b, n) != 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int dl_buf_adds(dl_buf *b, const char *s)
{
    return dl_buf_add(b, s, strlen(s));
}

int dl_buf_addc(dl_buf *b, char c)
{
    return dl_buf_add(b, &c, 1);
}

int dl_buf_add_hex(dl_buf *b, const unsigned char *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    if (n > ((size_t)-1 - 1) / 2 || dl_buf_reserve(b, 2 * n) != 0)
        return -1;
    char *out = b->data + b->len;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    b->len += 2 * n;
    b->data[b->len] = '\0';
    return 0;
}
