/* JSON for Lua on top of yajl: decode straight onto the Lua stack (no DOM),
 * encode by walking Lua values into a yajl generator.
 *
 * Choices made explicit rather than guessed:
 *  - null is a light userdata NULL (the same value as cjson.null), exposed
 *    as core.null;
 *  - an empty table encodes as {}; a table carrying the array metatable
 *    (core.array) encodes as [] even when empty;
 *  - integers stay integers when they fit lua_Integer (and, on LuaJIT, a
 *    double exactly); other numbers are doubles written with the fewest
 *    digits that read back bit-identical;
 *  - strings must be valid UTF-8 in both directions. */
#include "dynlog.h"
#include "jsonutil.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_gen.h>
#include <yajl/yajl_parse.h>

#define JSON_MAX_DEPTH 1000
/* yajl's generator refuses to nest deeper than 128; say so ourselves, with
 * the path, before it does. */
#define JSON_MAX_ENCODE_DEPTH YAJL_MAX_DEPTH
#define ARRAY_MT "dynlog.array"
#define PARSER_MT "dynlog.json_parser"
#define GEN_MT "dynlog.json_gen"

/* ---- decoding -------------------------------------------------------- */

typedef struct {
    lua_State *L;
    int depth;
    /* Per open container: is it an array? Arrays never hold nil (null is a
     * light userdata), so the next position is always #t + 1. */
    unsigned char is_array[JSON_MAX_DEPTH];
    const char *failure; /* set when a callback aborts the parse */
} decoder;

/* A value was pushed: store it in the container below it, if any. */
static int store_value(decoder *d)
{
    lua_State *L = d->L;
    if (d->depth == 0)
        return 1; /* the document's root stays on the stack */
    if (d->is_array[d->depth - 1])
        lua_rawseti(L, -2, (int)lua_rawlen(L, -2) + 1);
    else
        lua_rawset(L, -3); /* table, key, value */
    return 1;
}

static int make_room(decoder *d)
{
    if (!lua_checkstack(d->L, 4)) {
        d->failure = "JSON nested too deeply for the Lua stack";
        return 0;
    }
    return 1;
}

static int on_null(void *ctx)
{
    decoder *d = ctx;
    if (!make_room(d))
        return 0;
    lua_pushlightuserdata(d->L, NULL);
    return store_value(d);
}

static int on_boolean(void *ctx, int b)
{
    decoder *d = ctx;
    if (!make_room(d))
        return 0;
    lua_pushboolean(d->L, b);
    return store_value(d);
}

static int on_number(void *ctx, const char *text, size_t len)
{
    decoder *d = ctx;
    if (!make_room(d))
        return 0;
    if (dl_push_json_number(d->L, text, len) != 0) {
        d->failure = "number out of range";
        return 0;
    }
    return store_value(d);
}

static int on_string(void *ctx, const unsigned char *s, size_t len)
{
    decoder *d = ctx;
    if (!make_room(d))
        return 0;
    lua_pushlstring(d->L, (const char *)s, len);
    return store_value(d);
}

static int open_container_at(decoder *d, int is_array)
{
    if (d->depth >= JSON_MAX_DEPTH) {
        d->failure = "JSON nested deeper than 1000 levels";
        return 0;
    }
    if (!make_room(d))
        return 0;
    lua_newtable(d->L);
    if (is_array) {
        luaL_getmetatable(d->L, ARRAY_MT);
        lua_setmetatable(d->L, -2);
    }
    d->is_array[d->depth++] = (unsigned char)is_array;
    return 1;
}

static int on_start_map(void *ctx)
{
    return open_container_at(ctx, 0);
}

static int on_start_array(void *ctx)
{
    return open_container_at(ctx, 1);
}

static int on_end_container(void *ctx)
{
    decoder *d = ctx;
    d->depth--;
    return store_value(d);
}

static int on_map_key(void *ctx, const unsigned char *key, size_t len)
{
    decoder *d = ctx;
    if (!make_room(d))
        return 0;
    lua_pushlstring(d->L, (const char *)key, len);
    return 1;
}

