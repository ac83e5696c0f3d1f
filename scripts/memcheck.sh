#!/usr/bin/env bash
# `make memcheck`: the specs that touch C, with both modules (dynlog.core and
# dynlog.curl) built for valgrind into build-vg/ (-O1, and -z nodelete so that
# lua_close does not unload curl.so and libcurl before valgrind's leak check,
# which would turn their static data into false leaks).
set -euo pipefail
cd "$(dirname "$0")/.."

export DEPS_GROUPS=memcheck
# make reads these from the environment (BUILD and CFLAGS are ?= there)
export BUILD=build-vg CFLAGS="-O1 -g" LDFLAGS="-Wl,-z,nodelete"
export DYNLOG_SPEC_CPATH='build-vg/?.so' LUAS=lua5.4
# The make variables are for test.sh's build only, not for `make` run by a
# spec (demo, install), which must not rebuild buildjit/ with them.
export RUNNER="env -u BUILD -u CFLAGS -u LDFLAGS valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite"
# Every spec file exercises the C module, directly or through the client.
exec scripts/test.sh "$@"
