#!/usr/bin/env bash
# Builds the libFuzzer harnesses of spec/fuzz/ (clang-14, ASan + UBSan) into
# build-fuzz/ and runs each one, single-process, for a bounded time.
#
#   scripts/fuzz.sh                      every target, FUZZ_SECONDS each
#   FUZZ_SECONDS=10 scripts/fuzz.sh json_decode ulid    some targets
#   FUZZ_BUILD_ONLY=1 scripts/fuzz.sh    build, replay the regressions, stop
#
# Target NAME is spec/fuzz/fuzz_NAME.c; its seeds are spec/fuzz/corpus/NAME/
# (read only: what the fuzzer finds goes to build-fuzz/corpus/NAME/), its
# libFuzzer dictionary spec/fuzz/dict/NAME.dict when there is one, and
# every file of spec/fuzz/regressions/NAME/ is replayed before fuzzing.
# Crashes are written to build-fuzz/artifacts/NAME/. To keep one, copy it to
# spec/fuzz/regressions/NAME/ (spec/unit/fuzz_regressions_spec.lua replays those
# through the Lua API too). Exits non-zero when a build fails or any target
# crashed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_RSS_MB=${FUZZ_RSS_MB:-1024}
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-20}
OUT=build-fuzz
CC=clang-14

# ---- tools ----
scripts/deps.sh build
resource_dir=$($CC -print-resource-dir 2>/dev/null || true)
if ! command -v $CC >/dev/null || [[ ! -f $resource_dir/lib/linux/libclang_rt.fuzzer-x86_64.a ]]; then
    echo "fuzz: installing clang-14 and libclang-rt-14-dev" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang-14 libclang-rt-14-dev >/dev/null
fi

# The Makefile's own flags, so that the fuzzed core links as the module does.
make_var() {
    make --no-print-directory -s -f Makefile -f - "fuzz-print-$1" <<'EOF'
fuzz-print-%:
	@echo '$($*)'
EOF
}
DEP_CFLAGS=$(make_var DEP_CFLAGS)
# dynlog.core's sources and libraries: the harnesses reach no HTTP, so the
# libcurl module (dynlog.curl) is neither built nor linked.
CORE_SOURCES=$(make_var CORE_SOURCES)
CORE_LIBS=$(make_var CORE_LIBS)
WARN=$(make_var WARN)
LUA_CFLAGS=$(pkg-config --cflags lua5.4)
LUA_LIBS=$(pkg-config --libs lua5.4)

SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CFLAGS="-g -O1 $WARN $SAN $LUA_CFLAGS $DEP_CFLAGS -Isrc"

# ---- targets ----
if (($#)); then
    targets=("$@")
else
    targets=()
    for f in spec/fuzz/fuzz_*.c; do
        t=${f#spec/fuzz/fuzz_}
        targets+=("${t%.c}")
    done
fi
for t in "${targets[@]}"; do
    [[ -f spec/fuzz/fuzz_$t.c ]] || { echo "fuzz: no target $t (spec/fuzz/fuzz_$t.c)" >&2; exit 2; }
done

# ---- build ----
mkdir -p "$OUT/obj"
objects=()
for src in $CORE_SOURCES; do
    obj=$OUT/obj/$(basename "${src%.c}").o
    if [[ ! -f $obj || $src -nt $obj || -n $(find src -name '*.h' -newer "$obj" -print -quit) ]]; then
        echo "  CC      $src"
        $CC $CFLAGS -fsanitize=fuzzer-no-link -c "$src" -o "$obj"
    fi
    objects+=("$obj")
done
for t in "${targets[@]}"; do
    echo "  FUZZER  $OUT/fuzz_$t"
    # -Werror for the harnesses: they must stay -Wall -Wextra clean.
    $CC $CFLAGS -Werror -fsanitize=fuzzer -Ispec/fuzz -DDYNLOG_LUA_DIR="\"$root/lua\"" \
        "spec/fuzz/fuzz_$t.c" "${objects[@]}" -o "$OUT/fuzz_$t" $LUA_LIBS $CORE_LIBS -lm
done

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# ---- regressions: every saved crash must now pass ----
failed=0
for t in "${targets[@]}"; do
    dir=spec/fuzz/regressions/$t
    compgen -G "$dir/*" >/dev/null || continue
    if "$OUT/fuzz_$t" -runs=1 "$dir"/* >"$OUT/regressions-$t.log" 2>&1; then
        echo "fuzz: $t: $(find "$dir" -type f | wc -l) regression input(s) pass"
    else
        echo "fuzz: $t: a regression input fails again, see $OUT/regressions-$t.log" >&2
        tail -n 30 "$OUT/regressions-$t.log" >&2
        failed=1
    fi
done
[[ -z ${FUZZ_BUILD_ONLY:-} ]] || exit $failed

# ---- fuzz ----
summary=()
for t in "${targets[@]}"; do
    corpus=$OUT/corpus/$t artifacts=$OUT/artifacts/$t log=$OUT/fuzz-$t.log
    mkdir -p "$corpus" "$artifacts"
    seeds=()
    [[ -d spec/fuzz/corpus/$t ]] && seeds+=("spec/fuzz/corpus/$t")
    echo "fuzz: $t for ${FUZZ_SECONDS}s"
    # A Lua harness frees its garbage when the GC runs, not per input, so
    # libFuzzer's per-input leak check only slows it down (LSan still
    # checks the whole process when the fuzzer exits).
    extra=()
    grep -q 'fuzz_lua.h' "spec/fuzz/fuzz_$t.c" && extra+=(-detect_leaks=0)
    [[ -f spec/fuzz/dict/$t.dict ]] && extra+=(-dict="spec/fuzz/dict/$t.dict")
    rc=0
    "$OUT/fuzz_$t" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb="$FUZZ_RSS_MB" "${extra[@]}" \
        -timeout="$FUZZ_TIMEOUT" -print_final_stats=1 -artifact_prefix="$artifacts/" \
        "$corpus" "${seeds[@]}" >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n1 | cut -d' ' -f2)
    crashes=$(find "$artifacts" -type f | wc -l)
    if ((rc != 0)); then
        failed=1
        echo "fuzz: $t stopped with status $rc; the end of $log:" >&2
        grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error|==fuzz==|INVARIANT)' "$log" | head -n 5 >&2 || true
        tail -n 12 "$log" >&2
        ((crashes > 0)) || crashes="1 (no artifact)"
    elif [[ $crashes != 0 ]]; then
        failed=1
    fi
    summary+=("$(printf '%-14s execs %-10s cov %-6s ft %-6s crashes %s' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$crashes")")
done

echo
echo "fuzz summary (${FUZZ_SECONDS}s per target; artifacts in $OUT/artifacts/):"
printf '  %s\n' "${summary[@]}"
exit $failed
