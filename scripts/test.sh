#!/usr/bin/env bash
# `make test`: installs what is missing, builds, starts a private DynamoDB Local,
# runs every spec under Lua 5.4, and stops DynamoDB Local whatever happens.
#
#   scripts/test.sh [busted arguments...]
#   BUILD=… DYNLOG_SPEC_CPATH=… RUNNER=… scripts/test.sh   (see scripts/memcheck.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh ${DEPS_GROUPS:-test}
make -s

state=$(mktemp -d)
cleanup() { scripts/dynamodb-local stop "$state"; rm -rf "$state"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(scripts/dynamodb-local start "$state")
export DYNLOG_TEST_ENDPOINT="http://127.0.0.1:$port"
# Specs must never reach a real AWS service or the EC2 metadata address.
export AWS_EC2_METADATA_DISABLED=true
export AWS_ACCESS_KEY_ID=dynlogtest AWS_SECRET_ACCESS_KEY=dynlogtestsecret AWS_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_CONTAINER_CREDENTIALS_RELATIVE_URI \
    AWS_CONTAINER_CREDENTIALS_FULL_URI 2>/dev/null || true

args=("$@")
if [[ -n ${DYNLOG_SPEC_CPATH:-} ]]; then args=(--cpath="$DYNLOG_SPEC_CPATH" "${args[@]}"); fi
set +e
scripts/run-specs.sh "${args[@]}"
rc=$?
set -e
exit "$rc"
