/* AWS Signature Version 4, header flavour. See sigv4.h for the contract.
 *
 * The steps follow the AWS documentation and aws-c-auth's pipeline:
 *   validate -> X-Amz-Date -> payload hash -> canonical request
 *   -> string to sign -> signing key (cached) -> signature -> Authorization.
 * Validation happens first and in full, so that the building steps can only
 * fail for lack of memory (or a libcrypto failure). */
#include "sigv4.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

/* A header that takes part in the canonical request. `order` keeps repeated
 * headers in the order given, since qsort is not stable. */
struct dl_sigv4_header_ref {
    dl_sigv4_str name;
    dl_sigv4_str value;
    size_t order;
};

/* One query parameter, encoded into the signer's scratch buffer. Offsets are
 * recorded while encoding (the buffer may move) and turned into pointers
 * once it is complete. */
struct dl_sigv4_param {
    size_t key_off, key_len, value_off, value_len;
    const char *key, *value;
};

static void cache_clear(dl_sigv4_cached_key *e);

/* Character classes, one lookup per byte (ASCII only: locale must not matter). */
enum {
    C_TCHAR = 1,      /* RFC 7230 tchar: a header name or a method */
    C_SCOPE = 2,      /* [A-Za-z0-9._-]: region and service */
    C_VALUE = 4,      /* a header value byte needing no second look (not CR, LF or another control) */
    C_SPACE = 8,      /* header-value white space: SP, HTAB, CR, LF */
    C_UNRESERVED = 16,/* RFC 3986 unreserved: left as is by URI encoding */
    C_VISIBLE = 32    /* visible ASCII, 0x21-0x7e */
};

static const unsigned char char_class[256] = {
     0,  0,  0,  0,  0,  0,  0,  0,  0, 12,  8,  0,  0,  8,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
    12, 37, 36, 37, 37, 37, 37, 37, 36, 36, 37, 37, 36, 55, 55, 36,
    55, 55, 55, 55, 55, 55, 55, 55, 55, 55, 36, 36, 36, 36, 36, 36,
    36, 55, 55, 55, 55, 55, 55, 55, 55, 55, 55, 55, 55, 55, 55, 55,
    55, 55, 55, 55, 55, 55, 55, 55, 55, 55, 55, 36, 36, 36, 37, 55,
    37, 55, 55, 55, 55, 55, 55, 55, 55, 55, 55, 55, 55, 55, 55, 55,
    55, 55, 55, 55, 55, 55, 55, 55, 55, 55, 55, 36, 37, 36, 53,  0,
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
};

/* "000102...ff": the two hex digits of each byte. */
static const char hex_pairs[] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f"
    "303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f"
    "909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeef"
    "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
static const char hex_upper[] = "0123456789ABCDEF";

/* ---- small character helpers (ASCII only: locale must not matter) ---- */

