/* SigV4 for Lua: core.sigv4_signer() -> signer; signer:sign(req [, explain]).
 *
 * This file only translates between a Lua request table and the pure-C
 * signer in sigv4.c. The userdata owns every buffer the translation needs,
 * so a Lua error raised half-way (bad field, out of memory) leaks nothing,
 * and a signer that is reused allocates nothing per request once warm.
 *
 * Lua strings are handed to C by pointer. They stay valid because every
 * value read is either left on the stack or reachable from a table that is.
 * Only the first pass (lua_getfield on req and req.credentials) may run a
 * metamethod; the headers table is read raw, so nothing can change it under
 * us. */
#include "dynlog.h"
#include "lua_util.h"
#include "sigv4.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SIGNER_MT "dynlog.sigv4_signer"
/* A bound on one header's list of values, so that list indices fit an int
 * (lua_rawgeti takes an int on LuaJIT). */
#define MAX_HEADER_VALUES 10000

/* The last URL split, as offsets into it: a client signs request after
 * request to the same endpoint. Longer URLs are split every time. */
#define URL_CACHE_MAX 256

typedef struct url_cache {
    size_t len;             /* 0: empty */
    char url[URL_CACHE_MAX];
    size_t host_off, host_len, path_off, path_len, query_off, query_len;
    int path_is_root;       /* the URL has no path: "/" is signed */
} url_cache;

typedef struct lua_signer {
    dl_sigv4_signer signer;
    dl_sigv4_result result;
    dl_sigv4_header *headers; /* the request's headers as C views */
    size_t headers_cap;
    dl_buf join;              /* list values joined with ',' for the output */
    url_cache url;
} lua_signer;

/* Stack slots of sign(): the fields are pushed in this order and stay there. */
enum {
    ARG_SIGNER = 1, ARG_REQ, ARG_EXPLAIN,
    SLOT_METHOD, SLOT_URL, SLOT_HEADERS, SLOT_BODY, SLOT_REGION, SLOT_SERVICE,
    SLOT_CREDENTIALS, SLOT_TIME, SLOT_NORMALIZE, SLOT_CONTENT_SHA, SLOT_SIGN_TOKEN,
    SLOT_ACCESS_KEY, SLOT_SECRET, SLOT_TOKEN,
    SLOT_LAST = SLOT_TOKEN
};

typedef struct url_parts {
    dl_sigv4_str host; /* with the port unless it is the scheme's default */
    dl_sigv4_str path;
    dl_sigv4_str query;
} url_parts;

static lua_signer *check_signer(lua_State *L)
{
    return (lua_signer *)luaL_checkudata(L, ARG_SIGNER, SIGNER_MT);
}

static dl_sigv4_str view(const char *p, size_t n)
{
    dl_sigv4_str s = { p, n };
    return s;
}

/* ---- reading the request table ---- */

/* Raises "sigv4: req.<field>: <expected> expected, got <type>". Only the
 * type of the offending value is shown, never the value. (luaL_error rather
 * than luaL_argerror: the message then reads the same whether sign is
 * called as a method or through pcall.) */
static int field_error(lua_State *L, const char *field, const char *expected, int idx)
{
    return luaL_error(L, "sigv4: req.%s: %s expected, got %s", field, expected, luaL_typename(L, idx));
}

static int request_error(lua_State *L, const char *message)
{
    return luaL_error(L, "sigv4: %s", message);
}

/* Pushes t[name] (metamethods allowed: req may be an object) and leaves it.
 * lua_getfield returns nothing on LuaJIT, so callers look at lua_type. */
static void push_field(lua_State *L, int t, const char *name)
{
    lua_getfield(L, t, name);
}

static dl_sigv4_str string_slot(lua_State *L, int slot, const char *field, int required)
{
    size_t len = 0;
    int type = lua_type(L, slot);
    if (type == LUA_TNIL && !required)
        return view(NULL, 0);
    if (type != LUA_TSTRING)
        field_error(L, field, "string", slot);
    const char *p = lua_tolstring(L, slot, &len);
    return view(p, len);
}

