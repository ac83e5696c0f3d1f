/* ULIDs (github.com/ulid/spec): 48-bit millisecond time + 80 random bits,
 * written as 26 Crockford base32 characters, sortable as strings.
 *
 * Pure C, no Lua. Two ways to generate:
 *  - dl_ulid_next_default(): the process-wide generator, thread-safe and
 *    fork-safe, drawing randomness from OpenSSL's CSPRNG;
 *  - a dl_ulid_gen owned by the caller, for tests and callers that need their
 *    own sequence (it is not locked: one owner at a time). */
#ifndef DYNLOG_ULID_H
#define DYNLOG_ULID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DL_ULID_LEN 26          /* characters in the text form */
#define DL_ULID_BYTES 16        /* bytes in the binary form */
#define DL_ULID_RANDOM_BYTES 10 /* bytes of randomness */
#define DL_ULID_TIME_MAX UINT64_C(281474976710655) /* 2^48 - 1 */

/* The random part is split so that incrementing it is two integer ops. */
typedef struct dl_ulid {
    uint64_t time_ms;  /* 0 .. DL_ULID_TIME_MAX */
    uint16_t rand_hi;  /* top 16 of the 80 random bits */
    uint64_t rand_lo;  /* low 64 of the 80 random bits */
} dl_ulid;

typedef struct dl_ulid_gen {
    dl_ulid last;
    bool has_last;
    unsigned fork_epoch; /* in a forked child, `last` is forgotten (ulid.c) */
} dl_ulid_gen;

typedef enum dl_ulid_status {
    DL_ULID_OK = 0,
    DL_ULID_ERR_LENGTH,    /* decode: not 26 characters */
    DL_ULID_ERR_CHAR,      /* decode: a byte outside the alphabet */
    DL_ULID_ERR_TOO_BIG,   /* decode: more than 128 bits (first char 8-Z) */
    DL_ULID_ERR_OVERFLOW,  /* the 80-bit random part cannot be incremented */
    DL_ULID_ERR_TIME,      /* a time outside 0 .. 2^48-1 */
    DL_ULID_ERR_CLOCK,     /* the system clock is unreadable or out of range */
    DL_ULID_ERR_RANDOM,    /* the CSPRNG failed */
    DL_ULID_ERR_FORK_SETUP /* pthread_atfork failed: generating is unsafe */
} dl_ulid_status;

/* Writes exactly DL_ULID_LEN upper-case characters, no NUL. */
void dl_ulid_encode(const dl_ulid *u, char out[DL_ULID_LEN]);

/* Strict decoding of `len` bytes (NUL bytes are just invalid characters);
 * either case is accepted. On DL_ULID_ERR_CHAR, *bad_pos (if not NULL) gets
 * the 0-based offset of the first bad byte. */
dl_ulid_status dl_ulid_decode(const char *s, size_t len, dl_ulid *out, size_t *bad_pos);

/* Writes a human-readable reason for a failed dl_ulid_decode() of s/len,
 * counting positions from 1 as Lua does. */
void dl_ulid_describe_decode_error(dl_ulid_status st, const char *s, size_t len, size_t bad_pos,
                                   char *buf, size_t buf_size);

const char *dl_ulid_status_message(dl_ulid_status st);

void dl_ulid_to_bytes(const dl_ulid *u, unsigned char out[DL_ULID_BYTES]);
/* Fails with DL_ULID_ERR_TIME when time_ms > DL_ULID_TIME_MAX. */
dl_ulid_status dl_ulid_from_parts(uint64_t time_ms, const unsigned char random[DL_ULID_RANDOM_BYTES],
                                  dl_ulid *out);

/* Same time, random part + 1; DL_ULID_ERR_OVERFLOW (u unchanged) when the
 * random part is all ones, because carrying into the time would forge a ULID
 * of a later millisecond. */
dl_ulid_status dl_ulid_increment(dl_ulid *u);

/* Milliseconds since the Unix epoch from CLOCK_REALTIME. */
dl_ulid_status dl_ulid_now_ms(uint64_t *out);

/* Fills out from the process-wide buffered CSPRNG pool (locked). */
dl_ulid_status dl_ulid_random(unsigned char out[DL_ULID_RANDOM_BYTES]);

void dl_ulid_gen_init(dl_ulid_gen *g);
/* Makes g behave as if `last` was the last ULID it produced. */
void dl_ulid_gen_seed(dl_ulid_gen *g, const dl_ulid *last);

/* The next ULID for time_ms, strictly greater than the last one: a time not
 * after the last one keeps the last time and increments the random part; a
 * later time takes a fresh random part, from `fresh` (10 bytes) or, when
 * fresh is NULL, from the CSPRNG. On failure g is unchanged. In a forked
 * child the generator starts afresh, so that parent and child never
 * continue the same sequence. */
dl_ulid_status dl_ulid_gen_next(dl_ulid_gen *g, uint64_t time_ms,
                                const unsigned char *fresh, dl_ulid *out);

/* The next ULID of the process-wide generator, at the current time. */
dl_ulid_status dl_ulid_next_default(dl_ulid *out);

#endif
