/* DynamoDB AttributeValues as Lua tables.
 *
 * Requests and responses never go through these tables: json_encode and
 * json_decode (lua_json.c) write and read the typed JSON directly. The
 * functions here serve users and stream records that arrive as Lua tables
 * (the Lambda event shape): marshal/unmarshal, their item forms, the item
 * size DynamoDB bills, and number validation. All walkers share the
 * classification of lua_jsonutil.c and the marks of lua_marks.c, so every
 * path agrees on what is storable.
 *
 * marshal* and item_size raise on values DynamoDB cannot hold (a programming
 * error, with the path of the value); unmarshal* return nil, code, message
 * for malformed input, which comes from outside. */
#include "base64.h"
#include "dynlog.h"
#include "lua_jsonutil.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define WALKER_MT "dynlog.marshal_walker"
#define BASE64_INPUT_MAX ((size_t)INT_MAX / 4 * 3)
/* Data written by DynamoDB is at most 32 levels deep, however one counts;
 * the margin keeps unmarshal from refusing what another SDK stored, while
 * still bounding the C recursion. */
#define UNMARSHAL_MAX_DEPTH (2 * DL_AV_MAX_DEPTH)
#define NAME_SHOWN_MAX 40

/* One walk's state, in userdata so that the scratch buffer is freed even
 * when the walk raises. */
typedef struct {
    lua_State *L;
    dl_marks marks;
    dl_buf scratch; /* base64 either way */
    enum dl_numbers numbers;
    const char *why; /* unmarshal: the failure */
    char message[160];
    dl_json_path path;
} walker;

static int walker_gc(lua_State *L)
{
    walker *w = luaL_checkudata(L, 1, WALKER_MT);
    dl_buf_free(&w->scratch);
    return 0;
}

/* Pushes the walker and the marks (6 slots). */
static walker *new_walker(lua_State *L, const char *root)
{
    walker *w = lua_newuserdata(L, sizeof *w);
    dl_buf_init(&w->scratch);
    luaL_setmetatable(L, WALKER_MT);
    w->L = L;
    w->numbers = DL_NUMBERS_NUMBER;
    w->why = NULL;
    dl_json_path_init(&w->path, root);
    dl_marks_push(L, &w->marks);
    return w;
}

static void walk_fail(walker *w, const char *why)
{
    dl_json_path_error(w->L, &w->path, why);
}

static void check_room(walker *w)
{
    if (!lua_checkstack(w->L, 8))
        walk_fail(w, "nested too deeply for the Lua stack");
}

static void check_depth(walker *w, int depth)
{
    if (depth >= DL_AV_MAX_DEPTH)
        walk_fail(w, "nested deeper than 32 levels (a cycle?)");
    check_room(w);
}

static void push_base64(walker *w, const char *bytes, size_t len)
{
    if (len > BASE64_INPUT_MAX)
        walk_fail(w, "binary is too large to encode");
    dl_buf_reset(&w->scratch);
    if (dl_base64_encode(&w->scratch, bytes, len) != 0)
        luaL_error(w->L, "dynlog.core: out of memory");
    lua_pushlstring(w->L, w->scratch.data ? w->scratch.data : "", w->scratch.len);
}

/* A plain value's classification, raising when DynamoDB cannot hold it. */
static enum dl_av_type classify_or_fail(walker *w, int idx, dl_av *av)
{
    const char *why = NULL;
    enum dl_av_type type = dl_av_classify(w->L, idx, &w->marks, av, &why);
    if (type == DL_AV_NONE) {
        if (av->bad > 0)
            dl_json_path_push_index(&w->path, av->bad);
        walk_fail(w, why);
    }
    return type;
}

/* Calls visit(w, value index, depth) for each member of the map at idx,
 * with the name checked and on the path. */
static void each_member(walker *w, int idx, int depth, void (*visit)(walker *, int, int, void *),
                        void *ctx)
{
    lua_State *L = w->L;
    const char *why;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int value = lua_gettop(L);
        const char *name;
        size_t len;
        if (!dl_av_check_name(L, idx, value - 1, &name, &len, &why))
            walk_fail(w, why);
        dl_json_path_push_key(&w->path, name, len);
        visit(w, value, depth, ctx);
        dl_json_path_pop(&w->path);
        lua_settop(L, value - 1);
    }
}

/* ==== marshal: plain -> AttributeValue tables ========================= */

static void push_av(walker *w, int idx, int depth);

