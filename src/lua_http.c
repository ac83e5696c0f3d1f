/* dynlog.core.http_client: the blocking libcurl transport for Lua.
 *
 *   local h = core.http_client{connect_timeout=, timeout=, cafile=, max_response_bytes=}
 *   local res = h:request(method, url, headers, body [, timeout])
 *   -- res = {status=, headers={<lower-case name> = value}, body=,
 *   --        new_connections=, local_port=}   or nil, code, message, unsent
 *   -- unsent: true when the request certainly never went out (see http.h)
 *
 * Timeouts are in seconds (fractions allowed); a request's timeout false
 * means none. Header names and values are
 * checked for CR, LF and NUL so that no caller can inject a header. */
#include "dynlog.h"
#include "http.h"
#include "lua_http.h"
#include "lua_util.h"

#include <ctype.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>

#define CLIENT_MT "dynlog.http_client"

typedef struct {
    dl_http http;
    dl_http_headers headers; /* the request's, kept for the next one's memory */
    int closed;
} client;

static client *check_client(lua_State *L)
{
    client *c = luaL_checkudata(L, 1, CLIENT_MT);
    if (c->closed)
        luaL_error(L, "dynlog.curl: http client is closed");
    return c;
}


long dl_seconds_to_ms(lua_State *L, int idx, const char *field)
{
    lua_Number s = lua_tonumber(L, idx);
    if (!(s > 0) || s > 86400)
        luaL_error(L, "dynlog.curl: %s must be a number of seconds in (0, 86400]", field);
    return (long)(s * 1000 + 0.5);
}

static int l_client_gc(lua_State *L)
{
    client *c = luaL_checkudata(L, 1, CLIENT_MT);
    if (!c->closed) {
        dl_http_headers_free(&c->headers);
        dl_http_cleanup(&c->http);
        c->closed = 1;
    }
    return 0;
}

void dl_http_read_options(lua_State *L, int idx, dl_http *h)
{
    if (lua_isnoneornil(L, idx))
        return;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_getfield(L, idx, "connect_timeout");
    if (!lua_isnil(L, -1))
        h->connect_timeout_ms = dl_seconds_to_ms(L, -1, "connect_timeout");
    lua_getfield(L, idx, "timeout");
    if (!lua_isnil(L, -1))
        h->timeout_ms = dl_seconds_to_ms(L, -1, "timeout");
    lua_getfield(L, idx, "max_response_bytes");
    if (!lua_isnil(L, -1)) {
        lua_Number n = lua_tonumber(L, -1);
        if (!(n >= 1024))
            luaL_error(L, "dynlog.curl: max_response_bytes must be at least 1024");
        h->max_response_bytes = (size_t)n;
    }
    lua_getfield(L, idx, "cafile");
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "dynlog.curl: cafile must be a path");
        if (dl_http_set_cafile(h, lua_tostring(L, -1)) != 0)
            luaL_error(L, "dynlog.curl: out of memory");
    }
    lua_pop(L, 4);
}

/* http_client([opts]) -> client */
static int l_http_client(lua_State *L)
{
    client *c = lua_newuserdata(L, sizeof *c);
    memset(c, 0, sizeof *c);
    dl_http_headers_init(&c->headers);
    c->closed = 1; /* until curl is set up, __gc has nothing to free */
    luaL_setmetatable(L, CLIENT_MT);
    if (dl_http_global_init() != 0 || dl_http_init(&c->http) != 0)
        return luaL_error(L, "dynlog.curl: libcurl could not be initialised");
    c->closed = 0;
    dl_http_read_options(L, 1, &c->http);
    return 1;
}

/* A request's argument mistakes are its caller's: they are blamed on the
 * line that called the Lua function (the transport's request) which called
 * this binding, as a Lua function would raise them with error(msg, 2). */
static int raise_at_caller(lua_State *L, const char *fmt, ...)
{
    va_list ap;
    luaL_where(L, 2);
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 2);
    return lua_error(L);
}

