/* Fuzzes SigV4 signing (src/sigv4.c directly, and src/lua_sigv4.c through
 * core.sigv4_signer():sign) with an arbitrary method, target, body and
 * headers.
 *
 * Input: 1 flag byte, 5 time bytes, then NUL-separated fields:
 *   method \0 target \0 body \0 name \0 value \0 name \0 value ...
 * target is "path?query#fragment"; a target that does not start with '/',
 * '?' or '#' is handed to the Lua signer as a whole URL instead.
 * flags: 1 normalize_path, 2 content_sha256, 4 session token,
 *        8 sign_session_token, 16 leave Host out, 32 region/service from
 *        the first header (to fuzz them too).
 *
 * Beyond "no crash, no sanitizer report", each input checks:
 *  - the C signer returns OK, or EINVAL with a message, and then a header
 *    it blames really is malformed (name not a token, or a control
 *    character / line break that is not folding in its value);
 *  - on OK, the canonical request is rebuilt from its parts and checked:
 *    method; the path equals a reference written here (dot segments
 *    removed and "//" collapsed when normalizing, then percent-encoded);
 *    query parameters encoded and sorted, one per non-empty '&' part; one "name:value" line per distinct header, names lower-case,
 *    sorted, unique, values trimmed with no control characters (no header
 *    can be smuggled in), host and x-amz-date signed, Authorization never;
 *    signed headers and the body's SHA-256;
 *  - X-Amz-Date equals gmtime's; the string to sign, the signature (HMAC
 *    chain recomputed with OpenSSL here) and the Authorization value are
 *    exactly what the SigV4 definition gives; signing again gives the same
 *    signature from the key cache;
 *  - the Lua signer never raises anything but a "sigv4: ..." error, and for
 *    the same request (distinct header names) it agrees with the C signer:
 *    it signs exactly when C does, with the same signature.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "fuzz_lua.h"
#include "fuzz_check.h"
#include "sigv4.h"

#define MAX_HEADERS 64
#define HOST "example.amazonaws.com"
#define AKID "AKIDEXAMPLE"
#define SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define TOKEN "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQW"

typedef struct {
    int flags;
    int64_t time;
    dl_sigv4_str method, target, body, region, service, path, query;
    dl_sigv4_header headers[MAX_HEADERS + 1];
    size_t header_count;
} fuzz_request;

static dl_sigv4_str str(const char *p, size_t n)
{
    dl_sigv4_str s = { p, n };
    return s;
}

static dl_sigv4_str lit(const char *s)
{
    return str(s, strlen(s));
}

/* Cuts the next NUL-terminated field (the rest when there is no NUL). */
static int next_field(const uint8_t **p, const uint8_t *end, dl_sigv4_str *out)
{
    if (*p > end)
        return 0;
    const uint8_t *nul = memchr(*p, 0, (size_t)(end - *p));
    const uint8_t *stop = nul ? nul : end;
    *out = str((const char *)*p, (size_t)(stop - *p));
    *p = stop + 1;
    return 1;
}

static char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static int same_ci(dl_sigv4_str a, dl_sigv4_str b)
{
    if (a.len != b.len)
        return 0;
    for (size_t i = 0; i < a.len; i++)
        if (lower(a.ptr[i]) != lower(b.ptr[i]))
            return 0;
    return 1;
}

static int is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int is_unreserved(unsigned char c)
{
    return is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

static int is_token(dl_sigv4_str s)
{
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (!is_alnum(c) && (c == 0 || !strchr("!#$%&'*+-.^_`|~", c)))
            return 0;
    }
    return s.len > 0;
}

/* Line breaks only as folding (CRLF or LF, then a space or tab). */
static int value_ok(dl_sigv4_str v)
{
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.ptr[i];
        unsigned char next = i + 1 < v.len ? (unsigned char)v.ptr[i + 1] : 0;
        if (c == '\r' && next != '\n')
            return 0;
        if (c == '\n' && next != ' ' && next != '\t')
            return 0;
        if ((c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c == 0x7f)
            return 0;
    }
    return 1;
}

