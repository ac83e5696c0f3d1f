#!/usr/bin/env bash
# Side-by-side performance run: dynlog (C, Lua 5.4, LuaJIT) against its peers
# (npm ulid, aws4, @smithy/signature-v4, botocore, lua-cjson) and a hashing floor.
#   bench/run.sh        (from anywhere; writes bench/micro-results.json and prints a table)
# Installs what it needs into bench/peers/ (git-ignored): npm packages, and
# python3-boto3 through apt only when no python3 can import botocore.
# No network except the npm registry / apt; no AWS calls. ~1-2 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PEERS=$ROOT/bench/peers
OUT=$PEERS/run
BODY=$ROOT/bench/putitem.json
mkdir -p "$PEERS/bin" "$OUT"
rm -f "$OUT"/*.jsonl
log() { printf '== %s\n' "$*" >&2; }

# ---- peers ----
NPM_PKGS="ulid@3.0.2 aws4@1.13.2 @smithy/signature-v4@5.7.5 @smithy/hash-node@4.5.2"
if [ ! -f "$PEERS/.npm-installed" ] || [ "$(cat "$PEERS/.npm-installed")" != "$NPM_PKGS" ]; then
  log "npm install into bench/peers: $NPM_PKGS"
  [ -f "$PEERS/package.json" ] || echo '{"name":"dynlog-bench-peers","private":true}' > "$PEERS/package.json"
  (cd "$PEERS" && timeout 180 npm install --no-audit --no-fund --cache /tmp/dynlog-bench-npm-cache $NPM_PKGS >&2)
  echo "$NPM_PKGS" > "$PEERS/.npm-installed"
fi
PY=
for cand in python3 /usr/bin/python3; do
  if command -v "$cand" >/dev/null && "$cand" -c 'import botocore' 2>/dev/null; then PY=$(command -v "$cand"); break; fi
done
if [ -z "$PY" ]; then
  log "apt-get install python3-boto3"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-boto3 >&2
  PY=/usr/bin/python3
fi

# ---- builds: the Lua modules (make's own targets) and the C bench programs ----
log "building dynlog.core (build54, buildjit)"
make -s >&2
make -s luajit >&2
CFLAGS_B="-O2 -g -std=c99 -Wall -Wextra -Wno-deprecated-declarations -D_POSIX_C_SOURCE=200809L -Isrc"
CSRC="src/ulid.c src/buf.c src/sigv4.c"
log "building bench/peers/bin/cbench"
cc $CFLAGS_B bench/c/cbench.c $CSRC src/hash.c -o "$PEERS/bin/cbench" -lcrypto -pthread

# The hashing floor as a Lua module, measured by lua_bench.lua beside each
# Lua signer in the same process (bench/c/lfloor.c).
log "building bench/peers/lib54/benchfloor.so and bench/peers/libjit/benchfloor.so"
mkdir -p "$PEERS/lib54" "$PEERS/libjit"
for v in "lua5.4 lib54" "luajit libjit"; do
  set -- $v
  rm -f "$PEERS/$2/benchfloor.so"
  cc -O2 -std=c99 -Wall -Wextra -Wno-deprecated-declarations -shared -fPIC $(pkg-config --cflags "$1") \
    bench/c/lfloor.c -o "$PEERS/$2/benchfloor.so" -lcrypto \
    || log "benchfloor not built for $1: its Lua SigV4 rows are compared with cbench's floor"
done

# ---- runs (each bounded) ----
T="timeout 120"
log "C";        $T "$PEERS/bin/cbench" "$BODY" > "$OUT/c.jsonl" 2> "$OUT/c.err"
log "building bench/peers/bin/cbench"
cc $CFLAGS_B bench/c/cbench.c $CSRC src/hash.c -o "$PEERS/bin/cbench" -lcrypto -pthread
log "Lua 5.4";  LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH="build54/?.so;$PEERS/lib54/?.so;;" $T lua5.4 bench/lua_bench.lua lua5.4 "$BODY" > "$OUT/lua54.jsonl" 2> "$OUT/lua54.err"
log "LuaJIT";   LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH="buildjit/?.so;$PEERS/libjit/?.so;;" $T luajit bench/lua_bench.lua luajit "$BODY" > "$OUT/luajit.jsonl" 2> "$OUT/luajit.err"
log "node";     $T node bench/node_bench.js "$PEERS" "$BODY" > "$OUT/node.jsonl" 2> "$OUT/node.err"
log "python";   $T "$PY" bench/py_bench.py "$BODY" > "$OUT/py.jsonl" 2> "$OUT/py.err"

# ---- machine and versions ----
{
  echo "nproc=$(nproc)"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "mem_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
  echo "kernel=$(uname -r)"
  echo "lua=$(lua5.4 -v 2>&1 | head -1)"
  echo "luajit=$(luajit -v 2>&1 | head -1)"
  echo "node=$(node --version)"
  echo "python=$("$PY" --version 2>&1) botocore $("$PY" -c 'import botocore; print(botocore.__version__)')"
  echo "openssl=$(openssl version)"
  echo "curl=$(curl --version | head -1)"
  echo "cc=$(cc --version | head -1)"
  echo "npm_peers=$NPM_PKGS"
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$OUT/machine.txt"

"$PY" bench/report.py "$OUT" "${MICRO_RESULTS:-$ROOT/bench/micro-results.json}"
