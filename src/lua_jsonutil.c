/* The Lua side of the JSON and AttributeValue walkers: see lua_jsonutil.h. */
#include "lua_jsonutil.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- numbers --------------------------------------------------------- */

int dl_format_lua_number(lua_State *L, int idx, char out[DL_NUMBER_TEXT_MAX])
{
    /* LuaJIT counts -0.0 as integral, and "-0" would read back as the
     * integer 0: it is written as the double it is. */
    double v = (double)lua_tonumber(L, idx);
    if (lua_isinteger(L, idx) && !(v == 0 && signbit(v)))
        return dl_format_integer((long long)lua_tointeger(L, idx), out);
    return dl_format_double(v, out);
}

#define SHORT_NUMBER 64

/* The text needs a NUL for strtoll/strtod. Long texts are copied into a
 * Lua string rather than malloc'd memory, so that nothing leaks if a push
 * raises. On LuaJIT an integer a double cannot hold exactly comes back as
 * its decimal string, so that no digit is lost silently. */
int dl_push_json_number(lua_State *L, const char *text, size_t len)
{
    char small[SHORT_NUMBER];
    const char *copy = small;
    int long_copy = len >= sizeof small;
    if (long_copy) {
        lua_pushlstring(L, text, len);
        copy = lua_tostring(L, -1);
    } else {
        memcpy(small, text, len);
        small[len] = '\0';
    }
    int rc = 0;
    char *end;
    if (dl_number_text_is_integer(copy, len)) {
        errno = 0;
        long long v = strtoll(copy, &end, 10);
        int exact = errno == 0 && end != copy && *end == '\0';
#if LUA_VERSION_NUM == 501
        if (!exact || v > DL_EXACT_DOUBLE_LIMIT || v < -DL_EXACT_DOUBLE_LIMIT) {
            lua_pushlstring(L, copy, len);
            goto done;
        }
#endif
        if (exact) {
            lua_pushinteger(L, (lua_Integer)v);
            goto done;
        }
    }
    double d = strtod(copy, &end);
    if (end == copy || *end != '\0')
        rc = -1;
    else
        lua_pushnumber(L, (lua_Number)d);
done:
    if (long_copy) {
        if (rc == 0)
            lua_remove(L, -2);
        else
            lua_pop(L, 1);
    }
    return rc;
}

/* ---- table shape ----------------------------------------------------- */

enum dl_table_kind dl_classify_table(lua_State *L, int idx, int marked, lua_Integer *n,
                                     const char **why)
{
    idx = lua_absindex(L, idx);
    if (marked) {
        *n = (lua_Integer)lua_rawlen(L, idx);
        return DL_TABLE_ARRAY;
    }
    lua_Integer count = 0, max = 0, strings = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        count++;
        if (lua_type(L, -1) == LUA_TSTRING) {
            strings++;
        } else if (lua_type(L, -1) == LUA_TNUMBER && lua_isinteger(L, -1) &&
                   lua_tointeger(L, -1) > 0) {
            lua_Integer k = lua_tointeger(L, -1);
            if (k > max)
                max = k;
        } else {
            *why = lua_type(L, -1) == LUA_TNUMBER
                       ? "table has a number key that is not a positive integer"
                       : "table has a key that is neither a string nor a number";
            lua_pop(L, 1);
            return DL_TABLE_INVALID;
        }
    }
    if (strings == count)
        return DL_TABLE_OBJECT;
    if (strings > 0) {
        *why = "table mixes string keys and array positions";
        return DL_TABLE_INVALID;
    }
    if (max != count) {
        *why = "array has holes (positions 1..n must all be set)";
        return DL_TABLE_INVALID;
    }
    *n = count;
    return DL_TABLE_ARRAY;
}