/* visit: result table at ctx's index gets name = AttributeValue */
static void marshal_member(walker *w, int value, int depth, void *ctx)
{
    int result = *(int *)ctx;
    push_av(w, value, depth);
    lua_pushvalue(w->L, value - 1);
    lua_insert(w->L, -2);
    lua_rawset(w->L, result);
}

/* Pushes { name = AttributeValue, ... } for the map at idx. */
static void push_av_map(walker *w, int idx, int depth)
{
    lua_newtable(w->L);
    int result = lua_gettop(w->L);
    each_member(w, idx, depth, marshal_member, &result);
}

static void push_marked_array(walker *w, lua_Integer n)
{
    lua_createtable(w->L, n < INT_MAX ? (int)n : 0, 0);
    lua_pushvalue(w->L, w->marks.mt[DL_MARK_ARRAY]);
    lua_setmetatable(w->L, -2);
}

static void push_av_list(walker *w, int idx, lua_Integer n, int depth)
{
    lua_State *L = w->L;
    push_marked_array(w, n);
    for (lua_Integer i = 1; i <= n; i++) {
        dl_json_path_push_index(&w->path, i);
        lua_rawgeti(L, idx, (int)i);
        push_av(w, lua_gettop(L), depth);
        lua_remove(L, -2);
        lua_rawseti(L, -2, (int)i);
        dl_json_path_pop(&w->path);
    }
}

/* Members were checked by dl_av_classify. */
static void push_set_members(walker *w, int idx, lua_Integer n)
{
    lua_State *L = w->L;
    push_marked_array(w, n);
    for (lua_Integer i = 1; i <= n; i++) {
        dl_av member;
        lua_rawgeti(L, idx, (int)i);
        switch (classify_or_fail(w, lua_gettop(L), &member)) {
        case DL_AV_S:
            break; /* the string itself */
        case DL_AV_N:
            lua_pushlstring(L, member.bytes, member.len);
            lua_remove(L, -2);
            break;
        default:
            push_base64(w, member.bytes, member.len);
            lua_remove(L, -2);
        }
        lua_rawseti(L, -2, (int)i);
    }
}

static void push_av(walker *w, int idx, int depth)
{
    lua_State *L = w->L;
    dl_av av;
    enum dl_av_type type = classify_or_fail(w, idx, &av);
    lua_createtable(L, 0, 1);
    switch (type) {
    case DL_AV_S:
        lua_pushvalue(L, idx);
        break;
    case DL_AV_N:
        lua_pushlstring(L, av.bytes, av.len);
        break;
    case DL_AV_B:
        push_base64(w, av.bytes, av.len);
        break;
    case DL_AV_BOOL:
        lua_pushboolean(L, lua_toboolean(L, idx));
        break;
    case DL_AV_NULL:
        lua_pushboolean(L, 1);
        break;
    case DL_AV_M:
        check_depth(w, depth);
        push_av_map(w, idx, depth + 1);
        break;
    case DL_AV_L:
        check_depth(w, depth);
        push_av_list(w, idx, av.n, depth + 1);
        break;
    default:
        push_set_members(w, idx, av.n);
    }
    lua_setfield(L, -2, dl_av_descriptor_name(type));
}

/* marshal(v) -> AttributeValue table; raises on values DynamoDB cannot hold */
static int l_marshal(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    walker *w = new_walker(L, "value");
    push_av(w, 1, 0);
    return 1;
}

/* marshal_item(t) -> { name = AttributeValue, ... } */
static int l_marshal_item(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    walker *w = new_walker(L, "Item");
    check_room(w);
    push_av_map(w, 1, 0);
    return 1;
}

/* ==== unmarshal: AttributeValue tables -> plain ======================= */

static int refuse(walker *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->message, sizeof w->message, fmt, ap);
    va_end(ap);
    w->why = w->message;
    return 0;
}

static int unmarshal_value(walker *w, int idx, int depth);

static int unmarshal_string(walker *w, int v)
{
    size_t len;
    const char *s = lua_tolstring(w->L, v, &len);
    if (!dl_utf8_valid(s, len))
        return refuse(w, "S is not valid UTF-8");
    lua_pushvalue(w->L, v);
    return 1;
}

static int unmarshal_number(walker *w, int v)
{
    size_t len;
    const char *why;
    const char *s = lua_tolstring(w->L, v, &len);
    if (dl_push_av_number(w->L, s, len, w->numbers, &w->marks, &why) == 0)
        return 1;
    return refuse(w, "N \"%.*s\" is not a DynamoDB number: %s",
                  len > NAME_SHOWN_MAX ? NAME_SHOWN_MAX : (int)len, s, why);
}

