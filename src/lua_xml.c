/* XML for Lua over expat: the answers of AWS's query-protocol services (STS,
 * CloudFormation) decoded into a tree of Lua tables, straight onto the Lua
 * stack (no DOM of its own).
 *
 *   xml_decode(text) -> element | nil, "invalid_xml", message
 *
 * Each element is { name = "Tag", attrs = { name = value, ... },
 * children = { element, ... }, text = "..." }: `name` as written (a prefix
 * kept, no namespace processing; `xmlns` is an attribute like any other),
 * `children` the child elements in document order, `text` the character
 * data directly inside the element (CDATA included, entities resolved,
 * children's text not included), "" when there is none.
 *
 * Refused as malformed: anything expat refuses, a document type declaration
 * (AWS never sends one; refusing it rules out entity expansion), and nesting
 * deeper than XML_MAX_DEPTH elements. Expat turns every input encoding into
 * UTF-8, so every string handed to Lua is UTF-8. */
#include "buf.h"
#include "dynlog.h"
#include "lua_util.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <expat.h>

#define XML_MAX_DEPTH 200
#define XML_PARSER_MT "dynlog.xml_parser"
/* XML_Parse takes an int length: larger texts go in chunks. */
#define XML_CHUNK ((size_t)1 << 30)

typedef struct {
    size_t text_start; /* where this element's text begins in `text` */
    int children;      /* child elements stored so far */
} xml_frame;

typedef struct {
    lua_State *L;
    XML_Parser parser;
    dl_buf text;        /* text of the open elements, innermost last */
    int depth;
    int have_root;
    const char *failure; /* set when a handler stops the parse */
    xml_frame frames[XML_MAX_DEPTH];
} xml_decoder;

static void stop(xml_decoder *d, const char *why)
{
    if (!d->failure)
        d->failure = why;
    XML_StopParser(d->parser, XML_FALSE);
}

/* Stack while parsing: the open elements' tables, outermost first, above
 * the decoder's own slots. */
static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    xml_decoder *d = ud;
    lua_State *L = d->L;
    if (d->failure)
        return;
    if (d->depth >= XML_MAX_DEPTH) {
        stop(d, "elements nested too deeply");
        return;
    }
    if (!lua_checkstack(L, 4)) {
        stop(d, "elements nested too deeply for the Lua stack");
        return;
    }
    lua_createtable(L, 0, 4);
    lua_pushstring(L, name);
    lua_setfield(L, -2, "name");
    lua_newtable(L);
    for (int i = 0; atts[i] && atts[i + 1]; i += 2) {
        lua_pushstring(L, atts[i + 1]);
        lua_setfield(L, -2, atts[i]);
    }
    lua_setfield(L, -2, "attrs");
    lua_newtable(L);
    lua_setfield(L, -2, "children");
    xml_frame *f = &d->frames[d->depth++];
    f->text_start = d->text.len;
    f->children = 0;
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
    xml_decoder *d = ud;
    lua_State *L = d->L;
    (void)name;
    if (d->failure)
        return;
    xml_frame *f = &d->frames[--d->depth];
    lua_pushlstring(L, d->text.data ? d->text.data + f->text_start : "", d->text.len - f->text_start);
    lua_setfield(L, -2, "text");
    d->text.len = f->text_start;
    if (d->text.data)
        d->text.data[d->text.len] = '\0';
    if (d->depth == 0) {
        d->have_root = 1; /* the root stays on the stack: the result */
        return;
    }
    xml_frame *parent = &d->frames[d->depth - 1];
    lua_getfield(L, -2, "children");
    lua_insert(L, -2);
    lua_rawseti(L, -2, ++parent->children);
    lua_pop(L, 1);
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
    xml_decoder *d = ud;
    if (d->failure || d->depth == 0)
        return;
    if (dl_buf_add(&d->text, s, (size_t)len) != 0)
        stop(d, "out of memory");
}

static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                               const XML_Char *pubid, int has_internal_subset)
{
    (void)name;
    (void)sysid;
    (void)pubid;
    (void)has_internal_subset;
    stop(ud, "a document type declaration is not accepted");
}

/* The parser and the text buffer live in userdata so that a Lua error
 * raised in a handler (out of memory) cannot leak them. */
static int xml_decoder_gc(lua_State *L)
{
    xml_decoder *d = luaL_checkudata(L, 1, XML_PARSER_MT);
    if (d->parser) {
        XML_ParserFree(d->parser);
        d->parser = NULL;
    }
    dl_buf_free(&d->text);
    return 0;
}

static int l_xml_decode(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    lua_settop(L, 1);
    xml_decoder *d = lua_newuserdata(L, sizeof *d);
    d->parser = NULL;
    dl_buf_init(&d->text);
    luaL_setmetatable(L, XML_PARSER_MT);
    d->L = L;
    d->depth = 0;
    d->have_root = 0;
    d->failure = NULL;
    d->parser = XML_ParserCreate(NULL);
    if (!d->parser)
        return luaL_error(L, "dynlog.core: out of memory");
    XML_SetUserData(d->parser, d);
    XML_SetElementHandler(d->parser, on_start, on_end);
    XML_SetCharacterDataHandler(d->parser, on_text);
    XML_SetStartDoctypeDeclHandler(d->parser, on_doctype);

    size_t off = 0;
    enum XML_Status status = XML_STATUS_OK;
    do {
        size_t n = len - off > XML_CHUNK ? XML_CHUNK : len - off;
        int final = off + n == len;
        status = XML_Parse(d->parser, text + off, (int)n, final);
        off += n;
    } while (status == XML_STATUS_OK && off < len);

    if (status != XML_STATUS_OK || d->failure || !d->have_root) {
        char message[200];
        unsigned long line = (unsigned long)XML_GetCurrentLineNumber(d->parser);
        unsigned long column = (unsigned long)XML_GetCurrentColumnNumber(d->parser) + 1;
        const char *what = d->failure ? d->failure
                           : status != XML_STATUS_OK ? XML_ErrorString(XML_GetErrorCode(d->parser))
                                                     : "no element found";
        snprintf(message, sizeof message, "line %lu, column %lu: %s", line, column, what);
        XML_ParserFree(d->parser);
        d->parser = NULL;
        dl_buf_free(&d->text);
        return dl_push_failure(L, "invalid_xml", message);
    }
    XML_ParserFree(d->parser);
    d->parser = NULL;
    dl_buf_free(&d->text);
    return 1; /* the root element, on top */
}

void dl_open_xml(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "xml_decode", l_xml_decode },
        { NULL, NULL },
    };
    luaL_newmetatable(L, XML_PARSER_MT);
    lua_pushcfunction(L, xml_decoder_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_setfuncs(L, funcs, 0);
}
