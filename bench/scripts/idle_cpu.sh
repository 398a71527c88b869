#!/usr/bin/env bash
# Router idle CPU at N held sessions: start a release router, open N sessions
# with switchboard-load (connect scenario, 30 s keep-alive as in the issue's
# target), wait until the router counts them all, then read the router's and
# the load generator's CPU time from /proc over 30 s of idling.
#
#   cargo build --release
#   bench/scripts/idle_cpu.sh 100000
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=target/release
N=${1:-100000}
KEEP_ALIVE=${KEEP_ALIVE:-30s}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
source bench/scripts/router.sh
write_router_config 24435
start_router
"$BIN/switchboard-load" connect --server 127.0.0.1:24435 --cert-sha256 "$FP" \
    --secret-file "$WORK/secret" --sessions "$N" --connect-rate 3000 \
    --hold 600s --keep-alive "$KEEP_ALIVE" --quiet > "$WORK/load.out" 2>&1 &
LOAD=$!
wait_for_sessions "$N"
sleep 5
HELD=$(router_sessions)
R0=$(cpu_ticks "$ROUTER"); L0=$(cpu_ticks "$LOAD")
sleep 30
R1=$(cpu_ticks "$ROUTER"); L1=$(cpu_ticks "$LOAD")
TICKS=$(getconf CLK_TCK)
python3 - "$HELD" "$R0" "$R1" "$L0" "$L1" "$TICKS" <<'PY'
import sys
n, r0, r1, l0, l1, hz = map(int, sys.argv[1:])
router, load = (r1 - r0) / hz / 30 * 100, (l1 - l0) / hz / 30 * 100
print(f"{n} sessions held idle for 30 s: router {router:.1f}% of a core "
      f"({router * 100_000 / n:.1f}% per 100k), load generator {load:.1f}%")
PY