static int bool_slot(lua_State *L, int slot, const char *field, int fallback)
{
    int type = lua_type(L, slot);
    if (type == LUA_TNIL)
        return fallback;
    if (type != LUA_TBOOLEAN)
        field_error(L, field, "boolean", slot);
    return lua_toboolean(L, slot);
}

/* Epoch seconds, fractions dropped; the real clock when absent. */
static int64_t time_slot(lua_State *L, int slot)
{
    int type = lua_type(L, slot);
    if (type == LUA_TNIL) {
        time_t now = time(NULL);
        if (now == (time_t)-1)
            luaL_error(L, "sigv4: the system clock is unavailable");
        return (int64_t)now;
    }
    if (type != LUA_TNUMBER)
        field_error(L, "time", "number (epoch seconds)", slot);
    lua_Number t = lua_tonumber(L, slot);
    if (!(t >= 0 && t < (lua_Number)DL_SIGV4_TIME_MAX)) /* also catches NaN */
        request_error(L, "req.time: outside 1970-01-01 .. 9999-12-31");
    return (int64_t)t;
}

/* Pushes every field into its slot, so that all of them stay anchored. This
 * is the only phase in which Lua code (an __index) may run. */
static void push_request_fields(lua_State *L)
{
    static const char *const top_fields[] = { /* in SLOT_METHOD .. SLOT_SIGN_TOKEN order */
        "method", "url", "headers", "body", "region", "service", "credentials", "time",
        "normalize_path", "content_sha256_header", "sign_session_token",
    };
    luaL_checktype(L, ARG_REQ, LUA_TTABLE);
    lua_settop(L, ARG_EXPLAIN);
    luaL_checkstack(L, SLOT_LAST + 16, "sigv4: no room on the Lua stack");
    for (size_t i = 0; i < sizeof top_fields / sizeof top_fields[0]; i++)
        push_field(L, ARG_REQ, top_fields[i]);
    if (lua_type(L, SLOT_CREDENTIALS) != LUA_TTABLE)
        field_error(L, "credentials", "table", SLOT_CREDENTIALS);
    push_field(L, SLOT_CREDENTIALS, "access_key_id");
    push_field(L, SLOT_CREDENTIALS, "secret_access_key");
    push_field(L, SLOT_CREDENTIALS, "session_token");
}

/* ---- the URL ---- */

static char ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* ASCII case-insensitive equality: header names and URL schemes. */
static int same_ci(dl_sigv4_str a, dl_sigv4_str b)
{
    if (a.len != b.len)
        return 0;
    for (size_t i = 0; i < a.len; i++)
        if (ascii_lower(a.ptr[i]) != ascii_lower(b.ptr[i]))
            return 0;
    return 1;
}

static int ascii_ieq(const char *a, size_t n, const char *literal)
{
    return same_ci(view(a, n), view(literal, strlen(literal)));
}

/* Where the ":port" of an authority starts (the length when there is none).
 * An IPv6 literal "[::1]:8000" has colons inside its brackets. */
static size_t port_colon(const char *a, size_t n)
{
    size_t i = n;
    while (i > 0 && a[i - 1] != ':' && a[i - 1] != ']')
        i--;
    return (i > 0 && a[i - 1] == ':') ? i - 1 : n;
}

/* Splits "scheme://host[:port]/path?query#fragment". Returns NULL, or a
 * message naming what is wrong (never quoting the URL). */
