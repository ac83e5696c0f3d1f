#!/usr/bin/env bash
# The feed's figures: how fast the indexer fills it from the table's stream,
# what an event costs it in write units, how fast it is read back (read_all
# and a subscription catching up), and the indexer's lag under steady load,
# against a fresh in-memory DynamoDB Local.
#
#   bash bench/feed.sh         (from anywhere; about two minutes)
#
# Writes bench/feed-results.json and prints a table. Settings:
# BENCH_FEED_EVENTS (20000 events over 500 streams), BENCH_FEED_RATE (1000
# appends/s offered) and BENCH_FEED_SECONDS (30) for the steady load.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${BENCH_FEED_EVENTS:-20000}
RATE=${BENCH_FEED_RATE:-1000}
SECONDS_=${BENCH_FEED_SECONDS:-30}
make -s >&2
STATE=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; scripts/dynamodb-local stop "$STATE" >/dev/null 2>&1 || true; rm -rf "$STATE"' EXIT
port=$(scripts/dynamodb-local start "$STATE")
run() { LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build54/?.so;;' timeout 900 lua5.4 bench/feed.lua "$port" "$@"; }
out=$STATE/out.jsonl
run bench-feed fill "$EVENTS" 500 >> "$out"
run bench-feed index "$EVENTS" >> "$out"
run bench-feed commit "$EVENTS" >> "$out"
run bench-feed read "$EVENTS" >> "$out"
run bench-feed catchup "$EVENTS" >> "$out"
# Steady load: writers append at RATE/s while one indexer follows.
run bench-steady fill 0 1 > /dev/null
run bench-steady write "$RATE" "$SECONDS_" > "$STATE/write.tmp" && mv "$STATE/write.tmp" "$STATE/write.json" &
writer=$!
run bench-steady follow "$STATE/write.json" > "$STATE/follow.json" &
follower=$!
wait "$writer"
wait "$follower"
cat "$STATE/write.json" >> "$out"
written=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["events"])' "$STATE/write.json")
run bench-steady lag "$written" >> "$out"
python3 - "$out" <<'PY'
import json, sys, time
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows[r["mode"]] = r
print("%-44s %12s" % ("", "figure"))
print("%-44s %12.0f" % ("indexer from the stream, events/s", rows["index"]["events_per_second"]))
print("%-44s %12.2f" % ("  write units per event (transactions)", rows["index"]["wcu_per_event"]))
print("%-44s %12.0f" % ("commit path alone, events/s", rows["commit"]["events_per_second"]))
print("%-44s %12.0f" % ("read_all, events/s", rows["read"]["events_per_second"]))
print("%-44s %12.0f" % ("subscription catching up, events/s", rows["catchup"]["events_per_second"]))
w, l = rows["write"], rows["lag"]
print("%-44s %12.0f" % ("steady load offered, appends/s", w["rate"]))
print("%-44s %12d" % ("  indexer lag p50, ms", l["p50_ms"]))
print("%-44s %12d" % ("  indexer lag p99, ms", l["p99_ms"]))
print("%-44s %12d" % ("  indexer lag max, ms", l["max_ms"]))
with open("bench/feed-results.json", "w") as f:
    json.dump({"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}, f, indent=1)
    f.write("\n")
PY
