#!/usr/bin/env bash
# What an event id costs: appends with and without one, in both modes,
# against a fresh in-memory DynamoDB Local, one request in flight.
#
#   bash bench/eventid.sh      (from anywhere; well under a minute)
#
# Writes bench/eventid-results.json and prints a table: write units per
# append (DynamoDB's ConsumedCapacity, asked with ReturnConsumedCapacity =
# "TOTAL"), appends per second, and for the appends with event ids the
# retry of each (the same event id again: found, nothing written).
# The events are about 250 bytes (payload {id, n, note = 200 bytes}).
# Settings: BENCH_EVENTID_COUNT (300 appends per measurement).
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${BENCH_EVENTID_COUNT:-300}
make -s >&2
STATE=$(mktemp -d)
trap 'scripts/dynamodb-local stop "$STATE" >/dev/null 2>&1 || true; rm -rf "$STATE"' EXIT
port=$(scripts/dynamodb-local start "$STATE")
LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build54/?.so;;' \
  timeout 300 lua5.4 bench/eventid.lua "$port" "$COUNT" > "$STATE/out.jsonl"
python3 - "$STATE/out.jsonl" <<'PY'
import json, sys, time
rows = [json.loads(line) for line in open(sys.argv[1])]
print("%-8s %-9s %10s %12s %16s %12s" % ("mode", "event id", "WCU/append", "appends/s", "retry WCU/append", "retries/s"))
for r in rows:
    print("%-8s %-9s %10.2f %12.0f %16s %12s" % (
        r["mode"], "yes" if r["event_ids"] else "no", r["wcu_per_append"], r["appends_per_second"],
        "%.2f" % r["retry_wcu_per_append"] if r["event_ids"] else "-",
        "%.0f" % r["retries_per_second"] if r["event_ids"] else "-"))
with open("bench/eventid-results.json", "w") as f:
    json.dump({"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}, f, indent=1)
    f.write("\n")
PY