static const char *split_url(const char *url, size_t len, url_parts *out)
{
    const char *sep = NULL;
    for (size_t i = 0; i + 2 < len && !sep; i++)
        if (url[i] == ':' && url[i + 1] == '/' && url[i + 2] == '/')
            sep = url + i;
    if (!sep)
        return "req.url: expected scheme://host/path";
    size_t scheme_len = (size_t)(sep - url);
    const char *default_port;
    if (ascii_ieq(url, scheme_len, "https"))
        default_port = "443";
    else if (ascii_ieq(url, scheme_len, "http"))
        default_port = "80";
    else
        return "req.url: the scheme must be http or https";
    const char *auth = sep + 3, *end = url + len;
    size_t auth_len = 0;
    while (auth + auth_len < end && auth[auth_len] != '/' && auth[auth_len] != '?'
           && auth[auth_len] != '#')
        auth_len++;
    if (auth_len == 0)
        return "req.url: the host is missing";
    if (memchr(auth, '@', auth_len))
        return "req.url: user info (user@host) is not supported";
    size_t colon = port_colon(auth, auth_len);
    const char *port = auth + colon + 1;
    size_t port_len = colon < auth_len ? auth_len - colon - 1 : 0;
    for (size_t i = 0; i < port_len; i++)
        if (port[i] < '0' || port[i] > '9')
            return "req.url: the port must be digits";
    int drop_port = colon < auth_len && (port_len == 0 || (port_len == strlen(default_port)
                                         && memcmp(port, default_port, port_len) == 0));
    out->host = view(auth, drop_port ? colon : auth_len);
    const char *p = auth + auth_len, *q = p;
    while (q < end && *q != '?' && *q != '#')
        q++;
    out->path = (q > p) ? view(p, (size_t)(q - p)) : view("/", 1);
    const char *f = q;
    if (q < end && *q == '?') {
        f = ++q;
        while (f < end && *f != '#')
            f++;
    }
    out->query = view(q, (size_t)(f - q));
    return NULL;
}

/* split_url with the last URL's answer kept: the parts are offsets, so
 * they point into this call's string whatever its address. */
static const char *split_url_cached(url_cache *c, const char *url, size_t len, url_parts *out)
{
    if (len > 0 && c->len == len && memcmp(c->url, url, len) == 0) {
        out->host = view(url + c->host_off, c->host_len);
        out->path = c->path_is_root ? view("/", 1) : view(url + c->path_off, c->path_len);
        out->query = view(url + c->query_off, c->query_len);
        return NULL;
    }
    const char *bad = split_url(url, len, out);
    if (bad || len > URL_CACHE_MAX)
        return bad;
    c->len = len;
    memcpy(c->url, url, len);
    c->host_off = (size_t)(out->host.ptr - url);
    c->host_len = out->host.len;
    c->path_is_root = !(out->path.ptr >= url && out->path.ptr < url + len);
    c->path_off = c->path_is_root ? 0 : (size_t)(out->path.ptr - url);
    c->path_len = out->path.len;
    c->query_off = (size_t)(out->query.ptr - url);
    c->query_len = out->query.len;
    return NULL;
}

/* ---- the headers table ---- */

static void push_header(lua_State *L, lua_signer *ls, size_t *n, dl_sigv4_str name,
                        dl_sigv4_str value)
{
    if (*n == ls->headers_cap) {
        size_t cap = ls->headers_cap ? 2 * ls->headers_cap : 16;
        void *p = cap < (size_t)-1 / sizeof *ls->headers
                      ? realloc(ls->headers, cap * sizeof *ls->headers) : NULL;
        if (!p)
            luaL_error(L, "sigv4: not enough memory for the headers");
        ls->headers = p;
        ls->headers_cap = cap;
    }
    ls->headers[*n].name = name;
    ls->headers[*n].value = value;
    (*n)++;
}

static dl_sigv4_str string_at(lua_State *L, int idx)
{
    size_t len = 0;
    const char *p = lua_tolstring(L, idx, &len);
    return view(p, len);
}

static void header_value_error(lua_State *L, const char *name, int idx)
{
    luaL_error(L, "sigv4: req.headers[\"%s\"]: string or non-empty list of strings expected, got %s",
               name, luaL_typename(L, idx));
}

