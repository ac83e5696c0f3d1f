#!/usr/bin/env bash
# `make chaos`: dynlog under injected faults and SIGKILLs, then every event accounted for.
#
# Builds (Lua 5.4 and LuaJIT), starts a private in-memory DynamoDB Local, and runs
# scripts/chaos.lua, which starts the fault-injecting proxies
# (spec/support/chaos_proxy.lua), two nginx with examples/nginx.conf, and the
# writer processes, kills the consumer nginx with SIGKILL a few times and a worker of
# the bus nginx too (its master starts another, which must deliver what the dead one
# had accepted), checks the invariants and prints the figures. Everything it started is stopped on the way
# out (also on Ctrl-C or failure). Exits 1 when an invariant broke.
#
#   CHAOS_SEED=1       the seed of the proxies, writers and kills (printed; replays a run)
#   CHAOS_RATE=0.2     the share of requests given a fault
#   CHAOS_KINDS=all    or a comma-separated list: reset_before,reset_after,stall,http500,
#                      http503,throttle,throttle2,truncate,bad_crc,trickle
#   CHAOS_WRITERS=4 CHAOS_OPS=100 CHAOS_KILLS=3 CHAOS_BUS_KILLS=3 CHAOS_DRAIN=120
#   CHAOS_KEEP=1       keep the work directory (logs, proxy counts) also after a pass
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh test
make -s
make -s luajit

work=$(mktemp -d /tmp/dynlog-chaos.XXXXXX)
cleanup() {
    local rc=$?
    if [[ -n ${runner:-} ]] && kill -0 "$runner" 2>/dev/null; then
        kill -TERM "$runner" 2>/dev/null || true
        wait "$runner" 2>/dev/null || true
    fi
    # What chaos.lua started (it records every pid), if still running and still ours.
    if [[ -f $work/pids ]]; then
        while read -r pid; do
            [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || continue
            if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qE 'nginx|chaos'; then
                kill -9 "$pid" 2>/dev/null || true
            fi
        done <"$work/pids"
    fi
    scripts/dynamodb-local stop "$work/ddb" || true
    if [[ $rc == 0 && -z ${CHAOS_KEEP:-} ]]; then
        rm -rf "$work"
    else
        echo "chaos: logs kept in $work (writer*.log, pipeline.log, *-stats.json, nginx-*/logs/error.log)"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "chaos: starting DynamoDB Local ..."
port=$(scripts/dynamodb-local start "$work/ddb")

export AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_DYNAMODB AWS_ENDPOINT_URL_EVENTBRIDGE \
    AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_CONTAINER_CREDENTIALS_FULL_URI 2>/dev/null || true

# The run is bounded (writers stop after 150 s, the drain after CHAOS_DRAIN); the timeout is a
# last resort. In the background, so that Ctrl-C reaches the trap at once.
LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build54/?.so;;' \
    timeout --signal=TERM --kill-after=10 600 lua5.4 scripts/chaos.lua run "$work" "$port" &
runner=$!
wait "$runner"
