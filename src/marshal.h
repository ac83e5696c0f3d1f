/* DynamoDB's rules for values, in plain C: which decimal strings an N may
 * hold, how many bytes a number counts toward the item size, and strict
 * UTF-8 (S values and attribute names must be valid UTF-8). The Lua walkers
 * (lua_json.c, lua_marshal.c) build on these. */
#ifndef DYNLOG_MARSHAL_H
#define DYNLOG_MARSHAL_H

#include <stddef.h>

/* DynamoDB refuses documents nested deeper than this (L and M levels). */
#define DL_AV_MAX_DEPTH 32

/* A parsed N: value = (digits) x 10^(exponent - digits + 1), where the
 * digits are the significant ones (leading and trailing zeros trimmed). */
typedef struct {
    int negative;
    int zero;
    long long digits;     /* number of significant digits */
    long long exponent;   /* power of ten of the first significant digit */
    long long last_place; /* power of ten of the last significant digit */
} dl_ddb_number;

typedef enum {
    DL_NUMBER_OK,
    DL_NUMBER_SYNTAX,
    DL_NUMBER_TOO_PRECISE,
    DL_NUMBER_TOO_LARGE,
    DL_NUMBER_TOO_SMALL,
} dl_number_status;

/* Parses and checks a DynamoDB number: [+-] digits [. digits] [e [+-] digits]
 * (a fraction alone, ".5", and a bare point, "5.", are accepted as Java's
 * BigDecimal does), at most 38 significant digits, magnitude zero or in
 * 1E-130 .. 9.99...E+125. Fills *out whenever the syntax is right. */
dl_number_status dl_ddb_number_parse(const char *s, size_t len, dl_ddb_number *out);

/* One sentence for a status, for error messages. */
const char *dl_ddb_number_message(dl_number_status st);

/* Bytes the number counts toward the item size. */
size_t dl_ddb_number_size(const dl_ddb_number *n);

/* 1 when s is valid UTF-8 (RFC 3629: no overlong forms, no surrogates,
 * nothing above U+10FFFF), else 0. */
int dl_utf8_valid(const char *s, size_t len);

/* Length of the valid UTF-8 sequence that starts at p with a byte >= 0x80
 * (left bytes remain), or 0 when it is not valid. */
size_t dl_utf8_sequence(const unsigned char *p, size_t left);

#endif
