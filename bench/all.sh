#!/usr/bin/env bash
# `make bench`: every benchmark in one run, each printing its table, then
# bench/results.json with all their figures, the machine and the date.
#
#   micro       bench/run.sh: ULID, SigV4, marshalling beside npm ulid, aws4,
#               the v3 SDK's signer, botocore, lua-cjson and a hashing floor
#   throughput  bench/throughput.sh: append and query at 1, 8 and 32 in flight
#               beside the v3 SDK's DocumentClient, boto3 and a raw ceiling,
#               every client warmed, the clients in turn in every round
#   pipeline    bench/pipeline.sh: append → projection latency through nginx at
#               a ramp of rates, and the maximum rate it sustains
#   memory      bench/memory.sh: the client's resident size, iterating 100k events;
#               an nginx worker's, and the shared objects it maps
#   eventid     bench/eventid.sh: write units and appends per second with and
#               without event ids
#   feed        bench/feed.sh: the indexer's throughput and write units per
#               event, read_all and a subscription catching up, lag under load
#   lambda      bench/lambda.sh: the Lambda runtime's cold start and CPU per
#               invocation of the trigger and of a projection
#   nginx       bench/nginx.sh: an nginx worker's CPU per append over cosockets
#               beside a no-library floor (prebuilt requests on a pooled cosocket)
#
# Each part installs what it needs (npm into bench/peers/, python3-boto3 from
# Debian) and starts its own DynamoDB Local. Defaults keep the whole run
# about 10 minutes on 2 cores: BENCH_ROUNDS=3 (throughput), RATES="100 200
# 400 600 800 1000 1200 1400" DURATION=10 (pipeline: the ramp stops after two
# rates in a row not sustained), EVENTS=100000 (memory); set them to change that.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
part() { printf '\n===== %s =====\n' "$1"; }

part "micro: ULID, SigV4, marshalling (bench/run.sh)"
bench/run.sh
part "throughput: append and query beside the SDKs (bench/throughput.sh)"
BENCH_ROUNDS=${BENCH_ROUNDS:-3} bash bench/throughput.sh
part "pipeline: append → projection latency and the maximum sustained rate through nginx (bench/pipeline.sh)"
RATES=${RATES:-"100 200 400 600 800 1000 1200 1400"} DURATION=${DURATION:-10} bash bench/pipeline.sh
part "memory: resident size while iterating a long stream (bench/memory.sh)"
bash bench/memory.sh
part "eventid: what an event id costs (bench/eventid.sh)"
bash bench/eventid.sh
part "feed: the indexer, reads and subscriptions (bench/feed.sh)"
bash bench/feed.sh
part "lambda: the Lambda runtime's cold start and CPU per invocation (bench/lambda.sh)"
bash bench/lambda.sh
part "nginx: worker CPU per append over cosockets beside the no-library floor (bench/nginx.sh)"
bash bench/nginx.sh

python3 - "$started" <<'PY'
import json, sys, time, subprocess
parts = {}
for name in ("micro", "throughput", "pipeline", "memory", "eventid", "feed", "lambda", "nginx"):
    with open("bench/%s-results.json" % name) as f:
        parts[name] = json.load(f)
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
doc = {"command": "make bench", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "commit": commit, "seconds": round(time.time() - int(sys.argv[1])), **parts}
with open("bench/results.json", "w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")
print("\nmake bench: %d s; every figure in bench/results.json" % doc["seconds"])
PY
