#!/usr/bin/env bash
# Runs busted under one Lua and ends with the line `<lua>: N passed, N failed, N skipped`.
#
#   scripts/run-specs.sh [busted arguments...]          Lua 5.4, module from build54/
#   LUA=luajit scripts/run-specs.sh [busted arguments...]   LuaJIT, module from buildjit/
#   RUNNER="valgrind ..." scripts/run-specs.sh ...       busted under a wrapper
#   SUMMARY_FILE=F scripts/run-specs.sh ...              also writes "passed failed skipped" to F
#
# /usr/bin/busted starts with `#!/usr/bin/env lua`, which is Lua 5.1 on Debian:
# the interpreter is always named. Exits non-zero when a spec failed or busted
# itself did.
set -uo pipefail

lua=${LUA:-lua5.4}
out=$(mktemp)
export DYNLOG_LEAK_FILE
DYNLOG_LEAK_FILE=$(mktemp)
trap 'rm -f "$out" "$DYNLOG_LEAK_FILE"' EXIT
# shellcheck disable=SC2086
${RUNNER:-} "$lua" /usr/bin/busted -o plainTerminal "$@" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}

# Secrets never leak (spec/support/leakwatch.lua): neither into what the
# specs watched nor into anything busted printed.
secrets=$(lua5.4 -e 'package.path = "spec/?.lua;" .. package.path
  for _, s in ipairs(require("support.leakwatch").SECRETS) do print(s) end')
if [[ -s $DYNLOG_LEAK_FILE ]] || grep -qF -- "$secrets" "$out"; then
    echo "A test secret leaked:" >&2
    cat "$DYNLOG_LEAK_FILE" >&2
    grep -nF -- "$secrets" "$out" | cut -c1-200 | sed 's/^/  busted output line /' >&2
    rc=1
fi

counts=$(awk '/^[0-9]+ success(es)? \/ [0-9]+ failures? \/ [0-9]+ errors? \/ [0-9]+ pending/ {
    print $1, $4 + $7, $10 }' "$out" | tail -n 1)
if [[ -z $counts ]]; then
    # busted died before its summary (a crash, a sanitizer abort): one failure.
    counts="0 1 0"
    ((rc != 0)) || rc=1
fi
read -r passed failed skipped <<<"$counts"
((failed == 0)) || ((rc != 0)) || rc=1
# Specs passed but the wrapper (valgrind, a sanitizer) reported errors: count one.
((rc == 0)) || ((failed != 0)) || failed=1
[[ -z ${SUMMARY_FILE:-} ]] || echo "$counts" >"$SUMMARY_FILE"
echo
echo "$lua: $passed passed, $failed failed, $skipped skipped"
exit "$rc"