/* The value on top of the stack: a string, or a list whose strings become
 * repeated headers (the signer joins them with ',', in list order). */
static void add_header_values(lua_State *L, lua_signer *ls, size_t *n, dl_sigv4_str name)
{
    int value = lua_gettop(L);
    if (lua_type(L, value) == LUA_TSTRING) {
        push_header(L, ls, n, name, string_at(L, value));
        return;
    }
    size_t count = lua_type(L, value) == LUA_TTABLE ? lua_rawlen(L, value) : 0;
    if (count == 0 || count > MAX_HEADER_VALUES)
        header_value_error(L, name.ptr, value);
    for (int i = 1; i <= (int)count; i++) {
        lua_rawgeti(L, value, i);
        if (lua_type(L, -1) != LUA_TSTRING)
            header_value_error(L, name.ptr, -1);
        /* anchored by the list, which the headers table anchors */
        push_header(L, ls, n, name, string_at(L, -1));
        lua_pop(L, 1);
    }
}

/* Two keys that differ only in case ("Host", "host") name one header; their
 * order in a Lua table is undefined, so the signature would be too. */
static void check_case_duplicate(lua_State *L, const lua_signer *ls, size_t n, dl_sigv4_str name)
{
    for (size_t i = 0; i < n; i++)
        if (same_ci(ls->headers[i].name, name))
            luaL_error(L, "sigv4: req.headers: \"%s\" is given twice, in different case", name.ptr);
}

/* Reads req.headers into ls->headers (raw access only) and returns the count. */
static size_t collect_headers(lua_State *L, lua_signer *ls)
{
    size_t n = 0;
    int type = lua_type(L, SLOT_HEADERS);
    if (type == LUA_TNIL)
        return 0;
    if (type != LUA_TTABLE)
        field_error(L, "headers", "table", SLOT_HEADERS);
    lua_pushnil(L);
    while (lua_next(L, SLOT_HEADERS) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING)
            field_error(L, "headers", "string keys (header names)", -2);
        dl_sigv4_str name = string_at(L, -2);
        check_case_duplicate(L, ls, n, name);
        add_header_values(L, ls, &n, name);
        lua_pop(L, 1);
    }
    return n;
}

static int has_header(const lua_signer *ls, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (ascii_ieq(ls->headers[i].name.ptr, ls->headers[i].name.len, name))
            return 1;
    return 0;
}

/* ---- from the Lua table to a dl_sigv4_request ---- */

static void fill_request(lua_State *L, lua_signer *ls, dl_sigv4_request *req, url_parts *url)
{
    dl_sigv4_request_init(req);
    req->method = string_slot(L, SLOT_METHOD, "method", 1);
    dl_sigv4_str u = string_slot(L, SLOT_URL, "url", 1);
    const char *bad = split_url_cached(&ls->url, u.ptr, u.len, url);
    if (bad)
        request_error(L, bad);
    req->path = url->path;
    req->query = url->query;
    req->payload = string_slot(L, SLOT_BODY, "body", 0);
    req->region = string_slot(L, SLOT_REGION, "region", 1);
    req->service = string_slot(L, SLOT_SERVICE, "service", 1);
    req->credentials.access_key_id = string_slot(L, SLOT_ACCESS_KEY, "credentials.access_key_id", 1);
    req->credentials.secret_access_key =
        string_slot(L, SLOT_SECRET, "credentials.secret_access_key", 1);
    req->credentials.session_token = string_slot(L, SLOT_TOKEN, "credentials.session_token", 0);
    req->time = time_slot(L, SLOT_TIME);
    /* S3 signs the path exactly as sent; every other service signs it with
     * dot segments and repeated slashes removed. */
    int is_s3 = req->service.len == 2 && memcmp(req->service.ptr, "s3", 2) == 0;
    req->normalize_path = bool_slot(L, SLOT_NORMALIZE, "normalize_path", !is_s3);
    req->add_content_sha256 = bool_slot(L, SLOT_CONTENT_SHA, "content_sha256_header", 0);
    req->sign_session_token = bool_slot(L, SLOT_SIGN_TOKEN, "sign_session_token", 1);
}