/* Decodes base64 into the scratch buffer. */
static int decode_base64(walker *w, int v)
{
    size_t len;
    const char *s = lua_tolstring(w->L, v, &len);
    dl_buf_reset(&w->scratch);
    int rc = dl_base64_decode(&w->scratch, s, len);
    if (rc == -2)
        return refuse(w, "a binary AttributeValue is not valid base64");
    if (rc != 0)
        luaL_error(w->L, "dynlog.core: out of memory");
    return 1;
}

static const char *scratch_bytes(const walker *w)
{
    return w->scratch.data ? w->scratch.data : "";
}

static int unmarshal_binary(walker *w, int v)
{
    if (!decode_base64(w, v))
        return 0;
    dl_push_binary(w->L, &w->marks, scratch_bytes(w), w->scratch.len);
    return 1;
}

static int unmarshal_map(walker *w, int v, int depth)
{
    lua_State *L = w->L;
    lua_newtable(L);
    int result = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, v)) {
        int value = lua_gettop(L);
        if (lua_type(L, value - 1) != LUA_TSTRING)
            return refuse(w, "M keys must be attribute names (strings)");
        size_t len;
        const char *name = lua_tolstring(L, value - 1, &len);
        dl_json_path_push_key(&w->path, name, len);
        if (!unmarshal_value(w, value, depth))
            return 0;
        dl_json_path_pop(&w->path);
        lua_pushvalue(L, value - 1);
        lua_insert(L, -2);
        lua_rawset(L, result);
        lua_settop(L, value - 1);
    }
    return 1;
}

/* The length of the sequence at v: an L or a set, as decoded JSON arrays
 * arrive (marked or not; an empty one may be an empty table). */
static int sequence_length(walker *w, int v, lua_Integer *n)
{
    const char *why = NULL;
    int marked = dl_mark_of(w->L, v, &w->marks) == DL_MARK_ARRAY;
    switch (dl_table_shape(w->L, v, marked, n, &why)) {
    case DL_TABLE_ARRAY:
        return 1;
    case DL_TABLE_OBJECT:
        lua_pushnil(w->L);
        if (lua_next(w->L, v))
            return refuse(w, "expected a list, found a table with string keys");
        *n = 0;
        return 1;
    default:
        return refuse(w, "%s", why);
    }
}

static int unmarshal_list(walker *w, int v, int depth)
{
    lua_State *L = w->L;
    lua_Integer n;
    if (!sequence_length(w, v, &n))
        return 0;
    push_marked_array(w, n);
    for (lua_Integer i = 1; i <= n; i++) {
        dl_json_path_push_index(&w->path, i);
        lua_rawgeti(L, v, (int)i);
        if (!unmarshal_value(w, lua_gettop(L), depth))
            return 0;
        lua_remove(L, -2);
        lua_rawseti(L, -2, (int)i);
        dl_json_path_pop(&w->path);
    }
    return 1;
}

/* Pushes one set member (and, below it, the key that finds duplicates). */
static int unmarshal_member(walker *w, enum dl_av_type type, int member)
{
    lua_State *L = w->L;
    if (lua_type(L, member) != LUA_TSTRING)
        return refuse(w, "members of %s must be strings", dl_av_descriptor_name(type));
    switch (type) {
    case DL_AV_SS:
        if (!unmarshal_string(w, member))
            return 0;
        lua_pushvalue(L, -1);
        return 1;
    case DL_AV_NS:
        if (!unmarshal_number(w, member))
            return 0;
        lua_pushvalue(L, -1);
        return 1;
    default:
        if (!decode_base64(w, member))
            return 0;
        lua_pushlstring(L, scratch_bytes(w), w->scratch.len);
        dl_push_binary(L, &w->marks, scratch_bytes(w), w->scratch.len);
        return 1;
    }
}

