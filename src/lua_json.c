/* JSON for Lua over yajl: decode straight onto the Lua stack (no DOM),
 * encode by walking Lua values into yajl's generator, which prints into a
 * growable buffer.
 *
 * Choices made explicit rather than guessed:
 *  - null is a light userdata NULL (the same value as cjson.null), exposed
 *    as core.null;
 *  - an empty table encodes as {}; a table carrying the array metatable
 *    (core.array) encodes as [] even when empty;
 *  - integers stay integers when they fit lua_Integer (and, on LuaJIT, a
 *    double exactly); other numbers are doubles written with the fewest
 *    digits that read back bit-identical; a number mark (core.number) is
 *    written as its own text;
 *  - strings must be valid UTF-8 in both directions.
 *
 * DynamoDB's typed JSON rides on the same walkers, in one pass each way:
 *  - encoding, a table marked by core.attribute_map becomes a map of
 *    AttributeValues ({"name": {"S": "x"}, ...}) wherever it sits in the
 *    request; outside such maps a core.binary is written as its base64 text
 *    and a core.set as an array;
 *  - decoding with unwrap, the members that hold attribute maps (Item,
 *    Items, Key, ...) come back as plain Lua values. */
#include "base64.h"
#include "buf.h"
#include "dynlog.h"
#include "lua_jsonutil.h"
#include "lua_util.h"
#include "marshal.h"

#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <yajl/yajl_gen.h>
#include <yajl/yajl_parse.h>

#define JSON_MAX_DEPTH 1000
/* yajl's generator opens at most YAJL_MAX_DEPTH - 1 nested containers. */
#define JSON_MAX_ENCODE_DEPTH YAJL_MAX_DEPTH
#define PARSER_MT "dynlog.json_parser"
#define ENCODER_MT "dynlog.json_encoder"
/* The encoder keeps its buffers between calls unless they grew beyond this. */
#define KEEP_BUFFER_MAX (1u << 20)
#define BASE64_INPUT_MAX ((size_t)INT_MAX / 4 * 3)

/* ==== decoding ========================================================= */

/* What each open JSON container is. */
enum frame_kind {
    FRAME_OBJECT,    /* plain JSON object */
    FRAME_ARRAY,     /* plain JSON array */
    FRAME_ITEM,      /* attribute map, name -> AttributeValue (Item, M) */
    FRAME_ITEM_LIST, /* array of attribute maps (Items) */
    FRAME_AV,        /* {"<descriptor>": value}: no Lua table of its own */
    FRAME_AV_LIST,   /* L: array of AttributeValues */
    FRAME_AV_SET,    /* SS, NS, BS: a scratch table of seen members below it */
};

typedef struct {
    unsigned char kind;
    unsigned char type;       /* FRAME_AV, FRAME_AV_SET: the descriptor */
    unsigned char holds_item; /* FRAME_OBJECT: the pending member holds attribute maps */
    int count;                /* arrays: elements stored so far */
} frame;

typedef struct {
    lua_State *L;
    yajl_handle handle;
    dl_buf scratch; /* decoded base64 */
    dl_marks marks;
    int unwrap;
    enum dl_numbers numbers;
    int busy; /* the cached decoder is in use (a finalizer may re-enter) */
    int depth;
    const char *failure; /* set when a callback aborts the parse */
    char message[200];
    /* How many members (objects) or elements (arrays) the last container
     * closed at each depth had: its next sibling is made that size at once
     * (the items of a list mostly have one shape), instead of growing by
     * rehashing. Entries from hints_valid on are not set yet. */
    int hints_valid;
    int hints[JSON_MAX_DEPTH];
    frame frames[JSON_MAX_DEPTH];
} decoder;

/* What the next value must be, given the container it goes into. */
enum expect {
    EXPECT_PLAIN,  /* any JSON */
    EXPECT_HOLDER, /* an attribute map, an array of them, or null */
    EXPECT_AV,     /* an AttributeValue object */
    EXPECT_ITEM,   /* an attribute map object */
    EXPECT_TYPED,  /* the value of the descriptor in the enclosing frame */
    EXPECT_MEMBER, /* a set member: a string */
};

static frame *top_frame(decoder *d)
{
    return &d->frames[d->depth - 1];
}

static enum expect expected(decoder *d)
{
    if (d->depth == 0)
        return EXPECT_PLAIN;
    const frame *f = top_frame(d);
    switch (f->kind) {
    case FRAME_OBJECT:
        return f->holds_item ? EXPECT_HOLDER : EXPECT_PLAIN;
    case FRAME_ITEM:
    case FRAME_AV_LIST:
        return EXPECT_AV;
    case FRAME_ITEM_LIST:
        return EXPECT_ITEM;
    case FRAME_AV:
        return EXPECT_TYPED;
    case FRAME_AV_SET:
        return EXPECT_MEMBER;
    default:
        return EXPECT_PLAIN;
    }
}

static int fail(decoder *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->message, sizeof d->message, fmt, ap);
    va_end(ap);
    d->failure = d->message;
    return 0;
}

static const char *wanted_for(enum dl_av_type t)
{
    switch (t) {
    case DL_AV_S:
    case DL_AV_N:
    case DL_AV_B:
        return "a string";
    case DL_AV_BOOL:
        return "a boolean";
    case DL_AV_NULL:
        return "true";
    case DL_AV_M:
        return "an object";
    default:
        return "an array";
    }
}

