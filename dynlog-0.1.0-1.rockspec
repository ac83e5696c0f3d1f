rockspec_format = "3.0"
package = "dynlog"
version = "0.1.0-1"
source = {
  url = "dynlog-0.1.0.tar.gz",
  dir = "dynlog-0.1.0",
}
description = {
  summary = "Append-only event logs on Amazon DynamoDB, with a C core",
  detailed = [[
    dynlog keeps event streams in DynamoDB (one item per event, never
    overwritten), signs requests with SigV4, makes monotonic ULIDs, and
    publishes new events to EventBridge. Its C core comes as two modules:
    dynlog.core (OpenSSL's libcrypto, yajl, expat, zlib) and dynlog.curl,
    the libcurl transport, which nginx workers (cosockets) never load.
  ]],
  license = "Apache-2.0",
}
dependencies = {
  "lua >= 5.1",
}
-- Headers are found by the Makefile through pkg-config (curl's sit in a
-- multiarch directory that luarocks does not search), so only the libraries
-- are checked here.
external_dependencies = {
  CURL = { library = "curl" },
  OPENSSL = { library = "crypto" },
  YAJL = { library = "yajl" },
  EXPAT = { library = "expat" },
}
-- `make` builds both C modules and `make install` puts both into the tree's
-- LIBDIR (dynlog/core.so, dynlog/curl.so).
build = {
  type = "make",
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LIBFLAG = "$(LIBFLAG)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    BUILD = "build-rocks",
  },
  -- The same compiler variables as the build: `make install` checks that the
  -- module is up to date, and other flags (another Lua's headers) would
  -- rebuild it against the wrong Lua.
  install_variables = {
    CFLAGS = "$(CFLAGS)",
    LIBFLAG = "$(LIBFLAG)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    INST_LIBDIR = "$(LIBDIR)",
    INST_LUADIR = "$(LUADIR)",
    BUILD = "build-rocks",
  },
  install = {
    bin = { dynlog = "bin/dynlog" },
  },
}
test = {
  type = "command",
  command = "make test",
}
