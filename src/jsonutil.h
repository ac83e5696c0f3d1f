/* Pieces shared by every Lua <-> JSON walker of the core (plain JSON now,
 * DynamoDB's typed AttributeValue JSON later): number text, table shape, and
 * the path of the value being encoded, for errors that say where. */
#ifndef DYNLOG_JSONUTIL_H
#define DYNLOG_JSONUTIL_H

#include "compat.h"

#include <stddef.h>

/* Longest text dl_format_lua_number writes ("-1.2345678901234567e-308"). */
#define DL_NUMBER_TEXT_MAX 32
#define DL_JSON_PATH_MAX 1000

/* Writes the number at idx: integers exactly, floats with the fewest digits
 * that read back bit-identical. Returns the length, or -1 for NaN/inf. */
int dl_format_lua_number(lua_State *L, int idx, char out[DL_NUMBER_TEXT_MAX]);

/* Pushes the JSON number text as an integer when it is one and fits exactly,
 * else as a float. Returns 0, or -1 when the text is not a number. */
int dl_push_json_number(lua_State *L, const char *text, size_t len);

enum dl_table_kind { DL_TABLE_INVALID, DL_TABLE_ARRAY, DL_TABLE_OBJECT };

/* Decides how a table encodes: a table carrying the metatable registered as
 * array_mt, or a non-empty sequence 1..n, is an array (*n set); a table with
 * only string keys (or none) is an object; anything else is invalid with *why
 * saying what is wrong. */
enum dl_table_kind dl_classify_table(lua_State *L, int idx, const char *array_mt,
                                     lua_Integer *n, const char **why);

typedef struct {
    const char *key; /* NULL for an array position */
    size_t key_len;
    lua_Integer index;
} dl_json_path_step;

typedef struct {
    const char *root;
    int depth;
    dl_json_path_step steps[DL_JSON_PATH_MAX + 1];
} dl_json_path;

void dl_json_path_init(dl_json_path *p, const char *root);
void dl_json_path_push_key(dl_json_path *p, const char *key, size_t len);
void dl_json_path_push_index(dl_json_path *p, lua_Integer index);
void dl_json_path_pop(dl_json_path *p);
/* Raises "<what> at <root>.key[3].other". Does not return. */
int dl_json_path_error(lua_State *L, const dl_json_path *p, const char *what);

#endif
