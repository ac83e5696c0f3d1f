/* A growable byte buffer: the one way the C core builds strings.
 *
 * Functions return 0 on success and -1 when memory runs out; after a failure
 * the buffer stays valid (its old contents intact) and can still be freed.
 * The data is always NUL-terminated so it can be handed to C APIs, but lengths
 * are explicit everywhere because payloads may hold NUL bytes. */
#ifndef DYNLOG_BUF_H
#define DYNLOG_BUF_H

#include <stddef.h>

typedef struct dl_buf {
    char *data;
    size_t len;
    size_t cap;
} dl_buf;

#define DL_BUF_INIT { NULL, 0, 0 }

void dl_buf_init(dl_buf *b);
void dl_buf_free(dl_buf *b);
/* Frees and wipes the bytes first: for buffers that held secrets. */
void dl_buf_free_secret(dl_buf *b);
void dl_buf_reset(dl_buf *b);
int dl_buf_reserve(dl_buf *b, size_t extra);
int dl_buf_add(dl_buf *b, const void *p, size_t n);
int dl_buf_adds(dl_buf *b, const char *s);
int dl_buf_addc(dl_buf *b, char c);
/* Appends the lower-case hex form of n bytes. */
int dl_buf_add_hex(dl_buf *b, const unsigned char *p, size_t n);

#endif