static char ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static char ascii_upper(char c)
{
    return (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
}

/* RFC 3986 unreserved characters: the only ones SigV4 leaves unencoded. */
static int is_unreserved(unsigned char c)
{
    return (char_class[c] & C_UNRESERVED) != 0;
}

static int is_hex_digit(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Header-value white space, including the line breaks of a folded value. */
static int is_value_space(unsigned char c)
{
    return (char_class[c] & C_SPACE) != 0;
}

static int str_ieq(dl_sigv4_str s, const char *lower_literal)
{
    size_t n = strlen(lower_literal);
    if (s.len != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (ascii_lower(s.ptr[i]) != lower_literal[i])
            return 0;
    return 1;
}

static int all_tchars(dl_sigv4_str s)
{
    for (size_t i = 0; i < s.len; i++)
        if (!(char_class[(unsigned char)s.ptr[i]] & C_TCHAR))
            return 0;
    return s.len > 0;
}

/* Region and service go into the credential scope, where '/' separates the
 * parts: keep them to the characters AWS uses. */
static int is_scope_name(dl_sigv4_str s)
{
    for (size_t i = 0; i < s.len; i++)
        if (!(char_class[(unsigned char)s.ptr[i]] & C_SCOPE))
            return 0;
    return s.len > 0;
}

/* Session tokens are base64-like and sent as a header value as they are. */
static int is_visible_ascii(dl_sigv4_str s)
{
    for (size_t i = 0; i < s.len; i++)
        if (!(char_class[(unsigned char)s.ptr[i]] & C_VISIBLE))
            return 0;
    return 1;
}

/* A header value may hold line breaks only as obsolete folding (CRLF or LF
 * followed by a space or tab): anything else would let a value smuggle a new
 * header line onto the wire that was never signed. Other controls are refused. */
static int is_valid_header_value(dl_sigv4_str v)
{
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.ptr[i];
        if (char_class[c] & C_VALUE)
            continue;
        if (c == '\r') {
            if (i + 1 >= v.len || v.ptr[i + 1] != '\n')
                return 0;
        } else if (c == '\n') {
            if (i + 1 >= v.len || (v.ptr[i + 1] != ' ' && v.ptr[i + 1] != '\t'))
                return 0;
        } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
            return 0;
        }
    }
    return 1;
}

static const char *nonnull(const char *p)
{
    return p ? p : "";
}

/* ---- appending to a dl_buf without a call when it has room ---- */

static int put(dl_buf *b, const void *p, size_t n)
{
    if (b->cap - b->len <= n)
        return dl_buf_add(b, p, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

static int putc1(dl_buf *b, char c)
{
    return put(b, &c, 1);
}

static int puts0(dl_buf *b, const char *s)
{
    return put(b, s, strlen(s));
}

/* ---- growable scratch arrays ---- */

static int ensure_capacity(void **items, size_t *cap, size_t need, size_t item_size)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 16;
    while (n < need) {
        if (n > ((size_t)-1 / item_size) / 2)
            return -1;
        n *= 2;
    }
    void *p = realloc(*items, n * item_size);
    if (!p)
        return -1;
    *items = p;
    *cap = n;
    return 0;
}

/* ---- public small pieces ---- */

void dl_sigv4_request_init(dl_sigv4_request *req)
{
    memset(req, 0, sizeof *req);
    req->normalize_path = 1;
    req->sign_session_token = 1;
}

void dl_sigv4_result_init(dl_sigv4_result *res)
{
    memset(res, 0, sizeof *res);
    dl_buf_init(&res->authorization);
    dl_buf_init(&res->signed_headers);
    dl_buf_init(&res->canonical_request);
    dl_buf_init(&res->string_to_sign);
}

void dl_sigv4_result_free(dl_sigv4_result *res)
{
    dl_buf_free(&res->authorization);
    dl_buf_free(&res->signed_headers);
    /* Holds the session token when it was signed. */
    dl_buf_free_secret(&res->canonical_request);
    dl_buf_free(&res->string_to_sign);
}

void dl_sigv4_signer_init(dl_sigv4_signer *s)
{
    memset(s, 0, sizeof *s);
    for (size_t i = 0; i < DL_SIGV4_KEY_CACHE_SIZE; i++)
        dl_hmac_key_init(&s->cache[i].key);
    s->headers = NULL;
    s->params = NULL;
    dl_buf_init(&s->query_scratch);
    dl_hasher_init(&s->hasher);
}

void dl_sigv4_signer_free(dl_sigv4_signer *s)
{
    for (size_t i = 0; i < DL_SIGV4_KEY_CACHE_SIZE; i++)
        cache_clear(&s->cache[i]);
    free(s->headers);
    free(s->params);
    dl_buf_free(&s->query_scratch);
    dl_hasher_free(&s->hasher);
    dl_sigv4_signer_init(s);
}

size_t dl_sigv4_signer_cached_keys(const dl_sigv4_signer *s)
{
    size_t n = 0;
    for (size_t i = 0; i < DL_SIGV4_KEY_CACHE_SIZE; i++)
        n += s->cache[i].in_use ? 1 : 0;
    return n;
}

const char *dl_sigv4_status_text(dl_sigv4_status st)
{
    switch (st) {
    case DL_SIGV4_OK: return "ok";
    case DL_SIGV4_EINVAL: return "invalid request";
    case DL_SIGV4_ENOMEM: return "out of memory while signing";
    case DL_SIGV4_ECRYPTO: return "libcrypto failed while signing";
    }
    return "unknown signing status";
}

int dl_sigv4_is_managed_header(const dl_sigv4_request *req, dl_sigv4_str name)
{
    return str_ieq(name, "authorization") || str_ieq(name, "x-amz-date")
        || (req->credentials.session_token.len > 0 && str_ieq(name, "x-amz-security-token"))
        || (req->add_content_sha256 && str_ieq(name, "x-amz-content-sha256"));
}

/* ---- X-Amz-Date ---- */

/* Days since 1970-01-01 to a civil date (H. Hinnant's algorithm). Done by
 * hand rather than with gmtime_r: no time_t width or libc lock involved. */
static void civil_from_days(int64_t days, unsigned *year, unsigned *month, unsigned *day)
{
    int64_t z = days + 719468; /* days >= 0 here, so z > 0 */
    int64_t era = z / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *day = doy - (153 * mp + 2) / 5 + 1;
    *month = mp < 10 ? mp + 3 : mp - 9;
    *year = (unsigned)(yoe + era * 400) + (*month <= 2 ? 1u : 0u);
}

static char *put_digits(char *out, unsigned value, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        out[i] = (char)('0' + value % 10);
        value /= 10;
    }
    return out + width;
}

int dl_sigv4_format_amz_date(int64_t t, char out[DL_SIGV4_AMZ_DATE_LEN + 1])
{
    if (t < 0 || t >= DL_SIGV4_TIME_MAX)
        return -1;
    unsigned year, month, day;
    civil_from_days(t / 86400, &year, &month, &day);
    unsigned secs = (unsigned)(t % 86400);
    char *p = out;
    p = put_digits(p, year, 4);
    p = put_digits(p, month, 2);
    p = put_digits(p, day, 2);
    *p++ = 'T';
    p = put_digits(p, secs / 3600, 2);
    p = put_digits(p, secs / 60 % 60, 2);
    p = put_digits(p, secs % 60, 2);
    *p++ = 'Z';
    *p = '\0';
    return 0;
}

/* ---- step 0: validation ---- */

static dl_sigv4_status invalid(dl_sigv4_result *res, const char *what)
{
    res->error = what;
    return DL_SIGV4_EINVAL;
}

static dl_sigv4_status invalid_header(dl_sigv4_result *res, const dl_sigv4_header *h, const char *what)
{
    res->error_header = h;
    return invalid(res, what);
}

/* A view with a length must have a pointer. */
static int str_ok(dl_sigv4_str s)
{
    return s.len == 0 || s.ptr != NULL;
}

static dl_sigv4_status validate_headers(const dl_sigv4_request *req, dl_sigv4_result *res)
{
    int has_host = 0;
    if (req->header_count > 0 && !req->headers)
        return invalid(res, "headers: NULL with a non-zero header_count");
    for (size_t i = 0; i < req->header_count; i++) {
        const dl_sigv4_header *h = &req->headers[i];
        if (!str_ok(h->name) || !str_ok(h->value))
            return invalid_header(res, h, "header: a length but no pointer");
        if (!all_tchars(h->name))
            return invalid_header(res, h, "header name: empty or not an RFC 7230 token");
        if (!is_valid_header_value(h->value))
            return invalid_header(res, h, "header value: control characters, or a line break that is not folding");
        has_host |= str_ieq(h->name, "host");
    }
    return has_host ? DL_SIGV4_OK : invalid(res, "headers: Host is missing");
}

static dl_sigv4_status validate_request(const dl_sigv4_request *req, dl_sigv4_result *res)
{
    const dl_sigv4_credentials *c = &req->credentials;
    if (!str_ok(req->method) || !str_ok(req->path) || !str_ok(req->query) || !str_ok(req->payload)
        || !str_ok(req->region) || !str_ok(req->service) || !str_ok(c->access_key_id)
        || !str_ok(c->secret_access_key) || !str_ok(c->session_token))
        return invalid(res, "request: a string field has a length but no pointer");
    if (!all_tchars(req->method))
        return invalid(res, "method: empty or not an HTTP token");
    if (!is_scope_name(req->region))
        return invalid(res, "region: empty or not made of [A-Za-z0-9._-]");
    if (!is_scope_name(req->service))
        return invalid(res, "service: empty or not made of [A-Za-z0-9._-]");
    if (!all_tchars(c->access_key_id))
        return invalid(res, "credentials.access_key_id: empty or not an HTTP token");
    if (c->secret_access_key.len == 0)
        return invalid(res, "credentials.secret_access_key: empty");
    if (!is_visible_ascii(c->session_token))
        return invalid(res, "credentials.session_token: characters outside visible ASCII");
    if (req->time < 0 || req->time >= DL_SIGV4_TIME_MAX)
        return invalid(res, "time: outside 1970-01-01 .. 9999-12-31");
    return validate_headers(req, res);
}

/* ---- step 1: payload hash ---- */

static void to_hex(const unsigned char *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        memcpy(out + 2 * i, hex_pairs + 2 * p[i], 2);
    out[2 * n] = '\0';
}

static dl_sigv4_status hash_payload(dl_hasher *h, const dl_sigv4_request *req, dl_sigv4_result *res)
{
    unsigned char md[DL_SHA256_LEN];
    if (dl_hasher_sha256(h, nonnull(req->payload.ptr), req->payload.len, md) != 0)
        return DL_SIGV4_ECRYPTO;
    to_hex(md, sizeof md, res->payload_hash);
    return DL_SIGV4_OK;
}

/* ---- step 2: canonical request ---- */

/* Appends p[0..n) with every byte outside the unreserved set (and '/' when
 * keep_slash) as %XX. When keep_percent_escapes, an existing "%XX" is kept
 * (with upper-case digits) instead of being encoded again: query strings
 * arrive already encoded, or partly so. */
static int add_uri_encoded(dl_buf *out, const char *p, size_t n, int keep_slash,
                           int keep_percent_escapes)
{
    if (n > ((size_t)-1 - out->len - 1) / 3 || dl_buf_reserve(out, 3 * n) != 0)
        return -1;
    char *w = out->data + out->len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (is_unreserved(c) || (keep_slash && c == '/')) {
            *w++ = (char)c;
        } else if (keep_percent_escapes && c == '%' && i + 2 < n
                   && is_hex_digit((unsigned char)p[i + 1]) && is_hex_digit((unsigned char)p[i + 2])) {
            *w++ = '%';
            *w++ = ascii_upper(p[i + 1]);
            *w++ = ascii_upper(p[i + 2]);
            i += 2;
        } else {
            *w++ = '%';
            *w++ = hex_upper[c >> 4];
            *w++ = hex_upper[c & 15];
        }
    }
    out->len = (size_t)(w - out->data);
    out->data[out->len] = '\0';
    return 0;
}

