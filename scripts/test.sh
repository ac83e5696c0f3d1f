#!/usr/bin/env bash
# `make test`: installs what is missing, builds, starts a private DynamoDB Local,
# runs every spec under Lua 5.4 and then under LuaJIT (the VM of nginx), stops
# DynamoDB Local whatever happens, and ends with `N passed, N failed, N skipped`.
#
#   scripts/test.sh [busted arguments...]
#   LUAS=lua5.4 scripts/test.sh ...                          one Lua only
#   NO_DYNAMODB=1 scripts/test.sh spec/unit                  without DynamoDB Local
#
# The specs are grouped by what they need: spec/unit (nothing but the
# module), spec/loopback (loopback servers standing in for AWS services),
# spec/ddb (DynamoDB Local), spec/nginx (nginx with lua-nginx-module) and
# spec/system (the command, the install, the demo, the docs and examples).
#   BUILD=… DYNLOG_SPEC_CPATH=… RUNNER=… scripts/test.sh      (see scripts/memcheck.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh ${DEPS_GROUPS:-test}
luas=(${LUAS:-lua5.4 luajit})
make -s
[[ " ${luas[*]} " != *" luajit "* ]] || make -s luajit

state=$(mktemp -d)
cleanup() { scripts/dynamodb-local stop "$state"; rm -rf "$state"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# NO_DYNAMODB=1 (make test-unit): the specs that need no DynamoDB Local.
if [[ -z ${NO_DYNAMODB:-} ]]; then
    port=$(scripts/dynamodb-local start "$state")
    export DYNLOG_TEST_ENDPOINT="http://127.0.0.1:$port"
fi
# Specs must never reach a real AWS service or the EC2 metadata address.
export AWS_EC2_METADATA_DISABLED=true
export AWS_ACCESS_KEY_ID=dynlogtest AWS_SECRET_ACCESS_KEY=dynlogtestsecret AWS_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_CONTAINER_CREDENTIALS_RELATIVE_URI \
    AWS_CONTAINER_CREDENTIALS_FULL_URI 2>/dev/null || true

rc=0 passed=0 failed=0 skipped=0
for lua in "${luas[@]}"; do
    case $lua in
    luajit) cpath=buildjit/?.so ;;
    *) cpath=${DYNLOG_SPEC_CPATH:-build54/?.so} ;;
    esac
    LUA=$lua SUMMARY_FILE="$state/summary" scripts/run-specs.sh --cpath="$cpath" "$@" || rc=1
    read -r p f s <"$state/summary"
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
done
echo "$passed passed, $failed failed, $skipped skipped"
exit "$rc"
