#include "jsonutil.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dl_format_lua_number(lua_State *L, int idx, char out[DL_NUMBER_TEXT_MAX])
{
    if (lua_isinteger(L, idx))
        return snprintf(out, DL_NUMBER_TEXT_MAX, "%lld", (long long)lua_tointeger(L, idx));
    double v = (double)lua_tonumber(L, idx);
    if (isnan(v) || isinf(v))
        return -1;
    /* %.17g always round-trips; shorter forms are tried first because they
     * are what people expect to read (0.1, not 0.10000000000000001). */
    int n = 0;
    for (int digits = 15; digits <= 17; digits++) {
        n = snprintf(out, DL_NUMBER_TEXT_MAX, "%.*g", digits, v);
        if (strtod(out, NULL) == v)
            break;
    }
    return n;
}

static int is_integer_text(const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (text[i] == '.' || text[i] == 'e' || text[i] == 'E')
            return 0;
    return 1;
}

/* 2^53: above it a double no longer holds every integer. */
#define EXACT_DOUBLE_LIMIT 9007199254740992LL

/* On LuaJIT an integer a double cannot hold exactly comes back as its
 * decimal string, so that no digit is lost silently. */
int dl_push_json_number(lua_State *L, const char *text, size_t len)
{
    char small[64];
    char *copy = len < sizeof small ? small : malloc(len + 1);
    if (!copy)
        return -1;
    memcpy(copy, text, len);
    copy[len] = '\0';
    int rc = 0;
    char *end;
    if (is_integer_text(copy, len)) {
        errno = 0;
        long long v = strtoll(copy, &end, 10);
        int exact = errno == 0 && *end == '\0';
#if LUA_VERSION_NUM == 501
        if (!exact || v > EXACT_DOUBLE_LIMIT || v < -EXACT_DOUBLE_LIMIT) {
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
    if (*end != '\0')
        rc = -1;
    else
        lua_pushnumber(L, (lua_Number)d);
done:
    if (copy != small)
        free(copy);
    return rc;
}

static int has_metatable(lua_State *L, int idx, const char *name)
{
    if (!name || !lua_getmetatable(L, idx))
        return 0;
    luaL_getmetatable(L, name);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same;
}

enum dl_table_kind dl_classify_table(lua_State *L, int idx, const char *array_mt,
                                     lua_Integer *n, const char **why)
{
    idx = lua_absindex(L, idx);
    if (has_metatable(L, idx, array_mt)) {
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

int dl_json_path_error(lua_State *L, const dl_json_path *p, const char *what)
{
    luaL_Buffer b;
    int shown = p->depth < DL_JSON_PATH_MAX ? p->depth : DL_JSON_PATH_MAX;
    int first = shown > STEPS_SHOWN_MAX ? shown - STEPS_SHOWN_MAX : 0;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, what);
    luaL_addstring(&b, " at ");
    luaL_addstring(&b, p->root);
    if (first > 0)
        luaL_addstring(&b, "...");
    for (int i = first; i < shown; i++) {
        const dl_json_path_step *s = &p->steps[i];
        char num[32];
        if (s->key) {
            luaL_addchar(&b, '.');
            luaL_addlstring(&b, s->key, s->key_len < KEY_SHOWN_MAX ? s->key_len : KEY_SHOWN_MAX);
            if (s->key_len > KEY_SHOWN_MAX)
                luaL_addstring(&b, "...");
        } else {
            snprintf(num, sizeof num, "[%lld]", (long long)s->index);
            luaL_addstring(&b, num);
        }
    }
    luaL_pushresult(&b);
    return lua_error(L);
}