/* Drops the last "segment/" from a path being built at out[root..]. The
 * output always ends with '/', and encoded segments hold no raw '/'. */
static void pop_segment(dl_buf *out, size_t root)
{
    if (out->len <= root + 1)
        return; /* ".." above the root stays at the root */
    size_t i = out->len - 1;
    while (i > root && out->data[i - 1] != '/')
        i--;
    out->len = i;
    out->data[out->len] = '\0';
}

/* RFC 3986 dot-segment removal plus collapsing of empty segments ("//").
 * Segments are written as "seg/"; whether the final '/' stays depends on
 * whether the path ended in a slash, "." or "..". */
static int add_normalized_path(dl_buf *out, const char *p, size_t n)
{
    size_t root = out->len;
    int trailing_slash = 1;
    if (putc1(out, '/') != 0)
        return -1;
    size_t start = 0;
    while (start < n) {
        const char *slash = memchr(p + start, '/', n - start);
        size_t end = slash ? (size_t)(slash - p) : n;
        size_t len = end - start;
        const char *seg = p + start;
        if (len == 0 || (len == 1 && seg[0] == '.')) {
            trailing_slash = 1;
        } else if (len == 2 && seg[0] == '.' && seg[1] == '.') {
            pop_segment(out, root);
            trailing_slash = 1;
        } else {
            if (add_uri_encoded(out, seg, len, 0, 0) != 0 || putc1(out, '/') != 0)
                return -1;
            trailing_slash = 0;
        }
        if (!slash)
            break;
        start = end + 1;
        if (start == n)
            trailing_slash = 1; /* the path ends with '/' */
    }
    if (!trailing_slash && out->len > root + 1) {
        out->len--;
        out->data[out->len] = '\0';
    }
    return 0;
}