static void parse_input(const uint8_t *data, size_t size, fuzz_request *r)
{
    memset(r, 0, sizeof *r);
    r->flags = size > 0 ? data[0] : 0;
    uint64_t t = 0;
    for (size_t i = 1; i < 6 && i < size; i++)
        t = (t << 8) | data[i];
    r->time = (int64_t)(t % (uint64_t)DL_SIGV4_TIME_MAX);
    const uint8_t *p = data + (size < 6 ? size : 6), *end = data + size;
    if (!next_field(&p, end, &r->method))
        r->method = lit("GET");
    next_field(&p, end, &r->target);
    next_field(&p, end, &r->body);
    dl_sigv4_str name, value;
    while (r->header_count < MAX_HEADERS && next_field(&p, end, &name)) {
        if (!next_field(&p, end, &value))
            value = lit("");
        r->headers[r->header_count].name = name;
        r->headers[r->header_count].value = value;
        r->header_count++;
    }
    r->region = lit("us-east-1");
    r->service = lit("dynamodb");
    if ((r->flags & 32) && r->header_count > 0) {
        r->region = r->headers[0].name;
        r->service = r->headers[0].value;
    }
    /* path?query#fragment, as the Lua binding splits a URL's path */
    const char *t0 = r->target.ptr ? r->target.ptr : "", *te = t0 + r->target.len, *q = t0;
    while (q < te && *q != '?' && *q != '#')
        q++;
    r->path = str(t0, (size_t)(q - t0));
    const char *f = q;
    if (q < te && *q == '?') {
        f = ++q;
        while (f < te && *f != '#')
            f++;
    }
    r->query = str(q, (size_t)(f - q));
}

static int has_host(const fuzz_request *r)
{
    for (size_t i = 0; i < r->header_count; i++)
        if (same_ci(r->headers[i].name, lit("host")))
            return 1;
    return 0;
}

static void fill(fuzz_request *r, dl_sigv4_request *req)
{
    dl_sigv4_request_init(req);
    size_t n = r->header_count;
    if (!(r->flags & 16) && !has_host(r)) {
        r->headers[n].name = lit("Host");
        r->headers[n].value = lit(HOST);
        n++;
    }
    req->method = r->method;
    req->path = r->path;
    req->query = r->query;
    req->headers = r->headers;
    req->header_count = n;
    req->payload = r->body;
    req->credentials.access_key_id = lit(AKID);
    req->credentials.secret_access_key = lit(SECRET);
    req->credentials.session_token = (r->flags & 4) ? lit(TOKEN) : lit("");
    req->region = r->region;
    req->service = r->service;
    req->time = r->time;
    req->normalize_path = r->flags & 1;
    req->add_content_sha256 = (r->flags & 2) != 0;
    req->sign_session_token = (r->flags & 8) != 0;
}

/* ---- checking a signed request ---- */

static void hex(const unsigned char *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", p[i]);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Checks the alphabet of an encoded query component: unreserved bytes and
 * %XX with upper-case digits. */
static void check_encoded(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '%') {
            CHECK(i + 2 < n && hex_value(p[i + 1]) >= 0 && hex_value(p[i + 2]) >= 0,
                  "bad escape in %.*s", (int)n, p);
            i += 2;
            continue;
        }
        CHECK(is_unreserved(c), "byte 0x%02x not encoded in %.*s", c, (int)n, p);
    }
}

/* The reference encoder: every byte but the unreserved ones (and '/' when
 * keep_slash) as %XX. */
static void encode(dl_buf *out, const char *p, size_t n, int keep_slash)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        char esc[4];
        if (is_unreserved(c) || (keep_slash && c == '/')) {
            dl_buf_addc(out, (char)c);
        } else {
            snprintf(esc, sizeof esc, "%%%02X", c);
            dl_buf_add(out, esc, 3);
        }
    }
}

/* The canonical path by the definition: RFC 3986 dot-segment removal with
 * empty segments dropped (AWS's normalization), each segment encoded; or,
 * not normalized, the whole path encoded with its slashes kept. */