/* A JSON value of the wrong kind for where it is. */
static int unexpected(decoder *d, const char *found)
{
    switch (expected(d)) {
    case EXPECT_HOLDER:
        return fail(d, "an attribute map member (Item, Items, Key, ...) holds a %s", found);
    case EXPECT_AV:
        return fail(d, "expected an AttributeValue object, found a %s", found);
    case EXPECT_ITEM:
        return fail(d, "expected an attribute map object, found a %s", found);
    case EXPECT_TYPED: {
        enum dl_av_type t = (enum dl_av_type)top_frame(d)->type;
        return fail(d, "AttributeValue %s must hold %s, found a %s", dl_av_descriptor_name(t),
                    wanted_for(t), found);
    }
    case EXPECT_MEMBER:
        return fail(d, "members of %s must be strings, found a %s",
                    dl_av_descriptor_name((enum dl_av_type)top_frame(d)->type), found);
    default:
        return fail(d, "unexpected %s", found);
    }
}

/* Stack slots a frame may use above the table it opens: a key, a value and
 * the temporaries of a set member or a long number. Checked once per
 * container rather than once per value. */
#define FRAME_ROOM 12
/* A hint is a size to preallocate: bounded, as a sibling may be far smaller. */
#define HINT_MAX 64

static int make_room(decoder *d)
{
    if (!lua_checkstack(d->L, FRAME_ROOM)) {
        d->failure = "JSON nested too deeply for the Lua stack";
        return 0;
    }
    return 1;
}

/* A value was pushed: store it in the container below it, if any. An
 * AttributeValue's value stays on the stack until its object closes. */
static int store_value(decoder *d)
{
    lua_State *L = d->L;
    if (d->depth == 0)
        return 1; /* the document's root stays on the stack */
    frame *f = top_frame(d);
    switch (f->kind) {
    case FRAME_OBJECT:
    case FRAME_ITEM:
        lua_rawset(L, -3); /* table, key, value */
        f->count++;
        break;
    case FRAME_AV:
        break;
    default:
        lua_rawseti(L, -2, ++f->count);
    }
    return 1;
}

/* mt: stack index of the metatable to set, 0 for none; FRAME_AV pushes no
 * table at all. */
static int open_frame(decoder *d, enum frame_kind kind, int mt)
{
    if (d->depth >= JSON_MAX_DEPTH)
        return fail(d, "JSON nested deeper than %d levels", JSON_MAX_DEPTH);
    if (!make_room(d))
        return 0;
    int depth = d->depth;
    if (depth >= d->hints_valid) {
        d->hints[depth] = 0;
        d->hints_valid = depth + 1;
    }
    if (kind != FRAME_AV) {
        int hint = d->hints[depth];
        int is_array = kind != FRAME_OBJECT && kind != FRAME_ITEM;
        lua_createtable(d->L, is_array ? hint : 0, is_array ? 0 : hint);
        if (mt) {
            lua_pushvalue(d->L, mt);
            lua_setmetatable(d->L, -2);
        }
    }
    frame *f = &d->frames[d->depth++];
    f->kind = (unsigned char)kind;
    f->type = DL_AV_NONE;
    f->holds_item = 0;
    f->count = 0;
    return 1;
}

static int on_null(void *ctx)
{
    decoder *d = ctx;
    enum expect e = expected(d);
    if (e != EXPECT_PLAIN && e != EXPECT_HOLDER)
        return unexpected(d, "null");
    lua_pushlightuserdata(d->L, NULL);
    return store_value(d);
}

static int on_boolean(void *ctx, int b)
{
    decoder *d = ctx;
    switch (expected(d)) {
    case EXPECT_PLAIN:
        lua_pushboolean(d->L, b);
        return store_value(d);
    case EXPECT_TYPED:
        if (top_frame(d)->type == DL_AV_BOOL) {
            lua_pushboolean(d->L, b);
            return store_value(d);
        }
        if (top_frame(d)->type == DL_AV_NULL && b) {
            lua_pushlightuserdata(d->L, NULL);
            return store_value(d);
        }
        /* fall through */
    default:
        return unexpected(d, b ? "true" : "false");
    }
}

/* The common numbers without strtoll/strtod: [+-]digits[.digits] with at
 * most 15 digits in all. An integer is pushed as strtoll reads it; a
 * fraction is digits / 10^k, both exact doubles (below 2^53 and 10^22), so
 * the one IEEE division rounds it correctly, as strtod does (Clinger's fast
 * path). Returns 0, pushing nothing, for any other text. */
#define SIMPLE_DIGITS_MAX 15

static int push_simple_number(lua_State *L, const char *s, size_t len)
{
    static const double pow10[SIMPLE_DIGITS_MAX + 1] = {
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    };
    size_t i = 0, digits = 0, frac = 0;
    int negative = 0, point = 0;
    int64_t v = 0;
    if (i < len && (s[i] == '-' || s[i] == '+'))
        negative = s[i++] == '-';
    for (; i < len; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9') {
            if (++digits > SIMPLE_DIGITS_MAX)
                return 0;
            v = v * 10 + (c - '0');
            frac += (size_t)point;
        } else if (c == '.' && !point) {
            point = 1;
        } else {
            return 0;
        }
    }
    if (digits == 0)
        return 0;
    if (!point) {
        lua_pushinteger(L, (lua_Integer)(negative ? -v : v));
        return 1;
    }
    double x = (double)v / pow10[frac];
    lua_pushnumber(L, (lua_Number)(negative ? -x : x));
    return 1;
}