/* tchar of RFC 9110: the characters of header names and methods. */
static const unsigned char token_chars[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1, ['-'] = 1,
    ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1,
    ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
    ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,
    ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
    ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

static int is_token_char(unsigned char ch)
{
    return token_chars[ch];
}

static void check_header(lua_State *L, const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (nlen == 0)
        raise_at_caller(L, "dynlog.curl: empty header name");
    for (size_t i = 0; i < nlen; i++)
        if (!is_token_char((unsigned char)name[i]))
            raise_at_caller(L, "dynlog.curl: invalid character in header name '%s'", name);
    for (size_t i = 0; i < vlen; i++)
        if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0')
            raise_at_caller(L, "dynlog.curl: header '%s' has a CR, LF or NUL in its value", name);
}

static void append_header(lua_State *L, dl_http_headers *list, const char *name, size_t nlen,
                          const char *value, size_t vlen)
{
    if (dl_http_headers_add(list, name, nlen, value, vlen) != 0)
        luaL_error(L, "dynlog.curl: out of memory");
}

/* Turns the Lua headers table into curl's list. Also switches off curl's
 * additions that AWS services neither need nor expect: `Expect: 100-continue`
 * and a form Content-Type on POSTs. */
void dl_http_build_headers(lua_State *L, int idx, dl_http_headers *list)
{
    int has_content_type = 0;
    dl_http_headers_reset(list);
    if (!lua_isnoneornil(L, idx)) {
        luaL_checktype(L, idx, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "dynlog.curl: headers must map names to strings");
            size_t nlen, vlen;
            const char *name = lua_tolstring(L, -2, &nlen);
            const char *value = lua_tolstring(L, -1, &vlen);
            check_header(L, name, nlen, value, vlen);
            if (nlen == 12 && strcasecmp(name, "content-type") == 0)
                has_content_type = 1;
            append_header(L, list, name, nlen, value, vlen);
            lua_pop(L, 1);
        }
    }
    append_header(L, list, "Expect", 6, NULL, 0);
    if (!has_content_type)
        append_header(L, list, "Content-Type", 12, NULL, 0);
}

static void push_lower(lua_State *L, const char *s, size_t n)
{
    char small[128];
    if (n > sizeof small)
        n = sizeof small; /* longer names are not headers anyone reads */
    for (size_t i = 0; i < n; i++)
        small[i] = (char)tolower((unsigned char)s[i]);
    lua_pushlstring(L, small, n);
}

/* Pushes {<lower-case name> = value}; repeated headers are joined with ", ". */
static void push_headers(lua_State *L, const dl_buf *block)
{
    lua_newtable(L);
    int t = lua_gettop(L);
    const char *p = block->data ? block->data : "";
    const char *end = p + block->len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon && colon > p) {
            const char *v = colon + 1, *vend = line_end;
            while (v < vend && (*v == ' ' || *v == '\t'))
                v++;
            while (vend > v && (vend[-1] == '\r' || vend[-1] == ' ' || vend[-1] == '\t'))
                vend--;
            push_lower(L, p, (size_t)(colon - p));
            lua_pushvalue(L, -1);
            lua_rawget(L, t);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                lua_pushlstring(L, v, (size_t)(vend - v));
            } else {
                lua_pushliteral(L, ", ");
                lua_pushlstring(L, v, (size_t)(vend - v));
                lua_concat(L, 3);
            }
            lua_rawset(L, t);
        }
        p = eol ? eol + 1 : end;
    }
}

/* libcurl puts the method into the request line as it is, and reads the URL
 * as a C string: a CR or LF in either would start a second request, and a
 * NUL would silently cut the URL short. Checked before any header is built,
 * so that raising leaks nothing. */
