#!/usr/bin/env bash
# `make lambda`: dist/dynlog-lambda-<arch>.zip, dynlog's Lua runtime for AWS
# Lambda (custom runtime, provided.al2023), as function code or as a layer.
#
#   scripts/lambda.sh [OUT_DIR]          (default: dist/)
#
# The zip holds, for the machine's architecture (x86_64, or arm64 on aarch64):
#   bootstrap                  scripts/lambda-bootstrap
#   bin/lua5.4                 this machine's Lua 5.4 interpreter
#   lua/dynlog/...             every Lua module of dynlog
#   lib/lua/5.4/dynlog/core.so the C core, built by `make`, stripped
#   lib/lua/5.4/dynlog/curl.so the libcurl transport (dynlog.curl: the runtime's
#                              requests go through it), built by `make`, stripped
#   lib/*.so.*                 every shared library lua5.4, core.so and curl.so load (ldd),
#                              except glibc's own (libc, libm, libdl, libpthread, librt,
#                              libresolv, the dynamic loader), which Lambda's system has
#   BUILD-INFO.txt             where it was built and the newest GLIBC_ symbol version
#                              the bundled binaries need (objdump -T)
# The binaries are this machine's: they run on a system whose glibc is at
# least that version. Build on Amazon Linux 2023 (docs/deploying.md) for a
# zip that runs on provided.al2023 for certain.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-dist}
case $(uname -m) in
aarch64 | arm64) arch=arm64 ;;
*) arch=$(uname -m) ;;
esac
lua=$(readlink -f "$(command -v "${LAMBDA_LUA:-lua5.4}")")
make -s
mkdir -p "$out"
out=$(cd "$out" && pwd)
zipfile=$out/dynlog-lambda-$arch.zip
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
mkdir -p "$root/bin" "$root/lib/lua/5.4/dynlog" "$root/lua"

install -m 0755 scripts/lambda-bootstrap "$root/bootstrap"
install -m 0755 "$lua" "$root/bin/lua5.4"
modules=("$root/lib/lua/5.4/dynlog/core.so" "$root/lib/lua/5.4/dynlog/curl.so")
for module in "${modules[@]}"; do
    install -m 0755 "build54/dynlog/$(basename "$module")" "$module"
    strip --strip-unneeded "$module"
done
(cd lua && find dynlog -name '*.lua' | LC_ALL=C sort) | while read -r f; do
    install -D -m 0644 "lua/$f" "$root/lua/$f"
done

ldd "$root/bin/lua5.4" "${modules[@]}" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' |
    LC_ALL=C sort -u | while read -r lib; do
    case $(basename "$lib") in
    libc.so.* | libm.so.* | libdl.so.* | libpthread.so.* | librt.so.* | libresolv.so.* | ld-linux*) continue ;;
    esac
    install -m 0644 "$(readlink -f "$lib")" "$root/lib/$(basename "$lib")"
done

glibc=$(objdump -T "$root/bin/lua5.4" "${modules[@]}" "$root"/lib/*.so* |
    grep -o 'GLIBC_[0-9][0-9.]*' | LC_ALL=C sort -u -V | tail -n 1)
{
    echo "dynlog $(sed -n 's/^#define DYNLOG_VERSION "\([^"]*\)"$/\1/p' src/dynlog.h) Lua runtime for AWS Lambda"
    echo "architecture: $arch"
    echo "built on: $(. /etc/os-release && echo "$PRETTY_NAME"), glibc $(ldd --version | head -n 1 | awk '{ print $NF }')"
    echo "needs: $glibc or newer"
    echo "lua: $("$lua" -v 2>&1)"
} >"$root/BUILD-INFO.txt"

rm -f "$zipfile"
(cd "$root" && find . -type f | LC_ALL=C sort | sed 's|^\./||' | zip -q -X "$zipfile" -@)
echo "lambda: $zipfile ($(du -k "$zipfile" | cut -f1) KB, $glibc needed)"