/* ---- results back to Lua ---- */

static void set_string(lua_State *L, int t, const char *key, const char *p, size_t n)
{
    lua_pushlstring(L, p, n);
    lua_setfield(L, t, key);
}

/* Pushes the header value at idx as sent: a list joined with ','. */
static void push_joined_value(lua_State *L, lua_signer *ls, int idx)
{
    if (lua_type(L, idx) == LUA_TSTRING) {
        lua_pushvalue(L, idx);
        return;
    }
    size_t count = lua_rawlen(L, idx);
    dl_buf_reset(&ls->join);
    for (int i = 1; i <= (int)count; i++) {
        size_t len;
        lua_rawgeti(L, idx, i);
        const char *p = lua_tolstring(L, -1, &len);
        if ((i > 1 && dl_buf_addc(&ls->join, ',') != 0) || dl_buf_add(&ls->join, p, len) != 0)
            luaL_error(L, "sigv4: not enough memory for the headers");
        lua_pop(L, 1);
    }
    lua_pushlstring(L, ls->join.data ? ls->join.data : "", ls->join.len);
}

/* The headers to send: the caller's (minus those the signer sets) plus Host
 * when it came from the URL, X-Amz-Date, the token, the content hash, and
 * Authorization. */
static void push_signed_headers(lua_State *L, lua_signer *ls, const dl_sigv4_request *req,
                                const dl_sigv4_str *added_host)
{
    const dl_sigv4_result *res = &ls->result;
    /* sized up front: the caller's headers plus at most five added */
    lua_createtable(L, 0, (int)(req->header_count < 64 ? req->header_count : 64) + 5);
    int out = lua_gettop(L);
    if (lua_type(L, SLOT_HEADERS) == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, SLOT_HEADERS) != 0) {
            if (!dl_sigv4_is_managed_header(req, string_at(L, -2))) {
                lua_pushvalue(L, -2);
                push_joined_value(L, ls, lua_gettop(L) - 1);
                lua_rawset(L, out);
            }
            lua_pop(L, 1);
        }
    }
    if (added_host)
        set_string(L, out, "Host", added_host->ptr, added_host->len);
    set_string(L, out, "X-Amz-Date", res->amz_date, DL_SIGV4_AMZ_DATE_LEN);
    if (req->credentials.session_token.len > 0)
        set_string(L, out, "X-Amz-Security-Token", req->credentials.session_token.ptr,
                   req->credentials.session_token.len);
    if (req->add_content_sha256)
        set_string(L, out, "x-amz-content-sha256", res->payload_hash, DL_SIGV4_HEX_LEN);
    set_string(L, out, "Authorization", res->authorization.data, res->authorization.len);
}

/* The intermediate steps, for tests and debugging. canonical_request holds
 * the session token when it was signed. */
static void push_steps(lua_State *L, const lua_signer *ls)
{
    const dl_sigv4_result *res = &ls->result;
    lua_createtable(L, 0, 7);
    int t = lua_gettop(L);
    set_string(L, t, "canonical_request", res->canonical_request.data, res->canonical_request.len);
    set_string(L, t, "string_to_sign", res->string_to_sign.data, res->string_to_sign.len);
    set_string(L, t, "signature", res->signature, DL_SIGV4_HEX_LEN);
    set_string(L, t, "signed_headers", res->signed_headers.data, res->signed_headers.len);
    set_string(L, t, "payload_hash", res->payload_hash, DL_SIGV4_HEX_LEN);
    set_string(L, t, "amz_date", res->amz_date, DL_SIGV4_AMZ_DATE_LEN);
    lua_pushboolean(L, res->key_was_cached);
    lua_setfield(L, t, "key_cached");
}

