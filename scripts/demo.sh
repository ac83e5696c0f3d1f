#!/usr/bin/env bash
# `make demo`: the whole pipeline on this machine, in one command.
#
# Installs what is missing, builds, starts DynamoDB Local (its data kept in
# .demo/dynamodb, so a second run sees the first run's events; `make
# demo-clean` wipes it) and nginx with examples/nginx.conf on 127.0.0.1, then
# runs the users example (scripts/demo.lua) and stops what it started (also on
# Ctrl-C or failure) unless KEEP=1.
#
#   DEMO_USERS=1000   users to generate (4 events each)
#   DEMO_PORT=8088    nginx's port
#   KEEP=1            leave DynamoDB Local and nginx running afterwards
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

scripts/deps.sh test
make -s
make -s luajit

demo=$root/.demo
port=${DEMO_PORT:-8088}
mkdir -p "$demo/dynamodb" "$demo/nginx/logs" "$demo/nginx/tmp"
for dir in lua buildjit examples; do ln -sfn "$root/$dir" "$demo/nginx/$dir"; done
conf=$demo/nginx/nginx.conf
sed "s/listen 127.0.0.1:8088;/listen 127.0.0.1:$port;/" examples/nginx.conf >"$conf"
# As root, nginx's workers would run as nobody; let them read the repository.
if [[ $(id -u) == 0 ]]; then sed -i '1i user root;' "$conf"; fi

nginx_pid=
stop_all() {
    if [[ ${KEEP:-} == 1 ]]; then
        echo "KEEP=1: DynamoDB Local (port $(cat "$demo/state/port" 2>/dev/null)) and nginx (port $port) keep running."
        echo "Stop them with: kill \$(cat $demo/nginx/logs/nginx.pid); scripts/dynamodb-local stop $demo/state"
        return
    fi
    if [[ -f $demo/nginx/logs/nginx.pid ]]; then
        kill -QUIT "$(cat "$demo/nginx/logs/nginx.pid")" 2>/dev/null || true
        sleep 1
    fi
    scripts/dynamodb-local stop "$demo/state"
}
trap stop_all EXIT
trap 'exit 130' INT TERM

echo "Starting DynamoDB Local (data in .demo/dynamodb) ..."
ddb_port=$(scripts/dynamodb-local start "$demo/state" "$demo/dynamodb")

export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo-secret
export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$ddb_port
export DYNLOG_TABLE=dynlog-demo DYNLOG_API_KEY=demo-key DYNLOG_NGINX_URL=http://127.0.0.1:$port
export AWS_EC2_METADATA_DISABLED=true

echo "Starting nginx with examples/nginx.conf on 127.0.0.1:$port ..."
rm -f "$demo/nginx/logs/nginx.pid"
nginx -p "$demo/nginx" -c nginx.conf

LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;$root/?.lua;;" LUA_CPATH="$root/build54/?.so;;" \
    lua5.4 scripts/demo.lua "${DEMO_USERS:-1000}"
