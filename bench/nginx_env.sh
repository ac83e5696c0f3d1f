# Sourced by the benchmarks that run nginx beside a private DynamoDB Local
# (bench/nginx.sh, bench/pipeline.sh): a temporary work directory, free
# ports, and one exit trap that stops nginx (QUIT, then TERM, then KILL of
# the master and its workers) and DynamoDB Local, prints the end of nginx's
# error log on failure, and removes the work directory.
#
#   bench_name=bench/x.sh; source bench/nginx_env.sh
#   # sets work, state (DynamoDB Local's state dir), prefix (nginx's prefix);
#   # defines free_port; on exit calls bench_before_cleanup if defined.

work=$(mktemp -d "/tmp/dynlog-$(basename "$bench_name" .sh)-bench.XXXXXX")
chmod 755 "$work"
state=$work/dynamodb
prefix=$work/nginx

free_port() {
    lua5.4 -e 'local s = assert(require("socket").bind("127.0.0.1", 0))
               local _, port = s:getsockname(); s:close(); print(port)'
}

nginx_pid=
stop_all() {
    local rc=$?
    set +e
    if [[ -z $nginx_pid && -s $prefix/logs/nginx.pid ]]; then nginx_pid=$(cat "$prefix/logs/nginx.pid"); fi
    if [[ -n $nginx_pid ]] && kill -0 "$nginx_pid" 2>/dev/null; then
        local workers
        workers=$(pgrep -P "$nginx_pid")
        kill -QUIT "$nginx_pid" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$nginx_pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$nginx_pid" 2>/dev/null; then
            kill -TERM "$nginx_pid" 2>/dev/null
            sleep 1
            # shellcheck disable=SC2086
            kill -9 "$nginx_pid" $workers 2>/dev/null
        fi
    fi
    scripts/dynamodb-local stop "$state"
    if [[ $rc != 0 && -f $prefix/logs/error.log ]]; then
        echo "$bench_name: failed; the end of nginx's error log:" >&2
        tail -n 30 "$prefix/logs/error.log" >&2
    fi
    if declare -F bench_before_cleanup >/dev/null; then bench_before_cleanup; fi
    rm -rf "$work"
    exit "$rc"
}
trap stop_all EXIT
trap 'exit 130' INT TERM