static const yajl_callbacks decode_callbacks = {
    on_null, on_boolean, NULL, NULL, on_number, on_string,
    on_start_map, on_map_key, on_end_container,
    on_start_array, on_end_container,
};

/* yajl handles live in userdata so that a Lua error raised in a callback
 * (out of memory) cannot leak them: the collector frees them. */
static int parser_gc(lua_State *L)
{
    yajl_handle *h = luaL_checkudata(L, 1, PARSER_MT);
    if (*h) {
        yajl_free(*h);
        *h = NULL;
    }
    return 0;
}

static int json_failure(lua_State *L, yajl_handle h, const char *text, size_t len,
                        const char *failure)
{
    if (failure)
        return dl_push_failure(L, "invalid_json", failure);
    unsigned char *msg = yajl_get_error(h, 0, (const unsigned char *)text, len);
    const char *what = msg ? (const char *)msg : "parse error";
    lua_pushnil(L);
    lua_pushliteral(L, "invalid_json");
    /* yajl ends its message with a newline; keep the first line only */
    lua_pushlstring(L, what, strcspn(what, "\n"));
    if (msg)
        yajl_free_error(h, msg);
    return 3;
}

/* json_decode(text) -> value | nil, "invalid_json", message */
static int l_json_decode(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    decoder *d = lua_newuserdata(L, sizeof *d);
    d->L = L;
    d->depth = 0;
    d->failure = NULL;
    yajl_handle *h = lua_newuserdata(L, sizeof *h);
    *h = NULL;
    luaL_setmetatable(L, PARSER_MT);
    *h = yajl_alloc(&decode_callbacks, NULL, d);
    if (!*h)
        return luaL_error(L, "dynlog.core: out of memory");
    int base = lua_gettop(L);
    yajl_status st = yajl_parse(*h, (const unsigned char *)text, len);
    if (st == yajl_status_ok)
        st = yajl_complete_parse(*h);
    if (st != yajl_status_ok) {
        const char *failure = d->failure;
        lua_settop(L, base);
        return json_failure(L, *h, text, len, failure);
    }
    if (lua_gettop(L) != base + 1) /* empty input gives no value */
        return dl_push_failure(L, "invalid_json", "empty JSON text");
    return 1;
}

/* ---- encoding -------------------------------------------------------- */

typedef struct {
    lua_State *L;
    yajl_gen g;
    dl_json_path path;
} encoder;

static int gen_gc(lua_State *L)
{
    yajl_gen *g = luaL_checkudata(L, 1, GEN_MT);
    if (*g) {
        yajl_gen_free(*g);
        *g = NULL;
    }
    return 0;
}

static void encode_value(encoder *e, int idx, int depth);

static void encode_fail(encoder *e, const char *what)
{
    dl_json_path_error(e->L, &e->path, what);
}

static void check_gen(encoder *e, yajl_gen_status st)
{
    if (st == yajl_gen_invalid_string)
        encode_fail(e, "string is not valid UTF-8");
    else if (st != yajl_gen_status_ok)
        encode_fail(e, "JSON generator failed");
}

static void encode_string(encoder *e, int idx)
{
    size_t len;
    const char *s = lua_tolstring(e->L, idx, &len);
    check_gen(e, yajl_gen_string(e->g, (const unsigned char *)s, len));
}

static void encode_number(encoder *e, int idx)
{
    char text[DL_NUMBER_TEXT_MAX];
    int n = dl_format_lua_number(e->L, idx, text);
    if (n < 0)
        encode_fail(e, "NaN and infinity cannot be encoded");
    check_gen(e, yajl_gen_number(e->g, text, (size_t)n));
}

static void encode_array(encoder *e, int idx, lua_Integer n, int depth)
{
    lua_State *L = e->L;
    check_gen(e, yajl_gen_array_open(e->g));
    for (lua_Integer i = 1; i <= n; i++) {
        dl_json_path_push_index(&e->path, i);
        lua_rawgeti(L, idx, (int)i);
        encode_value(e, lua_gettop(L), depth + 1);
        lua_pop(L, 1);
        dl_json_path_pop(&e->path);
    }
    check_gen(e, yajl_gen_array_close(e->g));
}