static void reference_path(const dl_sigv4_request *req, dl_buf *out)
{
    dl_sigv4_str path = req->path;
    const char *p = path.ptr ? path.ptr : "";
    if (!req->normalize_path) {
        if (path.len == 0 || p[0] != '/')
            dl_buf_addc(out, '/');
        encode(out, p, path.len, 1);
        return;
    }
    static size_t starts[4096], lens[4096];
    size_t depth = 0, i = 0;
    int trailing = 1;
    for (;;) {
        size_t j = i;
        while (j < path.len && p[j] != '/')
            j++;
        size_t len = j - i;
        if (len == 0 || (len == 1 && p[i] == '.')) {
            trailing = 1;
        } else if (len == 2 && p[i] == '.' && p[i + 1] == '.') {
            depth -= depth > 0;
            trailing = 1;
        } else {
            starts[depth] = i;
            lens[depth++] = len;
            trailing = 0;
        }
        if (j >= path.len)
            break;
        i = j + 1;
        if (i == path.len) {
            trailing = 1;
            break;
        }
    }
    dl_buf_addc(out, '/');
    for (size_t k = 0; k < depth; k++) {
        encode(out, p + starts[k], lens[k], 0);
        if (k + 1 < depth || trailing)
            dl_buf_addc(out, '/');
    }
}

static void check_path(const dl_sigv4_request *req, const char *p, size_t n)
{
    if (req->path.len >= 4096) /* the size of the reference's segment table */
        return;
    dl_buf want = DL_BUF_INIT;
    reference_path(req, &want);
    CHECK(want.len == n && memcmp(want.data, p, n) == 0, "canonical path %.*s, reference %.*s", (int)n, p,
          (int)want.len, want.data);
    dl_buf_free(&want);
}

static int compare_bytes(const char *a, size_t an, const char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    return c != 0 ? c : (an > bn) - (an < bn);
}

static void check_query(const dl_sigv4_request *req, const char *p, size_t n)
{
    size_t parts = 0;
    for (size_t i = 0, start = 0; i <= req->query.len; i++) {
        if (i == req->query.len || req->query.ptr[i] == '&') {
            parts += i > start;
            start = i + 1;
        }
    }
    const char *prev_k = NULL, *prev_v = NULL;
    size_t prev_kn = 0, prev_vn = 0, count = 0;
    for (size_t i = 0, start = 0; n > 0 && i <= n; i++) {
        if (i < n && p[i] != '&')
            continue;
        const char *param = p + start, *eq = memchr(param, '=', i - start);
        CHECK(eq != NULL, "parameter without '=' in %.*s", (int)n, p);
        size_t kn = (size_t)(eq - param), vn = i - start - kn - 1;
        check_encoded(param, kn);
        check_encoded(eq + 1, vn);
        if (prev_k) {
            int c = compare_bytes(prev_k, prev_kn, param, kn);
            CHECK(c < 0 || (c == 0 && compare_bytes(prev_v, prev_vn, eq + 1, vn) <= 0),
                  "query not sorted: %.*s", (int)n, p);
        }
        prev_k = param, prev_kn = kn, prev_v = eq + 1, prev_vn = vn;
        count++;
        start = i + 1;
    }
    CHECK(count == parts, "%zu parameters for %zu parts of the query", count, parts);
}

static void check_header_line(const char *p, size_t n, dl_sigv4_str *name)
{
    const char *colon = memchr(p, ':', n);
    CHECK(colon != NULL, "header line without ':': %.*s", (int)n, p);
    *name = str(p, (size_t)(colon - p));
    CHECK(is_token(*name), "header name %.*s", (int)name->len, name->ptr);
    for (size_t i = 0; i < name->len; i++)
        CHECK(name->ptr[i] == lower(name->ptr[i]), "header name not lower-case");
    const char *v = colon + 1;
    size_t vn = n - name->len - 1;
    /* trimmed, inner white space runs made one space; repeated headers'
     * values are joined with ',' */
    for (size_t i = 0; i < vn; i++) {
        unsigned char c = (unsigned char)v[i];
        CHECK(c >= 0x20 && c != 0x7f, "control byte 0x%02x in header %.*s", c, (int)name->len, name->ptr);
        CHECK(c != ' ' || (i > 0 && i + 1 < vn && v[i + 1] != ' '), "header %.*s value not trimmed: %.*s",
              (int)name->len, name->ptr, (int)vn, v);
    }
}