static const char *checked_method(lua_State *L, int idx)
{
    size_t len;
    const char *method = luaL_checklstring(L, idx, &len);
    if (len == 0)
        raise_at_caller(L, "dynlog.curl: bad argument #%d to 'request' (the method is empty)", idx);
    for (size_t i = 0; i < len; i++)
        if (!is_token_char((unsigned char)method[i]))
            raise_at_caller(L, "dynlog.curl: bad argument #%d to 'request' "
                               "(the method is not an HTTP token)", idx);
    return method;
}

static const char *checked_url(lua_State *L, int idx)
{
    size_t len;
    const char *url = luaL_checklstring(L, idx, &len);
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)url[i];
        if (ch <= 32 || ch == 127)
            raise_at_caller(L, "dynlog.curl: bad argument #%d to 'request' "
                               "(the URL holds a space, a control character or a NUL)", idx);
    }
    return url;
}

void dl_http_read_request(lua_State *L, dl_http_request *req, dl_http_headers *headers)
{
    memset(req, 0, sizeof *req);
    req->method = checked_method(L, 2);
    req->url = checked_url(L, 3);
    if (!lua_isnoneornil(L, 5))
        req->body = luaL_checklstring(L, 5, &req->body_len);
    /* false: no timeout at all, for a wait whose end is not ours to set
     * (the Lambda runtime's next invocation); the connect timeout holds. */
    if (lua_isboolean(L, 6) && !lua_toboolean(L, 6))
        req->timeout_ms = -1;
    else if (!lua_isnoneornil(L, 6))
        req->timeout_ms = dl_seconds_to_ms(L, 6, "timeout");
    dl_http_build_headers(L, 4, headers);
    req->headers = dl_http_headers_list(headers);
}

void dl_http_push_response(lua_State *L, const dl_http_response *r)
{
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, (lua_Integer)r->status);
    lua_setfield(L, -2, "status");
    push_headers(L, &r->header_block);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, r->body.data ? r->body.data : "", r->body.len);
    lua_setfield(L, -2, "body");
    lua_pushinteger(L, (lua_Integer)r->new_connections);
    lua_setfield(L, -2, "new_connections");
    lua_pushinteger(L, (lua_Integer)r->local_port);
    lua_setfield(L, -2, "local_port");
    if (r->resent) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "resent");
    }
}

/* The response buffers are C memory: keep them in a userdata with __gc
 * while Lua values are built, so an out-of-memory error cannot leak them. */
#define RESPONSE_MT "dynlog.http_response"

static int l_response_gc(lua_State *L)
{
    dl_http_response_free(luaL_checkudata(L, 1, RESPONSE_MT));
    return 0;
}

/* client:request(method, url [, headers [, body [, timeout]]]) */
static int l_request(lua_State *L)
{
    client *c = check_client(L);
    dl_http_request req;
    dl_http_read_request(L, &req, &c->headers);

    dl_http_response *r = lua_newuserdata(L, sizeof *r);
    dl_http_response_init(r);
    luaL_setmetatable(L, RESPONSE_MT);
    const char *code = NULL, *message = NULL;
    int rc = dl_http_perform(&c->http, &req, r, &code, &message);
    if (rc != 0) {
        dl_push_failure(L, code, message);
        lua_pushboolean(L, r->unsent);
        dl_http_response_free(r);
        return 4;
    }
    dl_http_push_response(L, r);
    dl_http_response_free(r);
    return 1;
}

static int l_close(lua_State *L)
{
    return l_client_gc(L);
}

static int l_curl_version(lua_State *L)
{
    lua_pushstring(L, curl_version());
    return 1;
}

void dl_open_http(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "request", l_request },
        { "close", l_close },
        { NULL, NULL },
    };
    static const luaL_Reg funcs[] = {
        { "http_client", l_http_client },
        { "curl_version", l_curl_version },
        { NULL, NULL },
    };
    luaL_newmetatable(L, CLIENT_MT);
    luaL_setfuncs(L, methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_client_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, RESPONSE_MT);
    lua_pushcfunction(L, l_response_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_setfuncs(L, funcs, 0);
}
