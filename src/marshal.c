#include "marshal.h"

#include <stdint.h>
#include <string.h>

#define MAX_SIGNIFICANT_DIGITS 38
#define MAX_EXPONENT 125   /* 9.99...E+125 is the largest magnitude */
#define MIN_EXPONENT (-130) /* 1E-130 is the smallest non-zero magnitude */
/* Exponent digits stop accumulating here: anything this large is out of
 * range whatever the mantissa, and the sums below cannot overflow. */
#define EXPONENT_CAP 1000000000000000LL
#define MAX_NUMBER_SIZE 21

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static size_t skip_digits(const char *s, size_t i, size_t len)
{
    while (i < len && is_digit(s[i]))
        i++;
    return i;
}

/* The mantissa's digits, integer part then fraction, as one sequence. */
typedef struct {
    const char *int_part;
    size_t int_len;
    const char *frac_part;
    size_t frac_len;
} mantissa;

static char digit_at(const mantissa *m, size_t k)
{
    return k < m->int_len ? m->int_part[k] : m->frac_part[k - m->int_len];
}

/* Parses the optional exponent at s[*i]; returns 0 on a syntax error. */
static int parse_exponent(const char *s, size_t len, size_t *i, long long *exponent)
{
    *exponent = 0;
    if (*i >= len || (s[*i] != 'e' && s[*i] != 'E'))
        return 1;
    size_t j = *i + 1;
    int negative = 0;
    if (j < len && (s[j] == '+' || s[j] == '-'))
        negative = s[j++] == '-';
    size_t start = j;
    long long e = 0;
    for (; j < len && is_digit(s[j]); j++)
        if (e < EXPONENT_CAP)
            e = e * 10 + (s[j] - '0');
    if (j == start)
        return 0;
    *i = j;
    *exponent = negative ? -e : e;
    return 1;
}

dl_number_status dl_ddb_number_parse(const char *s, size_t len, dl_ddb_number *out)
{
    size_t i = 0;
    mantissa m = { s, 0, s, 0 };
    long long exponent;
    memset(out, 0, sizeof *out);
    if (i < len && (s[i] == '+' || s[i] == '-'))
        out->negative = s[i++] == '-';
    m.int_part = s + i;
    i = skip_digits(s, i, len);
    m.int_len = (size_t)(s + i - m.int_part);
    if (i < len && s[i] == '.') {
        m.frac_part = s + i + 1;
        i = skip_digits(s, i + 1, len);
        m.frac_len = (size_t)(s + i - m.frac_part);
    }
    if (m.int_len + m.frac_len == 0 || !parse_exponent(s, len, &i, &exponent) || i != len)
        return DL_NUMBER_SYNTAX;

    size_t total = m.int_len + m.frac_len, first = 0, last = total;
    while (first < total && digit_at(&m, first) == '0')
        first++;
    if (first == total) {
        out->zero = 1;
        return DL_NUMBER_OK;
    }
    while (digit_at(&m, last - 1) == '0')
        last--;
    /* The digit at position k stands for 10^(int_len - 1 - k + exponent). */
    out->digits = (long long)(last - first);
    out->exponent = (long long)m.int_len - 1 - (long long)first + exponent;
    out->last_place = (long long)m.int_len - (long long)last + exponent;
    if (out->digits > MAX_SIGNIFICANT_DIGITS)
        return DL_NUMBER_TOO_PRECISE;
    if (out->exponent > MAX_EXPONENT)
        return DL_NUMBER_TOO_LARGE;
    if (out->exponent < MIN_EXPONENT)
        return DL_NUMBER_TOO_SMALL;
    return DL_NUMBER_OK;
}

const char *dl_ddb_number_message(dl_number_status st)
{
    switch (st) {
    case DL_NUMBER_OK:
        return "valid";
    case DL_NUMBER_SYNTAX:
        return "not a decimal number";
    case DL_NUMBER_TOO_PRECISE:
        return "more than 38 significant digits";
    case DL_NUMBER_TOO_LARGE:
        return "magnitude above DynamoDB's largest, 9.9999999999999999999999999999999999999E+125";
    case DL_NUMBER_TOO_SMALL:
        return "magnitude below DynamoDB's smallest, 1E-130";
    }
    return "invalid number";
}

static long long floor_half(long long v)
{
    return v >= 0 ? v / 2 : -((1 - v) / 2);
}

/* The Developer Guide gives "1 byte per two significant digits, plus 1".
 * Measured sizes are more exact: digits are stored in pairs aligned on the
 * decimal point (1.5 takes the pairs "01" and "50"), plus one byte for the
 * exponent, plus one for a negative number's terminator, 21 at most; zero
 * takes 1. */
size_t dl_ddb_number_size(const dl_ddb_number *n)
{
    if (n->zero)
        return 1;
    long long pairs = floor_half(n->exponent) - floor_half(n->last_place) + 1;
    long long size = pairs + 1 + (n->negative ? 1 : 0);
    return size > MAX_NUMBER_SIZE ? MAX_NUMBER_SIZE : (size_t)size;
}

size_t dl_utf8_sequence(const unsigned char *p, size_t left)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xBF;
    size_t n;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (left < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    return n;
}

#define HIGH_BITS 0x8080808080808080ULL

int dl_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        /* Most text is ASCII: skip it eight bytes at a time. */
        uint64_t word;
        while (end - p >= 8) {
            memcpy(&word, p, sizeof word);
            if (word & HIGH_BITS)
                break;
            p += 8;
        }
        while (p < end && *p < 0x80)
            p++;
        if (p == end)
            break;
        size_t n = dl_utf8_sequence(p, (size_t)(end - p));
        if (n == 0)
            return 0;
        p += n;
    }
    return 1;
}