int dl_sigv4_add_canonical_path(dl_buf *out, dl_sigv4_str path, int normalize)
{
    const char *p = nonnull(path.ptr);
    if (normalize)
        return add_normalized_path(out, p, path.len);
    if ((path.len == 0 || p[0] != '/') && putc1(out, '/') != 0)
        return -1;
    return add_uri_encoded(out, p, path.len, 1, 0);
}

static int compare_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0)
        return c;
    return (alen > blen) - (alen < blen);
}

/* Byte order of the encoded key, then of the encoded value (for repeated keys). */
static int compare_params(const void *a, const void *b)
{
    const struct dl_sigv4_param *x = a, *y = b;
    int c = compare_bytes(x->key, x->key_len, y->key, y->key_len);
    return c != 0 ? c : compare_bytes(x->value, x->value_len, y->value, y->value_len);
}

static size_t count_query_parts(dl_sigv4_str q)
{
    size_t n = 1;
    for (size_t i = 0; i < q.len; i++)
        n += q.ptr[i] == '&';
    return n;
}

/* Splits the query at '&' and '=', encodes each key and value into the
 * scratch buffer, and returns how many parameters there are (or -1). */
static int encode_query_params(dl_sigv4_signer *s, dl_sigv4_str q, size_t *count)
{
    dl_buf *scratch = &s->query_scratch;
    size_t n = 0, start = 0;
    dl_buf_reset(scratch);
    if (ensure_capacity((void **)&s->params, &s->params_cap, count_query_parts(q), sizeof *s->params) != 0)
        return -1;
    while (start <= q.len) {
        const char *amp = memchr(q.ptr + start, '&', q.len - start);
        size_t end = amp ? (size_t)(amp - q.ptr) : q.len;
        const char *part = q.ptr + start;
        size_t len = end - start;
        if (len > 0) { /* "a&&b" has an empty part: skip it */
            const char *eq = memchr(part, '=', len);
            size_t key_len = eq ? (size_t)(eq - part) : len;
            struct dl_sigv4_param *prm = &s->params[n++];
            prm->key_off = scratch->len;
            if (add_uri_encoded(scratch, part, key_len, 0, 1) != 0)
                return -1;
            prm->key_len = scratch->len - prm->key_off;
            prm->value_off = scratch->len;
            if (eq && add_uri_encoded(scratch, eq + 1, len - key_len - 1, 0, 1) != 0)
                return -1;
            prm->value_len = scratch->len - prm->value_off;
        }
        if (!amp)
            break;
        start = end + 1;
    }
    const char *base = nonnull(scratch->data);
    for (size_t i = 0; i < n; i++) {
        s->params[i].key = base + s->params[i].key_off;
        s->params[i].value = base + s->params[i].value_off;
    }
    *count = n;
    return 0;
}