static void check_signed(const fuzz_request *r, const dl_sigv4_request *req, const dl_sigv4_result *res)
{
    /* X-Amz-Date */
    char want_date[32];
    time_t tt = (time_t)req->time;
    struct tm tm;
    CHECK(gmtime_r(&tt, &tm) != NULL, "gmtime");
    strftime(want_date, sizeof want_date, "%Y%m%dT%H%M%SZ", &tm);
    CHECK(strcmp(want_date, res->amz_date) == 0, "amz_date %s, gmtime %s", res->amz_date, want_date);

    unsigned char md[SHA256_DIGEST_LENGTH];
    char md_hex[2 * SHA256_DIGEST_LENGTH + 1];
    SHA256((const unsigned char *)(req->payload.ptr ? req->payload.ptr : ""), req->payload.len, md);
    hex(md, sizeof md, md_hex);
    CHECK(strcmp(md_hex, res->payload_hash) == 0, "payload hash");

    /* the canonical request, line by line */
    const char *cr = res->canonical_request.data, *end = cr + res->canonical_request.len;
    const char *lines[MAX_HEADERS + 16];
    size_t lens[MAX_HEADERS + 16], nlines = 0;
    for (const char *p = cr;; nlines++) {
        CHECK(nlines < MAX_HEADERS + 16, "too many lines in the canonical request");
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        lines[nlines] = p;
        lens[nlines] = (size_t)((nl ? nl : end) - p);
        if (!nl) {
            nlines++;
            break;
        }
        p = nl + 1;
    }
    CHECK(nlines >= 7, "%zu lines in the canonical request", nlines);
    CHECK(lens[0] == req->method.len && memcmp(lines[0], req->method.ptr, lens[0]) == 0, "method line");
    check_path(req, lines[1], lens[1]);
    check_query(req, lines[2], lens[2]);
    size_t h = 3;
    dl_buf signed_names = DL_BUF_INIT;
    dl_sigv4_str prev = str("", 0);
    int host = 0, date = 0;
    for (; h < nlines && lens[h] > 0; h++) {
        dl_sigv4_str name;
        check_header_line(lines[h], lens[h], &name);
        CHECK(h == 3 || compare_bytes(prev.ptr, prev.len, name.ptr, name.len) < 0, "headers not sorted/unique");
        CHECK(!same_ci(name, lit("authorization")), "authorization signed");
        host |= same_ci(name, lit("host"));
        date |= same_ci(name, lit("x-amz-date"));
        if (h > 3)
            dl_buf_addc(&signed_names, ';');
        dl_buf_add(&signed_names, name.ptr, name.len);
        prev = name;
    }
    CHECK(host && date, "host or x-amz-date not signed");
    CHECK(h + 3 == nlines, "canonical request has %zu lines after %zu headers", nlines, h - 3);
    CHECK(lens[h + 1] == signed_names.len && memcmp(lines[h + 1], signed_names.data, lens[h + 1]) == 0 &&
              res->signed_headers.len == signed_names.len &&
              memcmp(res->signed_headers.data, signed_names.data, signed_names.len) == 0,
          "signed headers line");
    CHECK(lens[h + 2] == 64 && memcmp(lines[h + 2], res->payload_hash, 64) == 0, "hash line");

    /* string to sign, signature, Authorization */
    dl_buf want = DL_BUF_INIT, scope = DL_BUF_INIT;
    dl_buf_add(&scope, res->amz_date, 8);
    dl_buf_addc(&scope, '/');
    dl_buf_add(&scope, req->region.ptr, req->region.len);
    dl_buf_addc(&scope, '/');
    dl_buf_add(&scope, req->service.ptr, req->service.len);
    dl_buf_adds(&scope, "/aws4_request");
    SHA256((const unsigned char *)cr, res->canonical_request.len, md);
    hex(md, sizeof md, md_hex);
    dl_buf_adds(&want, "AWS4-HMAC-SHA256\n");
    dl_buf_adds(&want, res->amz_date);
    dl_buf_addc(&want, '\n');
    dl_buf_add(&want, scope.data, scope.len);
    dl_buf_addc(&want, '\n');
    dl_buf_adds(&want, md_hex);
    CHECK(want.len == res->string_to_sign.len && memcmp(want.data, res->string_to_sign.data, want.len) == 0,
          "string to sign");

    unsigned char k[EVP_MAX_MD_SIZE];
    unsigned int kn = 0;
    char secret[64] = "AWS4" SECRET;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)res->amz_date, 8, k, &kn);
    HMAC(EVP_sha256(), k, (int)kn, (const unsigned char *)req->region.ptr, req->region.len, k, &kn);
    HMAC(EVP_sha256(), k, (int)kn, (const unsigned char *)req->service.ptr, req->service.len, k, &kn);
    HMAC(EVP_sha256(), k, (int)kn, (const unsigned char *)"aws4_request", 12, k, &kn);
    HMAC(EVP_sha256(), k, (int)kn, (const unsigned char *)want.data, want.len, md, NULL);
    hex(md, sizeof md, md_hex);
    CHECK(strcmp(md_hex, res->signature) == 0, "signature %s, reference %s", res->signature, md_hex);

    dl_buf_reset(&want);
    dl_buf_adds(&want, "AWS4-HMAC-SHA256 Credential=" AKID "/");
    dl_buf_add(&want, scope.data, scope.len);
    dl_buf_adds(&want, ", SignedHeaders=");
    dl_buf_add(&want, signed_names.data, signed_names.len);
    dl_buf_adds(&want, ", Signature=");
    dl_buf_adds(&want, md_hex);
    CHECK(want.len == res->authorization.len && memcmp(want.data, res->authorization.data, want.len) == 0,
          "Authorization %s", res->authorization.data);
    (void)r;
    dl_buf_free(&want);
    dl_buf_free(&scope);
    dl_buf_free(&signed_names);
}

