# dynlog: build, test and check.
#
#   make            build the C modules for Lua 5.4 into build54/ (dynlog/core.so, dynlog/curl.so)
#   make luajit     build them for LuaJIT (nginx) into buildjit/
#   make test       install what is missing, start DynamoDB Local, run every spec
#   make test-unit  the specs that need no service (spec/unit), in seconds
#   make memcheck   the specs that touch C, under valgrind
#   make check      every spec with ASan + UBSan, then make memcheck: zero reports
#   make chaos      appends, queries, the consumer and nginx under injected faults and SIGKILLs
#   make fuzz       every libFuzzer target (spec/fuzz/) for FUZZ_SECONDS (60) each
#   make bench      every benchmark beside the AWS SDKs (bench/all.sh; results.json, RESULTS.md)
#   make bench-quick    micro-benchmarks of the C core alone (ns per call, no peers)
#   make bench-compare  ULID, SigV4, marshalling beside npm ulid, aws4, the v3 signer, botocore, cjson
#   make bench-memory   the client's resident size appending and iterating 100k events
#   make demo       the whole pipeline on this machine (DEMO_USERS=1000, DEMO_RATE=200, KEEP=1)
#   make demo-clean wipes the demo's data (.demo/)
#   make dist       dist/dynlog-<version>.tar.gz and the source rock that `luarocks install` takes offline
#   make lambda     dist/dynlog-lambda-<arch>.zip: the Lua runtime for AWS Lambda (bootstrap, lua5.4, dynlog, libraries)
#   make install    used by `luarocks make` (INST_LIBDIR, INST_LUADIR)
#
# Two C modules: dynlog.core (core.so) holds everything but HTTP and does not
# link libcurl; dynlog.curl (curl.so) is the libcurl transport, loaded only by
# dynlog.transport.curl and dynlog.transport.concurrent outside nginx. An nginx
# worker (cosockets) thus maps neither libcurl nor the ~30 libraries it pulls in.

LUA_PC     ?= lua5.4
BUILD      ?= build54
CC         ?= cc
CFLAGS     ?= -O2 -g
LIBFLAG    ?= -shared
# luarocks passes LUA_INCDIR; a plain `make` asks pkg-config. These are
# expanded only when something is compiled, so that targets which install
# the packages first (`make test`, `make demo`) do not ask pkg-config before.
ifdef LUA_INCDIR
LUA_CFLAGS = -I$(LUA_INCDIR)
else
LUA_CFLAGS = $(shell pkg-config --cflags $(LUA_PC))
endif
DEP_CFLAGS = $(shell pkg-config --cflags libcurl libcrypto yajl expat)
CORE_LIBS  = $(shell pkg-config --libs libcrypto yajl expat) -lz -pthread
CURL_LIBS  = $(shell pkg-config --libs libcurl libcrypto) -pthread

WARN      := -std=c99 -Wall -Wextra -Werror=implicit-function-declaration -D_POSIX_C_SOURCE=200809L
# core.so exports luaopen_dynlog_core alone and curl.so luaopen_dynlog_curl
# alone (DL_EXPORT in src/dynlog.h); every other symbol stays inside its
# module, so the helpers both hold (buf.c, lua_util.c) never clash
# (spec/unit/symbols_spec.lua).
VISIBILITY := -fvisibility=hidden
ALL_CFLAGS = $(CFLAGS) $(WARN) $(VISIBILITY) -fPIC $(LUA_CFLAGS) $(DEP_CFLAGS) -Isrc

SOURCES := $(sort $(wildcard src/*.c))
HEADERS := $(wildcard src/*.h)
# dynlog.curl: the libcurl bindings and what they share with the core.
CURL_ONLY    := src/curl.c src/http.c src/http_multi.c src/lua_http.c src/lua_http_multi.c
CURL_SOURCES := $(CURL_ONLY) src/buf.c src/lua_util.c
CORE_SOURCES := $(filter-out $(CURL_ONLY),$(SOURCES))
CORE_OBJECTS  = $(CORE_SOURCES:src/%.c=$(BUILD)/obj/%.o)
CURL_OBJECTS  = $(CURL_SOURCES:src/%.c=$(BUILD)/obj/%.o)
CORE_MODULE   = $(BUILD)/dynlog/core.so
CURL_MODULE   = $(BUILD)/dynlog/curl.so
MODULES       = $(CORE_MODULE) $(CURL_MODULE)

# Every Lua module, folders included (dynlog/client/events.lua, …).
LUA_MODULES = $(shell cd lua && find dynlog -name '*.lua' | LC_ALL=C sort)

INST_LIBDIR ?= /usr/local/lib/lua/5.4
INST_LUADIR ?= /usr/local/share/lua/5.4

.PHONY: all luajit test test-unit memcheck check chaos fuzz bench bench-quick bench-compare bench-memory demo demo-clean dist lambda install clean FORCE

all: $(MODULES)

# Objects depend on the flags too: the same build dir may be used for Lua 5.4
# and then LuaJIT (luarocks uses one for both), and must not mix the two.
FLAGS_STAMP = $(BUILD)/.flags
$(FLAGS_STAMP): FORCE
	@mkdir -p $(BUILD)
	@echo '$(CC) $(ALL_CFLAGS)' | cmp -s - $@ || echo '$(CC) $(ALL_CFLAGS)' > $@

$(BUILD)/obj/%.o: src/%.c $(HEADERS) $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(ALL_CFLAGS) -c $< -o $@

$(CORE_MODULE): $(CORE_OBJECTS)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(LIBFLAG) $(LDFLAGS) -o $@ $(CORE_OBJECTS) $(CORE_LIBS)

$(CURL_MODULE): $(CURL_OBJECTS)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(LIBFLAG) $(LDFLAGS) -o $@ $(CURL_OBJECTS) $(CURL_LIBS)

luajit:
	$(MAKE) BUILD=buildjit LUA_PC=luajit

test:
	scripts/test.sh

test-unit:
	NO_DYNAMODB=1 scripts/test.sh spec/unit

memcheck:
	scripts/memcheck.sh

check:
	scripts/check.sh

chaos:
	scripts/chaos.sh

fuzz:
	scripts/fuzz.sh

bench:
	bench/all.sh

bench-quick: $(CORE_MODULE)
	LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='$(BUILD)/?.so;;' lua5.4 bench/core.lua

bench-memory:
	bench/memory.sh

bench-compare:
	bench/run.sh

demo:
	scripts/demo.sh

demo-clean:
	rm -rf .demo

dist:
	scripts/dist.sh

# LAMBDA_DIST: where the zip goes (default dist/)
lambda:
	scripts/lambda.sh $(LAMBDA_DIST)

install: $(MODULES)
	install -d $(INST_LIBDIR)/dynlog
	install -m 0755 $(CORE_MODULE) $(INST_LIBDIR)/dynlog/core.so
	install -m 0755 $(CURL_MODULE) $(INST_LIBDIR)/dynlog/curl.so
	cd lua && for f in $(LUA_MODULES); do install -D -m 0644 "$$f" "$(INST_LUADIR)/$$f" || exit 1; done

clean:
	rm -rf build54 buildjit build-vg build-asan build-rocks build-fuzz dist