static int unmarshal_set(walker *w, enum dl_av_type type, int v)
{
    lua_State *L = w->L;
    lua_Integer n;
    if (!sequence_length(w, v, &n))
        return 0;
    if (n == 0)
        return refuse(w, "%s is empty (DynamoDB has no empty sets)", dl_av_descriptor_name(type));
    lua_newtable(L);
    int seen = lua_gettop(L);
    lua_createtable(L, n < INT_MAX ? (int)n : 0, 0);
    lua_pushvalue(L, w->marks.mt[DL_MARK_SET]);
    lua_setmetatable(L, -2);
    for (lua_Integer i = 1; i <= n; i++) {
        dl_json_path_push_index(&w->path, i);
        lua_rawgeti(L, v, (int)i);
        if (!unmarshal_member(w, type, lua_gettop(L)))
            return 0;
        /* seen, set, raw member, key, member */
        lua_pushvalue(L, -2);
        lua_rawget(L, seen);
        if (!lua_isnil(L, -1))
            return refuse(w, "%s holds a duplicate member", dl_av_descriptor_name(type));
        lua_pop(L, 1);
        lua_rawseti(L, seen + 1, (int)i);
        lua_pushboolean(L, 1);
        lua_rawset(L, seen);
        lua_pop(L, 1);
        dl_json_path_pop(&w->path);
    }
    lua_remove(L, seen);
    return 1;
}

/* Pushes the plain value of the descriptor type whose value sits at v. */
static int unmarshal_typed(walker *w, enum dl_av_type type, int v, int depth)
{
    lua_State *L = w->L;
    int t = lua_type(L, v);
    int want = type == DL_AV_BOOL || type == DL_AV_NULL ? LUA_TBOOLEAN
               : type == DL_AV_S || type == DL_AV_N || type == DL_AV_B ? LUA_TSTRING
                                                                        : LUA_TTABLE;
    if (t != want)
        return refuse(w, "AttributeValue %s cannot hold a %s", dl_av_descriptor_name(type),
                      luaL_typename(L, v));
    switch (type) {
    case DL_AV_S:
        return unmarshal_string(w, v);
    case DL_AV_N:
        return unmarshal_number(w, v);
    case DL_AV_B:
        return unmarshal_binary(w, v);
    case DL_AV_BOOL:
        lua_pushboolean(L, lua_toboolean(L, v));
        return 1;
    case DL_AV_NULL:
        if (!lua_toboolean(L, v))
            return refuse(w, "NULL must be true");
        lua_pushlightuserdata(L, NULL);
        return 1;
    case DL_AV_M:
        return unmarshal_map(w, v, depth + 1);
    case DL_AV_L:
        return unmarshal_list(w, v, depth + 1);
    default:
        return unmarshal_set(w, type, v);
    }
}

/* Pushes the plain value of the AttributeValue table at idx; on failure
 * returns 0 with w->why set (and the stack left for the caller to reset). */
static int unmarshal_value(walker *w, int idx, int depth)
{
    lua_State *L = w->L;
    if (lua_type(L, idx) != LUA_TTABLE)
        return refuse(w, "an AttributeValue must be a table, found a %s", luaL_typename(L, idx));
    if (depth > UNMARSHAL_MAX_DEPTH)
        return refuse(w, "nested deeper than %d levels", UNMARSHAL_MAX_DEPTH);
    if (!lua_checkstack(L, 10))
        return refuse(w, "nested too deeply for the Lua stack");
    lua_pushnil(L);
    if (!lua_next(L, idx))
        return refuse(w, "AttributeValue has no type descriptor");
    size_t len = 0;
    const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &len) : "";
    enum dl_av_type type = dl_av_descriptor(key, len);
    if (type == DL_AV_NONE)
        return refuse(w, "unknown AttributeValue type descriptor \"%.*s\"",
                      len > NAME_SHOWN_MAX ? NAME_SHOWN_MAX : (int)len, key);
    lua_pushvalue(L, -2);
    if (lua_next(L, idx))
        return refuse(w, "AttributeValue has several type descriptors");
    int value = lua_gettop(L);
    if (!unmarshal_typed(w, type, value, depth))
        return 0;
    lua_replace(L, value - 1); /* key, value, result -> result, value */
    lua_pop(L, 1);
    return 1;
}

static int unmarshal_failure(walker *w, int base)
{
    lua_settop(w->L, base);
    lua_pushnil(w->L);
    lua_pushliteral(w->L, "invalid_argument");
    dl_json_path_push_message(w->L, &w->path, w->why);
    return 3;
}

static walker *new_unmarshal_walker(lua_State *L, const char *root)
{
    enum dl_numbers numbers = dl_check_numbers_arg(L, 2);
    lua_settop(L, 2);
    walker *w = new_walker(L, root);
    w->numbers = numbers;
    return w;
}

