#!/usr/bin/env bash
# Throughput against one DynamoDB Local: dynlog beside its peers, same work.
#
#   bash bench/throughput.sh      (from anywhere; ~6-9 minutes on a busy 2-core box)
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
#            one keep-alive http.Agent (maxSockets 64).
#   boto3    bench/throughput/boto3.py: boto3 resource Table, N threads each
#            with its own Session.
# Each client gets a FRESH in-memory DynamoDB Local (it slows down as tables
# and items pile up in one process), creates one table there (pk S / sk S,
# on demand, stream NEW_AND_OLD_IMAGES: what dynlog's create_table makes),
# preloads 10 items into each of 100 query streams, then measures:
#   append  PutItem of {pk="bench#<id>#stream", sk=<ULID, or a unique
#           increasing 26-char string for the peers>, type="tick", log="bench",
#           payload={id, n, note="some text"}} with attribute_not_exists(pk),
#           ids round robin over 1000 streams, each request a new item;
#   query   Query pk = :pk (ConsistentRead false) of one of the 100 streams,
#           round robin: 10 items each;
# each at 1, 8 and 32 requests in flight. Every measurement is WARMUP
# operations of the same work (not counted), then COUNT operations timed.
# A fixed count rather than a fixed time, so that every client leaves the
# server with the same number of items for the next measurement.
# ops/s is COUNT over the wall time of those COUNT; CPU µs/op is the user +
# sys CPU time of the client process (all its threads) over them, read
# inside the client: getrusage(RUSAGE_SELF) in C, node and Python, os.clock()
# (clock(3), the same thing) in Lua. The server's CPU is not counted.
# The server and the client share the machine's cores, so a client's CPU per
# operation also lowers the throughput it can get.
# Checks: every query returned 10 items, and the table holds exactly the
# items the client says it wrote (a Scan with Select COUNT after its run).
#
# Installs what it needs: npm packages into bench/peers/ (git-ignored), and
# python3-boto3 through apt only when python3 cannot import boto3.
# Settings: BENCH_COUNT (1200), BENCH_WARMUP (400), BENCH_ROUNDS (2: the
# table shows each client's best round; the order of the clients is reversed
# in every other round), BENCH_CLIENTS ("ceiling dynlog sdk-v3 boto3"),
# BENCH_CLIENT_TIMEOUT (300 s per client run).
# No network except npm / apt and 127.0.0.1. On a shared machine the figures
# move with the other load: the table prints the load average around the run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PEERS=$ROOT/bench/peers
OUT=$PEERS/throughput
RESULTS=$ROOT/bench/throughput-results.json
COUNT=${BENCH_COUNT:-1200}
WARMUP=${BENCH_WARMUP:-400}
CLIENTS=${BENCH_CLIENTS:-ceiling dynlog sdk-v3 boto3}
ROUNDS=${BENCH_ROUNDS:-2}
CLIENT_TIMEOUT=${BENCH_CLIENT_TIMEOUT:-300}
mkdir -p "$PEERS/bin" "$OUT"
rm -f "$OUT"/*.jsonl "$OUT"/*.err "$OUT"/*.check
log() { printf '== %s\n' "$*" >&2; }
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

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

# ---- one fresh DynamoDB Local per client ----
STATE=
stop_server() {
  if [ -n "$STATE" ]; then scripts/dynamodb-local stop "$STATE" || true; rm -rf "$STATE"; STATE=; fi
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# Items in the table: a Scan with Select COUNT, page by page.
count_items() {
  "$PY" - "$1" <<'EOF'
import json, sys, urllib.request
url, total, start = "http://127.0.0.1:%s/" % sys.argv[1], 0, None
while True:
    body = {"TableName": "bench_events", "Select": "COUNT"}
    if start:
        body["ExclusiveStartKey"] = start
    req = urllib.request.Request(url, json.dumps(body).encode(), {
        "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "DynamoDB_20120810.Scan",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDBENCH/20200101/us-east-1/dynamodb/aws4_request, "
                         "SignedHeaders=host, Signature=0"})
    out = json.load(urllib.request.urlopen(req, timeout=60))
    total += out["Count"]
    start = out.get("LastEvaluatedKey")
    if not start:
        break
print(total)
EOF
}

client_cmd() { # sets CMD to the command that runs client $1 against port $2
  case $1 in
  ceiling) CMD=("$PEERS/bin/ceiling" "$2" "$COUNT" "$WARMUP") ;;
  dynlog) CMD=(env 'LUA_PATH=lua/?.lua;lua/?/init.lua;;' 'LUA_CPATH=build54/?.so;;'
               lua5.4 bench/throughput/dynlog.lua "$2" "$COUNT" "$WARMUP") ;;
  sdk-v3) CMD=(node bench/throughput/sdk_v3.js "$PEERS" "$2" "$COUNT" "$WARMUP") ;;
  boto3) CMD=("$PY" bench/throughput/boto3.py "$2" "$COUNT" "$WARMUP") ;;
  *) echo "unknown client $1 (ceiling, dynlog, sdk-v3, boto3)" >&2; exit 2 ;;
  esac
}

# Rounds: the machine may be shared, so every client runs ROUNDS times, the
# order reversed from one round to the next; the table shows each client's
# best round per measurement.
REVERSED=$(echo "$CLIENTS" | tr ' ' '\n' | tac | tr '\n' ' ')
for round in $(seq 1 "$ROUNDS"); do
  order=$CLIENTS
  [ $((round % 2)) -eq 0 ] && order=$REVERSED
  for client in $order; do
    client_cmd "$client" 0
    STATE=$(mktemp -d /tmp/dynlog-throughput.XXXXXX)
    port=$(scripts/dynamodb-local start "$STATE")
    client_cmd "$client" "$port"
    log "round $round/$ROUNDS: $client (DynamoDB Local on port $port, $WARMUP + $COUNT operations per measurement)"
    run=$OUT/$client.r$round
    if ! timeout "$CLIENT_TIMEOUT" "${CMD[@]}" > "$run.jsonl" 2> "$run.err"; then
      log "$client failed (or ran over ${CLIENT_TIMEOUT}s); its stderr:"
      tail -20 "$run.err" >&2
      exit 1
    fi
    echo "{\"client\":\"$client\",\"round\":$round,\"items_in_table\":$(count_items "$port")}" > "$run.check"
    stop_server
  done
done

# ---- machine and versions ----
{
  echo "nproc=$(nproc)"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "mem_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
  echo "kernel=$(uname -r)"
  echo "loadavg_start=$LOAD_START"
  echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "dynlog=$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- src lua 2>/dev/null || echo ' + uncommitted changes in src/ or lua/')"
  echo "lua=$(lua5.4 -v 2>&1 | head -1)"
  echo "node=$(node --version)"
  echo "python=$("$PY" --version 2>&1)"
  echo "boto3=$("$PY" -c 'import boto3, botocore; print(boto3.__version__, "botocore", botocore.__version__)')"
  echo "aws_sdk_client_dynamodb=$(node -p "require('$PEERS/node_modules/@aws-sdk/client-dynamodb/package.json').version")"
  echo "aws_sdk_lib_dynamodb=$(node -p "require('$PEERS/node_modules/@aws-sdk/lib-dynamodb/package.json').version")"
  echo "libcurl=$(curl --version | head -1 | cut -d' ' -f2-3)"
  echo "java=$(java -version 2>&1 | head -1)"
  echo "dynamodb_local=$(unzip -p .cache/dynamodb-local/emulator/DynamoDBLocal.jar \
    META-INF/maven/com/amazonaws/DynamoDBLocal/pom.properties 2>/dev/null | sed -n 's/^version=//p' | tr -d '\r')"
  echo "cc=$(cc --version | head -1)"
} > "$OUT/machine.txt"

# ---- results file and table ----
python3 - "$OUT" "$RESULTS" "$COUNT" "$WARMUP" "$CLIENTS" "$ROUNDS" <<'EOF'
import datetime, json, os, sys

out, results_path, count, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
clients, rounds = sys.argv[5].split(), int(sys.argv[6])
PEERS = [c for c in ("sdk-v3", "boto3") if c in clients]
PRELOAD = 100 * 10
machine = {}
for line in open(os.path.join(out, "machine.txt")):
    k, _, v = line.rstrip("\n").partition("=")
    machine[k] = int(v) if k in ("nproc", "mem_kb") else v

results, checks, problems = [], [], []
for c in clients:
    for rnd in range(1, rounds + 1):
        run = os.path.join(out, "%s.r%d" % (c, rnd))
        for line in open(run + ".jsonl"):
            if line.strip():
                r = json.loads(line)
                r["round"] = rnd
                results.append(r)
        checks.append(json.load(open(run + ".check")))
for r in results:
    what = "%s round %d, %s x%d" % (r["client"], r["round"], r["workload"], r["in_flight"])
    if r.get("errors"):
        problems.append("%s: %d errors" % (what, r["errors"]))
    if r["workload"] == "query" and r.get("items") != 10 * r["ops"]:
        problems.append("%s: %s items for %d queries (want 10 each)" % (what, r.get("items"), r["ops"]))
for chk in checks:
    appended = sum(r["ops"] + r["warmup_ops"] for r in results
                   if r["client"] == chk["client"] and r["round"] == chk["round"] and r["workload"] == "append")
    chk["items_expected"] = PRELOAD + appended
    if chk["items_in_table"] != chk["items_expected"]:
        problems.append("%s round %d: %d items in its table, %d expected"
                        % (chk["client"], chk["round"], chk["items_in_table"], chk["items_expected"]))

# Each client's best round per measurement (highest ops/s; its CPU/op goes with it).
best = {}
for r in results:
    key = (r["client"], r["workload"], r["in_flight"])
    if key not in best or r["ops_per_s"] > best[key]["ops_per_s"]:
        best[key] = r
by = best
levels = sorted({r["in_flight"] for r in results})
workloads = [w for w in ("append", "query") if any(r["workload"] == w for r in results)]
comparisons = []
for w in workloads:
    for n in levels:
        d = by.get(("dynlog", w, n))
        if not d:
            continue
        cmp = {"workload": w, "in_flight": n}
        peers = [by[(p, w, n)] for p in PEERS if (p, w, n) in by]
        if peers:
            fast = max(peers, key=lambda r: r["ops_per_s"])
            lean = min(peers, key=lambda r: r["cpu_us_per_op"])
            cmp["best_peer_throughput"] = fast["client"]
            cmp["pct_of_best_peer"] = round(100 * d["ops_per_s"] / fast["ops_per_s"], 1)
            cmp["target_ge_best_peer"] = d["ops_per_s"] >= fast["ops_per_s"]
            cmp["best_peer_cpu"] = lean["client"]
            cmp["cpu_ratio_to_best_peer"] = round(d["cpu_us_per_op"] / lean["cpu_us_per_op"], 3)
            cmp["target_cpu_le_fifth_of_best_peer"] = d["cpu_us_per_op"] <= lean["cpu_us_per_op"] / 5
        ceil = by.get(("ceiling", w, n))
        if ceil:
            cmp["pct_of_ceiling"] = round(100 * d["ops_per_s"] / ceil["ops_per_s"], 1)
            cmp["target_within_10pct_of_ceiling"] = d["ops_per_s"] >= 0.9 * ceil["ops_per_s"]
        comparisons.append(cmp)

doc = {
    "command": "bash bench/throughput.sh",
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "machine": machine,
    "settings": {"count": count, "warmup": warmup, "rounds": rounds, "clients": clients, "in_flight": levels, "append_streams": 1000,
                 "query_streams": 100, "items_per_query_stream": 10,
                 "cpu": "user+sys of the client process, read inside it (getrusage / os.clock)",
                 "server": "a fresh in-memory DynamoDB Local per client"},
    "results": results,
    "best_of_rounds": sorted(best.values(), key=lambda r: (r["workload"], r["in_flight"], r["client"])),
    "checks": checks,
    "dynlog_vs": comparisons,
    "problems": problems,
}
with open(results_path, "w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")

def mark(ok):
    return "" if ok is None else (" met" if ok else " NOT met")

shown = [c for c in ("ceiling", "dynlog", "sdk-v3", "boto3") if c in clients]
print()
print("%d-core %s, load average %s at start, %s at end" % (machine["nproc"], machine["cpu"],
      machine["loadavg_start"], machine["loadavg_end"]))
print("%d operations per measurement after %d of warm-up; fresh DynamoDB Local %s per client run;"
      % (count, warmup, machine.get("dynamodb_local", "")))
print("best of %d rounds per client and measurement (highest ops/s, with that run's CPU/op)" % rounds)
w1 = 9 * len(shown)
print()
print("%-8s %4s | %-*s| %-*s| dynlog vs best peer / ceiling" % ("", "", w1, "ops/s", w1, "client CPU us/op"))
print("%-8s %4s | %s| %s| %-22s %-17s %s" % ("workload", "N", "".join("%8s " % c for c in shown),
      "".join("%8s " % c for c in shown), "ops/s % of best peer", "ops/s % of ceil", "CPU / best peer's"))
for cmp in comparisons:
    w, n = cmp["workload"], cmp["in_flight"]
    ops = "".join("%8.0f " % by[(c, w, n)]["ops_per_s"] if (c, w, n) in by else "%8s " % "-" for c in shown)
    cpu = "".join("%8.0f " % by[(c, w, n)]["cpu_us_per_op"] if (c, w, n) in by else "%8s " % "-" for c in shown)
    peer = ("%5.0f%%%s" % (cmp["pct_of_best_peer"], mark(cmp["target_ge_best_peer"]))) if "pct_of_best_peer" in cmp else "-"
    ceil = ("%5.0f%%%s" % (cmp["pct_of_ceiling"], mark(cmp["target_within_10pct_of_ceiling"]))) if "pct_of_ceiling" in cmp else "-"
    cpur = ("%5.2f%s" % (cmp["cpu_ratio_to_best_peer"], mark(cmp["target_cpu_le_fifth_of_best_peer"]))) if "cpu_ratio_to_best_peer" in cmp else "-"
    print("%-8s %4d | %s| %s| %-22s %-17s %s" % (w, n, ops, cpu, peer, ceil, cpur))
print()
print("targets, at every level: dynlog ops/s >= best peer's; >= 90% of the ceiling; CPU/op <= 1/5 of best peer's")
for key, what in (("target_ge_best_peer", ">= best peer"), ("target_within_10pct_of_ceiling", "within 10% of ceiling"),
                  ("target_cpu_le_fifth_of_best_peer", "CPU <= 1/5 of best peer")):
    vals = [c[key] for c in comparisons if key in c]
    if vals:
        print("  %-26s %s (%d of %d levels)" % (what, "met" if all(vals) else "NOT met", sum(vals), len(vals)))
print()
for chk in checks:
    print("  %-8s round %d: %d items in its table (expected %d)"
          % (chk["client"], chk["round"], chk["items_in_table"], chk["items_expected"]))
for p in problems:
    print("PROBLEM: " + p)
print("\nwritten " + os.path.relpath(results_path))
sys.exit(1 if problems else 0)
EOF