static void check_invalid(const dl_sigv4_request *req, const dl_sigv4_result *res)
{
    CHECK(res->error != NULL && res->error[0] != '\0', "EINVAL without a message");
    const dl_sigv4_header *h = res->error_header;
    if (!h)
        return;
    CHECK(h >= req->headers && h < req->headers + req->header_count, "error_header not one of ours");
    CHECK(!is_token(h->name) || !value_ok(h->value), "header blamed without cause: %s", res->error);
}

/* ---- the Lua signer on the same request ---- */

static const char LUA_SIGN[] =
    "local core = ...\n"
    "local signer = core.sigv4_signer()\n"
    "return function(req)\n"
    "  local ok, headers, steps = pcall(signer.sign, signer, req, true)\n"
    "  if ok then return headers.Authorization, steps.signature end\n"
    "  if type(headers) ~= 'string' or not headers:find('^sigv4: ') then\n"
    "    fuzz_fail('signer:sign raised an unexpected error: %s', tostring(headers))\n"
    "  end\n"
    "  return nil, headers\n"
    "end\n";

static void push_str(lua_State *L, dl_sigv4_str s)
{
    lua_pushlstring(L, s.ptr ? s.ptr : "", s.len);
}

static int distinct_names(const fuzz_request *r)
{
    for (size_t i = 0; i < r->header_count; i++)
        for (size_t j = 0; j < i; j++)
            if (same_ci(r->headers[i].name, r->headers[j].name))
                return 0;
    return 1;
}