static int on_number(void *ctx, const char *text, size_t len)
{
    decoder *d = ctx;
    if (expected(d) != EXPECT_PLAIN)
        return unexpected(d, "number");
    if (push_simple_number(d->L, text, len))
        return store_value(d);
    if (dl_push_json_number(d->L, text, len) != 0)
        return fail(d, "number out of range");
    return store_value(d);
}

static int push_number(decoder *d, const unsigned char *s, size_t len)
{
    const char *why;
    /* a simple form is always a valid DynamoDB number */
    if (d->numbers == DL_NUMBERS_NUMBER && push_simple_number(d->L, (const char *)s, len))
        return 1;
    if (dl_push_av_number(d->L, (const char *)s, len, d->numbers, &d->marks, &why) == 0)
        return 1;
    return fail(d, "N \"%.*s\" is not a DynamoDB number: %s", len > 40 ? 40 : (int)len, s, why);
}

/* Decodes base64 into the scratch buffer. */
static int decode_base64(decoder *d, const unsigned char *s, size_t len)
{
    d->scratch.len = 0;
    int rc = dl_base64_decode(&d->scratch, (const char *)s, len);
    if (rc == -2)
        return fail(d, "a binary AttributeValue is not valid base64");
    if (rc != 0)
        luaL_error(d->L, "dynlog.core: out of memory");
    return 1;
}

static const char *scratch_bytes(const decoder *d)
{
    return d->scratch.data ? d->scratch.data : "";
}

/* Adds a member to the set on top of the stack, refusing duplicates, which
 * the scratch table below the set remembers (keyed by string, number, or a
 * binary's bytes). */
static int add_member(decoder *d, const unsigned char *s, size_t len)
{
    lua_State *L = d->L;
    frame *f = top_frame(d);
    int set = lua_gettop(L), seen = set - 1;
    switch (f->type) {
    case DL_AV_SS:
        lua_pushlstring(L, (const char *)s, len);
        break;
    case DL_AV_NS:
        if (!push_number(d, s, len))
            return 0;
        break;
    default:
        if (!decode_base64(d, s, len))
            return 0;
        lua_pushlstring(L, scratch_bytes(d), d->scratch.len);
    }
    lua_pushvalue(L, -1);
    lua_rawget(L, seen);
    if (!lua_isnil(L, -1))
        return fail(d, "%s holds a duplicate member", dl_av_descriptor_name((enum dl_av_type)f->type));
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushboolean(L, 1);
    lua_rawset(L, seen);
    if (f->type == DL_AV_BS) {
        dl_push_binary(L, &d->marks, scratch_bytes(d), d->scratch.len);
        lua_remove(L, -2);
    }
    lua_rawseti(L, set, ++f->count);
    return 1;
}

static int on_typed_string(decoder *d, const unsigned char *s, size_t len)
{
    switch (top_frame(d)->type) {
    case DL_AV_S:
        lua_pushlstring(d->L, (const char *)s, len);
        break;
    case DL_AV_N:
        if (!push_number(d, s, len))
            return 0;
        break;
    case DL_AV_B:
        if (!decode_base64(d, s, len))
            return 0;
        dl_push_binary(d->L, &d->marks, scratch_bytes(d), d->scratch.len);
        break;
    default:
        return unexpected(d, "string");
    }
    return store_value(d);
}

static int on_string(void *ctx, const unsigned char *s, size_t len)
{
    decoder *d = ctx;
    if (!dl_utf8_valid((const char *)s, len))
        return fail(d, "a string is not valid UTF-8");
    switch (expected(d)) {
    case EXPECT_PLAIN:
        lua_pushlstring(d->L, (const char *)s, len);
        return store_value(d);
    case EXPECT_TYPED:
        return on_typed_string(d, s, len);
    case EXPECT_MEMBER:
        return add_member(d, s, len);
    default:
        return unexpected(d, "string");
    }
}

static int on_start_map(void *ctx)
{
    decoder *d = ctx;
    switch (expected(d)) {
    case EXPECT_PLAIN:
        return open_frame(d, FRAME_OBJECT, 0);
    case EXPECT_HOLDER:
    case EXPECT_ITEM:
        return open_frame(d, FRAME_ITEM, 0);
    case EXPECT_AV:
        return open_frame(d, FRAME_AV, 0);
    case EXPECT_TYPED:
        if (top_frame(d)->type == DL_AV_M)
            return open_frame(d, FRAME_ITEM, 0);
        /* fall through */
    default:
        return unexpected(d, "object");
    }
}

/* Members whose value is an attribute map (or an array of them). */
static int holds_attribute_maps(const unsigned char *key, size_t len)
{
    static const char *const names[] = {
        "Item", "Items", "Attributes", "LastEvaluatedKey", "ExclusiveStartKey",
        "Key", "Keys", "NewImage", "OldImage",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == len && memcmp(names[i], key, len) == 0)
            return 1;
    return 0;
}

