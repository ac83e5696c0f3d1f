#!/usr/bin/env bash
# `make bench-memory`: the client's resident size while appending and while
# iterating one stream of 100k events (EVENTS=N to change), against a
# private in-memory DynamoDB Local. Writes bench/memory-results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
state=$(mktemp -d)
trap 'scripts/dynamodb-local stop "$state" >/dev/null 2>&1 || true; rm -rf "$state"' EXIT
make -s
port=$(scripts/dynamodb-local start "$state")
LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build54/?.so;;' \
    lua5.4 bench/memory.lua "http://127.0.0.1:$port" "${EVENTS:-100000}" | tee "$state/out"
tail -n 1 "$state/out" > bench/memory-results.json
