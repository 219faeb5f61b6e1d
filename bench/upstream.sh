#!/usr/bin/env bash
# pgshare as a transaction pooler, beside PgBouncer, in one run: starts a
# throwaway PostgreSQL, PgBouncer (pool_mode=transaction) and pgshare
# (--upstream) with the same pool size, and runs pgbench against each in turn:
# select-only with the simple and prepared protocols at 1, 8, 32 and 64
# clients, and TPC-B-like at 32. Prints TPS and the ratio pgshare/PgBouncer.
#
# Usage: bench/upstream.sh [SECONDS_PER_RUN] [POOL_SIZE]   (default 10, 20)
# Needs PostgreSQL's server binaries under /usr/lib/postgresql/*/bin, pgbench
# and psql; PgBouncer when installed. Everything listens on 127.0.0.1 only and
# is stopped at the end.
#
# PgBouncer supports prepared statements in transaction mode from 1.21 on
# (max_prepared_statements); with an older one the prepared protocol is
# compared against PostgreSQL direct only, and the script says so.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
pool=${2:-20}

bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

work=$(mktemp -d)
[ "$(id -u)" = 0 ] && chown postgres "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    # PgBouncer runs under runuser: stop it by its own pid.
    [ -f "$work/pgbouncer.pid" ] && kill "$(cat "$work/pgbouncer.pid")" 2>/dev/null || true
    as_postgres "$bin/pg_ctl" -D "$work/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

pg_port=$(free_port)
as_postgres "$bin/initdb" -D "$work/data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
as_postgres "$bin/pg_ctl" -D "$work/data" -l "$work/pg.log" -w \
    -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=256MB" start >/dev/null
direct="postgres://postgres@127.0.0.1:$pg_port/postgres"
echo "initializing pgbench tables (scale 10)..." >&2
pgbench -i -s 10 -q "$direct" >/dev/null 2>&1

cargo build --release --quiet --bin pgshare
share_port=$(free_port)
# Plaintext, as PgBouncer and PostgreSQL are reached here.
./target/release/pgshare serve --ssl off --upstream "$direct" --pool-size "$pool" \
    --listen "127.0.0.1:$share_port" --max-client-conn 500 2>"$work/pgshare.log" &
pids+=($!)
share="postgres://postgres@127.0.0.1:$share_port/postgres"

bouncer=""
bouncer_prepared=no
if command -v pgbouncer >/dev/null; then
    bouncer_port=$(free_port)
    version=$(pgbouncer --version | sed -n 's/^PgBouncer \([0-9.]*\).*/\1/p')
    cat >"$work/pgbouncer.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=$pg_port dbname=postgres user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir =
auth_type = trust
auth_file = $work/userlist.txt
pool_mode = transaction
default_pool_size = $pool
max_client_conn = 500
logfile = $work/pgbouncer.log
pidfile = $work/pgbouncer.pid
INI
    echo '"postgres" ""' >"$work/userlist.txt"
    if [ "$(printf '%s\n1.21\n' "$version" | sort -V | head -1)" = 1.21 ]; then
        # Older versions refuse the setting and do not start.
        echo "max_prepared_statements = 200" >>"$work/pgbouncer.ini"
        bouncer_prepared=yes
    else
        echo "PgBouncer $version predates prepared statements in transaction mode (1.21): the prepared protocol is compared against PostgreSQL direct only" >&2
    fi
    [ "$(id -u)" = 0 ] && chown -R postgres "$work"
    as_postgres pgbouncer "$work/pgbouncer.ini" >/dev/null 2>&1 &
    pids+=($!)
    bouncer="postgres://postgres@127.0.0.1:$bouncer_port/postgres"
else
    echo "PgBouncer is not installed: pgshare is compared against PostgreSQL direct only" >&2
fi

for url in "$share" ${bouncer:+"$bouncer"}; do
    for _ in $(seq 100); do psql "$url" -Atc 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
done

tps() {
    local out
    out=$(pgbench -n "$@" -j 2 -T "$seconds" 2>&1) || { echo "pgbench $* failed: $out" >&2; echo 0; return; }
    if ! grep -q '^number of failed transactions: 0 ' <<<"$out"; then
        echo "pgbench $* had failures: $(grep '^number of failed' <<<"$out")" >&2
    fi
    sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out"
}

printf '%-22s %8s %10s %10s %10s %16s\n' workload clients direct pgbouncer pgshare pgshare/pgbouncer
run() {
    local name=$1 clients=$2 prepared=$3; shift 3
    local d b s
    d=$(tps "$@" -c "$clients" "$direct")
    if [ -n "$bouncer" ] && { [ "$prepared" = no ] || [ "$bouncer_prepared" = yes ]; }; then
        b=$(tps "$@" -c "$clients" "$bouncer")
    else
        b=""
    fi
    s=$(tps "$@" -c "$clients" "$share")
    awk -v n="$name" -v c="$clients" -v d="$d" -v b="$b" -v s="$s" 'BEGIN {
        printf "%-22s %8d %10.0f %10s %10.0f %16s\n", n, c, d, (b == "" ? "-" : sprintf("%.0f", b)), s,
            (b == "" || b == 0 ? "-" : sprintf("%.2f", s / b))
    }'
}
for clients in 1 8 32 64; do run "select-only simple" "$clients" no -S -M simple; done
for clients in 1 8 32 64; do run "select-only prepared" "$clients" yes -S -M prepared; done
run "tpc-b simple" 32 no