static int on_map_key(void *ctx, const unsigned char *key, size_t len)
{
    decoder *d = ctx;
    frame *f = top_frame(d);
    if (!dl_utf8_valid((const char *)key, len))
        return fail(d, "a member name is not valid UTF-8");
    if (f->kind == FRAME_AV) {
        enum dl_av_type t = dl_av_descriptor((const char *)key, len);
        int shown = len > 40 ? 40 : (int)len;
        if (f->type != DL_AV_NONE)
            return fail(d, "AttributeValue has several type descriptors (%s and %.*s)",
                        dl_av_descriptor_name((enum dl_av_type)f->type), shown, key);
        if (t == DL_AV_NONE)
            return fail(d, "unknown AttributeValue type descriptor \"%.*s\"", shown, key);
        f->type = (unsigned char)t;
        return 1;
    }
    lua_pushlstring(d->L, (const char *)key, len);
    if (f->kind == FRAME_OBJECT)
        f->holds_item = (unsigned char)(d->unwrap && holds_attribute_maps(key, len));
    return 1;
}

static int on_end_map(void *ctx)
{
    decoder *d = ctx;
    frame *f = top_frame(d);
    if (f->kind == FRAME_AV && f->type == DL_AV_NONE)
        return fail(d, "AttributeValue has no type descriptor");
    d->depth--;
    if (f->kind != FRAME_AV)
        d->hints[d->depth] = f->count < HINT_MAX ? f->count : HINT_MAX;
    return store_value(d);
}

static int on_start_array(void *ctx)
{
    decoder *d = ctx;
    switch (expected(d)) {
    case EXPECT_PLAIN:
        return open_frame(d, FRAME_ARRAY, d->marks.mt[DL_MARK_ARRAY]);
    case EXPECT_HOLDER:
        return open_frame(d, FRAME_ITEM_LIST, d->marks.mt[DL_MARK_ARRAY]);
    case EXPECT_TYPED: {
        enum dl_av_type t = (enum dl_av_type)top_frame(d)->type;
        if (t == DL_AV_L)
            return open_frame(d, FRAME_AV_LIST, d->marks.mt[DL_MARK_ARRAY]);
        if (t != DL_AV_SS && t != DL_AV_NS && t != DL_AV_BS)
            break;
        if (!make_room(d))
            return 0;
        lua_newtable(d->L); /* members seen, for duplicates */
        if (!open_frame(d, FRAME_AV_SET, d->marks.mt[DL_MARK_SET]))
            return 0;
        top_frame(d)->type = (unsigned char)t;
        return 1;
    }
    default:
        break;
    }
    return unexpected(d, "array");
}

static int on_end_array(void *ctx)
{
    decoder *d = ctx;
    frame *f = top_frame(d);
    if (f->kind == FRAME_AV_SET) {
        if (f->count == 0)
            return fail(d, "%s is empty (DynamoDB has no empty sets)",
                        dl_av_descriptor_name((enum dl_av_type)f->type));
        lua_remove(d->L, -2); /* the seen-members table */
    }
    d->depth--;
    d->hints[d->depth] = f->count < HINT_MAX ? f->count : HINT_MAX;
    return store_value(d);
}

static const yajl_callbacks decode_callbacks = {
    on_null, on_boolean, NULL, NULL, on_number, on_string,
    on_start_map, on_map_key, on_end_map,
    on_start_array, on_end_array,
};

/* The yajl handle and the scratch buffer live in userdata so that a Lua
 * error raised in a callback (out of memory) cannot leak them. */
static int decoder_gc(lua_State *L)
{
    decoder *d = luaL_checkudata(L, 1, PARSER_MT);
    if (d->handle) {
        yajl_free(d->handle);
        d->handle = NULL;
    }
    dl_buf_free(&d->scratch);
    return 0;
}

static int json_failure(lua_State *L, decoder *d, const char *text, size_t len)
{
    if (d->failure)
        return dl_push_failure(L, "invalid_json", d->failure);
    unsigned char *msg = yajl_get_error(d->handle, 0, (const unsigned char *)text, len);
    const char *what = msg ? (const char *)msg : "parse error";
    lua_pushnil(L);
    lua_pushliteral(L, "invalid_json");
    /* yajl ends its message with a newline; keep the first line only */
    lua_pushlstring(L, what, strcspn(what, "\n"));
    if (msg)
        yajl_free_error(d->handle, msg);
    return 3;
}

/* A decoder, as userdata on the stack: the yajl handle and the scratch
 * buffer are freed by its __gc if a Lua error is raised half-way. */
static decoder *new_decoder(lua_State *L)
{
    decoder *d = lua_newuserdata(L, sizeof *d);
    d->handle = NULL;
    dl_buf_init(&d->scratch);
    d->busy = 0;
    d->hints_valid = 0;
    luaL_setmetatable(L, PARSER_MT);
    return d;
}

