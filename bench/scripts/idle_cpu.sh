#!/usr/bin/env bash
# Router idle CPU at N held sessions: start a perf-profile router, open N sessions
# with switchboard-load (connect scenario, 30 s keep-alive as in the issue's
# target), wait until the router counts them all, then read the router's and
# the load generator's CPU time from /proc over 30 s of idling. Like
# switchboard-bench, it gives each process half the cores as runtime threads
# (THREADS=N to choose; THREADS=0 is one per core each). It also prints both
# processes' RSS at the end, fixed costs included.
#
#   cargo build --profile perf
#   bench/scripts/idle_cpu.sh 100000
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/perf}
N=${1:-100000}
HALF=$(( $(nproc) / 2 ))
THREADS=${THREADS:-$(( HALF > 0 ? HALF : 1 ))}
KEEP_ALIVE=${KEEP_ALIVE:-30s}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
source bench/scripts/router.sh
write_router_config 24435 "worker_threads = $THREADS"
start_router
"$BIN/switchboard-load" connect --server 127.0.0.1:24435 --cert-sha256 "$FP" \
    --secret-file "$WORK/secret" --sessions "$N" --connect-rate 3000 \
    --hold 600s --keep-alive "$KEEP_ALIVE" --threads "$THREADS" --quiet > "$WORK/load.out" 2>&1 &
LOAD=$!
wait_for_sessions "$N"
sleep 5
HELD=$(router_sessions)
read -r ROUTER_CPU LOAD_CPU < <(cpu_over 30)
awk -v n="$HELD" -v r="$ROUTER_CPU" -v l="$LOAD_CPU" \
    -v rr="$(rss_kib "$ROUTER")" -v lr="$(rss_kib "$LOAD")" 'BEGIN {
  printf "%d sessions held idle for 30 s: router %.1f%% of a core (%.1f%% per 100k), load generator %.1f%%\n",
    n, r, r * 100000 / n, l
  printf "RSS: router %.0f MiB (%.1f KiB/session), load generator %.0f MiB (%.1f KiB/session)\n",
    rr / 1024, rr / n, lr / 1024, lr / n }'
