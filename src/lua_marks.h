/* The value marks: metatables that say what a table is, so that the walkers
 * write it as the caller meant rather than guess from its shape.
 *
 *   core.array(t)          a JSON array (L), even when empty
 *   core.attribute_map(t)  a map of AttributeValues: json_encode writes its
 *                          values typed ({"S": ...}) wherever it sits
 *   core.binary(s)         bytes (B), not text (S): { value = s }
 *   core.set(t)            a DynamoDB set: SS, NS or BS by member type
 *   core.number(text)      a number kept as its exact decimal text (N):
 *                          { text = text }
 *
 * with core.is_<mark>(v) for each. lua_marks.c registers all five from one
 * table, in dl_open_marks. */
#ifndef DYNLOG_LUA_MARKS_H
#define DYNLOG_LUA_MARKS_H

#include "compat.h"

#include <stddef.h>

enum dl_mark {
    DL_MARK_NONE,
    DL_MARK_ARRAY,
    DL_MARK_SET,
    DL_MARK_BINARY,
    DL_MARK_ATTRIBUTE_MAP,
    DL_MARK_NUMBER,
    DL_MARK_COUNT
};

/* The marking metatables, pushed once per call so that telling a table's
 * mark costs a pointer comparison rather than a registry look-up. Indexed
 * by enum dl_mark (DL_MARK_NONE unused). */
typedef struct {
    int mt[DL_MARK_COUNT];         /* absolute stack indices */
    const void *mt_p[DL_MARK_COUNT]; /* the metatables themselves */
} dl_marks;

/* Pushes the five metatables (5 slots) and records where they are. */
void dl_marks_push(lua_State *L, dl_marks *m);
/* The mark of the table at idx, or DL_MARK_NONE. */
enum dl_mark dl_mark_of(lua_State *L, int idx, const dl_marks *m);
/* Pushes { value = bytes } carrying the binary mark. */
void dl_push_binary(lua_State *L, const dl_marks *m, const char *bytes, size_t len);
/* Pushes { text = <the JSON form of the DynamoDB number text s> } carrying
 * the number mark: a number kept as its exact text. s must be a valid
 * DynamoDB number. */
void dl_push_number_mark(lua_State *L, const dl_marks *m, const char *s, size_t len);
/* The text of the number mark at idx, checked (a JSON number that DynamoDB
 * can hold). Returns 1 with *s (kept alive by the mark), or 0 with *why. */
int dl_number_mark_text(lua_State *L, int idx, const char **s, size_t *len, const char **why);

#endif
