/* The value marks (see lua_marks.h): one table, MARKS, names each mark's
 * metatable, its constructor and its metamethods; dl_open_marks registers
 * them all in one loop, and dl_marks_push pushes them in the same order. */
#include "dynlog.h"
#include "lua_marks.h"
#include "marshal.h"
#include "numtext.h"

#include <stdio.h>
#include <string.h>

/* Text longer than this is not quoted back in an error message. */
#define TEXT_SHOWN_MAX 40
#define SHORT_NUMBER_TEXT 64

/* ---- building marked values ------------------------------------------ */

/* Pushes { value = bytes } with the metatable at mt. */
static void push_binary(lua_State *L, int mt, const char *bytes, size_t len)
{
    lua_createtable(L, 0, 1);
    lua_pushlstring(L, bytes, len);
    lua_setfield(L, -2, "value");
    lua_pushvalue(L, mt);
    lua_setmetatable(L, -2);
}

/* Pushes { text = <JSON form of s> } with the metatable at mt (an absolute
 * index or an upvalue's pseudo-index). */
static void push_number(lua_State *L, int mt, const char *s, size_t len)
{
    char small[SHORT_NUMBER_TEXT];
    char *out = small;
    lua_createtable(L, 0, 1);
    if (len + 2 > sizeof small)
        out = lua_newuserdata(L, len + 2); /* collected, even if a push raises */
    size_t n = dl_number_json_text(s, len, out);
    lua_pushlstring(L, out, n);
    if (out != small)
        lua_remove(L, -2);
    lua_setfield(L, -2, "text");
    lua_pushvalue(L, mt);
    lua_setmetatable(L, -2);
}

/* ---- constructors: upvalue 1 is the mark's metatable ----------------- */

/* array([t]), attribute_map([t]) -> t, marked (a new table when t is nil) */
static int l_mark_table(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_setmetatable(L, 1);
    return 1;
}

/* set(t) -> t marked as a DynamoDB set (SS, NS or BS by member type) */
static int l_set(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    return l_mark_table(L);
}

/* binary(s) -> { value = s } marked as bytes (B), not text (S) */
static int l_binary(lua_State *L)
{
    size_t len;
    luaL_checktype(L, 1, LUA_TSTRING);
    const char *s = lua_tolstring(L, 1, &len);
    push_binary(L, lua_upvalueindex(1), s, len);
    return 1;
}

/* number(text) -> { text = text } marked as a number kept as its exact
 * decimal text (N, and a JSON number with those digits); raises when the
 * text is not a number DynamoDB can hold. The text is kept in JSON's form:
 * "+5" becomes "5", ".5" becomes "0.5". */
static int l_number(lua_State *L)
{
    size_t len;
    luaL_checktype(L, 1, LUA_TSTRING);
    const char *s = lua_tolstring(L, 1, &len);
    dl_ddb_number number;
    dl_number_status st = dl_ddb_number_parse(s, len, &number);
    if (st != DL_NUMBER_OK)
        return luaL_error(L, "number: \"%s\" is not a DynamoDB number: %s",
                          len > TEXT_SHOWN_MAX ? "(long text)" : s, dl_ddb_number_message(st));
    push_number(L, lua_upvalueindex(1), s, len);
    return 1;
}

/* is_<mark>(v) -> true when v is a table carrying the mark (upvalue 1) */
static int l_is_mark(lua_State *L)
{
    int marked = lua_istable(L, 1) && lua_getmetatable(L, 1) &&
                 lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pushboolean(L, marked);
    return 1;
}

/* ---- metamethods ------------------------------------------------------ */

static int binary_tostring(lua_State *L)
{
    lua_pushliteral(L, "value");
    lua_rawget(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING)
        lua_pushfstring(L, "binary(%d bytes)", (int)lua_rawlen(L, -1));
    else
        lua_pushliteral(L, "binary(invalid)");
    return 1;
}

/* Two binaries are equal when their bytes are. */
static int binary_eq(lua_State *L)
{
    lua_pushliteral(L, "value");
    lua_rawget(L, 1);
    lua_pushliteral(L, "value");
    lua_rawget(L, 2);
    lua_pushboolean(L, lua_rawequal(L, -1, -2));
    return 1;
}