/* unmarshal(av [, numbers]) -> value | nil, "invalid_argument", message */
static int l_unmarshal(lua_State *L)
{
    luaL_checkany(L, 1);
    walker *w = new_unmarshal_walker(L, "value");
    int base = lua_gettop(L);
    if (!unmarshal_value(w, 1, 0))
        return unmarshal_failure(w, base);
    return 1;
}

/* unmarshal_item(t [, numbers]) -> plain table | nil, "invalid_argument", message */
static int l_unmarshal_item(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    walker *w = new_unmarshal_walker(L, "Item");
    int base = lua_gettop(L);
    if (!unmarshal_map(w, 1, 0))
        return unmarshal_failure(w, base);
    return 1;
}

/* ==== item size ======================================================== */

static size_t size_of(walker *w, int idx, int depth);

/* visit: adds 1 + name + value to the total at ctx (a map member) */
static void size_member(walker *w, int value, int depth, void *ctx)
{
    size_t len;
    lua_tolstring(w->L, value - 1, &len);
    *(size_t *)ctx += 1 + len + size_of(w, value, depth);
}

static size_t list_size(walker *w, int idx, lua_Integer n, int depth)
{
    size_t total = 3;
    for (lua_Integer i = 1; i <= n; i++) {
        dl_json_path_push_index(&w->path, i);
        lua_rawgeti(w->L, idx, (int)i);
        total += 1 + size_of(w, lua_gettop(w->L), depth);
        lua_pop(w->L, 1);
        dl_json_path_pop(&w->path);
    }
    return total;
}

/* A set is the sum of its members' sizes. */
static size_t set_size(walker *w, int idx, lua_Integer n)
{
    size_t total = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(w->L, idx, (int)i);
        total += size_of(w, lua_gettop(w->L), 0);
        lua_pop(w->L, 1);
    }
    return total;
}

/* The DynamoDB Developer Guide's item size rules (CapacityUnitCalculations). */
static size_t size_of(walker *w, int idx, int depth)
{
    dl_av av;
    switch (classify_or_fail(w, idx, &av)) {
    case DL_AV_S:
    case DL_AV_B:
        return av.len;
    case DL_AV_N: {
        dl_ddb_number number;
        dl_ddb_number_parse(av.bytes, av.len, &number); /* checked by classify */
        return dl_ddb_number_size(&number);
    }
    case DL_AV_BOOL:
    case DL_AV_NULL:
        return 1;
    case DL_AV_M: {
        size_t total = 3;
        check_depth(w, depth);
        each_member(w, idx, depth + 1, size_member, &total);
        return total;
    }
    case DL_AV_L:
        check_depth(w, depth);
        return list_size(w, idx, av.n, depth + 1);
    default:
        return set_size(w, idx, av.n);
    }
}

/* visit: adds name + value (a top-level attribute has no element byte) */
static void size_attribute(walker *w, int value, int depth, void *ctx)
{
    size_t len;
    lua_tolstring(w->L, value - 1, &len);
    *(size_t *)ctx += len + size_of(w, value, depth);
}

/* item_size(t) -> bytes DynamoDB counts for the item t (plain values);
 * raises on values DynamoDB cannot hold */
static int l_item_size(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    walker *w = new_walker(L, "Item");
    size_t total = 0;
    check_room(w);
    each_member(w, 1, 0, size_attribute, &total);
    lua_pushinteger(L, (lua_Integer)total);
    return 1;
}

/* ==== numbers ========================================================= */

/* valid_number(s) -> true | nil, "invalid_argument", message */
static int l_valid_number(lua_State *L)
{
    size_t len;
    luaL_checktype(L, 1, LUA_TSTRING);
    const char *s = lua_tolstring(L, 1, &len);
    dl_ddb_number number;
    dl_number_status st = dl_ddb_number_parse(s, len, &number);
    if (st == DL_NUMBER_OK) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushnil(L);
    lua_pushliteral(L, "invalid_argument");
    lua_pushfstring(L, "\"%s\" is not a DynamoDB number: %s",
                    len > NAME_SHOWN_MAX ? "(long text)" : s, dl_ddb_number_message(st));
    return 3;
}

void dl_open_marshal(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "marshal", l_marshal },
        { "marshal_item", l_marshal_item },
        { "unmarshal", l_unmarshal },
        { "unmarshal_item", l_unmarshal_item },
        { "item_size", l_item_size },
        { "valid_number", l_valid_number },
        { NULL, NULL },
    };
    luaL_newmetatable(L, WALKER_MT);
    lua_pushcfunction(L, walker_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_setfuncs(L, funcs, 0);
}