static int decode(lua_State *L, decoder *d, const char *text, size_t len)
{
    d->L = L;
    d->depth = 0;
    d->failure = NULL;
    d->scratch.len = 0;
    if (d->handle) /* left by an error raised in the middle of the last parse */
        yajl_free(d->handle);
    d->handle = yajl_alloc(&decode_callbacks, NULL, d);
    if (!d->handle)
        return luaL_error(L, "dynlog.core: out of memory");
    /* Strings are checked in the callbacks with dl_utf8_valid, which also
     * refuses the overlongs and surrogates yajl's own check lets through. */
    yajl_config(d->handle, yajl_dont_validate_strings, 1);
    dl_marks_push(L, &d->marks);
    int base = lua_gettop(L);
    luaL_checkstack(L, FRAME_ROOM, "dynlog.core: no room on the Lua stack"); /* for a root scalar */
    yajl_status st = yajl_parse(d->handle, (const unsigned char *)text, len);
    if (st == yajl_status_ok)
        st = yajl_complete_parse(d->handle);
    if (st != yajl_status_ok) {
        lua_settop(L, base);
        return json_failure(L, d, text, len);
    }
    if (lua_gettop(L) != base + 1) /* empty input gives no value */
        return dl_push_failure(L, "invalid_json", "empty JSON text");
    return 1;
}

/* json_decode(text [, unwrap [, numbers]]) -> value | nil, "invalid_json", message
 * unwrap: members that hold attribute maps come back as plain values;
 * numbers = "string": N values stay decimal strings; "exact": Lua numbers
 * when they hold the N exactly, else number marks with the N's text.
 * One decoder (upvalue 1) serves every call: no frame stack to allocate and
 * collect per document, and the container sizes of the last documents
 * carry over. A call made while it is busy (from a finalizer run by the
 * collector in the middle of a decode) gets a decoder of its own. */
static int l_json_decode(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    int unwrap = lua_toboolean(L, 2);
    enum dl_numbers numbers = dl_check_numbers_arg(L, 3);
    lua_settop(L, 3);
    decoder *d = lua_touserdata(L, lua_upvalueindex(1));
    if (d->busy)
        d = new_decoder(L);
    d->busy = 1;
    d->unwrap = unwrap;
    d->numbers = numbers;
    int n = decode(L, d, text, len);
    yajl_free(d->handle);
    d->handle = NULL;
    if (d->scratch.cap > KEEP_BUFFER_MAX)
        dl_buf_free(&d->scratch);
    d->busy = 0;
    return n;
}

static int vet_string(void *ctx, const unsigned char *s, size_t len)
{
    (void)ctx;
    return dl_utf8_valid((const char *)s, len);
}

/* json_is_object(text) -> true | false, message
 * Checks that text is one JSON object without building any Lua value: for
 * text made elsewhere that only needs vetting (an event's detail). */
static int l_json_is_object(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r'))
        i++;
    if (i == len || text[i] != '{') {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "not a JSON object");
        return 2;
    }
    /* Only strings are looked at, for the same strict UTF-8 as json_decode. */
    static const yajl_callbacks vet = {
        NULL, NULL, NULL, NULL, NULL, vet_string, NULL, vet_string, NULL, NULL, NULL,
    };
    yajl_handle h = yajl_alloc(&vet, NULL, NULL);
    if (!h)
        return luaL_error(L, "dynlog.core: out of memory");
    yajl_config(h, yajl_dont_validate_strings, 1);
    yajl_status st = yajl_parse(h, (const unsigned char *)text, len);
    if (st == yajl_status_ok)
        st = yajl_complete_parse(h);
    yajl_free(h);
    lua_pushboolean(L, st == yajl_status_ok);
    if (st == yajl_status_ok)
        return 1;
    lua_pushliteral(L, "not valid JSON");
    return 2;
}

/* ==== encoding ========================================================= */

/* The walkers decide what each Lua value becomes; yajl's generator writes
 * it (quotes, escapes, commas and colons). Its print callback appends
 * straight to `out`, so the text is built once, in our buffer. Strings are
 * checked as UTF-8 here before yajl sees them, with dl_utf8_valid, which
 * refuses the overlongs and surrogates that yajl's own check lets through;
 * yajl's check (yajl_gen_validate_utf8) stays off so that no string is
 * scanned twice. */
typedef struct {
    lua_State *L;
    yajl_gen gen;   /* prints into out through emit() */
    dl_buf out;     /* the JSON text */
    dl_buf scratch; /* a binary's base64 text, before yajl quotes it */
    dl_marks marks;
    int busy;  /* the cached encoder is in use (a finalizer may re-enter) */
    int typed; /* > 0 inside an attribute map */
    int open;  /* containers open in gen */
    dl_json_path path;
} encoder;

/* The generator lives in the userdata so that an error raised in the
 * middle of an encode (a bad value, no memory) cannot leak it. */
static int encoder_gc(lua_State *L)
{
    encoder *e = luaL_checkudata(L, 1, ENCODER_MT);
    if (e->gen) {
        yajl_gen_free(e->gen);
        e->gen = NULL;
    }
    dl_buf_free(&e->out);
    dl_buf_free(&e->scratch);
    return 0;
}

/* Ends an encode, finished or refused: the cached encoder is free again,
 * and keeps its buffers for the next document unless they grew large. */
static void encode_done(encoder *e)
{
    e->busy = 0;
    if (e->out.cap > KEEP_BUFFER_MAX)
        dl_buf_free(&e->out);
    if (e->scratch.cap > KEEP_BUFFER_MAX)
        dl_buf_free(&e->scratch);
}

/* Errors in typed values name the path from the top of the request
 * ("Item.payload[2]"), which reads like DynamoDB's own parameter names;
 * plain JSON errors keep the "value" root. */
static void encode_fail(encoder *e, const char *what)
{
    encode_done(e);
    e->path.root = e->typed ? "" : "value";
    dl_json_path_error(e->L, &e->path, what);
}

