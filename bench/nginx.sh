#!/usr/bin/env bash
# Worker CPU per PutItem of an event item inside nginx: dynlog's append over
# the cosocket transport beside the cheapest request a worker can make (the
# no-library floor: prebuilt request bytes on a pooled cosocket), in the same
# nginx (Debian's, with lua-nginx-module, 1 worker), at 1, 8 and 32 requests
# in flight (light threads). See bench/nginx.lua for the modes.
#
#   bench/nginx.sh     (from anywhere; prints a table, writes bench/nginx-results.json)
#
# Starts a private in-memory DynamoDB Local and nginx with bench/nginx.conf on
# free 127.0.0.1 ports, warms every mode up, then runs ROUNDS rounds of every
# mode and level (interleaved), keeps the median CPU per PutItem of each, and
# checks that the table holds exactly the items written. Settings:
#   N=1500 (PutItems per measurement)  WARMUP=600  ROUNDS=2  LEVELS="1 8 32"
#   PROFILE=1   also print jit.profile's top lines for floor and append at 8 in flight
#               (PROFILE_N=10000 PutItems each: Linux delivers its signal at most once a tick)
#   PERF=1      also perf record the worker over PROFILE_N PutItems of floor and of append
#               at 8 in flight; the top lines are printed, all of them in bench/peers/nginx-perf-{floor,append}.txt
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
N=${N:-1500} WARMUP=${WARMUP:-600} ROUNDS=${ROUNDS:-2} LEVELS=${LEVELS:-"1 8 32"} PROFILE_N=${PROFILE_N:-10000}
MODES="floor request append append_many append_tomb"

make -s luajit

bench_name=bench/nginx.sh
# shellcheck source=bench/nginx_env.sh
source bench/nginx_env.sh

echo "Starting DynamoDB Local (in memory) ..."
ddb_port=$(scripts/dynamodb-local start "$state")
port=$(free_port)
mkdir -p "$prefix/logs" "$prefix/tmp"
sed -e "s|@REPO@|$root|g" -e "s|@PORT@|$port|g" -e "s|@DDB_PORT@|$ddb_port|g" bench/nginx.conf >"$prefix/nginx.conf"
# As root, nginx's workers would run as nobody; let them read the repository.
if [[ $(id -u) == 0 ]]; then sed -i '1i user root;' "$prefix/nginx.conf"; fi
echo "Starting nginx (1 worker) on 127.0.0.1:$port ..."
nginx -p "$prefix" -c nginx.conf
for _ in $(seq 1 100); do
    [[ -s $prefix/logs/nginx.pid ]] && curl -sf -o /dev/null -m 1 "http://127.0.0.1:$port/ping" && break
    sleep 0.1
done
nginx_pid=$(cat "$prefix/logs/nginx.pid")

get() { curl -sf -m 600 "http://127.0.0.1:$port$1"; }
get /setup >/dev/null

out=$work/runs.jsonl
: >"$out"
: >"$work/warmup.jsonl"
echo "Warming up: $WARMUP PutItems per mode at 8 in flight ..."
for mode in $MODES; do
    get "/run?mode=$mode&n=$WARMUP&inflight=8" >>"$work/warmup.jsonl"
done
for round in $(seq 1 "$ROUNDS"); do
    echo "Round $round of $ROUNDS: $N PutItems per mode and level ..."
    for level in $LEVELS; do
        for mode in $MODES; do
            get "/run?mode=$mode&n=$N&inflight=$level" >>"$out"
        done
    done
    get "/run?mode=lua_only&n=$N&inflight=1" >>"$out"
done
load=$(cut -d' ' -f1-3 /proc/loadavg)

profiles=$work/profiles.jsonl
: >"$profiles"
if [[ ${PROFILE:-} == 1 ]]; then
    echo "jit.profile: $PROFILE_N PutItems of floor and append at 8 in flight ..."
    for mode in floor append; do get "/profile?mode=$mode&n=$PROFILE_N&inflight=8" >>"$profiles"; done
fi
if [[ ${PERF:-} == 1 ]]; then
    worker=$(pgrep -P "$nginx_pid")
    for mode in floor append; do
        echo "perf record on the worker ($worker): $PROFILE_N PutItems of $mode at 8 in flight ..."
        # the floor's requests are built before perf starts
        if [[ $mode == floor ]]; then get "/prepare?n=$PROFILE_N" >/dev/null; fi
        perf record -F 2000 -g -p "$worker" -o "$work/perf-$mode.data" 2>/dev/null &
        perf_pid=$!
        sleep 0.5
        get "/run?mode=$mode&n=$PROFILE_N&inflight=8&prepared=1" >>"$work/warmup.jsonl"
        kill -INT "$perf_pid"; wait "$perf_pid" || true
        perf report -i "$work/perf-$mode.data" --no-children -g none --sort dso,sym --stdio 2>/dev/null \
            | grep -E '^ +[0-9]' >"$work/perf-$mode.txt" || true
        mkdir -p bench/peers && cp "$work/perf-$mode.txt" "bench/peers/nginx-perf-$mode.txt"
        head -n 30 "$work/perf-$mode.txt"
    done