enum dl_table_kind dl_table_shape(lua_State *L, int idx, int marked, lua_Integer *n,
                                  const char **why)
{
    idx = lua_absindex(L, idx);
    lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
    if (marked) {
        *n = len;
        return DL_TABLE_ARRAY;
    }
    if (len == 0)
        return DL_TABLE_OBJECT;
    /* A sequence has exactly #t keys; count them, stopping at one more. */
    lua_Integer count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (++count > len) {
            lua_pop(L, 1);
            break;
        }
    }
    if (count == len) {
        *n = len;
        return DL_TABLE_ARRAY;
    }
    return dl_classify_table(L, idx, 0, n, why);
}

/* ---- AttributeValues ------------------------------------------------- */

static const char *cannot_store(int type)
{
    switch (type) {
    case LUA_TNIL:
        return "nil cannot be stored in DynamoDB (use core.null)";
    case LUA_TFUNCTION:
        return "a function cannot be stored in DynamoDB";
    case LUA_TTHREAD:
        return "a thread cannot be stored in DynamoDB";
    default:
        return "a userdata cannot be stored in DynamoDB";
    }
}

static int classify_number(lua_State *L, int idx, dl_av *av, const char **why)
{
    int len = dl_format_lua_number(L, idx, av->text);
    if (len < 0) {
        lua_Number v = lua_tonumber(L, idx);
        *why = v != v ? "NaN cannot be stored in DynamoDB"
                      : "infinity cannot be stored in DynamoDB";
        return 0;
    }
    av->bytes = av->text;
    av->len = (size_t)len;
    if (lua_isinteger(L, idx))
        return 1; /* 19 digits at most: always within DynamoDB's limits */
    /* The range is checked on the text DynamoDB will read, so that the
     * check and DynamoDB agree exactly. */
    dl_ddb_number number;
    dl_number_status st = dl_ddb_number_parse(av->text, av->len, &number);
    if (st == DL_NUMBER_OK)
        return 1;
    *why = st == DL_NUMBER_TOO_SMALL
               ? "number is too close to zero for DynamoDB (smallest magnitude 1E-130)"
               : "number is too large for DynamoDB (largest magnitude 9.99E+125)";
    return 0;
}

static int classify_string(lua_State *L, int idx, dl_av *av, const char **why)
{
    av->bytes = lua_tolstring(L, idx, &av->len);
    if (dl_utf8_valid(av->bytes, av->len))
        return 1;
    *why = "string is not valid UTF-8 (use dynlog.binary for bytes)";
    return 0;
}

/* Leaves nothing on the stack: the binary table keeps its value alive. */
static int classify_binary(lua_State *L, int idx, dl_av *av, const char **why)
{
    lua_pushliteral(L, "value");
    lua_rawget(L, idx);
    int ok = lua_type(L, -1) == LUA_TSTRING;
    if (ok)
        av->bytes = lua_tolstring(L, -1, &av->len);
    else
        *why = "a binary's value must be a string";
    lua_pop(L, 1);
    return ok;
}

/* The type of one set member, checked; DL_AV_NONE with *why if refused. */
static enum dl_av_type classify_member(lua_State *L, int idx, const dl_marks *m,
                                       const char **why)
{
    dl_av member;
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        return classify_string(L, idx, &member, why) ? DL_AV_SS : DL_AV_NONE;
    case LUA_TNUMBER:
        return classify_number(L, idx, &member, why) ? DL_AV_NS : DL_AV_NONE;
    case LUA_TTABLE:
        switch (dl_mark_of(L, idx, m)) {
        case DL_MARK_BINARY:
            return classify_binary(L, idx, &member, why) ? DL_AV_BS : DL_AV_NONE;
        case DL_MARK_NUMBER:
            return dl_number_mark_text(L, idx, &member.bytes, &member.len, why) ? DL_AV_NS
                                                                                : DL_AV_NONE;
        default:
            break;
        }
        /* fall through */
    default:
        *why = "set members must be strings, numbers or binaries";
        return DL_AV_NONE;
    }
}

