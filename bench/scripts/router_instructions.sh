#!/usr/bin/env bash
# Router instructions per chat message, counted by valgrind's callgrind: a
# figure that does not move with the box's noise the way CPU time does, for
# comparing two builds of the router's code paths. It runs a perf-profile router
# under callgrind (one runtime thread, 4 KiB heap pages), opens N sessions
# with switchboard-load, lets chat run at R msgs/s, and counts the router's
# user-space instructions over 20 s of it. Kernel time is not counted, and
# at such a low rate each message pays more of the per-turn costs than under
# load, so it ranks changes; it does not predict throughput. The profile is
# left in the printed directory (`callgrind_annotate` reads it).
#
#   apt-get install valgrind
#   cargo build --profile perf
#   bench/scripts/router_instructions.sh 500 200   # N sessions, R msgs/s
#
# ROUTER_CONFIG adds lines to the router's TOML (e.g. ROUTER_CONFIG='shards = 1').
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/perf}
N=${1:-500}
RATE=${2:-200}
WINDOW=20
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
source bench/scripts/router.sh
# Four KiB pages: the huge-page restart would leave callgrind behind.
write_router_config 24435 "worker_threads = 1
heap_huge_pages = false
${ROUTER_CONFIG:-}"
start_router valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.%p"
# Handshakes under callgrind are ~50 times slower: open gently.
"$BIN/switchboard-load" chat --server 127.0.0.1:24435 --cert-sha256 "$FP" \
    --secret-file "$WORK/secret" --sessions "$N" --connect-rate 100 --keep-alive 30s \
    --rate "$RATE" --duration $((WINDOW + 20))s --threads 1 --quiet > "$WORK/load.out" 2>&1 &
LOAD=$!
wait_for_sessions "$N"
sleep 5
callgrind_control --zero "$ROUTER" > /dev/null
sleep "$WINDOW"
callgrind_control --dump "$ROUTER" > /dev/null
sleep 1
INSTRUCTIONS=$(awk '/^summary:/ {print $2}' "$WORK"/callgrind.*.1)
wait "$LOAD" || { cat "$WORK/load.out" >&2; echo "switchboard-load failed" >&2; exit 1; }
grep -E "^(delivered|lost)" "$WORK/load.out"
awk -v i="$INSTRUCTIONS" -v r="$RATE" -v w="$WINDOW" 'BEGIN {
  printf "router: %.0f instructions per message (%d in %d s at %d msgs/s)\n", i / (r * w), i, w, r }'
echo "profile: $WORK"
