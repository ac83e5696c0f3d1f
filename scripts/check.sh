#!/usr/bin/env bash
# `make check`: every spec with the C module built with AddressSanitizer and
# UndefinedBehaviorSanitizer (gcc), then `make memcheck` (valgrind). Passes only
# when every spec passes in both, no ASan, UBSan or LeakSanitizer report was
# written (by busted or by any lua5.4 it started) and valgrind found no error
# or definite leak. Ends with `N passed, N failed, N skipped` over both runs.
#
#   scripts/check.sh [busted arguments...]     (passed to both runs)
#
# Only Lua 5.4 runs under ASan: LuaJIT (and nginx, which embeds it) with the
# ASan runtime preloaded is fragile, and nginx loads the plain buildjit/ module.
#
# How the runtime gets in: lua5.4 is not instrumented, so libasan must be the
# first library loaded. It is preloaded with `ld.so --preload`, which does not
# set LD_PRELOAD, so the processes a spec starts do not inherit it: nginx,
# java, curl, gcc (luarocks) and sh run as usual. The specs' own `lua5.4`
# children (the dynlog command, docs blocks loading DYNLOG_SPEC_CPATH, examples,
# consumers) go through build-asan/bin/lua5.4, first in busted's PATH, which
# preloads the runtime the same way (luarocks, beside it, sees the system
# lua5.4 as usual). Reports go to files (log_path), so a report
# from a child whose stderr a spec discards, or whose exit status it ignores,
# still fails the check; they are printed at the end.
# LeakSanitizer suppressions, for library internals only, would go in
# scripts/lsan.supp (none are needed today).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$SECONDS

scripts/deps.sh memcheck
# The plain builds the specs' subprocesses use: lua5.4 scripts (build54/) and
# nginx (buildjit/). Built here, outside the sanitizer variables below.
env -u BUILD -u CFLAGS -u LDFLAGS make -s
env -u BUILD -u CFLAGS -u LDFLAGS make -s luajit

lua=$(command -v lua5.4)
# Preloaded by its soname (libasan.so.8), the name build-asan/dynlog/core.so
# asks for: by a path, the dlopen of core.so would add the soname as an alias
# to ld.so's entry for it, in memory LeakSanitizer does not scan, and report
# those 37 bytes as a leak.
libasan=$(objdump -p "$(gcc -print-file-name=libasan.so)" | awk '$1 == "SONAME" { print $2 }')
ldso=$(readelf -l "$lua" | sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p')
[[ -n $libasan && -x $ldso ]] || { echo "check: no libasan soname ($libasan) or ld.so ($ldso)" >&2; exit 1; }

shim=$root/build-asan/bin
mkdir -p "$shim"
cat >"$shim/lua5.4" <<EOF
#!/bin/sh
# Written by scripts/check.sh: lua5.4 with the ASan runtime preloaded by ld.so
# (not LD_PRELOAD, which every child process would inherit).
exec $ldso --preload $libasan $lua "\$@"
EOF
# luarocks takes the first lua5.4 on PATH as the Lua it builds for, and looks
# for lua.h beside it: it must see the system one (spec/system/install_spec.lua).
cat >"$shim/luarocks" <<EOF
#!/bin/sh
# Written by scripts/check.sh: luarocks without $shim on PATH.
PATH=\${PATH#$shim:} exec $(command -v luarocks) "\$@"
EOF
chmod +x "$shim/lua5.4" "$shim/luarocks"

reports=$(mktemp -d)
out=$(mktemp)
trap 'rm -rf "$reports" "$out"' EXIT

rc=0
echo "== specs, Lua 5.4, C module with ASan + UBSan (build-asan/)"
(
    # ASan aborts at the first error (halt_on_error; UBSan too, as the module
    # is built with -fno-sanitize-recover=undefined) and the leak check runs at
    # exit. Processes without the runtime ignore these variables.
    # UBSan ignores its log_path beside gcc's libasan (its call to set it binds
    # to libasan's function of that name) and writes to stderr. Only busted and
    # docs_spec's blocks load build-asan/, and both fail the run on a UBSan
    # abort: busted dies before its summary; docs_spec checks a block's status.
    export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:log_path=$reports/asan"
    export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan"
    export LSAN_OPTIONS="print_suppressions=0"
    [[ ! -f scripts/lsan.supp ]] || LSAN_OPTIONS+=":suppressions=$root/scripts/lsan.supp"
    export DEPS_GROUPS=test
    # make reads these from the environment (BUILD and CFLAGS are ?= there)
    export CC=gcc BUILD=build-asan
    export CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
    # -z nodelete: lua_close must not unload curl.so, libcurl and its libraries
    # before the leak check, or their static data shows as leaks (see memcheck.sh).
    # make builds both modules into build-asan/dynlog/ (core.so and curl.so).
    export LDFLAGS="-fsanitize=address,undefined -Wl,-z,nodelete"
    export DYNLOG_SPEC_CPATH='build-asan/?.so' LUAS=lua5.4
    # busted, and the lua5.4 it starts, is the shim; the make variables are
    # for test.sh's build only, not for `make` run by a spec (demo, install).
    export RUNNER="env -u CC -u BUILD -u CFLAGS -u LDFLAGS PATH=$shim:$PATH"
    exec scripts/test.sh "$@"
) 2>&1 | tee "$out" || rc=1

found=$(find "$reports" -type f | sort)
if [[ -n $found ]]; then
    rc=1
    echo
    echo "== sanitizer reports ($(wc -l <<<"$found") processes)"
    # Frames inside lua5.4 itself are named after ld.so's functions (the
    # program ld.so ran is ld.so to the symbolizer); the module's are right.
    for report in $found; do
        echo "-- $(basename "$report")"
        cat "$report"
    done
fi
read -r p f s < <(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed, \([0-9]*\) skipped$/\1 \2 \3/p' "$out" | tail -n 1) || true
p=${p:-0} f=${f:-1} s=${s:-0}
# Specs passed but a process wrote a report: count one failure.
[[ -z $found ]] || ((f > 0)) || f=1

echo
echo "== make memcheck (valgrind)"
scripts/memcheck.sh "$@" 2>&1 | tee "$out" || rc=1
read -r p2 f2 s2 < <(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed, \([0-9]*\) skipped$/\1 \2 \3/p' "$out" | tail -n 1) || true
p=$((p + ${p2:-0})) f=$((f + ${f2:-1})) s=$((s + ${s2:-0}))
((f == 0)) || rc=1

echo
echo "check took $((SECONDS - started)) s"
echo "$p passed, $f failed, $s skipped"
exit "$rc"