/* Sets are checked whole before anything is written, so that walkers can
 * emit members without checks of their own. Duplicates are found through
 * a scratch table keyed by member (1 and 1.0 are one key, as they are one
 * number); binaries are keyed by their bytes. */
static enum dl_av_type check_members(lua_State *L, int idx, const dl_marks *m, dl_av *av,
                                     const char **why)
{
    enum dl_av_type type = DL_AV_NONE;
    int seen = lua_gettop(L) + 1;
    lua_createtable(L, 0, av->n < 1024 ? (int)av->n : 1024);
    for (lua_Integer i = 1; i <= av->n; i++) {
        av->bad = i;
        lua_rawgeti(L, idx, (int)i);
        enum dl_av_type t = classify_member(L, seen + 1, m, why);
        if (t == DL_AV_NONE)
            goto refused;
        if (type != DL_AV_NONE && t != type) {
            *why = "set mixes member types (a set holds only strings, only numbers or only binaries)";
            goto refused;
        }
        type = t;
        if (t == DL_AV_BS || lua_type(L, seen + 1) == LUA_TTABLE) {
            /* a binary by its bytes, a number's mark by its text */
            lua_pushstring(L, t == DL_AV_BS ? "value" : "text");
            lua_rawget(L, seen + 1);
            lua_replace(L, seen + 1);
        }
        lua_pushvalue(L, seen + 1);
        lua_rawget(L, seen);
        if (!lua_isnil(L, -1)) {
            *why = "set holds a duplicate member";
            goto refused;
        }
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
        lua_rawset(L, seen);
    }
    av->bad = 0;
    lua_settop(L, seen - 1);
    return type;
refused:
    lua_settop(L, seen - 1);
    return DL_AV_NONE;
}

static enum dl_av_type classify_set(lua_State *L, int idx, const dl_marks *m, dl_av *av,
                                    const char **why)
{
    av->bad = 0;
    switch (dl_classify_table(L, idx, 0, &av->n, why)) {
    case DL_TABLE_INVALID:
        return DL_AV_NONE;
    case DL_TABLE_OBJECT:
        lua_pushnil(L);
        if (lua_next(L, idx)) {
            lua_pop(L, 2);
            *why = "a set must be a sequence of members, not a map";
        } else {
            *why = "set is empty (DynamoDB has no empty sets)";
        }
        return DL_AV_NONE;
    default:
        break;
    }
    if (av->n > INT_MAX) {
        *why = "set is too large";
        return DL_AV_NONE;
    }
    if (!lua_checkstack(L, 6)) {
        *why = "no room on the Lua stack";
        return DL_AV_NONE;
    }
    return check_members(L, idx, m, av, why);
}

static enum dl_av_type classify_table(lua_State *L, int idx, const dl_marks *m, dl_av *av,
                                      const char **why)
{
    switch (dl_mark_of(L, idx, m)) {
    case DL_MARK_BINARY:
        return classify_binary(L, idx, av, why) ? DL_AV_B : DL_AV_NONE;
    case DL_MARK_SET:
        return classify_set(L, idx, m, av, why);
    case DL_MARK_ATTRIBUTE_MAP:
        return DL_AV_M;
    case DL_MARK_NUMBER:
        return dl_number_mark_text(L, idx, &av->bytes, &av->len, why) ? DL_AV_N : DL_AV_NONE;
    case DL_MARK_ARRAY:
        av->n = (lua_Integer)lua_rawlen(L, idx);
        return DL_AV_L;
    default:
        break;
    }
    switch (dl_table_shape(L, idx, 0, &av->n, why)) {
    case DL_TABLE_ARRAY:
        return DL_AV_L;
    case DL_TABLE_OBJECT:
        return DL_AV_M;
    default:
        return DL_AV_NONE;
    }
}

