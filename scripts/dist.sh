#!/usr/bin/env bash
# `make dist`: a release of the tracked files of the work tree, for machines
# that have never seen the repository.
#
#   scripts/dist.sh [OUT_DIR]      (default: dist/)
#
# Writes OUT_DIR/dynlog-<version>.tar.gz (the sources under dynlog-<version>/),
# OUT_DIR/dynlog-<version>-1.rockspec and OUT_DIR/dynlog-<version>-1.src.rock
# (the rockspec and the tarball: `luarocks install ./dynlog-<version>-1.src.rock`
# builds it offline). The version is the one of src/dynlog.h; the versioned
# rockspec is dynlog-scm-1.rockspec with that version and the tarball as its
# source, and must equal the committed dynlog-<version>-1.rockspec.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-dist}
version=$(sed -n 's/^#define DYNLOG_VERSION "\([^"]*\)"$/\1/p' src/dynlog.h)
[[ -n $version ]] || { echo "dist: no DYNLOG_VERSION in src/dynlog.h" >&2; exit 1; }
name=dynlog-$version
rockspec=$name-1.rockspec
git rev-parse --git-dir >/dev/null 2>&1 || { echo "dist: needs a git checkout" >&2; exit 1; }

mkdir -p "$out"
out=$(cd "$out" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The rockspec a release carries, derived from the development one.
sed -e "s/^version = \"scm-1\"$/version = \"$version-1\"/" \
    -e "s|^  url = \"git+file:///dynlog\",$|  url = \"$name.tar.gz\",\n  dir = \"$name\",|" \
    dynlog-scm-1.rockspec >"$tmp/$rockspec"
grep -q "^version = \"$version-1\"$" "$tmp/$rockspec" && grep -q "url = \"$name.tar.gz\"" "$tmp/$rockspec" ||
    { echo "dist: dynlog-scm-1.rockspec no longer has the version and source lines dist rewrites" >&2; exit 1; }
if ! cmp -s "$tmp/$rockspec" "$rockspec"; then
    echo "dist: $rockspec differs from dynlog-scm-1.rockspec at version $version:" >&2
    diff -u "$rockspec" "$tmp/$rockspec" >&2 || true
    echo "dist: update it with: cp $out/$rockspec ." >&2
    cp "$tmp/$rockspec" "$out/$rockspec"
    exit 1
fi

# The tracked files as they are in the work tree, committed or not.
tree=$(git stash create)
git archive --format=tar.gz --prefix="$name/" -o "$out/$name.tar.gz" "${tree:-HEAD}"
cp "$rockspec" "$out/$rockspec"

# luarocks pack fetches the source named in the rockspec, which must then be
# an absolute URL; the rock keeps the rockspec as released (a bare file name:
# installing a source rock uses the tarball inside it).
mkdir -p "$tmp/pack"
sed "s|url = \"$name.tar.gz\"|url = \"file://$out/$name.tar.gz\"|" "$rockspec" >"$tmp/pack/$rockspec"
(cd "$tmp/pack" && luarocks --lua-version=5.4 pack "$rockspec" >/dev/null)
cp "$rockspec" "$tmp/pack/$rockspec"
(cd "$tmp/pack" && zip -q "$name-1.src.rock" "$rockspec")
mv "$tmp/pack/$name-1.src.rock" "$out/"
echo "dist: $out/$name.tar.gz $out/$name-1.src.rock $out/$rockspec"
