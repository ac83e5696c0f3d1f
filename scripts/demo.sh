#!/usr/bin/env bash
# `make demo`: the whole pipeline on this machine, in one command.
#
# Installs what is missing, builds, and runs `dynlog up` on the users
# example's description (examples/users/pipeline.lua): DynamoDB Local (its
# data kept in .demo/dynamodb, so a second run sees the first run's events;
# `make demo-clean` wipes it), the tables, nginx on 127.0.0.1 with the
# consumer, the local bus and the receiver. Then runs the users example's
# load (scripts/demo.lua) and stops what it started (also on Ctrl-C or
# failure) unless KEEP=1.
#
#   DEMO_USERS=1000   users to generate (4 events each)
#   DEMO_RATE=200     events appended per second (0: as fast as appends go,
#                     which shows a backlog draining rather than latency)
#   DEMO_PORT=8088    nginx's port
#   KEEP=1            leave `dynlog up` (DynamoDB Local and nginx) running afterwards
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

scripts/deps.sh test
make -s
make -s luajit

demo=$root/.demo
port=${DEMO_PORT:-8088}
description=examples/users/pipeline.lua
mkdir -p "$demo"

export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo-secret
export AWS_EC2_METADATA_DISABLED=true
export LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;$root/?.lua;;" LUA_CPATH="$root/build54/?.so;;"
# dynlog up starts its own DynamoDB Local
unset AWS_ENDPOINT_URL_DYNAMODB AWS_ENDPOINT_URL AWS_PROFILE AWS_SESSION_TOKEN

up_pid=
stop_all() {
    [[ -n $up_pid ]] || return 0
    if [[ ${KEEP:-} == 1 ]]; then
        echo "KEEP=1: dynlog up (pid $up_pid: DynamoDB Local and nginx on port $port) keeps running."
        echo "Stop it with: kill $up_pid"
        return
    fi
    kill -TERM "$up_pid" 2>/dev/null || true
    wait "$up_pid" 2>/dev/null || true
}
trap stop_all EXIT
trap 'exit 130' INT TERM

echo "Starting dynlog up with $description on 127.0.0.1:$port (data in .demo/dynamodb) ..."
rm -f "$demo/up.out" "$demo/up.err"
lua5.4 bin/dynlog up --description "$description" --port "$port" --dir "$demo" \
    >"$demo/up.out" 2>"$demo/up.err" </dev/null &
up_pid=$!
until grep -q '^dynlog: up;' "$demo/up.err" 2>/dev/null; do
    if ! kill -0 "$up_pid" 2>/dev/null; then
        cat "$demo/up.out" "$demo/up.err" >&2
        up_pid=
        exit 1
    fi
    sleep 0.2
done
cat "$demo/up.out"

AWS_ENDPOINT_URL_DYNAMODB=$(awk '$1 == "DynamoDB" { print $2 }' "$demo/up.out")
export AWS_ENDPOINT_URL_DYNAMODB DYNLOG_DESCRIPTION=$description DYNLOG_NGINX_URL=http://127.0.0.1:$port
lua5.4 scripts/demo.lua "${DEMO_USERS:-1000}"