/* ---- methods ---- */

/* The C message names the field; a header is named by its name only (Lua
 * strings are NUL-terminated, so the name's pointer is a C string). */
static int raise_invalid(lua_State *L, const dl_sigv4_result *res)
{
    if (res->error_header)
        return luaL_error(L, "sigv4: req.headers[\"%s\"]: %s", res->error_header->name.ptr, res->error);
    return luaL_error(L, "sigv4: req.%s", res->error);
}

/* signer:sign(req [, explain]) -> headers [, steps] | nil, code, message */
static int l_signer_sign(lua_State *L)
{
    lua_signer *ls = check_signer(L);
    int explain = lua_toboolean(L, ARG_EXPLAIN);
    push_request_fields(L);
    dl_sigv4_request req;
    url_parts url;
    fill_request(L, ls, &req, &url);
    size_t n = collect_headers(L, ls);
    int host_added = !has_header(ls, n, "host");
    if (host_added)
        push_header(L, ls, &n, view("Host", 4), url.host);
    req.headers = ls->headers;
    req.header_count = n;
    dl_sigv4_status st = dl_sigv4_sign(&ls->signer, &req, &ls->result);
    if (st == DL_SIGV4_EINVAL) /* a malformed field: a programming error */
        return raise_invalid(L, &ls->result);
    if (st != DL_SIGV4_OK)
        return dl_push_failure(L, "signing_failed", dl_sigv4_status_text(st));
    push_signed_headers(L, ls, &req, host_added ? &url.host : NULL);
    if (!explain)
        return 1;
    push_steps(L, ls);
    return 2;
}

/* sign_post's upvalues: the signer metatable, then the header names it sets. */
enum { UP_MT = 1, UP_CONTENT_TYPE, UP_TARGET, UP_HOST, UP_DATE, UP_TOKEN, UP_AUTHORIZATION, UP_STRINGS };
/* UP_STRINGS: the last Host and X-Amz-Date values pushed, as Lua strings:
 * the next request mostly has the same, and reusing them skips hashing
 * and interning the text again. Any signer may use them: they are checked
 * byte for byte. */
enum { LAST_HOST = 1, LAST_DATE };
static const char *const post_names[] = {
    "Content-Type", "X-Amz-Target", "Host", "X-Amz-Date", "X-Amz-Security-Token", "Authorization",
};

/* t[upvalue name] = the value at idx */
static void set_value(lua_State *L, int t, int name, int idx)
{
    lua_pushvalue(L, lua_upvalueindex(name));
    lua_pushvalue(L, idx);
    lua_rawset(L, t);
}

static void set_upvalue_string(lua_State *L, int t, int name, const char *p, size_t n)
{
    lua_pushvalue(L, lua_upvalueindex(name));
    lua_pushlstring(L, p, n);
    lua_rawset(L, t);
}

/* t[upvalue name] = the text p[0..n), from the last-strings table when it
 * holds that text at slot. */
static void set_last_string(lua_State *L, int t, int name, int slot, const char *p, size_t n)
{
    size_t len;
    lua_pushvalue(L, lua_upvalueindex(name));
    lua_rawgeti(L, lua_upvalueindex(UP_STRINGS), slot);
    const char *last = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    if (!last || len != n || memcmp(last, p, n) != 0) {
        lua_pop(L, 1);
        lua_pushlstring(L, p, n);
        lua_pushvalue(L, -1);
        lua_rawseti(L, lua_upvalueindex(UP_STRINGS), slot);
    }
    lua_rawset(L, t);
}

/* The signer argument, checked against the metatable held as an upvalue
 * (luaL_checkudata looks the metatable up by name in the registry). */
