#!/usr/bin/env bash
# End-to-end latency of the pipeline: append in DynamoDB → DynamoDB Streams →
# trigger (the consumer inside nginx) → local EventBridge bus → receiver →
# handler → read model, at a ramp of offered rates, and the maximum rate it
# sustains (achieved >= 98 % of offered, p99 <= 1 s, no growing backlog,
# every read model at its user's last event), with the pipeline's requests
# and CPU per event.
#
#   bench/pipeline.sh     (from anywhere; prints a table, writes bench/pipeline-results.json)
#
# Builds, starts a private in-memory DynamoDB Local and nginx with
# examples/nginx.conf on a free 127.0.0.1 port (in a temporary prefix, as
# spec/nginx/ngx_spec.lua does), runs bench/pipeline.lua, and stops both on exit,
# failure or Ctrl-C. About 2-3 minutes. Settings (see bench/pipeline.lua):
#   RATES="100 200 300 400 500 600 700 800"  DURATION=15  WARMUP=3
#   POLL_MS=50  DRAIN=30
#   STOP_AFTER=2        the ramp stops after this many rates in a row not sustained
#   NGINX_WORKERS=n     worker_processes instead of examples/nginx.conf's
#   KEEP_LOG=1          keep nginx's error log (info level) as bench/pipeline-error.log
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
command_line="bench/pipeline.sh${*:+ $*}"
for v in RATES DURATION WARMUP POLL_MS DRAIN NGINX_WORKERS; do
    if [[ -n ${!v:-} ]]; then command_line="$v=\"${!v}\" $command_line"; fi
done

make -s
make -s luajit

bench_before_cleanup() {
    if [[ ${KEEP_LOG:-} == 1 && -f $prefix/logs/error.log ]]; then cp "$prefix/logs/error.log" bench/pipeline-error.log; fi
}
bench_name=bench/pipeline.sh
# shellcheck source=bench/nginx_env.sh
source bench/nginx_env.sh

echo "Starting DynamoDB Local (in memory) ..."
ddb_port=$(scripts/dynamodb-local start "$state")
port=$(free_port)

export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench-secret
export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$ddb_port AWS_EC2_METADATA_DISABLED=true
export DYNLOG_TABLE=dynlog-bench DYNLOG_API_KEY=bench-key DYNLOG_NGINX_URL=http://127.0.0.1:$port
export LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;;" LUA_CPATH="$root/build54/?.so;;"

# The tables first: the consumer in nginx looks for the log's stream at once.
lua5.4 bench/pipeline.lua setup

mkdir -p "$prefix/logs" "$prefix/tmp"
for dir in lua buildjit examples; do ln -s "$root/$dir" "$prefix/$dir"; done
sed "s/listen 127.0.0.1:8088;/listen 127.0.0.1:$port;/" examples/nginx.conf >"$prefix/nginx.conf"
grep -q "listen 127.0.0.1:$port;" "$prefix/nginx.conf" || { echo "examples/nginx.conf: no listen line to replace" >&2; exit 1; }
if [[ -n ${NGINX_WORKERS:-} ]]; then sed -i "s/^worker_processes [0-9]*;/worker_processes $NGINX_WORKERS;/" "$prefix/nginx.conf"; fi
# As root, nginx's workers would run as nobody; let them read the repository.
if [[ $(id -u) == 0 ]]; then sed -i '1i user root;' "$prefix/nginx.conf"; fi

echo "Starting nginx with examples/nginx.conf on 127.0.0.1:$port ..."
nginx -p "$prefix" -c nginx.conf
for _ in $(seq 1 100); do
    [[ -s $prefix/logs/nginx.pid ]] && curl -sf -o /dev/null -m 1 "$DYNLOG_NGINX_URL/stats" && break
    sleep 0.1
done
nginx_pid=$(cat "$prefix/logs/nginx.pid")

BENCH_COMMAND=$command_line BENCH_NGINX_PID=$nginx_pid BENCH_DDB_PID=$(cat "$state/pid") \
    lua5.4 bench/pipeline.lua run
