#!/usr/bin/env bash
# Measures, in one run, the embedded engine's own rate in-process for pgbench's
# select-only statement, then pgshare serving pgbench -S with 1, 8 and 32
# clients in the simple and prepared protocols, and prints the ratios.
#
# Usage: bench/run.sh [SECONDS_PER_RUN]   (default 10)
# Needs pgbench and psql on the PATH. Starts pgshare on a free loopback port
# with a throwaway database and stops it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}

cargo build --release --quiet --bin pgshare
echo "measuring the engine in-process (${seconds}s per protocol)..." >&2
engine=$(cargo bench --quiet --bench engine_rate -- "$seconds" 2>/dev/null)
engine_tps() { sed -n "s/^engine $1 tps=//p" <<<"$engine"; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="postgres://postgres@127.0.0.1:$port/postgres"
log=$(mktemp)
# Plaintext, as the engine is measured without TLS.
./target/release/pgshare serve --memory --ssl off --listen "127.0.0.1:$port" 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do
    psql "$url" -Atc 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.2
done
pgbench -i -s 1 -q "$url" >/dev/null 2>&1

printf '%-9s %7s %12s %12s %15s %12s\n' protocol clients "pgshare tps" "engine tps" "pgshare/engine" "vs 1 client"
for protocol in simple prepared; do
    reference=$(engine_tps "$protocol")
    single=""
    for clients in 1 8 32; do
        out=$(pgbench -S -M "$protocol" -c "$clients" -j 2 -T "$seconds" "$url" 2>&1)
        failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
        tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out")
        if [ -z "$tps" ] || [ "${failed:-0}" != 0 ]; then
            echo "pgbench failed:" >&2
            echo "$out" >&2
            exit 1
        fi
        single=${single:-$tps}
        awk -v p="$protocol" -v c="$clients" -v t="$tps" -v e="$reference" -v s="$single" \
            'BEGIN { printf "%-9s %7d %12.0f %12.0f %15.2f %12.2f\n", p, c, t, e, t / e, t / s }'
    done
done