static lua_signer *check_post_signer(lua_State *L)
{
    void *p = lua_touserdata(L, ARG_SIGNER);
    if (p && lua_getmetatable(L, ARG_SIGNER)) {
        int same = lua_rawequal(L, -1, lua_upvalueindex(UP_MT));
        lua_pop(L, 1);
        if (same)
            return (lua_signer *)p;
    }
    return check_signer(L); /* raises the usual message */
}

/* Stack slots of sign_post(): its arguments, then the credentials' fields. */
enum {
    POST_URL = 2, POST_BODY, POST_TIME, POST_REGION, POST_SERVICE, POST_CREDENTIALS,
    POST_CONTENT_TYPE, POST_TARGET, POST_ACCESS_KEY, POST_SECRET, POST_TOKEN,
    POST_LAST = POST_TOKEN
};

/* signer:sign_post(url, body, time, region, service, credentials, content_type [, target])
 *   -> headers | nil, code, message
 * What sign returns for {method = "POST", url =, body =, time =, region =,
 * service =, credentials =, headers = {["Content-Type"] = content_type,
 * ["X-Amz-Target"] = target}}, with the same errors, but read from the
 * arguments: no request table to build and read, no headers table to walk. */
static int l_signer_sign_post(lua_State *L)
{
    lua_signer *ls = check_post_signer(L);
    lua_settop(L, POST_TARGET);
    luaL_checkstack(L, POST_LAST + 8, "sigv4: no room on the Lua stack");
    if (lua_type(L, POST_CREDENTIALS) != LUA_TTABLE)
        field_error(L, "credentials", "table", POST_CREDENTIALS);
    push_field(L, POST_CREDENTIALS, "access_key_id");
    push_field(L, POST_CREDENTIALS, "secret_access_key");
    push_field(L, POST_CREDENTIALS, "session_token");

    dl_sigv4_request req;
    url_parts url;
    dl_sigv4_request_init(&req);
    req.method = view("POST", 4);
    dl_sigv4_str u = string_slot(L, POST_URL, "url", 1);
    const char *bad = split_url_cached(&ls->url, u.ptr, u.len, &url);
    if (bad)
        request_error(L, bad);
    req.path = url.path;
    req.query = url.query;
    req.payload = string_slot(L, POST_BODY, "body", 0);
    req.region = string_slot(L, POST_REGION, "region", 1);
    req.service = string_slot(L, POST_SERVICE, "service", 1);
    req.credentials.access_key_id = string_slot(L, POST_ACCESS_KEY, "credentials.access_key_id", 1);
    req.credentials.secret_access_key = string_slot(L, POST_SECRET, "credentials.secret_access_key", 1);
    req.credentials.session_token = string_slot(L, POST_TOKEN, "credentials.session_token", 0);
    req.time = time_slot(L, POST_TIME);
    req.normalize_path = !(req.service.len == 2 && memcmp(req.service.ptr, "s3", 2) == 0);
    size_t n = 0;
    if (lua_type(L, POST_CONTENT_TYPE) != LUA_TSTRING)
        header_value_error(L, "Content-Type", POST_CONTENT_TYPE);
    push_header(L, ls, &n, view("Content-Type", 12), string_at(L, POST_CONTENT_TYPE));
    int has_target = lua_type(L, POST_TARGET) != LUA_TNIL;
    if (has_target) {
        if (lua_type(L, POST_TARGET) != LUA_TSTRING)
            header_value_error(L, "X-Amz-Target", POST_TARGET);
        push_header(L, ls, &n, view("X-Amz-Target", 12), string_at(L, POST_TARGET));
    }
    push_header(L, ls, &n, view("Host", 4), url.host);
    req.headers = ls->headers;
    req.header_count = n;
    dl_sigv4_status st = dl_sigv4_sign(&ls->signer, &req, &ls->result);
    if (st == DL_SIGV4_EINVAL)
        return raise_invalid(L, &ls->result);
    if (st != DL_SIGV4_OK)
        return dl_push_failure(L, "signing_failed", dl_sigv4_status_text(st));

    const dl_sigv4_result *res = &ls->result;
    int has_token = req.credentials.session_token.len > 0;
    lua_createtable(L, 0, 4 + has_target + has_token);
    int out = lua_gettop(L);
    /* the names are upvalues: no interning of a C string per call */
    set_value(L, out, UP_CONTENT_TYPE, POST_CONTENT_TYPE);
    if (has_target)
        set_value(L, out, UP_TARGET, POST_TARGET);
    set_last_string(L, out, UP_HOST, LAST_HOST, url.host.ptr, url.host.len);
    set_last_string(L, out, UP_DATE, LAST_DATE, res->amz_date, DL_SIGV4_AMZ_DATE_LEN);
    if (has_token)
        set_value(L, out, UP_TOKEN, POST_TOKEN);
    set_upvalue_string(L, out, UP_AUTHORIZATION, res->authorization.data, res->authorization.len);
    return 1;
}