static void encode_object(encoder *e, int idx, int depth)
{
    lua_State *L = e->L;
    check_gen(e, yajl_gen_map_open(e->g));
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        size_t klen;
        const char *key = lua_tolstring(L, -2, &klen); /* a string: checked by the classifier */
        dl_json_path_push_key(&e->path, key, klen);
        check_gen(e, yajl_gen_string(e->g, (const unsigned char *)key, klen));
        encode_value(e, lua_gettop(L), depth + 1);
        dl_json_path_pop(&e->path);
        lua_pop(L, 1);
    }
    check_gen(e, yajl_gen_map_close(e->g));
}

static void encode_table(encoder *e, int idx, int depth)
{
    lua_Integer n = 0;
    const char *why = NULL;
    if (depth >= JSON_MAX_ENCODE_DEPTH - 1)
        encode_fail(e, "nested deeper than 127 levels (a cycle?)");
    if (!lua_checkstack(e->L, 8))
        encode_fail(e, "nested too deeply for the Lua stack");
    switch (dl_classify_table(e->L, idx, ARRAY_MT, &n, &why)) {
    case DL_TABLE_ARRAY:
        encode_array(e, idx, n, depth);
        break;
    case DL_TABLE_OBJECT:
        encode_object(e, idx, depth);
        break;
    default:
        encode_fail(e, why);
    }
}

static void encode_value(encoder *e, int idx, int depth)
{
    lua_State *L = e->L;
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        encode_string(e, idx);
        break;
    case LUA_TNUMBER:
        encode_number(e, idx);
        break;
    case LUA_TBOOLEAN:
        check_gen(e, yajl_gen_bool(e->g, lua_toboolean(L, idx)));
        break;
    case LUA_TTABLE:
        encode_table(e, idx, depth);
        break;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) {
            check_gen(e, yajl_gen_null(e->g));
            break;
        }
        /* fall through */
    default:
        lua_pushfstring(L, "cannot encode a %s", luaL_typename(L, idx));
        encode_fail(e, lua_tostring(L, -1));
    }
}

/* json_encode(value) -> text; raises on values JSON cannot hold, naming where */
static int l_json_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    encoder *e = lua_newuserdata(L, sizeof *e);
    e->L = L;
    dl_json_path_init(&e->path, "value");
    yajl_gen *g = lua_newuserdata(L, sizeof *g);
    *g = NULL;
    luaL_setmetatable(L, GEN_MT);
    *g = e->g = yajl_gen_alloc(NULL);
    if (!e->g)
        return luaL_error(L, "dynlog.core: out of memory");
    yajl_gen_config(e->g, yajl_gen_validate_utf8, 1);
    encode_value(e, 1, 0);
    const unsigned char *out;
    size_t len;
    yajl_gen_get_buf(e->g, &out, &len);
    lua_pushlstring(L, (const char *)out, len);
    return 1;
}

/* array([t]) -> t, marked to encode as a JSON array even when empty */
static int l_array(lua_State *L)
{
    if (lua_isnoneornil(L, 1))
        lua_newtable(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    luaL_getmetatable(L, ARRAY_MT);
    lua_setmetatable(L, 1);
    return 1;
}

/* is_array(v) -> true when v carries the array mark */
static int l_is_array(lua_State *L)
{
    int marked = 0;
    if (lua_istable(L, 1) && lua_getmetatable(L, 1)) {
        luaL_getmetatable(L, ARRAY_MT);
        marked = lua_rawequal(L, -1, -2);
    }
    lua_pushboolean(L, marked);
    return 1;
}

void dl_open_json(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "json_decode", l_json_decode },
        { "json_encode", l_json_encode },
        { "array", l_array },
        { "is_array", l_is_array },
        { NULL, NULL },
    };
    luaL_newmetatable(L, PARSER_MT);
    lua_pushcfunction(L, parser_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, GEN_MT);
    lua_pushcfunction(L, gen_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, ARRAY_MT);
    lua_pushliteral(L, "array");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
    luaL_setfuncs(L, funcs, 0);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
}
