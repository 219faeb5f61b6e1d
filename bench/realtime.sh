#!/usr/bin/env bash
# Measures live queries on the embedded engine, in one run: how long a
# committed change takes to reach the last of 10,000 WebSocket subscribers
# of one query, and at what CPU cost per delivered frame; 1,000 queries with
# 10 subscribers each; the gateway's memory per idle subscriber; the fan-out
# again beside 1,000 sockets that never read, and to a quarter of the
# subscribers; and one fan-out both through
# pgshare and through the relay a user would write instead
# (bench/relay/relay.js: LISTEN pgr and a ws server), with the ratios.
#
# Usage: bench/realtime.sh [SECONDS_PER_RUN] [SUBSCRIBERS] [SIDE_BY_SIDE]
#        (default 30, 10000, 500)
# The side-by-side fan-out has fewer subscribers than run 1: the relay, one
# Node thread, falls seconds behind beyond about 800 on a 2-CPU machine.
# pgshare serves the sockets on the threads of --threads (1 unless
# PGSHARE_THREADS is set in the environment).
# Needs psql, node and npm (the relay's packages are installed from its
# package-lock.json). Everything listens on 127.0.0.1 only and is stopped at
# the end; each run writes for SECONDS_PER_RUN and waits at most 20 s more
# for what it wrote to arrive.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
subscribers=${2:-10000}
relay_subscribers=${3:-500}
rate=100
stalled=1000
queries=1000
per_query=10

# One descriptor per socket on each side, and some to spare.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
needed=$((subscribers + stalled + 1000))
if [ "$(ulimit -n)" -lt "$needed" ]; then
    echo "bench/realtime.sh needs $needed file descriptors; the hard limit is $(ulimit -Hn)" >&2
    exit 1
fi

