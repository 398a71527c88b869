#!/usr/bin/env bash
# CPU per chat message of the router and of the load generator, and (with
# PROFILE) how much of one process's time quinn-proto and the kernel's UDP
# path take. Both run one runtime thread, as switchboard-bench runs them on
# 2 cores; the router keeps its defaults otherwise (huge-page
# heap). It opens N sessions, ramps chat to R msgs/s over 5 s and measures
# 10 s at the full rate:
#
#   cargo build --profile perf
#   bench/scripts/chat_cpu.sh 10000 10000                  # N sessions, R msgs/s
#   PROFILE=router bench/scripts/chat_cpu.sh 10000 10000   # perf record the router instead
#   PROFILE=load bench/scripts/chat_cpu.sh 10000 10000     # ... or the load generator
#
# Without PROFILE it prints µs of CPU per message (user + kernel, from
# /proc) for each process. With it, `perf record --call-graph dwarf` samples
# that process over the same 10 s (perf's own cost lands on the other
# process, so CPU is not measured then) and the shares of its samples are
# printed: quinn-proto's entry points, the system calls that send, receive
# and wait, and the router's shards. The perf data is left in the printed
# directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/perf}
N=${1:-10000}
RATE=${2:-10000}
PROFILE=${PROFILE:-}
WORK=$(mktemp -d)
# The router drains before it exits: wait, so the port is free for the next run.
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true' EXIT
source bench/scripts/router.sh
write_router_config 24436 "worker_threads = 1"
start_router
"$BIN/switchboard-load" chat --server 127.0.0.1:24436 --cert-sha256 "$FP" \
    --secret-file "$WORK/secret" --sessions "$N" --connect-rate 6000 --keep-alive 30s \
    --rate "$RATE" --ramp-up 5s --duration 20s --threads 1 --quiet > "$WORK/load.out" 2>&1 &
LOAD=$!
wait_for_sessions "$N"
# Past the ramp, with a margin.
sleep 7
case "$PROFILE" in
  "")
    tk=$(getconf CLK_TCK)
    read -r ru0 rs0 < <(cpu_user_kernel "$ROUTER")
    read -r lu0 ls0 < <(cpu_user_kernel "$LOAD")
    sleep 10
    read -r ru1 rs1 < <(cpu_user_kernel "$ROUTER")
    read -r lu1 ls1 < <(cpu_user_kernel "$LOAD")
    ;;
  router | load)
    PID=$ROUTER
    [ "$PROFILE" = load ] && PID=$LOAD
    perf record -F 999 --call-graph dwarf,32768 -p "$PID" -o "$WORK/perf.data" -- sleep 10 \
        > "$WORK/perf.out" 2>&1
    ;;
  *) echo "PROFILE is router or load" >&2; exit 2 ;;
esac
wait "$LOAD" || { cat "$WORK/load.out" >&2; echo "switchboard-load failed" >&2; exit 1; }
grep -E "^(delivered|latency|lost|result)" "$WORK/load.out"
if [ -z "$PROFILE" ]; then
  awk -v hz="$tk" -v r="$RATE" \
      -v ru=$((ru1 - ru0)) -v rs=$((rs1 - rs0)) -v lu=$((lu1 - lu0)) -v ls=$((ls1 - ls0)) 'BEGIN {
    per = 1e6 / hz / 10 / r
    printf "router: %.1f us per message (%.1f user, %.1f kernel)\n", (ru + rs) * per, ru * per, rs * per
    printf "load generator: %.1f us per message (%.1f user, %.1f kernel)\n", (lu + ls) * per, lu * per, ls * per }'
else
  # Inclusive shares of entry points that do not call one another.
  perf report -i "$WORK/perf.data" --children -g none --percent-limit 0 --stdio 2>/dev/null |
    awk '
      function add(part) { share[part] += $1 + 0 }
      / \[\.\] quinn_proto::connection::Connection::(handle_event|poll_transmit|poll_timeout|poll|handle_timeout)$/ { add("quinn-proto") }
      / \[\.\] quinn_proto::endpoint::Endpoint::handle$/ { add("quinn-proto") }
      / \[\.\] quinn_proto::connection::streams::(SendStream::write_chunks|RecvStream::read)$/ { add("quinn-proto") }
      / \[\.\] (__libc_sendmsg|__libc_sendmmsg|__sendmmsg|__recvmmsg|epoll_wait)$/ { add("send, receive and wait (system calls)") }
      / \[\.\] switchboard_router::server::shard_task::run_shard::\{\{closure\}\}$/ { add("router shards") }
      END { for (part in share) printf "%5.1f%%  %s\n", share[part], part }' | sort -rn
fi
echo "work: $WORK"