enum dl_av_type dl_av_classify(lua_State *L, int idx, const dl_marks *m, dl_av *av,
                               const char **why)
{
    idx = lua_absindex(L, idx);
    av->bad = 0;
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        return classify_string(L, idx, av, why) ? DL_AV_S : DL_AV_NONE;
    case LUA_TNUMBER:
        return classify_number(L, idx, av, why) ? DL_AV_N : DL_AV_NONE;
    case LUA_TBOOLEAN:
        return DL_AV_BOOL;
    case LUA_TTABLE:
        return classify_table(L, idx, m, av, why);
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL)
            return DL_AV_NULL;
        /* fall through */
    default:
        *why = cannot_store(lua_type(L, idx));
        return DL_AV_NONE;
    }
}

int dl_av_check_name(lua_State *L, int table_idx, int key_idx, const char **name, size_t *len,
                     const char **why)
{
    if (lua_type(L, key_idx) != LUA_TSTRING) {
        lua_Integer n;
        if (dl_classify_table(L, table_idx, 0, &n, why) != DL_TABLE_INVALID)
            *why = "attribute names must be strings";
        return 0;
    }
    *name = lua_tolstring(L, key_idx, len);
    if (*len == 0) {
        *why = "attribute name is empty";
        return 0;
    }
    if (!dl_utf8_valid(*name, *len)) {
        *why = "attribute name is not valid UTF-8";
        return 0;
    }
    return 1;
}

enum dl_av_type dl_av_descriptor(const char *s, size_t len)
{
    switch (len) {
    case 1:
        switch (s[0]) {
        case 'S': return DL_AV_S;
        case 'N': return DL_AV_N;
        case 'B': return DL_AV_B;
        case 'M': return DL_AV_M;
        case 'L': return DL_AV_L;
        default: return DL_AV_NONE;
        }
    case 2:
        if (s[1] != 'S')
            return DL_AV_NONE;
        return s[0] == 'S' ? DL_AV_SS : s[0] == 'N' ? DL_AV_NS : s[0] == 'B' ? DL_AV_BS : DL_AV_NONE;
    case 4:
        if (memcmp(s, "BOOL", 4) == 0)
            return DL_AV_BOOL;
        return memcmp(s, "NULL", 4) == 0 ? DL_AV_NULL : DL_AV_NONE;
    default:
        return DL_AV_NONE;
    }
}