cargo build --release --quiet --bin pgshare
load=$(cargo bench --bench realtime_load --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p')
npm ci --prefix bench/relay --no-audit --no-fund --silent

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
http=$(free_port)
relay_port=$(free_port)
url="postgres://postgres@127.0.0.1:$port/postgres"
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

gateway=(./target/release/pgshare serve --memory --listen "127.0.0.1:$port" --http "127.0.0.1:$http"
    --realtime-max-per-ip 0 --realtime-max-connections $((subscribers + stalled + 100)))
"${gateway[@]}" 2>"$work/gateway.log" &
gateway_pid=$!
pids+=("$gateway_pid")
for _ in $(seq 100); do
    psql "$url" -Atc 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.2
done

common=(--seconds "$seconds" --rate "$rate")
echo "measuring pgshare: $subscribers subscribers, then $queries queries x $per_query (${seconds}s per run)..." >&2
timeout $((8 * seconds + 240)) "$load" gateway --pg "$url" --http "$http" --pid "$gateway_pid" \
    "${common[@]}" --subscribers "$subscribers" --stalled "$stalled" \
    --queries "$queries" --per-query "$per_query" >"$work/results"
# The fan-out again with a quarter of the subscribers: where the latency
# stands when the two processes do not need more than the two CPUs.
quarter=$((subscribers / 4))
echo "measuring pgshare: $quarter subscribers of one query..." >&2
timeout $((2 * seconds + 120)) "$load" fanout --ws "$http" --query quarter --pid "$gateway_pid" \
    "${common[@]}" --pg "$url" --gateway-pid "$gateway_pid" --subscribers "$quarter" >>"$work/results"
echo "measuring pgshare and the relay side by side: $relay_subscribers subscribers..." >&2
side_by_side=("${common[@]}" --pg "$url" --gateway-pid "$gateway_pid" --subscribers "$relay_subscribers")
timeout $((2 * seconds + 120)) "$load" fanout --ws "$http" --query pgshare --pid "$gateway_pid" \
    "${side_by_side[@]}" >>"$work/results"

relay=(node bench/relay/relay.js "$url" "$relay_port")
"${relay[@]}" >"$work/relay.log" 2>&1 &
relay_pid=$!
pids+=("$relay_pid")
for _ in $(seq 100); do
    grep -q listening "$work/relay.log" && break
    sleep 0.1
done
timeout $((2 * seconds + 120)) "$load" fanout --ws "$relay_port" --query relay --pid "$relay_pid" \
    "${side_by_side[@]}" >>"$work/results"

echo "machine: $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(uname -sr)"
echo "load average: $load_before before, $(cut -d' ' -f1-3 /proc/loadavg) after (other processes share these CPUs)"
echo "command: bench/realtime.sh $seconds $subscribers $relay_subscribers"
echo "gateway: ${PGSHARE_THREADS:+PGSHARE_THREADS=$PGSHARE_THREADS }${gateway[*]}"
echo "relay:   ${relay[*]}"
echo
awk -v rate="$rate" '
    {
        for (i = 1; i <= NF; i++) {
            split($i, kv, "=")
            if (kv[1] == "run") run = kv[2]
            else value[run, kv[1]] = kv[2]
        }
    }
    function row(label, run) {
        printf "%-28s %6d %9.1f %8.1f %8.1f %8.1f %8.1f %11s %9d %9.0f %7.2f %8.2f %8.1f %8.2f\n", label,
            value[run, "subscribers"], value[run, "rate"], value[run, "statement_p50_ms"],
            value[run, "p50_ms"], value[run, "p99_ms"], value[run, "max_ms"],
            value[run, "complete"] "/" value[run, "changes"], value[run, "overflows"],
            value[run, "frames_per_s"], value[run, "cpu_s"], value[run, "cpu_us_per_frame"],
            value[run, "rss_max_kib"] / 1024, value[run, "client_cpu_s"]
    }
    function verdict(met) { return met ? "met" : "missed" }
    END {
        printf "%-28s %6s %9s %8s %8s %8s %8s %11s %9s %9s %7s %8s %8s %8s\n", "run", "subs",
            "changes/s", "write ms", "p50 ms", "p99 ms", "max ms", "to all", "overflows",
            "frames/s", "CPU s", "us/frame", "RSS MiB", "load CPU"
        row("1 fan-out, 1 query", "fanout")
        row("1b fan-out, a quarter", "quarter")
        row(sprintf("2 %d queries x %d", value["many", "queries"],
            value["many", "subscribers"] / value["many", "queries"]), "many")
        row(sprintf("4 fan-out + %d stalled", value["stalled", "stalled"]), "stalled")
        row("5a fan-out, pgshare", "pgshare")
        row("5b fan-out, relay", "relay")
        print ""
        print "changes/s: committed by the writer (it offers " rate "/s, and waits for each statement: write ms"
        print "is its median); p50/p99/max: from sending the UPDATE to the last subscriber that got it;"
        print "to all: changes every subscriber got; frames/s: deltas received in all; CPU s, us/frame"
        print "and RSS MiB (at most): the server process (the relay in 5b); load CPU: the load client."
        print ""
        printf "1 fan-out: p99 %.1f ms (target <= 50 ms: %s), at %.1f of %d changes/s\n",
            value["fanout", "p99_ms"], verdict(value["fanout", "p99_ms"] <= 50),
            value["fanout", "rate"], rate
        printf "1b fan-out to %d: p99 %.1f ms (%s), at %.1f of %d changes/s\n",
            value["quarter", "subscribers"], value["quarter", "p99_ms"],
            value["quarter", "p99_ms"] <= 50 ? "within 50 ms" : "above 50 ms",
            value["quarter", "rate"], rate
        printf "2 many queries: %.0f deltas/s delivered, p99 %.1f ms, at %.1f of %d changes/s\n",
            value["many", "frames_per_s"], value["many", "p99_ms"], value["many", "rate"], rate
        printf "3 memory: RSS %.1f MiB before, %.1f MiB with %d idle subscribers: %.1f KiB each (target <= 24 KiB: %s)\n",
            value["memory", "before_kib"] / 1024, value["memory", "idle_kib"] / 1024,
            value["memory", "subscribers"], value["memory", "per_subscriber_kib"],
            verdict(value["memory", "per_subscriber_kib"] <= 24)
        moved = 100 * (value["stalled", "p99_ms"] / value["fanout", "p99_ms"] - 1)
        printf "4 stalled: p99 moved %+.1f%% vs run 1 (target < 10%%: %s); RSS %.1f MiB before, at most %.1f during, %.1f after;\n",
            moved, verdict(moved < 10 && moved > -10), value["stalled", "rss_before_kib"] / 1024,
            value["stalled", "rss_max_kib"] / 1024, value["stalled", "rss_after_kib"] / 1024
        printf "  at the end the gateway held %d KiB unsent for %d of the %d stalled sockets, %d still open\n",
            value["stalled", "queued_kib"], value["stalled", "blocked"],
            value["stalled", "stalled"], value["stalled", "still_open"]
        relay_path = (value["relay", "cpu_s"] + value["relay", "gateway_cpu_s"]) * 1e6 / value["relay", "frames"]
        printf "5 pgshare/relay at %d subscribers (%.1f and %.1f changes/s): p50 %.2f, p99 %.2f, CPU per frame %.2f;\n",
            value["relay", "subscribers"], value["pgshare", "rate"], value["relay", "rate"],
            value["pgshare", "p50_ms"] / value["relay", "p50_ms"],
            value["pgshare", "p99_ms"] / value["relay", "p99_ms"],
            value["pgshare", "cpu_us_per_frame"] / value["relay", "cpu_us_per_frame"]
        printf "  the relay also needs the gateway (%.2f s computing the deltas): against both, CPU per frame %.2f\n",
            value["relay", "gateway_cpu_s"], value["pgshare", "cpu_us_per_frame"] / relay_path
    }
' "$work/results"