static int add_canonical_query(dl_sigv4_signer *s, dl_buf *out, dl_sigv4_str q)
{
    size_t n = 0;
    if (q.len == 0)
        return 0;
    if (encode_query_params(s, q, &n) != 0)
        return -1;
    if (n > 1)
        qsort(s->params, n, sizeof *s->params, compare_params);
    for (size_t i = 0; i < n; i++) {
        const struct dl_sigv4_param *prm = &s->params[i];
        if ((i > 0 && putc1(out, '&') != 0) || put(out, prm->key, prm->key_len) != 0
            || putc1(out, '=') != 0 || put(out, prm->value, prm->value_len) != 0)
            return -1;
    }
    return 0;
}

static int compare_names(dl_sigv4_str a, dl_sigv4_str b)
{
    size_t n = a.len < b.len ? a.len : b.len;
    for (size_t i = 0; i < n; i++) {
        unsigned char x = (unsigned char)ascii_lower(a.ptr[i]);
        unsigned char y = (unsigned char)ascii_lower(b.ptr[i]);
        if (x != y)
            return x < y ? -1 : 1;
    }
    return (a.len > b.len) - (a.len < b.len);
}

static int compare_header_refs(const void *a, const void *b)
{
    const struct dl_sigv4_header_ref *x = a, *y = b;
    int c = compare_names(x->name, y->name);
    if (c != 0)
        return c;
    return (x->order > y->order) - (x->order < y->order);
}

static dl_sigv4_str lit(const char *s)
{
    dl_sigv4_str r = { s, strlen(s) };
    return r;
}

/* The headers to sign: the caller's, minus those the signer sets, plus
 * X-Amz-Date and, as asked, the token and the content hash. Sorted. */
static int collect_headers(dl_sigv4_signer *s, const dl_sigv4_request *req,
                           const dl_sigv4_result *res, size_t *count)
{
    size_t n = 0;
    if (req->header_count > (size_t)-1 - 3
        || ensure_capacity((void **)&s->headers, &s->headers_cap, req->header_count + 3,
                           sizeof *s->headers) != 0)
        return -1;
    for (size_t i = 0; i < req->header_count; i++) {
        const dl_sigv4_header *h = &req->headers[i];
        if (dl_sigv4_is_managed_header(req, h->name))
            continue;
        s->headers[n].name = h->name;
        s->headers[n].value = h->value;
        s->headers[n].order = n;
        n++;
    }
    struct dl_sigv4_header_ref *added = &s->headers[n];
    added->name = lit("x-amz-date");
    added->value.ptr = res->amz_date;
    added->value.len = DL_SIGV4_AMZ_DATE_LEN;
    added->order = n++;
    if (req->credentials.session_token.len > 0 && req->sign_session_token) {
        added = &s->headers[n];
        added->name = lit("x-amz-security-token");
        added->value = req->credentials.session_token;
        added->order = n++;
    }
    if (req->add_content_sha256) {
        added = &s->headers[n];
        added->name = lit("x-amz-content-sha256");
        added->value.ptr = res->payload_hash;
        added->value.len = DL_SIGV4_HEX_LEN;
        added->order = n++;
    }
    /* Insertion sort: a request has a handful of headers, and the sort is
     * then stable by itself. */
    for (size_t i = 1; i < n; i++) {
        struct dl_sigv4_header_ref h = s->headers[i];
        size_t j = i;
        while (j > 0 && compare_header_refs(&s->headers[j - 1], &h) > 0) {
            s->headers[j] = s->headers[j - 1];
            j--;
        }
        s->headers[j] = h;
    }
    *count = n;
    return 0;
}