fi
get /count >"$work/count.json"

BENCH_LOAD=$load BENCH_N=$N BENCH_ROUNDS=$ROUNDS python3 - "$out" "$work/count.json" "$profiles" "$work/warmup.jsonl" <<'PY'
import json, os, statistics, sys, time
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
count = json.load(open(sys.argv[2]))["items"]
profiles = [json.loads(l) for l in open(sys.argv[3]) if l.strip()]
warmups = [json.loads(l) for l in open(sys.argv[4]) if l.strip()]
written = sum(r["written"] for r in runs + warmups) + sum(p["done"] for p in profiles)
modes = ["floor", "request", "append", "append_many", "append_tomb", "lua_only"]
levels = sorted({r["inflight"] for r in runs if r["mode"] != "lua_only"})
res = {}
for m in modes:
    for k in (levels if m != "lua_only" else [1]):
        rs = [r for r in runs if r["mode"] == m and r["inflight"] == k]
        if rs:
            res.setdefault(m, {})[str(k)] = {
                "cpu_us": round(statistics.median(r["cpu_us"] for r in rs), 1),
                "proc_cpu_us": round(statistics.median(r["proc_cpu_us"] for r in rs), 1),
                "ops_per_s": round(statistics.median(r["ops_per_s"] for r in rs)),
                "rounds": [round(r["cpu_us"], 1) for r in rs]}
for m in modes[:-1]:
    for k in map(str, levels):
        res[m][k]["x_floor"] = round(res[m][k]["cpu_us"] / res["floor"][k]["cpu_us"], 2)
print()
print("worker CPU per PutItem, us (median of %s rounds of %s; os.clock, /proc utime+stime in brackets),"
      " x the floor at that level" % (os.environ["BENCH_ROUNDS"], os.environ["BENCH_N"]))
print("%-28s" % "in flight" + "".join("| %-24s" % k for k in levels))
labels = {"floor": "floor (no library)", "request": "dynlog transport:request", "append": "c:append",
          "append_many": "c:append_many", "append_tomb": "c:append + tombstone (2 req)"}
for m in modes[:-1]:
    print("%-28s" % labels[m] + "".join("| %6.1f (%6.1f) %5.2fx " % (res[m][k]["cpu_us"], res[m][k]["proc_cpu_us"],
          res[m][k]["x_floor"]) for k in map(str, levels)))
print("%-28s" % "ops/s (floor/append)" + "".join("| %-24s" % ("%d / %d" % (res["floor"][k]["ops_per_s"],
      res["append"][k]["ops_per_s"])) for k in map(str, levels)))
alloc = statistics.median(r["alloc_bytes"] for r in runs if r["mode"] == "lua_only")
res["lua_only"]["1"]["alloc_bytes"] = round(alloc)
print("c:append's Lua alone (a transport that answers at once, no network): %.1f us, %d bytes of Lua heap"
      % (res["lua_only"]["1"]["cpu_us"], alloc))
print("target: c:append <= 95 us and <= 1.3x the floor, at every level:",
      "met" if all(res["append"][k]["cpu_us"] <= 95 and res["append"][k]["x_floor"] <= 1.3
                   for k in map(str, levels)) else "NOT met")
ok = count == written
print("items in the table: %d (expected %d) %s" % (count, written, "ok" if ok else "MISMATCH"))
for p in profiles:
    print("\njit.profile, %s at %d in flight, %d PutItems, %d samples (1 ms):" % (p["mode"], p["inflight"], p["n"], p["samples"]))
    print("  vm state (N compiled, I interpreted, C C code, G GC, J JIT compiler): " + ", ".join(
        l.strip() for l in p["vmstate"]))
    for l in p["functions"][:20]: print("  " + l)
doc = {"command": "bench/nginx.sh", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "load": os.environ["BENCH_LOAD"], "n": int(os.environ["BENCH_N"]), "rounds": int(os.environ["BENCH_ROUNDS"]),
       "results": res, "items": count, "items_expected": written, "profiles": profiles}
with open("bench/nginx-results.json", "w") as fh:
    json.dump(doc, fh, indent=1)
    fh.write("\n")
sys.exit(0 if ok else 1)
PY
