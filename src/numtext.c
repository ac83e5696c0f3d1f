/* Number text, in plain C: see numtext.h. */
#include "numtext.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- writing numbers --------------------------------------------------- */

int dl_format_integer(long long v, char out[DL_NUMBER_TEXT_MAX])
{
    char reversed[24];
    int n = 0, len = 0;
    /* negate as unsigned: -LLONG_MIN does not fit a long long */
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        reversed[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        out[len++] = '-';
    while (n)
        out[len++] = reversed[--n];
    out[len] = '\0';
    return len;
}

/* Below 1e15 an integral double prints the same through %.15g as through
 * integer formatting, which is much cheaper. */
#define INTEGRAL_FAST_LIMIT 1e15

/* Powers of ten that doubles hold exactly (up to 10^22). */
static const double exact_powers_of_ten[] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
    1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19,
};

/* The usual float (a price, a ratio) is a short decimal. For k = 1, 2, ...
 * m = round(|v| * 10^k) is tried: m / 10^k is correctly rounded (both are
 * exact doubles), so it equals v exactly when the text "m with k decimals"
 * reads back as v, and the first k that works gives the fewest digits.
 * Limited to what %.15g writes in fixed notation (1e-4 <= |v| < 1e15, at
 * most 15 digits, where m stays exact), so the text is the one printf
 * would give. Returns the length, or -1 to leave it to printf. */
static int format_short_decimal(double v, char out[DL_NUMBER_TEXT_MAX])
{
    double a = fabs(v);
    if (!(a >= 1e-4 && a < 1e15))
        return -1;
    for (int k = 1; k < (int)(sizeof exact_powers_of_ten / sizeof exact_powers_of_ten[0]); k++) {
        double scaled = a * exact_powers_of_ten[k];
        if (scaled >= 1e15)
            return -1;
        double m = floor(scaled + 0.5);
        if (m / exact_powers_of_ten[k] != a)
            continue;
        char digits[DL_NUMBER_TEXT_MAX];
        int n = dl_format_integer((long long)m, digits), len = 0;
        if (v < 0)
            out[len++] = '-';
        if (n > k) {
            memcpy(out + len, digits, (size_t)(n - k));
            len += n - k;
        } else {
            out[len++] = '0';
        }
        out[len++] = '.';
        for (int zeros = k - n; zeros > 0; zeros--)
            out[len++] = '0';
        int frac = n > k ? k : n;
        memcpy(out + len, digits + n - frac, (size_t)frac);
        len += frac;
        out[len] = '\0';
        return len;
    }
    return -1;
}

int dl_format_double(double v, char out[DL_NUMBER_TEXT_MAX])
{
    if (v == 0 && signbit(v)) {
        memcpy(out, "-0.0", 5);
        return 4;
    }
    if (isnan(v) || isinf(v))
        return -1;
    if (v > -INTEGRAL_FAST_LIMIT && v < INTEGRAL_FAST_LIMIT && v == (double)(long long)v)
        return dl_format_integer((long long)v, out);
    int n = format_short_decimal(v, out);
    if (n >= 0)
        return n;
    /* %.17g always round-trips; shorter forms are tried first because they
     * are what people expect to read (0.1, not 0.10000000000000001). */
    for (int digits = 15; digits <= 17; digits++) {
        n = snprintf(out, DL_NUMBER_TEXT_MAX, "%.*g", digits, v);
        if (strtod(out, NULL) == v)
            break;
    }
    return n;
}

/* ---- reading number text ----------------------------------------------- */

int dl_number_text_is_integer(const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (text[i] == '.' || text[i] == 'e' || text[i] == 'E')
            return 0;
    return 1;
}

int dl_json_number_syntax(const char *s, size_t len)
{
    size_t i = 0;
    if (i < len && s[i] == '-')
        i++;
    if (i >= len || s[i] < '0' || s[i] > '9')
        return 0;
    if (s[i] == '0')
        i++;
    else
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
    if (i < len && s[i] == '.') {
        size_t start = ++i;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start)
            return 0;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t start = i;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start)
            return 0;
    }
    return i == len;
}

size_t dl_number_json_text(const char *s, size_t len, char *out)
{
    size_t i = 0, n = 0;
    if (i < len && (s[i] == '+' || s[i] == '-')) {
        if (s[i] == '-')
            out[n++] = '-';
        i++;
    }
    size_t int_start = i;
    while (i < len && s[i] >= '0' && s[i] <= '9')
        i++;
    size_t int_end = i;
    while (int_start + 1 < int_end && s[int_start] == '0')
        int_start++;
    if (int_start == int_end || (s[int_start] == '0' && int_end - int_start == 1)) {
        out[n++] = '0';
    } else {
        memcpy(out + n, s + int_start, int_end - int_start);
        n += int_end - int_start;
    }
    if (i < len && s[i] == '.') {
        size_t frac_start = ++i;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i > frac_start) {
            out[n++] = '.';
            memcpy(out + n, s + frac_start, i - frac_start);
            n += i - frac_start;
        }
    }
    memcpy(out + n, s + i, len - i); /* the exponent, as it is */
    return n + (len - i);
}

/* Copies the significant digits of a valid DynamoDB number (n from
 * dl_ddb_number_parse, at most 38 of them) into out. */
static void significant_digits(const char *s, size_t len, const dl_ddb_number *n, char *out)
{
    size_t i = 0;
    long long copied = 0;
    int started = 0;
    for (; i < len && copied < n->digits; i++) {
        char c = s[i];
        if (c == 'e' || c == 'E')
            break;
        if (c < '0' || c > '9')
            continue;
        if (!started && c == '0')
            continue;
        started = 1;
        out[copied++] = c;
    }
}

int dl_same_ddb_number(const char *a, size_t alen, const char *b, size_t blen)
{
    dl_ddb_number na, nb;
    if (dl_ddb_number_parse(a, alen, &na) != DL_NUMBER_OK ||
        dl_ddb_number_parse(b, blen, &nb) != DL_NUMBER_OK)
        return 0;
    if (na.zero || nb.zero)
        return na.zero && nb.zero;
    if (na.negative != nb.negative || na.digits != nb.digits || na.exponent != nb.exponent)
        return 0;
    char da[40], db[40];
    significant_digits(a, alen, &na, da);
    significant_digits(b, blen, &nb, db);
    return memcmp(da, db, (size_t)na.digits) == 0;
}
