#!/usr/bin/env bash
# Session-count scaling run: for each N, start a fresh release router, open N
# sessions with switchboard-load (connect scenario, every session verified
# alive with a ping after the hold), and record the peak RSS of the router and
# of the load generator. Prints a Markdown table with each process's RSS per session.
#
#   cargo build --profile perf
#   bench/scripts/scale.sh 10000 50000 100000 200000
#
# Environment: CONNECT_RATE (default 3000), MAX_INFLIGHT (handshakes in
# flight, default 256), HOLD (default 10s), SHARDS (0 = one per core),
# BIN (the binaries' directory, default target/perf), IDLE_WINDOW (seconds; when set,
# once the router counts all N sessions the script reads both processes' CPU
# time from /proc over that many idle seconds; HOLD must outlast it), LOG_DIR
# (when set, each N's load generator progress, router log and JSON report are
# kept there as load-N.out, router-N.out, report-N.json). A
# million sessions needs a machine with ~128 GiB and many cores; see
# bench/README.md for that command.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/perf}
CONNECT_RATE=${CONNECT_RATE:-3000}
MAX_INFLIGHT=${MAX_INFLIGHT:-256}
IDLE_WINDOW=${IDLE_WINDOW:-0}
LOG_DIR=${LOG_DIR:-}
QUIET=--quiet
[ -z "$LOG_DIR" ] || { mkdir -p "$LOG_DIR"; QUIET=; }
HOLD=${HOLD:-10s}
SHARDS=${SHARDS:-0}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
source bench/scripts/router.sh
write_router_config 24433 "shards = $SHARDS"

peak_rss() { # pid -> KiB, sampled until the pid is gone or the file says stop
  local pid=$1 out=$2 peak=0 rss
  while kill -0 "$pid" 2>/dev/null && [ ! -e "$out.stop" ]; do
    rss=$(rss_kib "$pid" 2>/dev/null || echo 0)
    [ "${rss:-0}" -gt "$peak" ] && peak=$rss
    sleep 0.5
  done
  echo "$peak" > "$out"
}

# Once the router counts all N sessions (or the count has stalled for 10 s),
# prints "router% load%": CPU of each process over IDLE_WINDOW idle seconds.
idle_cpu() {
  wait_for_sessions "$1"
  sleep 3
  # Two numbers, word-split into printf on purpose.
  printf "%.1f %.1f\n" $(cpu_over "$IDLE_WINDOW")
}

echo "| sessions | opened | alive | connects/s | router base MiB | router peak MiB | router KiB/session | load peak MiB | load KiB/session | idle CPU router / load (% of a core) |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for N in "$@"; do
  start_router
  sleep 1
  BASE=$(rss_kib "$ROUTER")
  rm -f "$WORK/rpeak" "$WORK/rpeak.stop"
  peak_rss "$ROUTER" "$WORK/rpeak" &
  SAMPLER=$!
  "$BIN/switchboard-load" connect --server 127.0.0.1:24433 --cert-sha256 "$FP" \
      --secret-file "$WORK/secret" --sessions "$N" --connect-rate "$CONNECT_RATE" --max-inflight "$MAX_INFLIGHT" \
      --hold "$HOLD" --keep-alive 25s $QUIET --json "$WORK/report.json" > "$WORK/load.out" &
  LOAD=$!
  echo "- -" > "$WORK/idle"
  IDLE=""
  if [ "$IDLE_WINDOW" != 0 ]; then idle_cpu "$N" > "$WORK/idle" & IDLE=$!; fi
  peak_rss "$LOAD" "$WORK/lpeak"
  LPEAK=$(cat "$WORK/lpeak")
  wait "$LOAD" || true
  [ -z "$IDLE" ] || wait "$IDLE" || true
  # Why the router saw connections end (stderr): tells client-side losses
  # (peer_closed, idle_timeout) from the router's own closes.
  router_metrics switchboard_connections_closed_total | sed 's/^/  router: /' >&2 || true
  touch "$WORK/rpeak.stop"; wait "$SAMPLER"
  RPEAK=$(cat "$WORK/rpeak")
  kill -TERM "$ROUTER"; wait "$ROUTER" || true
  if [ -n "$LOG_DIR" ]; then
    cp "$WORK/load.out" "$LOG_DIR/load-$N.out"; cp "$WORK/router.out" "$LOG_DIR/router-$N.out"
    cp "$WORK/report.json" "$LOG_DIR/report-$N.json" 2>/dev/null || true
  fi
  python3 - "$N" "$BASE" "$RPEAK" "$LPEAK" "$WORK/report.json" $(cat "$WORK/idle") <<'PY'
import json, sys
n, base, rpeak, lpeak, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
idle = " / ".join(sys.argv[6:8]) or "-"
r = json.load(open(path))
opened = r["sessions_opened"]
print(f"| {n} | {opened} | {r.get('sessions_verified_alive')} | {r['connect_rate_per_s']:.0f} | {base/1024:.0f} | {rpeak/1024:.0f} | {(rpeak-base)/max(opened,1):.1f} | {lpeak/1024:.0f} | {lpeak/max(opened,1):.1f} | {idle} |")
PY
done