static void out_of_memory(encoder *e)
{
    encode_done(e);
    luaL_error(e->L, "dynlog.core: out of memory");
}

/* yajl's print callback. yajl cannot be told that printing failed, so
 * running out of memory raises from here: the Lua error unwinds through
 * yajl, which holds no resources across a print, and l_json_encode resets
 * the generator before its next document. */
static void emit(void *ctx, const char *s, size_t n)
{
    encoder *e = ctx;
    dl_buf *b = &e->out;
    if (b->cap - b->len <= n && dl_buf_reserve(b, n) != 0)
        out_of_memory(e);
    /* Most prints are one byte (a quote, a comma, a brace): no call to
     * memcpy for those. */
    if (n == 1)
        b->data[b->len] = *s;
    else
        memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static encoder *new_encoder(lua_State *L)
{
    encoder *e = lua_newuserdata(L, sizeof *e);
    e->gen = NULL;
    dl_buf_init(&e->out);
    dl_buf_init(&e->scratch);
    e->busy = 0;
    e->typed = 0;
    e->open = 0;
    luaL_setmetatable(L, ENCODER_MT);
    e->gen = yajl_gen_alloc(NULL);
    if (!e->gen)
        luaL_error(L, "dynlog.core: out of memory");
    yajl_gen_config(e->gen, yajl_gen_print_callback, emit, (void *)e);
    return e;
}

/* With depth and UTF-8 checked before yajl is called, any other status
 * means the walker drove yajl wrongly. */
static void generator_refused(encoder *e, yajl_gen_status st)
{
    lua_pushfstring(e->L, "JSON generator refused a value (yajl status %d)", (int)st);
    encode_fail(e, lua_tostring(e->L, -1));
}

static inline void check_gen(encoder *e, yajl_gen_status st)
{
    if (st != yajl_gen_status_ok)
        generator_refused(e, st);
}

/* yajl refuses to open a container at depth YAJL_MAX_DEPTH, and 2.1.0
 * then reads past its state array on the next call; so depth is counted
 * here and refused before yajl is asked, with the path. Plain tables are
 * refused earlier still, by encode_table, with the hint about cycles; this
 * catches AttributeValues (one or two containers each) in a request that
 * is already deep. */
static void open_container(encoder *e, yajl_gen_status (*open)(yajl_gen))
{
    if (e->open >= JSON_MAX_ENCODE_DEPTH - 1) {
        lua_pushfstring(e->L, "nested deeper than %d levels of JSON", JSON_MAX_ENCODE_DEPTH - 1);
        encode_fail(e, lua_tostring(e->L, -1));
    }
    e->open++;
    check_gen(e, open(e->gen));
}

static void close_container(encoder *e, yajl_gen_status (*close)(yajl_gen))
{
    e->open--;
    check_gen(e, close(e->gen));
}

#define OPEN_MAP(e) open_container((e), yajl_gen_map_open)
#define CLOSE_MAP(e) close_container((e), yajl_gen_map_close)
#define OPEN_ARRAY(e) open_container((e), yajl_gen_array_open)
#define CLOSE_ARRAY(e) close_container((e), yajl_gen_array_close)

/* A string already checked as UTF-8: attribute names, S values and SS
 * members are checked when they are classified, number and base64 text is
 * ASCII by construction. */
static inline void put_checked(encoder *e, const char *s, size_t len)
{
    check_gen(e, yajl_gen_string(e->gen, (const unsigned char *)s, len));
}

static void put_string(encoder *e, const char *s, size_t len, const char *not_utf8)
{
    if (!dl_utf8_valid(s, len))
        encode_fail(e, not_utf8);
    put_checked(e, s, len);
}

#define NOT_UTF8 "string is not valid UTF-8"

/* yajl takes a string whole, so the base64 text is made in a scratch
 * buffer (kept between calls) and then handed over. */
static void put_base64(encoder *e, const char *bytes, size_t len)
{
    if (len > BASE64_INPUT_MAX)
        encode_fail(e, "binary is too large to encode");
    dl_buf_reset(&e->scratch);
    if (dl_base64_encode(&e->scratch, bytes, len) != 0)
        out_of_memory(e);
    put_checked(e, e->scratch.data, e->scratch.len);
}

static void check_room(encoder *e)
{
    if (!lua_checkstack(e->L, 8))
        encode_fail(e, "nested too deeply for the Lua stack");
}

/* The reason a table's key is refused, once the walk met a non-string one. */
static void fail_on_key(encoder *e, int idx)
{
    lua_Integer n;
    const char *why = "table has a key that is not a string";
    dl_classify_table(e->L, idx, 0, &n, &why);
    encode_fail(e, why);
}

/* ---- AttributeValues ---- */

static void encode_av(encoder *e, int idx, int depth);

/* Opens {"<descriptor>": ; the value follows, then CLOSE_MAP. */
static void open_av(encoder *e, enum dl_av_type type)
{
    const char *name = dl_av_descriptor_name(type);
    OPEN_MAP(e);
    put_checked(e, name, strlen(name));
}

/* {"name": AttributeValue, ...}: an item, or the inside of an M */
static void encode_av_members(encoder *e, int idx, int depth)
{
    lua_State *L = e->L;
    const char *why;
    OPEN_MAP(e);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int value = lua_gettop(L);
        const char *name;
        size_t len;
        if (!dl_av_check_name(L, idx, value - 1, &name, &len, &why))
            encode_fail(e, why);
        put_checked(e, name, len);
        dl_json_path_push_key(&e->path, name, len);
        encode_av(e, value, depth);
        dl_json_path_pop(&e->path);
        lua_pop(L, 1);
    }
    CLOSE_MAP(e);
}

