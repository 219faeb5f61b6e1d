#!/usr/bin/env bash
# Live Share, in one run: measures a PGlite in Node called directly (the
# host's own rate for pgbench's select-only statement, one call at a time, no
# sockets), then the same PGlite shared by the pgshare-host command through
# pgshare and driven by pgbench -S with 1 and 8 clients in the simple and
# prepared protocols, and prints the ratios.
#
# Usage: bench/live_share.sh [SECONDS_PER_RUN]   (default 10)
# Needs node with the host library's packages (npm ci --prefix js), pgbench
# and psql. Everything listens on 127.0.0.1 only and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}

cargo build --release --quiet --bin pgshare
echo "measuring PGlite in Node, called directly (${seconds}s per protocol)..." >&2
engine=$(node bench/live_share_engine.mjs "$seconds")
engine_tps() { sed -n "s/^engine $1 tps=//p" <<<"$engine"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
http=$(free_port)
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
url="postgres://postgres@127.0.0.1:$port/bench"
log=$(mktemp)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -f "$log"
}
trap cleanup EXIT
# Plaintext, as the reference is reached without TLS.
./target/release/pgshare serve --memory --ssl off --listen "127.0.0.1:$port" \
    --http "127.0.0.1:$http" --tunnel-secret "$secret" 2>"$log" &
pids+=($!)
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$http") 2>/dev/null && break
    sleep 0.2
done
token=$(PGSHARE_TUNNEL_SECRET=$secret ./target/release/pgshare token bench)
PGSHARE_TOKEN=$token node js/bin/pgshare-host.js --url "http://127.0.0.1:$http" \
    --database bench >/dev/null 2>>"$log" &
pids+=($!)
for _ in $(seq 100); do
    psql "$url" -Atc 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.2
done
pgbench -i -s 1 -q "$url" >/dev/null 2>&1

printf '%-9s %7s %12s %12s %13s\n' protocol clients "shared tps" "direct tps" "shared/direct"
for protocol in simple prepared; do
    reference=$(engine_tps "$protocol")
    for clients in 1 8; do
        out=$(pgbench -S -M "$protocol" -c "$clients" -j 2 -T "$seconds" "$url" 2>&1)
        failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
        tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out")
        if [ -z "$tps" ] || [ "${failed:-0}" != 0 ]; then
            echo "pgbench failed:" >&2
            echo "$out" >&2
            exit 1
        fi
        awk -v p="$protocol" -v c="$clients" -v t="$tps" -v e="$reference" \
            'BEGIN { printf "%-9s %7d %12.0f %12.0f %13.2f\n", p, c, t, e, t / e }'
    done
done