/* signer:stats() -> {key_derivations=, key_cache_hits=, cached_keys=} */
static int l_signer_stats(lua_State *L)
{
    const lua_signer *ls = check_signer(L);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)ls->signer.key_derivations);
    lua_setfield(L, -2, "key_derivations");
    lua_pushinteger(L, (lua_Integer)ls->signer.key_cache_hits);
    lua_setfield(L, -2, "key_cache_hits");
    lua_pushinteger(L, (lua_Integer)dl_sigv4_signer_cached_keys(&ls->signer));
    lua_setfield(L, -2, "cached_keys");
    return 1;
}

/* Shows how many keys are cached, never what they are. */
static int l_signer_tostring(lua_State *L)
{
    const lua_signer *ls = check_signer(L);
    lua_pushfstring(L, SIGNER_MT " (%d cached keys): %p",
                    (int)dl_sigv4_signer_cached_keys(&ls->signer), (const void *)ls);
    return 1;
}

/* Wipes the cached secrets and keys. Safe to run twice. */
static int l_signer_gc(lua_State *L)
{
    lua_signer *ls = check_signer(L);
    dl_sigv4_signer_free(&ls->signer);
    dl_sigv4_result_free(&ls->result);
    free(ls->headers);
    ls->headers = NULL;
    ls->headers_cap = 0;
    dl_buf_free(&ls->join);
    return 0;
}

/* core.sigv4_signer() -> a signer with its own signing-key cache */
static int l_sigv4_signer(lua_State *L)
{
    lua_signer *ls = (lua_signer *)lua_newuserdata(L, sizeof *ls);
    dl_sigv4_signer_init(&ls->signer);
    dl_sigv4_result_init(&ls->result);
    ls->headers = NULL;
    ls->headers_cap = 0;
    dl_buf_init(&ls->join);
    ls->url.len = 0;
    luaL_setmetatable(L, SIGNER_MT);
    return 1;
}

void dl_open_sigv4(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "sign", l_signer_sign },
        { "stats", l_signer_stats },
        { NULL, NULL },
    };
    static const luaL_Reg metamethods[] = {
        { "__gc", l_signer_gc },
        { "__tostring", l_signer_tostring },
        { NULL, NULL },
    };
    luaL_newmetatable(L, SIGNER_MT);
    luaL_setfuncs(L, metamethods, 0);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_pushvalue(L, -2); /* the metatable */
    for (size_t i = 0; i < sizeof post_names / sizeof post_names[0]; i++)
        lua_pushstring(L, post_names[i]);
    lua_createtable(L, 2, 0); /* UP_STRINGS */
    lua_pushcclosure(L, l_signer_sign_post, 2 + (int)(sizeof post_names / sizeof post_names[0]));
    lua_setfield(L, -2, "sign_post");
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_sigv4_signer);
    lua_setfield(L, -2, "sigv4_signer");
}
