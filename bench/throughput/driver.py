"""Runs bench/throughput.sh's clients step by step, checks their work, writes
the results file and prints the table (see bench/throughput.sh for what is
measured and why it is run this way).

    python3 bench/throughput/driver.py OUT_DIR RESULTS_JSON CLIENT=PORT...

Each CLIENT (ceiling, dynlog, sdk-v3, boto3) is one process started once and
kept for the whole run, against its own DynamoDB Local on PORT. Protocol: the
client creates the table and prints {"ready":true}; then each line the
driver writes ("append|query|preload IN_FLIGHT OPS") runs that many
operations with that many in flight and is answered with one JSON line
(ops, seconds, cpu_seconds of the whole process, errors, items, bad_pages:
queries that did not return 10 items, written: items written so far);
"quit" ends it.

Environment: BENCH_COUNT, BENCH_LEAD, BENCH_WARM, BENCH_WARM_BLOCK,
BENCH_ROUNDS, BENCH_STEP_TIMEOUT, PEERS (bench/peers), PY (python for boto3),
BENCH_COMMAND (the command shown in the results).
"""
import datetime
import json
import os
import select
import statistics
import subprocess
import sys
import time
import urllib.request

OUT, RESULTS = sys.argv[1], sys.argv[2]
PORTS = dict(a.split("=", 1) for a in sys.argv[3:])
CLIENTS = list(PORTS)
ORDER = [c for c in ("ceiling", "dynlog", "sdk-v3", "boto3") if c in CLIENTS]
PEERS = [c for c in ("sdk-v3", "boto3") if c in CLIENTS]
ENV = os.environ
COUNT = int(ENV.get("BENCH_COUNT", "1200"))
LEAD = int(ENV.get("BENCH_LEAD", "200"))
WARM = int(ENV.get("BENCH_WARM", "3000"))
WARM_BLOCK = int(ENV.get("BENCH_WARM_BLOCK", "250"))
ROUNDS = int(ENV.get("BENCH_ROUNDS", "3"))
STEP_TIMEOUT = float(ENV.get("BENCH_STEP_TIMEOUT", "300"))
PEERS_DIR = ENV.get("PEERS", "bench/peers")
PY = ENV.get("PY", "python3")
LEVELS = (1, 8, 32)
STEPS = [(w, n) for w in ("append", "query") for n in LEVELS]
QUERY_STREAMS, QUERY_ITEMS = 100, 10
PRELOAD = QUERY_STREAMS * QUERY_ITEMS
# Targets for dynlog (Lua 5.4): client CPU per operation, and throughput
# against the ceiling, at every level.
CPU_TARGET_US = {"append": 70, "query": 90}
CEILING_TARGET_PCT = 90


def command(client, port):
    if client == "ceiling":
        return [os.path.join(PEERS_DIR, "bin", "ceiling"), port]
    if client == "dynlog":
        return ["env", "LUA_PATH=lua/?.lua;lua/?/init.lua;;", "LUA_CPATH=build54/?.so;;",
                "lua5.4", "bench/throughput/dynlog.lua", port]
    if client == "sdk-v3":
        return ["node", "bench/throughput/sdk_v3.js", PEERS_DIR, port]
    if client == "boto3":
        return [PY, "bench/throughput/boto3.py", port]
    sys.exit("unknown client %s (ceiling, dynlog, sdk-v3, boto3)" % client)


class Client:
    def __init__(self, name, port):
        self.name, self.port = name, port
        self.err_path = os.path.join(OUT, name + ".err")
        self.proc = subprocess.Popen(command(name, port), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(self.err_path, "w"))
        self.buf = b""

    def fail(self, what):
        self.proc.kill()
        tail = open(self.err_path, errors="replace").read()[-3000:]
        sys.exit("%s: %s; its stderr:\n%s" % (self.name, what, tail))

    def reply(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail("no answer in %.0f s" % timeout)
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    self.fail("ended (exit status %s)" % self.proc.wait())
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)

    def step(self, workload, in_flight, ops):
        try:
            self.proc.stdin.write(b"%s %d %d\n" % (workload.encode(), in_flight, ops))
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.fail("ended")
        r = self.reply(STEP_TIMEOUT)
        r["cpu_us_per_op"] = r["cpu_seconds"] / r["ops"] * 1e6
        r["ops_per_s"] = r["ops"] / r["seconds"]
        return r

    def quit(self):
        self.proc.stdin.write(b"quit\n")
        self.proc.stdin.close()
        if self.proc.wait(timeout=60) != 0:
            self.fail("exit status %d" % self.proc.returncode)


