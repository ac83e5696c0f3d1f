/* Fuzzes the ULID codec of src/ulid.c directly (no Lua): dl_ulid_decode on
 * the raw input, the error description, and encode/increment/generator on
 * ULIDs built from the input's bytes.
 *
 * Beyond "no crash, no sanitizer report", each input checks:
 *  - decode's verdict against a reference written here: LENGTH exactly when
 *    the input is not 26 bytes, CHAR with the position of the first byte
 *    outside Crockford's alphabet (either case), TOO_BIG exactly when the
 *    first character is 8..Z, OK otherwise;
 *  - on OK: encode(decode(s)) is s upper-cased, byte for byte; time_ms is
 *    the value of the first 10 characters; to_bytes then from_parts gives
 *    the same ULID back;
 *  - the error description is a NUL-terminated string within any buffer
 *    size, even 1 byte;
 *  - from the input's first 16 bytes taken as a binary ULID (time masked
 *    to 48 bits): decode(encode(u)) == u, and text order equals numeric
 *    order for two such ULIDs;
 *  - increment gives a greater ULID of the same millisecond, or OVERFLOW
 *    only when the random part is all ones; a generator seeded with u never
 *    goes backwards.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "ulid.h"

static const char ALPHABET[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/* Crockford digit value of c, or -1. */
static int digit(unsigned char c)
{
    if (c == 0)
        return -1;
    const char *p = strchr(ALPHABET, toupper(c));
    return p ? (int)(p - ALPHABET) : -1;
}

static int same_ulid(const dl_ulid *a, const dl_ulid *b)
{
    return a->time_ms == b->time_ms && a->rand_hi == b->rand_hi && a->rand_lo == b->rand_lo;
}

static int compare_ulid(const dl_ulid *a, const dl_ulid *b)
{
    if (a->time_ms != b->time_ms)
        return a->time_ms < b->time_ms ? -1 : 1;
    if (a->rand_hi != b->rand_hi)
        return a->rand_hi < b->rand_hi ? -1 : 1;
    if (a->rand_lo != b->rand_lo)
        return a->rand_lo < b->rand_lo ? -1 : 1;
    return 0;
}

static int sign(int v)
{
    return (v > 0) - (v < 0);
}

/* The reference verdict for decoding s. */
static dl_ulid_status expected_status(const uint8_t *s, size_t len, size_t *bad)
{
    if (len != DL_ULID_LEN)
        return DL_ULID_ERR_LENGTH;
    for (size_t i = 0; i < len; i++) {
        if (digit(s[i]) < 0) {
            *bad = i;
            return DL_ULID_ERR_CHAR;
        }
    }
    return digit(s[0]) > 7 ? DL_ULID_ERR_TOO_BIG : DL_ULID_OK;
}

static void check_describe(dl_ulid_status st, const uint8_t *data, size_t size, size_t bad)
{
    static const size_t sizes[] = { 1, 2, 7, 40, 128 };
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        char *buf = malloc(sizes[k]); /* exact size, so ASan sees an overflow */
        if (!buf)
            abort();
        memset(buf, 'x', sizes[k]);
        dl_ulid_describe_decode_error(st, (const char *)data, size, bad, buf, sizes[k]);
        CHECK(memchr(buf, '\0', sizes[k]) != NULL, "description not terminated (size %zu)", sizes[k]);
        free(buf);
    }
}