static int number_tostring(lua_State *L)
{
    lua_pushliteral(L, "text");
    lua_rawget(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
        lua_pushliteral(L, "number(invalid)");
    return 1;
}

/* Two number marks are equal when they hold the same number (1.50, 1.5). */
static int number_eq(lua_State *L)
{
    size_t alen, blen;
    lua_pushliteral(L, "text");
    lua_rawget(L, 1);
    lua_pushliteral(L, "text");
    lua_rawget(L, 2);
    const char *a = lua_tolstring(L, -2, &alen), *b = lua_tolstring(L, -1, &blen);
    lua_pushboolean(L, a && b && lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING &&
                           dl_same_ddb_number(a, alen, b, blen));
    return 1;
}

/* ---- the marks -------------------------------------------------------- */

typedef struct {
    const char *registry; /* the metatable's name in the registry */
    const char *name;     /* core.<name>, core.is_<name>, and the metatable's __name */
    lua_CFunction make;   /* core.<name> */
    lua_CFunction tostring, eq; /* the metatable's __tostring and __eq, if any */
} mark_kind;

static const mark_kind MARKS[DL_MARK_COUNT] = {
    [DL_MARK_ARRAY] = { "dynlog.array", "array", l_mark_table, NULL, NULL },
    [DL_MARK_SET] = { "dynlog.set", "set", l_set, NULL, NULL },
    [DL_MARK_BINARY] = { "dynlog.binary", "binary", l_binary, binary_tostring, binary_eq },
    [DL_MARK_ATTRIBUTE_MAP] = { "dynlog.attribute_map", "attribute_map", l_mark_table, NULL, NULL },
    [DL_MARK_NUMBER] = { "dynlog.number", "number", l_number, number_tostring, number_eq },
};

void dl_marks_push(lua_State *L, dl_marks *m)
{
    m->mt[DL_MARK_NONE] = 0;
    m->mt_p[DL_MARK_NONE] = NULL;
    for (int k = DL_MARK_NONE + 1; k < DL_MARK_COUNT; k++) {
        luaL_getmetatable(L, MARKS[k].registry);
        m->mt[k] = lua_gettop(L);
        m->mt_p[k] = lua_topointer(L, -1);
    }
}

enum dl_mark dl_mark_of(lua_State *L, int idx, const dl_marks *m)
{
    if (!lua_getmetatable(L, idx))
        return DL_MARK_NONE;
    const void *p = lua_topointer(L, -1);
    lua_pop(L, 1);
    for (int k = DL_MARK_NONE + 1; k < DL_MARK_COUNT; k++)
        if (p == m->mt_p[k])
            return (enum dl_mark)k;
    return DL_MARK_NONE;
}

void dl_push_binary(lua_State *L, const dl_marks *m, const char *bytes, size_t len)
{
    push_binary(L, m->mt[DL_MARK_BINARY], bytes, len);
}

void dl_push_number_mark(lua_State *L, const dl_marks *m, const char *s, size_t len)
{
    push_number(L, m->mt[DL_MARK_NUMBER], s, len);
}

int dl_number_mark_text(lua_State *L, int idx, const char **s, size_t *len, const char **why)
{
    dl_ddb_number number;
    lua_pushliteral(L, "text");
    lua_rawget(L, idx);
    int ok = lua_type(L, -1) == LUA_TSTRING;
    if (ok) {
        *s = lua_tolstring(L, -1, len);
        ok = dl_json_number_syntax(*s, *len) && dl_ddb_number_parse(*s, *len, &number) == DL_NUMBER_OK;
    }
    if (!ok)
        *why = "a number's text must be a decimal number DynamoDB can hold";
    lua_pop(L, 1);
    return ok;
}

void dl_open_marks(lua_State *L)
{
    for (int k = DL_MARK_NONE + 1; k < DL_MARK_COUNT; k++) {
        const mark_kind *kind = &MARKS[k];
        char is_name[32];
        luaL_newmetatable(L, kind->registry);
        lua_pushstring(L, kind->name);
        lua_setfield(L, -2, "__name");
        if (kind->tostring) {
            lua_pushcfunction(L, kind->tostring);
            lua_setfield(L, -2, "__tostring");
        }
        if (kind->eq) {
            lua_pushcfunction(L, kind->eq);
            lua_setfield(L, -2, "__eq");
        }
        lua_pushvalue(L, -1);
        lua_pushcclosure(L, kind->make, 1);
        lua_setfield(L, -3, kind->name);
        lua_pushcclosure(L, l_is_mark, 1);
        snprintf(is_name, sizeof is_name, "is_%s", kind->name);
        lua_setfield(L, -2, is_name);
    }
}