const char *dl_av_descriptor_name(enum dl_av_type t)
{
    static const char *const names[] = { "?", "S", "N", "B", "BOOL", "NULL",
                                         "M", "L", "SS", "NS", "BS" };
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

enum dl_numbers dl_check_numbers_arg(lua_State *L, int arg)
{
    if (lua_isnoneornil(L, arg))
        return DL_NUMBERS_NUMBER;
    const char *mode = luaL_checkstring(L, arg);
    if (strcmp(mode, "number") == 0)
        return DL_NUMBERS_NUMBER;
    if (strcmp(mode, "string") == 0)
        return DL_NUMBERS_STRING;
    if (strcmp(mode, "exact") != 0)
        luaL_argerror(L, arg, "numbers must be \"number\", \"string\" or \"exact\"");
    return DL_NUMBERS_EXACT;
}

#define SHORT_NUMBER_TEXT 64

/* numbers = "exact": an integer that a Lua integer (on LuaJIT, a double)
 * holds exactly, or a number whose shortest double text is the same
 * number, comes back as a Lua number; anything else as a number mark. */
static void push_exact_number(lua_State *L, const char *text, size_t len, const dl_marks *m)
{
    char small[SHORT_NUMBER_TEXT];
    if (len >= sizeof small) { /* leading or trailing zeros: rare, keep the text */
        dl_push_number_mark(L, m, text, len);
        return;
    }
    memcpy(small, text, len);
    small[len] = '\0';
    char *end;
    if (dl_number_text_is_integer(small, len)) {
        errno = 0;
        long long v = strtoll(small, &end, 10);
        int exact = errno == 0 && end != small && *end == '\0';
#if LUA_VERSION_NUM == 501
        exact = exact && v <= DL_EXACT_DOUBLE_LIMIT && v >= -DL_EXACT_DOUBLE_LIMIT;
#endif
        if (exact)
            lua_pushinteger(L, (lua_Integer)v);
        else
            dl_push_number_mark(L, m, text, len);
        return;
    }
    double d = strtod(small, &end);
    char shortest[DL_NUMBER_TEXT_MAX];
    lua_pushnumber(L, (lua_Number)d);
    int n = dl_format_lua_number(L, -1, shortest);
    if (n >= 0 && dl_same_ddb_number(text, len, shortest, (size_t)n))
        return;
    lua_pop(L, 1);
    dl_push_number_mark(L, m, text, len);
}

int dl_push_av_number(lua_State *L, const char *text, size_t len, enum dl_numbers mode,
                      const dl_marks *m, const char **why)
{
    dl_ddb_number number;
    dl_number_status st = dl_ddb_number_parse(text, len, &number);
    if (st != DL_NUMBER_OK) {
        *why = dl_ddb_number_message(st);
        return -1;
    }
    if (mode == DL_NUMBERS_STRING) {
        lua_pushlstring(L, text, len);
        return 0;
    }
    if (mode == DL_NUMBERS_EXACT) {
        push_exact_number(L, text, len, m);
        return 0;
    }
    if (dl_push_json_number(L, text, len) == 0)
        return 0;
    *why = "not a decimal number";
    return -1;
}

/* ---- paths ----------------------------------------------------------- */

void dl_json_path_init(dl_json_path *p, const char *root)
{
    p->root = root;
    p->depth = 0;
}

void dl_json_path_push_key(dl_json_path *p, const char *key, size_t len)
{
    if (p->depth <= DL_JSON_PATH_MAX) {
        p->steps[p->depth].key = key;
        p->steps[p->depth].key_len = len;
    }
    p->depth++;
}

void dl_json_path_push_index(dl_json_path *p, lua_Integer index)
{
    if (p->depth <= DL_JSON_PATH_MAX) {
        p->steps[p->depth].key = NULL;
        p->steps[p->depth].index = index;
    }
    p->depth++;
}

void dl_json_path_pop(dl_json_path *p)
{
    if (p->depth > 0)
        p->depth--;
}

/* Keys in messages are cut: a path is for finding the value, not a dump. */
#define KEY_SHOWN_MAX 40
#define STEPS_SHOWN_MAX 12

void dl_json_path_push_message(lua_State *L, const dl_json_path *p, const char *what)
{
    luaL_Buffer b;
    int shown = p->depth < DL_JSON_PATH_MAX ? p->depth : DL_JSON_PATH_MAX;
    int first = shown > STEPS_SHOWN_MAX ? shown - STEPS_SHOWN_MAX : 0;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, what);
    if (p->root[0] == '\0' && shown == 0) {
        luaL_pushresult(&b);
        return;
    }
    luaL_addstring(&b, " at ");
    luaL_addstring(&b, p->root);
    /* a key needs a dot after the root or a previous step, not first */
    int need_dot = p->root[0] != '\0';
    if (first > 0) {
        luaL_addstring(&b, "...");
        need_dot = 0;
    }
    for (int i = first; i < shown; i++) {
        const dl_json_path_step *s = &p->steps[i];
        char num[32];
        if (s->key) {
            if (need_dot)
                luaL_addchar(&b, '.');
            luaL_addlstring(&b, s->key, s->key_len < KEY_SHOWN_MAX ? s->key_len : KEY_SHOWN_MAX);
            if (s->key_len > KEY_SHOWN_MAX)
                luaL_addstring(&b, "...");
        } else {
            snprintf(num, sizeof num, "[%lld]", (long long)s->index);
            luaL_addstring(&b, num);
        }
        need_dot = 1;
    }
    luaL_pushresult(&b);
}

int dl_json_path_error(lua_State *L, const dl_json_path *p, const char *what)
{
    dl_json_path_push_message(L, p, what);
    return lua_error(L);
}
