/* Number text, in plain C: the shortest text that reads back as the same
 * double, JSON's number syntax, and DynamoDB number text (see marshal.h)
 * written as JSON and compared as DynamoDB compares it. The JSON and
 * AttributeValue walkers (lua_jsonutil.c, lua_json.c, lua_marshal.c) build
 * on these. */
#ifndef DYNLOG_NUMTEXT_H
#define DYNLOG_NUMTEXT_H

#include "marshal.h"

#include <stddef.h>

/* Longest text dl_format_double writes ("-1.2345678901234567e-308"). */
#define DL_NUMBER_TEXT_MAX 32
/* 2^53: above it a double no longer holds every integer. */
#define DL_EXACT_DOUBLE_LIMIT 9007199254740992LL

/* Writes v in decimal, NUL-terminated. Returns the length. */
int dl_format_integer(long long v, char out[DL_NUMBER_TEXT_MAX]);

/* Writes v with the fewest digits that read back bit-identical: integral
 * values below 1e15 as integers ("3"), -0.0 as "-0.0" (so that it does not
 * read back as the integer 0), short decimals in fixed notation ("0.1").
 * Returns the length, or -1 for NaN and the infinities. */
int dl_format_double(double v, char out[DL_NUMBER_TEXT_MAX]);

/* 1 when the number text has no fraction and no exponent. */
int dl_number_text_is_integer(const char *text, size_t len);

/* 1 when s is a JSON number (RFC 8259: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?). */
int dl_json_number_syntax(const char *s, size_t len);

/* Writes the DynamoDB number text s (which dl_ddb_number_parse accepted) as
 * JSON number text with the same digits: no "+" sign, no leading zeros, a
 * "0" before a bare fraction (".5"), no bare point ("5."). out has room
 * for len + 2 bytes; returns the length written (no NUL). */
size_t dl_number_json_text(const char *s, size_t len, char *out);

/* 1 when the two valid DynamoDB number texts are the same number (as
 * DynamoDB compares them: 1.50 and 1.5 are one), else 0. */
int dl_same_ddb_number(const char *a, size_t alen, const char *b, size_t blen);

#endif