static int add_lower(dl_buf *out, dl_sigv4_str s)
{
    if (dl_buf_reserve(out, s.len) != 0)
        return -1;
    for (size_t i = 0; i < s.len; i++)
        out->data[out->len + i] = ascii_lower(s.ptr[i]);
    out->len += s.len;
    out->data[out->len] = '\0';
    return 0;
}

/* Trims the value, and turns every inner run of white space (folded line
 * breaks included) into one space. */
static int add_trimmed_value(dl_buf *out, dl_sigv4_str v)
{
    size_t plain = 0; /* most values have no white space at all */
    while (plain < v.len && !is_value_space((unsigned char)v.ptr[plain]))
        plain++;
    if (plain == v.len)
        return put(out, v.ptr, v.len);
    if (dl_buf_reserve(out, v.len) != 0)
        return -1;
    char *w = out->data + out->len;
    int pending_space = 0, started = 0;
    for (size_t i = 0; i < v.len; i++) {
        char c = v.ptr[i];
        if (is_value_space((unsigned char)c)) {
            pending_space = started;
            continue;
        }
        if (pending_space)
            *w++ = ' ';
        *w++ = c;
        pending_space = 0;
        started = 1;
    }
    out->len = (size_t)(w - out->data);
    out->data[out->len] = '\0';
    return 0;
}

/* "name:value\n" per distinct name (repeated values joined with ','), and
 * the matching "name;name" list into res->signed_headers. */
static int add_canonical_headers(dl_sigv4_signer *s, const dl_sigv4_request *req,
                                 dl_sigv4_result *res)
{
    dl_buf *out = &res->canonical_request;
    size_t n = 0;
    if (collect_headers(s, req, res, &n) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const struct dl_sigv4_header_ref *h = &s->headers[i];
        int repeated = i > 0 && compare_names(s->headers[i - 1].name, h->name) == 0;
        if (repeated) {
            if (putc1(out, ',') != 0)
                return -1;
        } else {
            if ((i > 0 && putc1(out, '\n') != 0) || add_lower(out, h->name) != 0)
                return -1;
            /* the name just lowered, again for the signed headers list */
            if ((i > 0 && putc1(&res->signed_headers, ';') != 0)
                || put(&res->signed_headers, out->data + out->len - h->name.len, h->name.len) != 0
                || putc1(out, ':') != 0)
                return -1;
        }
        if (add_trimmed_value(out, h->value) != 0)
            return -1;
    }
    return putc1(out, '\n'); /* n >= 1: x-amz-date is always there */
}

static dl_sigv4_status build_canonical_request(dl_sigv4_signer *s, const dl_sigv4_request *req,
                                               dl_sigv4_result *res)
{
    dl_buf *out = &res->canonical_request;
    dl_buf_reset(out);
    dl_buf_reset(&res->signed_headers);
    if (put(out, req->method.ptr, req->method.len) != 0 || putc1(out, '\n') != 0
        || dl_sigv4_add_canonical_path(out, req->path, req->normalize_path) != 0
        || putc1(out, '\n') != 0 || add_canonical_query(s, out, req->query) != 0
        || putc1(out, '\n') != 0 || add_canonical_headers(s, req, res) != 0
        || putc1(out, '\n') != 0
        || put(out, res->signed_headers.data, res->signed_headers.len) != 0
        || putc1(out, '\n') != 0 || put(out, res->payload_hash, DL_SIGV4_HEX_LEN) != 0)
        return DL_SIGV4_ENOMEM;
    return DL_SIGV4_OK;
}

/* ---- step 3: string to sign ---- */

/* "20150830/us-east-1/service/aws4_request" */
static int add_scope(dl_buf *out, const dl_sigv4_request *req, const dl_sigv4_result *res)
{
    return put(out, res->amz_date, DL_SIGV4_DATE_LEN) != 0 || putc1(out, '/') != 0
        || put(out, req->region.ptr, req->region.len) != 0 || putc1(out, '/') != 0
        || put(out, req->service.ptr, req->service.len) != 0
        || puts0(out, "/aws4_request") != 0 ? -1 : 0;
}

