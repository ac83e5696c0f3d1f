#!/usr/bin/env bash
# `make bench-memory`: the client's resident size while appending and while
# iterating one stream of 100k events (EVENTS=N to change), then an nginx
# worker's resident size, proportional size and shared objects after it
# appended and queried over cosockets (bench/nginx_worker.lua, APPENDS=200),
# against a private in-memory DynamoDB Local. Writes bench/memory-results.json
# (the nginx worker's figures under "nginx_worker").
set -euo pipefail
cd "$(dirname "$0")/.."
state=$(mktemp -d)
trap 'scripts/dynamodb-local stop "$state" >/dev/null 2>&1 || true; rm -rf "$state"' EXIT
make -s
make -s luajit
port=$(scripts/dynamodb-local start "$state")
LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build54/?.so;;' \
    lua5.4 bench/memory.lua "http://127.0.0.1:$port" "${EVENTS:-100000}" | tee "$state/out"
echo
LUA_PATH='lua/?.lua;lua/?/init.lua;./?.lua;;' LUA_CPATH='build54/?.so;;' \
    lua5.4 bench/nginx_worker.lua "http://127.0.0.1:$port" "${APPENDS:-200}" | tee "$state/nginx"
python3 - "$state/out" "$state/nginx" <<'PY'
import json, sys
with open(sys.argv[1]) as f:
    doc = json.loads(f.read().splitlines()[-1])
with open(sys.argv[2]) as f:
    doc["nginx_worker"] = json.loads(f.read().splitlines()[-1])
with open("bench/memory-results.json", "w") as f:
    json.dump(doc, f)
    f.write("\n")
PY