static void check_decode(const uint8_t *data, size_t size)
{
    dl_ulid u;
    size_t bad = (size_t)-1, want_bad = (size_t)-1;
    dl_ulid_status st = dl_ulid_decode((const char *)data, size, &u, &bad);
    dl_ulid_status want = expected_status(data, size, &want_bad);
    CHECK(st == want, "decode status %d, reference %d", (int)st, (int)want);
    if (st == DL_ULID_ERR_CHAR)
        CHECK(bad == want_bad, "bad_pos %zu, reference %zu", bad, want_bad);
    if (st != DL_ULID_OK) {
        check_describe(st, data, size, bad);
        return;
    }
    char text[DL_ULID_LEN];
    dl_ulid_encode(&u, text);
    for (size_t i = 0; i < DL_ULID_LEN; i++)
        CHECK(text[i] == toupper(data[i]), "encode(decode(s)) differs at %zu", i);
    uint64_t time_ms = 0;
    for (size_t i = 0; i < 10; i++)
        time_ms = time_ms * 32 + (uint64_t)digit(data[i]);
    CHECK(u.time_ms == time_ms && time_ms <= DL_ULID_TIME_MAX, "time_ms %llu, reference %llu",
          (unsigned long long)u.time_ms, (unsigned long long)time_ms);
    unsigned char bytes[DL_ULID_BYTES];
    dl_ulid_to_bytes(&u, bytes);
    dl_ulid back;
    CHECK(dl_ulid_from_parts(u.time_ms, bytes + 6, &back) == DL_ULID_OK, "from_parts refused");
    CHECK(same_ulid(&u, &back), "from_parts(to_bytes(u)) ~= u");
}

/* A ULID from 16 bytes: 48-bit time, then 80 random bits. */
static dl_ulid ulid_from(const uint8_t *p)
{
    uint64_t time_ms = 0;
    for (int i = 0; i < 6; i++)
        time_ms = (time_ms << 8) | p[i];
    dl_ulid u;
    if (dl_ulid_from_parts(time_ms, p + 6, &u) != DL_ULID_OK)
        abort(); /* 48 bits always fit */
    return u;
}

static void check_binary(const uint8_t *data, size_t size)
{
    if (size < DL_ULID_BYTES)
        return;
    dl_ulid u = ulid_from(data);
    char text[DL_ULID_LEN];
    dl_ulid_encode(&u, text);
    dl_ulid back;
    CHECK(dl_ulid_decode(text, sizeof text, &back, NULL) == DL_ULID_OK, "decode(encode(u)) failed");
    CHECK(same_ulid(&u, &back), "decode(encode(u)) ~= u");
    unsigned char bytes[DL_ULID_BYTES];
    dl_ulid_to_bytes(&u, bytes);
    CHECK(memcmp(bytes, data, DL_ULID_BYTES) == 0, "to_bytes(u) ~= the bytes it came from");

    /* increment */
    dl_ulid next = u;
    dl_ulid_status st = dl_ulid_increment(&next);
    int all_ones = u.rand_hi == UINT16_MAX && u.rand_lo == UINT64_MAX;
    CHECK((st == DL_ULID_ERR_OVERFLOW) == all_ones, "increment status %d", (int)st);
    if (st == DL_ULID_OK) {
        char next_text[DL_ULID_LEN];
        dl_ulid_encode(&next, next_text);
        CHECK(next.time_ms == u.time_ms, "increment changed the time");
        CHECK(memcmp(next_text, text, DL_ULID_LEN) > 0, "increment did not sort after");
    } else {
        CHECK(same_ulid(&next, &u), "a failed increment changed the ULID");
    }

    /* a generator seeded with u, asked for a time from the input */
    dl_ulid_gen g;
    dl_ulid_gen_init(&g);
    dl_ulid_gen_seed(&g, &u);
    uint64_t t = size >= 22 ? ulid_from(data + 6).time_ms : u.time_ms;
    unsigned char fresh[DL_ULID_RANDOM_BYTES] = { 0 };
    if (size >= 32)
        memcpy(fresh, data + 22, sizeof fresh);
    dl_ulid out;
    st = dl_ulid_gen_next(&g, t, fresh, &out);
    if (st == DL_ULID_OK)
        CHECK(compare_ulid(&out, &u) > 0, "generator went backwards");
    else
        CHECK(st == DL_ULID_ERR_OVERFLOW && t <= u.time_ms && all_ones, "generator status %d", (int)st);

    /* text order is numeric order */
    if (size >= 2 * DL_ULID_BYTES) {
        dl_ulid v = ulid_from(data + DL_ULID_BYTES);
        char vtext[DL_ULID_LEN];
        dl_ulid_encode(&v, vtext);
        CHECK(sign(memcmp(text, vtext, DL_ULID_LEN)) == compare_ulid(&u, &v), "text order ~= numeric order");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_decode(data, size);
    check_binary(data, size);
    return 0;
}