static dl_sigv4_status build_string_to_sign(dl_hasher *h, const dl_sigv4_request *req, dl_sigv4_result *res)
{
    unsigned char md[DL_SHA256_LEN];
    char hex[DL_SIGV4_HEX_LEN + 1];
    dl_buf *out = &res->string_to_sign;
    if (dl_hasher_sha256(h, res->canonical_request.data, res->canonical_request.len, md) != 0)
        return DL_SIGV4_ECRYPTO;
    to_hex(md, sizeof md, hex);
    dl_buf_reset(out);
    if (puts0(out, DL_SIGV4_ALGORITHM "\n") != 0
        || put(out, res->amz_date, DL_SIGV4_AMZ_DATE_LEN) != 0 || putc1(out, '\n') != 0
        || add_scope(out, req, res) != 0 || putc1(out, '\n') != 0
        || put(out, hex, DL_SIGV4_HEX_LEN) != 0)
        return DL_SIGV4_ENOMEM;
    return DL_SIGV4_OK;
}

/* ---- step 4: signing key, derived once per (secret, date, region, service) ---- */

static dl_sigv4_status derive_signing_key(dl_hasher *h, dl_sigv4_str secret, const char *date, dl_sigv4_str region,
                                          dl_sigv4_str service, unsigned char key[DL_SHA256_LEN])
{
    dl_sigv4_status st = DL_SIGV4_ENOMEM;
    unsigned char a[DL_SHA256_LEN], b[DL_SHA256_LEN];
    dl_buf k = DL_BUF_INIT;
    /* One exact allocation: a growing buffer would leave unwiped copies of
     * the secret behind in memory that realloc freed. */
    if (dl_buf_reserve(&k, 4 + secret.len) != 0 || puts0(&k, "AWS4") != 0
        || put(&k, secret.ptr, secret.len) != 0)
        goto done;
    st = DL_SIGV4_ECRYPTO;
    if (dl_hasher_hmac(h, k.data, k.len, date, DL_SIGV4_DATE_LEN, a) != 0
        || dl_hasher_hmac(h, a, sizeof a, region.ptr, region.len, b) != 0
        || dl_hasher_hmac(h, b, sizeof b, service.ptr, service.len, a) != 0
        || dl_hasher_hmac(h, a, sizeof a, "aws4_request", 12, key) != 0)
        goto done;
    st = DL_SIGV4_OK;
done:
    dl_buf_free_secret(&k);
    OPENSSL_cleanse(a, sizeof a);
    OPENSSL_cleanse(b, sizeof b);
    return st;
}

static int is_cacheable(dl_sigv4_str secret, dl_sigv4_str region, dl_sigv4_str service)
{
    return secret.len <= DL_SIGV4_CACHE_SECRET_MAX && region.len <= DL_SIGV4_CACHE_NAME_MAX
        && service.len <= DL_SIGV4_CACHE_NAME_MAX;
}

static int cache_entry_matches(const dl_sigv4_cached_key *e, dl_sigv4_str secret, const char *date,
                               dl_sigv4_str region, dl_sigv4_str service)
{
    return e->in_use && e->secret_len == secret.len && e->region_len == region.len
        && e->service_len == service.len && memcmp(e->date, date, DL_SIGV4_DATE_LEN) == 0
        && memcmp(e->region, region.ptr, region.len) == 0
        && memcmp(e->service, service.ptr, service.len) == 0
        /* constant time: how much of a secret matched must not show */
        && CRYPTO_memcmp(e->secret, secret.ptr, secret.len) == 0;
}

/* Wipes an entry and frees its key states. */
static void cache_clear(dl_sigv4_cached_key *e)
{
    dl_hmac_key_free(&e->key);
    OPENSSL_cleanse(e, sizeof *e);
    dl_hmac_key_init(&e->key);
}

/* An empty slot, or else the least recently used one, wiped. */
static dl_sigv4_cached_key *cache_victim(dl_sigv4_signer *s)
{
    dl_sigv4_cached_key *victim = &s->cache[0];
    for (size_t i = 0; i < DL_SIGV4_KEY_CACHE_SIZE; i++) {
        dl_sigv4_cached_key *e = &s->cache[i];
        if (!e->in_use) {
            victim = e;
            break;
        }
        if (e->last_used < victim->last_used)
            victim = e;
    }
    cache_clear(victim);
    return victim;
}

/* Stores the entry once its key states are made; returns it, or NULL. */
static dl_sigv4_cached_key *cache_store(dl_sigv4_signer *s, dl_sigv4_str secret, const char *date,
                                        dl_sigv4_str region, dl_sigv4_str service, const unsigned char *key)
{
    dl_sigv4_cached_key *e = cache_victim(s);
    if (dl_hasher_hmac_key(&s->hasher, &e->key, key, DL_SHA256_LEN) != 0)
        return NULL;
    e->in_use = 1;
    e->last_used = ++s->tick;
    e->secret_len = secret.len;
    e->region_len = region.len;
    e->service_len = service.len;
    memcpy(e->secret, secret.ptr, secret.len);
    memcpy(e->region, region.ptr, region.len);
    memcpy(e->service, service.ptr, service.len);
    memcpy(e->date, date, DL_SIGV4_DATE_LEN);
    return e;
}

