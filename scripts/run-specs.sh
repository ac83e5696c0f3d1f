#!/usr/bin/env bash
# Runs busted under Lua 5.4 and ends with the line `N passed, N failed, N skipped`.
#
#   scripts/run-specs.sh [busted arguments...]      (e.g. --cpath='build-vg/?.so' spec/ulid_spec.lua)
#   RUNNER="valgrind ..." scripts/run-specs.sh ...   runs busted under a wrapper
#
# /usr/bin/busted starts with `#!/usr/bin/env lua`, which is Lua 5.1 on Debian:
# always name lua5.4. Exits non-zero when a spec failed or busted itself did.
set -uo pipefail

out=$(mktemp)
trap 'rm -f "$out"' EXIT
# shellcheck disable=SC2086
${RUNNER:-} lua5.4 /usr/bin/busted -o plainTerminal "$@" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}

summary=$(awk '/^[0-9]+ success(es)? \/ [0-9]+ failures? \/ [0-9]+ errors? \/ [0-9]+ pending/ {
    printf "%d passed, %d failed, %d skipped\n", $1, $4 + $7, $10 }' "$out" | tail -n 1)
if [[ -z $summary ]]; then
    # busted died before its summary (a crash, a sanitizer abort): one failure.
    summary="0 passed, 1 failed, 0 skipped"
    ((rc != 0)) || rc=1
fi
echo
echo "$summary"
if [[ $summary != *" 0 failed"* ]] && ((rc == 0)); then rc=1; fi
exit "$rc"
