#!/usr/bin/env bash
# Figures of the Lua runtime for AWS Lambda: cold start (process start to the
# first `next` request) and CPU per invocation of the trigger and of a
# projection, with the bootstrap of `make lambda` against the loopback
# Runtime API, DynamoDB Local and a loopback PutEvents answerer.
#
#   bash bench/lambda.sh       (well under a minute)
#
# Writes bench/lambda-results.json and prints a table. Figures only: on this
# machine, not in Lambda (whose cold start adds the fetch and unpacking of
# the zip and the start of the execution environment). Settings:
# BENCH_LAMBDA_INVOCATIONS (200), BENCH_LAMBDA_COLD_RUNS (10).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_LAMBDA_INVOCATIONS:-200}
RUNS=${BENCH_LAMBDA_COLD_RUNS:-10}
make -s >&2
STATE=$(mktemp -d)
trap 'scripts/dynamodb-local stop "$STATE" >/dev/null 2>&1 || true; rm -rf "$STATE"' EXIT
scripts/lambda.sh "$STATE/dist" >&2
mkdir -p "$STATE/root"
unzip -q "$STATE"/dist/dynlog-lambda-*.zip -d "$STATE/root"
zip_bytes=$(stat -c %s "$STATE"/dist/dynlog-lambda-*.zip)
port=$(scripts/dynamodb-local start "$STATE")
LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build54/?.so;;' \
  timeout 600 lua5.4 bench/lambda.lua "$port" "$STATE/root/bootstrap" "$N" "$RUNS" > "$STATE/out.json"
python3 - "$STATE/out.json" "$zip_bytes" <<'PY'
import json, sys, time
r = json.load(open(sys.argv[1]))
r["zip_bytes"] = int(sys.argv[2])
print("%-28s %12s %12s" % ("", "trigger", "projection"))
print("%-28s %12.1f %12.1f" % ("cold start, ms (median)", r["cold_start"]["trigger"]["wall_ms_median"],
                                r["cold_start"]["project"]["wall_ms_median"]))
print("%-28s %12.1f %12.1f" % ("cold start CPU, ms", r["cold_start"]["trigger"]["cpu_ms_median"],
                                r["cold_start"]["project"]["cpu_ms_median"]))
print("%-28s %12.2f %12.2f" % ("CPU per invocation, ms", r["trigger"]["cpu_ms_per_invocation"],
                                r["project"]["cpu_ms_per_invocation"]))
print("%-28s %12.2f %12.2f" % ("wall per invocation, ms", r["trigger"]["wall_ms_per_invocation"],
                                r["project"]["wall_ms_per_invocation"]))
print("(trigger: %d records per invocation; %d invocations each; CPU in ticks of 1/%d s; zip %d bytes)"
      % (r["trigger"]["records_per_invocation"], r["n"], r["clk_tck"], r["zip_bytes"]))
r["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
with open("bench/lambda-results.json", "w") as f:
    json.dump(r, f, indent=1)
    f.write("\n")
PY