def log(msg):
    print("== " + msg, file=sys.stderr, flush=True)


def loadavg():
    return " ".join(open("/proc/loadavg").read().split()[:3])


def count_items(port):
    """Items in the table: a Scan with Select COUNT, page by page."""
    total, start = 0, None
    while True:
        body = {"TableName": "bench_events", "Select": "COUNT"}
        if start:
            body["ExclusiveStartKey"] = start
        req = urllib.request.Request("http://127.0.0.1:%s/" % port, json.dumps(body).encode(), {
            "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "DynamoDB_20120810.Scan",
            "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDBENCH/20200101/us-east-1/dynamodb/aws4_request, "
                             "SignedHeaders=host, Signature=0"})
        out = json.load(urllib.request.urlopen(req, timeout=120))
        total += out["Count"]
        start = out.get("LastEvaluatedKey")
        if not start:
            return total


def main():
    load_start = loadavg()
    started = time.time()
    clients = {}
    for name in ORDER:  # one at a time: each starts on a quiet machine
        clients[name] = Client(name, PORTS[name])
        clients[name].reply(120)
    steps = []  # every step run, in order, with its phase

    def run(name, phase, workload, in_flight, ops, **extra):
        r = clients[name].step(workload, in_flight, ops)
        r.update(phase=phase, **extra)
        steps.append(r)
        return r

    # Preload, then the warm-up: every process does WARM requests of the
    # workloads, in blocks over every level, before any timed step.
    log("preload: %d items in %d query streams per client" % (PRELOAD, QUERY_STREAMS))
    for name in ORDER:
        run(name, "preload", "preload", 8, PRELOAD)
    passes = -(-WARM // (WARM_BLOCK * len(STEPS)))
    log("warm-up: %d requests per client (%d x %d per level and workload), clients in turn"
        % (passes * WARM_BLOCK * len(STEPS), passes, WARM_BLOCK))
    for p in range(passes):
        for w, n in STEPS:
            for name in ORDER:
                run(name, "warm", w, n, WARM_BLOCK, warm_pass=p + 1)

    # Rounds: in each, every measurement is run by every client in turn,
    # the order rotated by one from one measurement (and round) to the next.
    round_load = []
    for r in range(1, ROUNDS + 1):
        round_load.append(loadavg())
        log("round %d/%d (load average %s): %d untimed + %d timed operations per client and measurement"
            % (r, ROUNDS, round_load[-1], LEAD, COUNT))
        for mi, (w, n) in enumerate(STEPS):
            k = (r - 1 + mi) % len(ORDER)
            for pos, name in enumerate(ORDER[k:] + ORDER[:k]):
                if LEAD:
                    run(name, "lead", w, n, LEAD, round=r)
                run(name, "timed", w, n, COUNT, round=r, position=pos + 1)
    for name in ORDER:
        clients[name].quit()
    load_end = loadavg()

    # ---- checks ----
    problems, checks = [], []
    for s in steps:
        what = "%s %s %s x%d" % (s["client"], s["phase"], s["workload"], s["in_flight"])
        if s["errors"]:
            problems.append("%s: %d errors" % (what, s["errors"]))
        if s["workload"] == "query" and (s["bad_pages"] or s["items"] != QUERY_ITEMS * s["ops"]):
            problems.append("%s: %d items for %d queries, %d not of %d items"
                            % (what, s["items"], s["ops"], s["bad_pages"], QUERY_ITEMS))
    for name in ORDER:
        mine = [s for s in steps if s["client"] == name]
        sent = sum(s["ops"] for s in mine if s["workload"] in ("append", "preload"))
        chk = {"client": name, "items_expected": sent, "items_client_wrote": mine[-1]["written"],
               "items_in_table": count_items(PORTS[name])}
        checks.append(chk)
        if not chk["items_in_table"] == chk["items_client_wrote"] == sent:
            problems.append("%s: %d items in its table, %d written by its count, %d sent"
                            % (name, chk["items_in_table"], chk["items_client_wrote"], sent))
        chk["queries_checked"] = sum(s["ops"] for s in mine if s["workload"] == "query")

    # ---- figures ----
    timed = [s for s in steps if s["phase"] == "timed"]
    at = {(s["client"], s["workload"], s["in_flight"], s["round"]): s for s in timed}

    def spread(values):
        return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}

    rows = []
    for w, n in STEPS:
        row = {"workload": w, "in_flight": n, "clients": {}, "ratios": {}}
        for name in ORDER:
            runs = [at[(name, w, n, r)] for r in range(1, ROUNDS + 1)]
            row["clients"][name] = {"ops_per_s": spread([x["ops_per_s"] for x in runs]),
                                    "cpu_us_per_op": spread([x["cpu_us_per_op"] for x in runs])}
        if "dynlog" in ORDER:
            d = [at[("dynlog", w, n, r)] for r in range(1, ROUNDS + 1)]
            if "ceiling" in ORDER:
                c = [at[("ceiling", w, n, r)] for r in range(1, ROUNDS + 1)]
                row["ratios"]["ops_pct_of_ceiling"] = spread([100 * a["ops_per_s"] / b["ops_per_s"]
                                                              for a, b in zip(d, c)])
            for p in PEERS:
                pr = [at[(p, w, n, r)] for r in range(1, ROUNDS + 1)]
                row["ratios"]["ops_x_" + p] = spread([a["ops_per_s"] / b["ops_per_s"] for a, b in zip(d, pr)])
                row["ratios"]["cpu_less_than_" + p] = spread([b["cpu_us_per_op"] / a["cpu_us_per_op"]
                                                              for a, b in zip(d, pr)])
            cpu = row["clients"]["dynlog"]["cpu_us_per_op"]["median"]
            row["targets"] = {"cpu_us_per_op": {"value": cpu, "limit": CPU_TARGET_US[w],
                                                "met": cpu <= CPU_TARGET_US[w]}}
            if "ceiling" in ORDER:
                pct = row["ratios"]["ops_pct_of_ceiling"]["median"]
                row["targets"]["pct_of_ceiling"] = {"value": pct, "limit": CEILING_TARGET_PCT,
                                                    "met": pct >= CEILING_TARGET_PCT}
        rows.append(row)

    # The warm-up: CPU per operation over each pass (every level and workload
    # alike), beside the timed steps' (median per measurement, averaged).
    warm = {}
    for name in ORDER:
        mine = [s for s in steps if s["client"] == name]
        pre = [s for s in mine if s["phase"] == "preload"]
        w = {"preload_cpu_us_per_op": sum(s["cpu_seconds"] for s in pre) / sum(s["ops"] for s in pre) * 1e6}
        for p in range(1, passes + 1):
            blk = [s for s in mine if s["phase"] == "warm" and s["warm_pass"] == p]
            w["pass%d_cpu_us_per_op" % p] = sum(s["cpu_seconds"] for s in blk) / sum(s["ops"] for s in blk) * 1e6
        w["timed_cpu_us_per_op"] = statistics.mean(row["clients"][name]["cpu_us_per_op"]["median"] for row in rows)
        warm[name] = w

    machine = {}
    for line in open(os.path.join(OUT, "machine.txt")):
        k, _, v = line.rstrip("\n").partition("=")
        machine[k] = int(v) if k in ("nproc", "mem_kb") else v
    machine.update(loadavg_start=load_start, loadavg_end=load_end, loadavg_rounds=round_load)
    doc = {
        "command": ENV.get("BENCH_COMMAND", "bash bench/throughput.sh"),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(time.time() - started),
        "machine": machine,
        "settings": {"count": COUNT, "lead": LEAD, "warm": passes * WARM_BLOCK * len(STEPS),
                     "warm_block": WARM_BLOCK, "preload": PRELOAD, "rounds": ROUNDS, "clients": ORDER,
                     "in_flight": list(LEVELS), "append_streams": 1000, "query_streams": QUERY_STREAMS,
                     "items_per_query_stream": QUERY_ITEMS,
                     "cpu": "user+sys of the client process, read inside it (getrusage / os.clock)",
                     "server": "one in-memory DynamoDB Local per client, kept for the whole run",
                     "order": "every measurement run by every client in turn, the order rotated by one "
                              "from one measurement and round to the next"},
        "targets": {"cpu_us_per_op": CPU_TARGET_US, "pct_of_ceiling": CEILING_TARGET_PCT},
        "levels": rows,
        "warm_up": warm,
        "checks": checks,
        "problems": problems,
        "steps": steps,
    }
    with open(RESULTS, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    report(doc)
    if problems:
        sys.exit(1)


def report(doc):
    m, st, rows = doc["machine"], doc["settings"], doc["levels"]
    print()
    print("%d-core %s, load average %s at start, %s at end (rounds began at %s)"
          % (m["nproc"], m["cpu"], m["loadavg_start"], m["loadavg_end"], "; ".join(m["loadavg_rounds"])))
    print("One process per client for the whole run, each on its own in-memory DynamoDB Local %s;"
          % m.get("dynamodb_local", ""))
    print("warmed with %d puts and %d requests of both workloads at every level before any timing;"
          % (st["preload"], st["warm"]))
    print("%d rounds: every measurement run by every client in turn (order rotated), %d untimed then %d timed."
          % (st["rounds"], st["lead"], st["count"]))
    names = st["clients"]
    cols = "".join("%9s" % c for c in names)
    print()
    print("%-8s %3s | %-*s | %s" % ("", "", 9 * len(names), "median ops/s", "median client CPU us/op"))
    print("%-8s %3s | %s | %s" % ("workload", "N", cols, cols))
    for row in rows:
        c = row["clients"]
        print("%-8s %3d | %s | %s" % (row["workload"], row["in_flight"],
              "".join("%9.0f" % c[x]["ops_per_s"]["median"] for x in names),
              "".join("%9.0f" % c[x]["cpu_us_per_op"]["median"] for x in names)))
    if rows and rows[0]["ratios"]:
        keys = [k for k in rows[0]["ratios"]]
        heads = {"ops_pct_of_ceiling": "ops/s % of ceiling"}
        for p in PEERS:
            heads["ops_x_" + p] = "ops/s x " + p
            heads["cpu_less_than_" + p] = "CPU: %s/dynlog" % p
        print()
        print("dynlog's round-by-round ratios: median (min-max) over %d rounds" % st["rounds"])
        print("%-8s %3s | %s" % ("workload", "N", " | ".join("%-19s" % heads[k] for k in keys)))
        for row in rows:
            cells = []
            for k in keys:
                r = row["ratios"][k]
                fmt = "%3.0f%% (%.0f-%.0f)" if k == "ops_pct_of_ceiling" else "%4.2f (%.2f-%.2f)"
                cells.append("%-19s" % (fmt % (r["median"], r["min"], r["max"])))
            print("%-8s %3d | %s" % (row["workload"], row["in_flight"], " | ".join(cells)))
        print()
        print("targets (dynlog from Lua 5.4; medians over the rounds)")
        for row in rows:
            t = row["targets"]
            cpu = t["cpu_us_per_op"]
            line = "%-8s %3d | CPU %5.0f us/op, target <= %d us: %-8s" % (
                row["workload"], row["in_flight"], cpu["value"], cpu["limit"], "met" if cpu["met"] else "NOT met")
            if "pct_of_ceiling" in t:
                p = t["pct_of_ceiling"]
                line += " | %3.0f%% of the ceiling, target >= %d%%: %s" % (
                    p["value"], p["limit"], "met" if p["met"] else "NOT met")
            print(line)
        for key, what in (("cpu_us_per_op", "CPU per append <= 70 us, per query page <= 90 us"),
                          ("pct_of_ceiling", ">= 90% of the ceiling")):
            met = [r["targets"][key]["met"] for r in rows if key in r["targets"]]
            if met:
                print("  %-48s %s (%d of %d levels)" % (what, "met" if all(met) else "NOT met", sum(met), len(met)))
        for p in PEERS:
            ops = [r["ratios"]["ops_x_" + p]["median"] for r in rows]
            cpu = [r["ratios"]["cpu_less_than_" + p]["median"] for r in rows]
            print("  beside %-7s dynlog has %.1f-%.1fx its throughput for %.1f-%.1fx less client CPU"
                  " (medians, the six levels)" % (p, min(ops), max(ops), min(cpu), max(cpu)))
    print()
    print("warm-up, client CPU us/op: preload (puts, 8 in flight), each pass over every level, then timed")
    for name, w in doc["warm_up"].items():
        passes = sorted(k for k in w if k.startswith("pass"))
        print("  %-8s %7.0f  %s  %7.0f" % (name, w["preload_cpu_us_per_op"],
              " ".join("%7.0f" % w[k] for k in passes), w["timed_cpu_us_per_op"]))
    for chk in doc["checks"]:
        print("  %-8s %d items in its table, %d written by its count, %d sent; %d queries, all of %d items"
              % (chk["client"], chk["items_in_table"], chk["items_client_wrote"], chk["items_expected"],
                 chk["queries_checked"], QUERY_ITEMS))
    for p in doc["problems"]:
        print("PROBLEM: " + p)
    print("(%d s)" % doc["seconds"])


if __name__ == "__main__":
    main()