static void check_lua(const fuzz_request *r, dl_sigv4_status st, const dl_sigv4_result *res)
{
    lua_State *L = fz_L;
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, fz_check_ref);
    lua_createtable(L, 0, 12);
    push_str(L, r->method);
    lua_setfield(L, -2, "method");
    const char *t = r->target.ptr;
    int comparable = r->target.len == 0 || t[0] == '/' || t[0] == '?' || t[0] == '#';
    if (comparable) {
        lua_pushliteral(L, "https://" HOST);
        push_str(L, r->target);
        lua_concat(L, 2);
    } else {
        push_str(L, r->target);
    }
    lua_setfield(L, -2, "url");
    push_str(L, r->body);
    lua_setfield(L, -2, "body");
    lua_createtable(L, 0, (int)r->header_count);
    for (size_t i = 0; i < r->header_count; i++) {
        push_str(L, r->headers[i].name);
        push_str(L, r->headers[i].value);
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "headers");
    push_str(L, r->region);
    lua_setfield(L, -2, "region");
    push_str(L, r->service);
    lua_setfield(L, -2, "service");
    lua_createtable(L, 0, 3);
    lua_pushliteral(L, AKID);
    lua_setfield(L, -2, "access_key_id");
    lua_pushliteral(L, SECRET);
    lua_setfield(L, -2, "secret_access_key");
    if (r->flags & 4) {
        lua_pushliteral(L, TOKEN);
        lua_setfield(L, -2, "session_token");
    }
    lua_setfield(L, -2, "credentials");
    lua_pushinteger(L, (lua_Integer)r->time);
    lua_setfield(L, -2, "time");
    lua_pushboolean(L, r->flags & 1);
    lua_setfield(L, -2, "normalize_path");
    lua_pushboolean(L, r->flags & 2);
    lua_setfield(L, -2, "content_sha256_header");
    lua_pushboolean(L, r->flags & 8);
    lua_setfield(L, -2, "sign_session_token");
    if (lua_pcall(L, 1, 2, 0) != LUA_OK) {
        fprintf(stderr, "\n==fuzz== %s\n", lua_tostring(L, -1));
        abort();
    }
    /* Host is added from the URL unless a header names it; flag 16 leaves
     * it out on the C side only, so those are not compared. */
    if (comparable && distinct_names(r) && !(r->flags & 16)) {
        int lua_ok = lua_isstring(L, -2);
        CHECK(lua_ok == (st == DL_SIGV4_OK), "C status %d, Lua %s", (int)st,
              lua_ok ? "signed" : lua_tostring(L, -1));
        if (lua_ok) {
            CHECK(strcmp(lua_tostring(L, -1), res->signature) == 0, "Lua signature %s, C %s",
                  lua_tostring(L, -1), res->signature);
            CHECK(strcmp(lua_tostring(L, -2), res->authorization.data) == 0, "Authorization differs");
        }
    }
    lua_settop(L, 0);
    if (++fz_runs % 256 == 0)
        lua_gc(L, LUA_GCCOLLECT, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static dl_sigv4_signer signer;
    static int ready;
    if (!ready) {
        dl_sigv4_signer_init(&signer);
        fz_init("fuzz_sigv4", LUA_SIGN);
        ready = 1;
    }
    fuzz_request r;
    dl_sigv4_request req;
    dl_sigv4_result res;
    parse_input(data, size, &r);
    fill(&r, &req);
    dl_sigv4_result_init(&res);
    dl_sigv4_status st = dl_sigv4_sign(&signer, &req, &res);
    CHECK(st == DL_SIGV4_OK || st == DL_SIGV4_EINVAL, "status %d (%s)", (int)st, dl_sigv4_status_text(st));
    if (st == DL_SIGV4_OK) {
        check_signed(&r, &req, &res);
        char first[DL_SIGV4_HEX_LEN + 1];
        memcpy(first, res.signature, sizeof first);
        CHECK(dl_sigv4_sign(&signer, &req, &res) == DL_SIGV4_OK, "second signing failed");
        CHECK(strcmp(first, res.signature) == 0, "signing twice gave two signatures");
        CHECK(res.key_was_cached || req.region.len > DL_SIGV4_CACHE_NAME_MAX ||
                  req.service.len > DL_SIGV4_CACHE_NAME_MAX,
              "second signing did not use the key cache");
    } else {
        check_invalid(&req, &res);
    }
    check_lua(&r, st, &res);
    dl_sigv4_result_free(&res);
    return 0;
}