static void encode_av_list(encoder *e, int idx, lua_Integer n, int depth)
{
    lua_State *L = e->L;
    open_av(e, DL_AV_L);
    OPEN_ARRAY(e);
    for (lua_Integer i = 1; i <= n; i++) {
        dl_json_path_push_index(&e->path, i);
        lua_rawgeti(L, idx, (int)i);
        encode_av(e, lua_gettop(L), depth);
        lua_pop(L, 1);
        dl_json_path_pop(&e->path);
    }
    CLOSE_ARRAY(e);
    CLOSE_MAP(e);
}

/* Members were checked by dl_av_classify. */
static void encode_set(encoder *e, int idx, enum dl_av_type type, lua_Integer n)
{
    lua_State *L = e->L;
    open_av(e, type);
    OPEN_ARRAY(e);
    for (lua_Integer i = 1; i <= n; i++) {
        size_t len;
        char text[DL_NUMBER_TEXT_MAX];
        lua_rawgeti(L, idx, (int)i);
        if (type == DL_AV_SS) {
            const char *s = lua_tolstring(L, -1, &len);
            put_checked(e, s, len);
        } else if (type == DL_AV_NS && lua_type(L, -1) == LUA_TTABLE) {
            const char *why, *s;
            dl_number_mark_text(L, lua_gettop(L), &s, &len, &why); /* checked */
            put_checked(e, s, len);
        } else if (type == DL_AV_NS) {
            int tlen = dl_format_lua_number(L, -1, text);
            put_checked(e, text, (size_t)tlen);
        } else {
            lua_pushliteral(L, "value");
            lua_rawget(L, -2);
            const char *bytes = lua_tolstring(L, -1, &len);
            put_base64(e, bytes, len);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    CLOSE_ARRAY(e);
    CLOSE_MAP(e);
}

static void check_av_depth(encoder *e, int depth)
{
    if (depth >= DL_AV_MAX_DEPTH)
        encode_fail(e, "nested deeper than 32 levels (a cycle?)");
    check_room(e);
}

static void encode_av(encoder *e, int idx, int depth)
{
    dl_av av;
    const char *why = NULL;
    enum dl_av_type type = dl_av_classify(e->L, idx, &e->marks, &av, &why);
    switch (type) {
    case DL_AV_S:
    case DL_AV_N: /* the number's text, as DynamoDB wants it: a string */
        open_av(e, type);
        put_checked(e, av.bytes, av.len);
        CLOSE_MAP(e);
        break;
    case DL_AV_B:
        open_av(e, type);
        put_base64(e, av.bytes, av.len);
        CLOSE_MAP(e);
        break;
    case DL_AV_BOOL:
    case DL_AV_NULL: /* {"NULL": true} */
        open_av(e, type);
        check_gen(e, yajl_gen_bool(e->gen, type == DL_AV_NULL || lua_toboolean(e->L, idx)));
        CLOSE_MAP(e);
        break;
    case DL_AV_M:
        check_av_depth(e, depth);
        open_av(e, type);
        encode_av_members(e, idx, depth + 1);
        CLOSE_MAP(e);
        break;
    case DL_AV_L:
        check_av_depth(e, depth);
        encode_av_list(e, idx, av.n, depth + 1);
        break;
    case DL_AV_SS:
    case DL_AV_NS:
    case DL_AV_BS:
        encode_set(e, idx, type, av.n);
        break;
    default:
        if (av.bad > 0)
            dl_json_path_push_index(&e->path, av.bad);
        encode_fail(e, why);
    }
}

static void encode_attribute_map(encoder *e, int idx)
{
    e->typed++;
    encode_av_members(e, idx, 0);
    e->typed--;
}

/* ---- plain JSON ---- */

/* A plain table's depth is the number of containers open around it
 * (e->open): every enclosing plain table opened exactly one. */

static void encode_value(encoder *e, int idx);

static void encode_array(encoder *e, int idx, lua_Integer n)
{
    lua_State *L = e->L;
    OPEN_ARRAY(e);
    for (lua_Integer i = 1; i <= n; i++) {
        dl_json_path_push_index(&e->path, i);
        lua_rawgeti(L, idx, (int)i);
        encode_value(e, lua_gettop(L));
        lua_pop(L, 1);
        dl_json_path_pop(&e->path);
    }
    CLOSE_ARRAY(e);
}

static void encode_object(encoder *e, int idx)
{
    lua_State *L = e->L;
    OPEN_MAP(e);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            fail_on_key(e, idx);
        size_t klen;
        const char *key = lua_tolstring(L, -2, &klen);
        dl_json_path_push_key(&e->path, key, klen);
        put_string(e, key, klen, "key is not valid UTF-8");
        encode_value(e, lua_gettop(L));
        dl_json_path_pop(&e->path);
        lua_pop(L, 1);
    }
    CLOSE_MAP(e);
}

static void encode_binary_text(encoder *e, int idx)
{
    dl_av av;
    const char *why = NULL;
    if (dl_av_classify(e->L, idx, &e->marks, &av, &why) != DL_AV_B)
        encode_fail(e, why);
    put_base64(e, av.bytes, av.len);
}

static void encode_table(encoder *e, int idx)
{
    lua_Integer n = 0;
    const char *why = NULL;
    /* Refused here, for any table, before yajl would refuse to open one:
     * deeper plain JSON is almost surely a cycle. */
    if (e->open >= JSON_MAX_ENCODE_DEPTH - 1) {
        lua_pushfstring(e->L, "nested deeper than %d levels (a cycle?)", JSON_MAX_ENCODE_DEPTH - 1);
        encode_fail(e, lua_tostring(e->L, -1));
    }
    check_room(e);
    enum dl_mark mark = dl_mark_of(e->L, idx, &e->marks);
    switch (mark) {
    case DL_MARK_ATTRIBUTE_MAP:
        encode_attribute_map(e, idx);
        return;
    case DL_MARK_BINARY:
        encode_binary_text(e, idx);
        return;
    case DL_MARK_NUMBER: {
        /* the number's own text, digit for digit */
        const char *text;
        size_t len;
        if (!dl_number_mark_text(e->L, idx, &text, &len, &why))
            encode_fail(e, why);
        check_gen(e, yajl_gen_number(e->gen, text, len));
        return;
    }
    default:
        break;
    }
    int marked = mark == DL_MARK_ARRAY || mark == DL_MARK_SET;
    switch (dl_table_shape(e->L, idx, marked, &n, &why)) {
    case DL_TABLE_ARRAY:
        encode_array(e, idx, n);
        break;
    case DL_TABLE_OBJECT:
        encode_object(e, idx);
        break;
    default:
        encode_fail(e, why);
    }
}

static void encode_value(encoder *e, int idx)
{
    lua_State *L = e->L;
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        put_string(e, s, len, NOT_UTF8);
        break;
    }
    case LUA_TNUMBER: {
        /* our own text (see dl_format_lua_number), which yajl copies as is */
        char text[DL_NUMBER_TEXT_MAX];
        int n = dl_format_lua_number(L, idx, text);
        if (n < 0)
            encode_fail(e, "NaN and infinity cannot be encoded");
        check_gen(e, yajl_gen_number(e->gen, text, (size_t)n));
        break;
    }
    case LUA_TBOOLEAN:
        check_gen(e, yajl_gen_bool(e->gen, lua_toboolean(L, idx)));
        break;
    case LUA_TTABLE:
        encode_table(e, idx);
        break;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) {
            check_gen(e, yajl_gen_null(e->gen));
            break;
        }
        /* fall through */
    default:
        lua_pushfstring(L, "cannot encode a %s", luaL_typename(L, idx));
        encode_fail(e, lua_tostring(L, -1));
    }
}

