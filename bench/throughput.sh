#!/usr/bin/env bash
# Throughput and client CPU of dynlog beside its peers, same work, against
# DynamoDB Local.
#
#   bash bench/throughput.sh      (from anywhere; ~4-6 minutes on a busy 2-core box)
#
# Writes bench/throughput-results.json and prints a table. Clients:
#   ceiling  bench/throughput/ceiling.c: the cheapest client we could write
#            (raw HTTP/1.1 over kept-alive sockets and epoll, requests built
#            before the clock starts, a fake Authorization header, which
#            DynamoDB Local does not check): what the server itself can do.
#   dynlog   bench/throughput/dynlog.lua on Lua 5.4 (build54/): append_many
#            with concurrency = N for appends, dynlog.transport.concurrent.run with N
#            runs for queries (coroutines over one curl multi handle).
#   sdk-v3   bench/throughput/sdk_v3.js: AWS SDK for JavaScript v3,
#            DynamoDBDocumentClient, N promises looping over a shared counter,
#            one client on one keep-alive http.Agent (maxSockets 64).
#   boto3    bench/throughput/boto3.py: one low-level boto3 client shared by
#            N threads, Config(max_pool_connections=64), items converted with
#            boto3's TypeSerializer / TypeDeserializer (the resource layer's
#            conversion; resources are not thread-safe).
# The peers are set up as a careful user would: one client per process, a
# connection pool larger than the requests in flight.
#
# Work: each client has its own in-memory DynamoDB Local, kept for the whole
# run, with one table (pk S / sk S, on demand, stream NEW_AND_OLD_IMAGES: what
# dynlog's create_table makes) and 10 items preloaded into each of 100 query
# streams. Measurements:
#   append  PutItem of {pk="bench#<id>#stream", sk=<ULID, or a unique
#           increasing 26-char string for the peers>, type="tick", log="bench",
#           payload={id, n, note="some text"}} with attribute_not_exists(pk),
#           ids round robin over 1000 streams, each request a new item;
#   query   Query pk = :pk (ConsistentRead false) of one of the 100 streams,
#           round robin: 10 items each;
# each at 1, 8 and 32 requests in flight.
#
# Fairness: every client is ONE process for the whole run, driven step by
# step over a pipe by bench/throughput/driver.py, so what it learns (a JIT's
# compiled code, caches, connection pools) carries over, as in an
# application. Before anything is timed each process does BENCH_WARM (3000)
# requests of both workloads at every level (after the 1000 puts of the
# preload): the v3 SDK's CPU per request falls by more than half over its
# first ~2,500 requests, and timing it before that measures node's start-up.
# Then BENCH_ROUNDS rounds: in each, every measurement is run by every client
# in turn (the order rotated by one from one measurement and round to the
# next), BENCH_LEAD (200) untimed operations (which also open connections
# again: DynamoDB Local closes idle ones after ~30 s) then BENCH_COUNT (1200)
# timed ones. So the clients meet the same load of the shared machine, minutes
# do not separate them, and their servers hold the same items at every step
# (a server of its own per client: DynamoDB Local slows down as items pile up
# in one process, and a shared one would be fuller for whoever comes later).
# ops/s is COUNT over the wall time of those COUNT; CPU us/op is the user +
# sys CPU time of the client process (all its threads) over them, read
# inside the client: getrusage(RUSAGE_SELF) in C, node and Python, os.clock()
# (clock(3), the same thing) in Lua. The server's CPU is not counted.
# The server and the client share the machine's cores, so a client's CPU per
# operation also lowers the throughput it can get.
# The table prints per measurement the median ops/s and CPU us/op of each
# client over the rounds, and the median and min-max of dynlog's ratios to
# each other client taken round by round (same round, minutes apart at most),
# and dynlog's targets: client CPU per append <= 70 us and per 10-event query
# page <= 90 us, throughput >= 90 % of the ceiling, at every level.
# Checks: every query (warm-up included) returned 10 items, and each table
# holds exactly the items its client sent and counted (a Scan with Select
# COUNT at the end); any failure makes the run fail.
#
# Installs what it needs: npm packages into bench/peers/ (git-ignored), and
# python3-boto3 through apt only when python3 cannot import boto3.
# Settings: BENCH_ROUNDS (3), BENCH_COUNT (1200), BENCH_LEAD (200),
# BENCH_WARM (3000), BENCH_WARM_BLOCK (250), BENCH_CLIENTS ("ceiling dynlog
# sdk-v3 boto3"), BENCH_STEP_TIMEOUT (300 s per step).
# No network except npm / apt and 127.0.0.1. On a shared machine the figures
# move with the other load: the table prints the load average around the run
# and at the start of every round.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PEERS=$ROOT/bench/peers
OUT=$PEERS/throughput
RESULTS=$ROOT/bench/throughput-results.json
CLIENTS=${BENCH_CLIENTS:-ceiling dynlog sdk-v3 boto3}
export BENCH_ROUNDS=${BENCH_ROUNDS:-3}
mkdir -p "$PEERS/bin" "$OUT"
rm -f "$OUT"/*.jsonl "$OUT"/*.err "$OUT"/*.check
log() { printf '== %s\n' "$*" >&2; }

# ---- what the peers need ----
NPM_PKGS="@aws-sdk/client-dynamodb@3.1169.0 @aws-sdk/lib-dynamodb@3.1169.0"
if [ ! -f "$PEERS/.npm-throughput" ] || [ "$(cat "$PEERS/.npm-throughput")" != "$NPM_PKGS" ]; then
  log "npm install into bench/peers: $NPM_PKGS"
  [ -f "$PEERS/package.json" ] || echo '{"name":"dynlog-bench-peers","private":true}' > "$PEERS/package.json"
  # shellcheck disable=SC2086 # one word per package
  (cd "$PEERS" && timeout 300 npm install --no-audit --no-fund --cache /tmp/dynlog-bench-npm-cache $NPM_PKGS >&2)
  echo "$NPM_PKGS" > "$PEERS/.npm-throughput"
fi
PY=python3
if ! python3 -c 'import boto3' 2>/dev/null; then
  log "apt-get install python3-boto3"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-boto3 >&2
  python3 -c 'import boto3' 2>/dev/null || PY=/usr/bin/python3
fi

# ---- builds ----
log "building dynlog.core (build54) and bench/peers/bin/ceiling"
make -s >&2
cc -O2 -Wall -Wextra bench/throughput/ceiling.c -o "$PEERS/bin/ceiling"

# ---- one DynamoDB Local per client, kept for the whole run ----
STATES=()
stop_servers() {
  local state
  for state in "${STATES[@]}"; do scripts/dynamodb-local stop "$state" || true; rm -rf "$state"; done
  STATES=()
}
trap stop_servers EXIT
trap 'exit 130' INT TERM
PORTS=() STARTING=()
for client in $CLIENTS; do # started side by side, each answering on its own port
  state=$(mktemp -d /tmp/dynlog-throughput.XXXXXX)
  STATES+=("$state")
  scripts/dynamodb-local start "$state" > "$state/started" &
  STARTING+=($!)
done
for pid in "${STARTING[@]}"; do wait "$pid"; done
i=0
for client in $CLIENTS; do
  PORTS+=("$client=$(cat "${STATES[$i]}/started")")
  i=$((i + 1))
done
log "DynamoDB Local per client: ${PORTS[*]}"

# ---- machine and versions ----
{
  echo "nproc=$(nproc)"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "mem_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
  echo "kernel=$(uname -r)"
  echo "dynlog=$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- src lua 2>/dev/null || echo ' + uncommitted changes in src/ or lua/')"
  echo "lua=$(lua5.4 -v 2>&1 | head -1)"
  echo "node=$(node --version)"
  echo "python=$("$PY" --version 2>&1)"
  echo "boto3=$("$PY" -c 'import boto3, botocore; print(boto3.__version__, "botocore", botocore.__version__)')"
  echo "aws_sdk_client_dynamodb=$(node -p "require('$PEERS/node_modules/@aws-sdk/client-dynamodb/package.json').version")"
  echo "aws_sdk_lib_dynamodb=$(node -p "require('$PEERS/node_modules/@aws-sdk/lib-dynamodb/package.json').version")"
  echo "libcurl=$(curl --version | head -1 | cut -d' ' -f2-3)"
  echo "java=$(java -version 2>&1 | head -1)"
  echo "dynamodb_local=$(unzip -p "${DDB_LOCAL_DIR:-.cache/dynamodb-local}/emulator/DynamoDBLocal.jar" \
    META-INF/maven/com/amazonaws/DynamoDBLocal/pom.properties 2>/dev/null | sed -n 's/^version=//p' | tr -d '\r')"
  echo "cc=$(cc --version | head -1)"
} > "$OUT/machine.txt"

# ---- the run, its checks, the results file and the table ----
PEERS=$PEERS PY=$PY python3 bench/throughput/driver.py "$OUT" "$RESULTS" "${PORTS[@]}"
