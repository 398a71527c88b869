# Shared by the bench scripts (source it, do not run it): a throwaway
# perf-profile router on loopback with a fixed token secret, and its metrics.
#
#   WORK=$(mktemp -d); source bench/scripts/router.sh
#   write_router_config PORT [EXTRA_TOML_LINES]   # -> $WORK/router.toml, $WORK/secret
#   start_router [WRAPPER...]                     # sets ROUTER (pid), FP, ADMIN
#   router_metrics PREFIX                         # prints matching /metrics lines
#   wait_for_sessions N                           # until the router holds N (or stalls 10 s)
#   cpu_ticks PID                                 # utime + stime, clock ticks
#   cpu_user_kernel PID                           # "utime stime", clock ticks
#   cpu_over SECONDS                              # "router% load%" of a core over SECONDS ($ROUTER, $LOAD)
#   rss_kib PID                                   # resident memory, KiB

write_router_config() {
  printf 'bench-secret-bench-secret-bench-secret-0123' > "$WORK/secret"
  cat > "$WORK/router.toml" <<TOML
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:0"
dev_dir = "$WORK/dev"
heartbeat_interval = "30s"
${2:-}
[auth]
secret_file = "$WORK/secret"
TOML
}

# WRAPPER (e.g. valgrind and its options) runs the router in the same process.
start_router() {
  SWITCHBOARD_LOG=warn "$@" "$BIN/switchboard" serve --config "$WORK/router.toml" > "$WORK/router.out" 2>&1 &
  ROUTER=$!
  until grep -q "switchboard listening" "$WORK/router.out" 2>/dev/null; do
    if ! kill -0 "$ROUTER" 2>/dev/null; then
      echo "the router exited before listening:" >&2; cat "$WORK/router.out" >&2; return 1
    fi
    sleep 0.2
  done
  FP=$(sed -n 's/^certificate SHA-256 fingerprint: //p' "$WORK/router.out")
  ADMIN=$(sed -n 's/.*admin=\(http[^ ]*\).*/\1/p' "$WORK/router.out")
}

router_metrics() {
  python3 -c 'import sys, urllib.request
for line in urllib.request.urlopen(sys.argv[1] + "/metrics").read().decode().splitlines():
    if line.startswith(sys.argv[2]): print(line)' "$ADMIN" "$1"
}

router_sessions() { router_metrics "switchboard_sessions " | awk '{print int($2)}'; }

# Returns once the router counts N sessions, or its count has not grown for
# 10 s (some failed to open: figures are then per session actually held).
wait_for_sessions() {
  local n=$1 held=0 still=0 now
  while [ "$held" -lt "$n" ] && [ "$still" -lt 10 ]; do
    sleep 1
    now=$(router_sessions || echo 0)
    if [ "${now:-0}" -gt "$held" ]; then held=$now; still=0; else still=$((still + 1)); fi
  done
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

cpu_user_kernel() { awk '{print $14, $15}' "/proc/$1/stat"; }

cpu_over() {
  local r0 l0 r1 l1
  r0=$(cpu_ticks "$ROUTER"); l0=$(cpu_ticks "$LOAD")
  sleep "$1"
  r1=$(cpu_ticks "$ROUTER"); l1=$(cpu_ticks "$LOAD")
  awk -v r=$((r1 - r0)) -v l=$((l1 - l0)) -v hz="$(getconf CLK_TCK)" -v w="$1" \
    'BEGIN { printf "%.2f %.2f\n", r / hz / w * 100, l / hz / w * 100 }'
}

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