/* json_encode(value) -> text; raises on values JSON (or DynamoDB, inside
 * attribute maps) cannot hold, naming where. The encoder, its generator and
 * its buffers are kept between calls (upvalue 1); a call that finds it
 * busy, because a finalizer encodes in the middle of another encode, makes
 * its own. */
static int l_json_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    encoder *e = lua_touserdata(L, lua_upvalueindex(1));
    if (e->busy)
        e = new_encoder(L);
    e->busy = 1;
    e->L = L;
    e->typed = 0;
    e->open = 0;
    /* The last document may have been left half-written by an error.
     * yajl_gen_reset forgets its state; yajl_gen_clear is not needed, as
     * yajl keeps no text of its own when it prints through a callback. */
    yajl_gen_reset(e->gen, NULL);
    dl_buf_reset(&e->out);
    dl_json_path_init(&e->path, "value");
    dl_marks_push(L, &e->marks);
    encode_value(e, 1);
    lua_pushlstring(L, e->out.data ? e->out.data : "", e->out.len);
    encode_done(e);
    return 1;
}

/* json_encode_safe(value) -> text | nil, "invalid_argument", message:
 * json_encode (upvalue 1) returning the refusal instead of raising it, as
 * cjson.safe does, for callers to whom the value is input rather than a
 * programming error (a request's parameters). A call without a value still
 * raises. Whatever json_encode raised is the message: the encoder has reset
 * itself and let go of its large buffers before raising (encode_done). */
static int l_json_encode_safe(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    if (lua_pcall(L, 1, 1, 0) == 0)
        return 1;
    const char *message = lua_tostring(L, -1);
    return dl_push_failure(L, "invalid_argument", message ? message : "the value cannot be encoded");
}

static void register_gc(lua_State *L, const char *name, lua_CFunction gc)
{
    luaL_newmetatable(L, name);
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}

void dl_open_json(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "json_is_object", l_json_is_object },
        { NULL, NULL },
    };
    register_gc(L, PARSER_MT, decoder_gc);
    register_gc(L, ENCODER_MT, encoder_gc);
    luaL_setfuncs(L, funcs, 0);
    new_decoder(L);
    lua_pushcclosure(L, l_json_decode, 1);
    lua_setfield(L, -2, "json_decode");
    new_encoder(L);
    lua_pushcclosure(L, l_json_encode, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "json_encode");
    lua_pushcclosure(L, l_json_encode_safe, 1);
    lua_setfield(L, -2, "json_encode_safe");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
}