/* The signing key as HMAC states: a cache entry's, or else made into *tmp
 * (which the caller frees). NULL when libcrypto failed. */
static const dl_hmac_key *get_signing_key(dl_sigv4_signer *s, const dl_sigv4_request *req,
                                          dl_sigv4_result *res, dl_hmac_key *tmp)
{
    dl_sigv4_str secret = req->credentials.secret_access_key;
    const char *date = res->amz_date; /* its first 8 characters */
    unsigned char key[DL_SHA256_LEN];
    const dl_hmac_key *out = NULL;
    int cacheable = is_cacheable(secret, req->region, req->service);
    for (size_t i = 0; cacheable && i < DL_SIGV4_KEY_CACHE_SIZE; i++) {
        dl_sigv4_cached_key *e = &s->cache[i];
        if (cache_entry_matches(e, secret, date, req->region, req->service)) {
            e->last_used = ++s->tick;
            s->key_cache_hits++;
            res->key_was_cached = 1;
            return &e->key;
        }
    }
    if (derive_signing_key(&s->hasher, secret, date, req->region, req->service, key) != DL_SIGV4_OK)
        goto done;
    s->key_derivations++;
    if (cacheable) {
        dl_sigv4_cached_key *e = cache_store(s, secret, date, req->region, req->service, key);
        out = e ? &e->key : NULL;
    } else if (dl_hasher_hmac_key(&s->hasher, tmp, key, sizeof key) == 0) {
        out = tmp;
    }
done:
    OPENSSL_cleanse(key, sizeof key);
    return out;
}

/* ---- step 5: signature and Authorization ---- */

static dl_sigv4_status compute_signature(dl_sigv4_signer *s, const dl_sigv4_request *req,
                                         dl_sigv4_result *res)
{
    unsigned char md[DL_SHA256_LEN];
    dl_hmac_key tmp;
    dl_hmac_key_init(&tmp);
    const dl_hmac_key *key = get_signing_key(s, req, res, &tmp);
    dl_sigv4_status st = DL_SIGV4_ECRYPTO;
    if (key && dl_hasher_hmac_keyed(&s->hasher, key, res->string_to_sign.data, res->string_to_sign.len, md) == 0) {
        to_hex(md, sizeof md, res->signature);
        st = DL_SIGV4_OK;
    }
    dl_hmac_key_free(&tmp);
    return st;
}

static dl_sigv4_status build_authorization(const dl_sigv4_request *req, dl_sigv4_result *res)
{
    dl_buf *out = &res->authorization;
    dl_buf_reset(out);
    if (puts0(out, DL_SIGV4_ALGORITHM " Credential=") != 0
        || put(out, req->credentials.access_key_id.ptr, req->credentials.access_key_id.len) != 0
        || putc1(out, '/') != 0 || add_scope(out, req, res) != 0
        || puts0(out, ", SignedHeaders=") != 0
        || put(out, res->signed_headers.data, res->signed_headers.len) != 0
        || puts0(out, ", Signature=") != 0
        || put(out, res->signature, DL_SIGV4_HEX_LEN) != 0)
        return DL_SIGV4_ENOMEM;
    return DL_SIGV4_OK;
}

/* ---- the pipeline ---- */

dl_sigv4_status dl_sigv4_sign(dl_sigv4_signer *s, const dl_sigv4_request *req, dl_sigv4_result *res)
{
    res->error = NULL;
    res->error_header = NULL;
    res->key_was_cached = 0;
    dl_sigv4_status st = validate_request(req, res);
    if (st != DL_SIGV4_OK)
        return st;
    if (dl_sigv4_format_amz_date(req->time, res->amz_date) != 0)
        return invalid(res, "time: outside 1970-01-01 .. 9999-12-31");
    if ((st = hash_payload(&s->hasher, req, res)) != DL_SIGV4_OK
        || (st = build_canonical_request(s, req, res)) != DL_SIGV4_OK
        || (st = build_string_to_sign(&s->hasher, req, res)) != DL_SIGV4_OK
        || (st = compute_signature(s, req, res)) != DL_SIGV4_OK
        || (st = build_authorization(req, res)) != DL_SIGV4_OK)
        return st;
    return DL_SIGV4_OK;
}
