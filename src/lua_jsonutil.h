/* The Lua side of every Lua <-> JSON walker of the core (plain JSON and
 * DynamoDB's typed AttributeValue JSON, and the Lua-table forms of the
 * latter): Lua numbers as text and back, table shape, the classification
 * of a Lua value as an AttributeValue, and the path of the value being
 * walked, for errors that say where. The number text itself is plain C, in
 * numtext.h; the marks that say what a table is are in lua_marks.h. */
#ifndef DYNLOG_LUA_JSONUTIL_H
#define DYNLOG_LUA_JSONUTIL_H

#include "compat.h"
#include "lua_marks.h"
#include "marshal.h"
#include "numtext.h"

#include <stddef.h>

/* Steps a path remembers. Encoding stops at 128 levels of plain JSON plus
 * 32 of AttributeValues, so deeper steps are never needed for a message. */
#define DL_JSON_PATH_MAX 200

/* Writes the number at idx: integers exactly, floats as dl_format_double
 * does. Returns the length, or -1 for NaN/inf. */
int dl_format_lua_number(lua_State *L, int idx, char out[DL_NUMBER_TEXT_MAX]);

/* Pushes the JSON number text as an integer when it is one and fits exactly
 * (on LuaJIT: when a double holds it exactly, else as its decimal string),
 * else as a float. Returns 0, or -1 when the text is not a number. */
int dl_push_json_number(lua_State *L, const char *text, size_t len);

/* ---- table shape ----------------------------------------------------- */

enum dl_table_kind { DL_TABLE_INVALID, DL_TABLE_ARRAY, DL_TABLE_OBJECT };

/* Decides how a table encodes: a marked table (marked != 0), or a
 * non-empty sequence 1..n, is an array (*n set); a table with only string
 * keys (or none) is an object; anything else is invalid with *why saying
 * what is wrong. Looks at every key. */
enum dl_table_kind dl_classify_table(lua_State *L, int idx, int marked, lua_Integer *n,
                                     const char **why);

/* The fast form for walkers: when #t is 0 it answers "object" without
 * looking at the keys, so the walker must check each key as it goes (and
 * call dl_classify_table for the reason when one is not a string). */
enum dl_table_kind dl_table_shape(lua_State *L, int idx, int marked, lua_Integer *n,
                                  const char **why);

/* ---- AttributeValues ------------------------------------------------- */

enum dl_av_type {
    DL_AV_NONE, /* not a valid AttributeValue, or an unknown descriptor */
    DL_AV_S, DL_AV_N, DL_AV_B, DL_AV_BOOL, DL_AV_NULL,
    DL_AV_M, DL_AV_L, DL_AV_SS, DL_AV_NS, DL_AV_BS,
};

/* What dl_av_classify found out about a value. */
typedef struct {
    const char *bytes;         /* S: the string; B: the raw bytes; N: text */
    size_t len;
    char text[DL_NUMBER_TEXT_MAX]; /* N */
    lua_Integer n;             /* L and sets: elements */
    lua_Integer bad;           /* a refused set: the member at fault, or 0 */
} dl_av;

/* Classifies the Lua value at idx as DynamoDB would store it (string -> S,
 * number -> N, core.binary -> B, boolean -> BOOL, core.null -> NULL, marked
 * set -> SS/NS/BS, list -> L, map -> M), checking everything but the keys
 * and members of M and L, which the walker checks as it goes. Sets are
 * checked whole: non-empty, one member type, no duplicates. Returns
 * DL_AV_NONE with *why when DynamoDB cannot hold the value. The strings
 * av->bytes points into stay referenced by the value. */
enum dl_av_type dl_av_classify(lua_State *L, int idx, const dl_marks *m, dl_av *av,
                               const char **why);

/* Checks that the key at key_idx, of the table at table_idx, can name an
 * attribute: a non-empty UTF-8 string. Returns 1 with the name, or 0 with
 * *why. */
int dl_av_check_name(lua_State *L, int table_idx, int key_idx, const char **name, size_t *len,
                     const char **why);

/* The descriptor a JSON or Lua key names ("S", "NS", ...), or DL_AV_NONE. */
enum dl_av_type dl_av_descriptor(const char *s, size_t len);
const char *dl_av_descriptor_name(enum dl_av_type t);

/* How an N comes back to Lua (the `numbers` argument of the decoders):
 * NUMBER: a number as dl_push_json_number pushes it ("number", the default);
 * STRING: its decimal text ("string");
 * EXACT: a Lua number when one holds exactly the same number, else a
 * number mark with its text ("exact"): no digit lost and no type changed. */
enum dl_numbers { DL_NUMBERS_NUMBER, DL_NUMBERS_STRING, DL_NUMBERS_EXACT };

/* Reads the `numbers` argument at arg (nil, "number", "string", "exact");
 * raises on anything else. */
enum dl_numbers dl_check_numbers_arg(lua_State *L, int arg);

/* Pushes an N's value as mode says. Returns 0, or -1 (nothing pushed,
 * *why set) when the text is not a DynamoDB number. */
int dl_push_av_number(lua_State *L, const char *text, size_t len, enum dl_numbers mode,
                      const dl_marks *m, const char **why);

/* ---- paths ----------------------------------------------------------- */

typedef struct {
    const char *key; /* NULL for an array position */
    size_t key_len;
    lua_Integer index;
} dl_json_path_step;

typedef struct {
    const char *root; /* "" prints the steps alone: "Item.payload[2]" */
    int depth;
    dl_json_path_step steps[DL_JSON_PATH_MAX + 1];
} dl_json_path;

void dl_json_path_init(dl_json_path *p, const char *root);
void dl_json_path_push_key(dl_json_path *p, const char *key, size_t len);
void dl_json_path_push_index(dl_json_path *p, lua_Integer index);
void dl_json_path_pop(dl_json_path *p);
/* Pushes "<what> at <root>.key[3].other" (just <what> when there is
 * nothing to name). */
void dl_json_path_push_message(lua_State *L, const dl_json_path *p, const char *what);
/* Raises that message. Does not return. */
int dl_json_path_error(lua_State *L, const dl_json_path *p, const char *what);

#endif
