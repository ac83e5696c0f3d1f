"""Collects bench/peers/run/*.jsonl into bench/micro-results.json (bench/run.sh) and prints the table.
python3 report.py RUN_DIR RESULTS_JSON"""
import glob, json, os, sys

run_dir, out_path = sys.argv[1], sys.argv[2]
rows = []
for p in sorted(glob.glob(os.path.join(run_dir, "*.jsonl"))):
    for line in open(p):
        line = line.strip()
        if line.startswith("{"):
            rows.append(json.loads(line))
machine = dict(l.rstrip("\n").split("=", 1) for l in open(os.path.join(run_dir, "machine.txt")) if "=" in l)

def get(bench, prefix):
    for r in rows:
        if r["bench"] == bench and (r["impl"] == prefix or r["impl"].startswith(prefix + " (") or (prefix.endswith(tuple("([:")) or " [" in prefix or "(" in prefix) and r["impl"].startswith(prefix)):
            return r
    return None

def ratio(a, b):
    return None if not a or not b else round(a["best"] / b["best"], 2)

targets = []
def target(name, value, limit, ok, unit, note=""):
    targets.append({"target": name, "value": value, "limit": limit, "unit": unit, "met": bool(ok), "note": note})

c = get("ulid", "C dl_ulid_next_default+encode")
if c: target("ULID in C <= 60 ns", c["best"], 60, c["best"] <= 60, "ns")
for rt in ("lua5.4", "luajit"):
    r = get("ulid", "core.ulid() (%s" % rt)
    if r: target("ULID from Lua (%s) <= 250 ns" % rt, r["best"], 250, r["best"] <= 250, "ns")
floor_c = get("sigv4_cached", "C floor")
floor_d = get("sigv4_derived", "C floor")
for bench, fl in (("sigv4_cached", floor_c), ("sigv4_derived", floor_d)):
    for prefix in ("C dl_sigv4_sign", "C dl_sigv4_sign [alt hash.c: EVP_MD",
                   "core sign_post(url, body, ...) (lua5.4", "core sign_post(url, body, ...) (luajit",
                   "core sign{req}, table per call (lua5.4",
                   "core sign{req}, table per call (luajit",
                   "dynlog.sigv4 sign{req}, table per call (lua5.4",
                   "dynlog.sigv4 sign{req}, table per call (luajit",
                   "dynlog.sigv4 signer:sign (lua5.4", "dynlog.sigv4 signer:sign (luajit"):
        r = get(bench, prefix)
        # A Lua row measured beside the floor in its own process carries the ratio.
        x = round(r["x_floor"], 2) if r and "x_floor" in r else ratio(r, fl)
        if x is not None:
            note = ("floor %.0f ns in the same process" % r["floor_best"]) if "floor_best" in r else ""
            target("%s %s <= 2x floor" % (bench, r["impl"]), x, 2.0, x <= 2.0, "x floor", note)
for rt in ("lua5.4", "luajit"):
    for op, dl, cj in (("encode", "dynlog AV json_encode", "cjson.encode untyped"),
                       ("decode", "dynlog AV json_decode(unwrap)", "cjson.decode untyped")):
        a = get("marshal_" + op, "%s (%s" % (dl, rt)); b = get("marshal_" + op, "%s (%s" % (cj, rt))
        am = get("marshal_%s_mbs" % op, "%s (%s" % (dl, rt)); bm = get("marshal_%s_mbs" % op, "%s (%s" % (cj, rt))
        if a and b:
            ev = round(b["best"] / a["best"], 2)   # dynlog events/s as a fraction of cjson's
            mb = round(am["best"] / bm["best"], 2)
            target("AV %s (%s) >= 50%% of cjson" % (op, rt), ev, 0.5, ev >= 0.5, "x cjson (events/s)",
                   "MB/s ratio %.2f (dynlog %.1f MB/s of %d B AV JSON, cjson %.1f MB/s of %d B plain JSON)"
                   % (mb, am["best"], am["bytes"], bm["best"], bm["bytes"]))

json.dump({"machine": machine, "results": rows, "targets": targets}, open(out_path, "w"), indent=1)

def fmt(v, unit):
    if unit == "ns":
        return "%.2f us" % (v / 1000) if v >= 10000 else "%.0f ns" % v
    return "%.1f %s" % (v, unit)

print("\n%-16s %-78s %12s %12s %12s" % ("bench", "implementation", "best", "median", "worst"))
print("-" * 134)
order = ["ulid", "ulid_binary", "sigv4_cached", "sigv4_derived", "hmac_sts", "sha256_body",
         "marshal_encode", "marshal_encode_mbs", "marshal_decode", "marshal_decode_mbs"]
for b in order:
    for r in sorted((r for r in rows if r["bench"] == b), key=lambda r: r["best"]):
        u = r["unit"]
        print("%-16s %-78s %12s %12s %12s" % (b, r["impl"][:78], fmt(r["best"], u),
              fmt(r["median"], u) if "median" in r else "", fmt(r["worst"], u) if "worst" in r else ""))
print("\nTargets (best of %s rounds):" % (rows[0].get("rounds", "?") if rows else "?"))
for t in targets:
    print("  %-4s %-75s %8.2f %s (limit %s)%s" % ("MET" if t["met"] else "MISS", t["target"][:75], t["value"], t["unit"],
          t["limit"], ("  " + t["note"]) if t["note"] else ""))
print("\nmachine: " + "; ".join("%s=%s" % kv for kv in machine.items()))
print("wrote " + out_path)
