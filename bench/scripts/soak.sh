#!/usr/bin/env bash
# Soak: one perf-profile router under mixed load for DURATION (default 30
# minutes; not in CI). It starts `switchboard serve` with the dev defaults
# and a fixed token secret (scripts/router.sh), then runs side by side until
# the load ends:
#
# - `switchboard-load churn`: SESSIONS sessions (default 100,000) chatting
#   at RATE msgs/s (default 2,000) for DURATION while RECONNECT_RATE of them
#   a second (default 20) drop and reconnect resuming their inbox; every
#   accepted message must arrive once and in order;
# - `switchboard-load presence`: PRESENCE_SESSIONS sessions (default 1,000,
#   users `presence-N`) each watching 10 others, PRESENCE_RATE status
#   changes a second (default 200) for DURATION;
# - the abuse experiments of tests/tests/abuse.rs in a loop, round after
#   round. They start routers of their own inside their process (they do not
#   attack this router): the loop adds their load to the machine and checks
#   that their defended outcomes still hold under the soak's load. The round
#   still running when the load ends is cut off.
#
# Every SAMPLE seconds (default 10) it appends the router's RSS (from /proc),
# its session count and CPU seconds to a CSV. At the end it prints, and
# writes as Markdown to bench/results/<UTC timestamp>-soak.md (the CSV
# beside it): the RSS after the warm-up (WARMUP, default 5 minutes, at most a
# quarter of DURATION) against the RSS at the end of the load and the growth
# in %, each load generator's loss / duplicate / order figures, the abuse
# rounds passed and failed with the last complete round's `ABUSE` lines,
# and whether the router is still alive (it aborts on a panic) and exits
# cleanly on SIGTERM. The exit status is non-zero if the router died or
# logged a panic, a load generator reported a violation or an abuse round
# failed. (The presence scenario counts a presence event that a newer one
# replaced in a watcher's queue as lost; PROTOCOL.md §9.6 allows that, so
# such losses are shown but not counted.)
#
#   cargo build --profile perf --bins
#   cargo test --profile perf -p switchboard-tests --test abuse --no-run
#   bench/scripts/soak.sh
#   DURATION=2m SESSIONS=5000 bench/scripts/soak.sh            # a smoke check
#
# Environment: DURATION (humantime: 30m, 90s, 1h30m), SESSIONS, RATE,
# RECONNECT_RATE, CONNECT_RATE (default 3000), PRESENCE_SESSIONS,
# PRESENCE_RATE, WARMUP (seconds), SAMPLE (seconds), PORT (default 24439),
# BIN (the binaries' directory, default target/perf), ABUSE_BIN (the abuse
# test binary; default the newest target/perf/deps/abuse-*, else
# target/debug/deps/abuse-*; ABUSE_BIN=none skips the loop), ABUSE_ROWS
# (test name filters, default all rows; e.g. "r1_ r3_ flapping" for short
# rounds), ROUTER_EXTRA (TOML lines added to the router's config), OUT
# (default bench/results), LOG_DIR (when set, the router's log, the load
# generators' output and JSON reports and each abuse round's output are
# kept there). The load needs no limit raised: direct chat
# reaches few new recipients a minute per user, and reconnects are limited
# per device, so churn over many devices stays far below it.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/perf}
DURATION=${DURATION:-30m}
SESSIONS=${SESSIONS:-100000}
RATE=${RATE:-2000}
RECONNECT_RATE=${RECONNECT_RATE:-20}
CONNECT_RATE=${CONNECT_RATE:-3000}
PRESENCE_SESSIONS=${PRESENCE_SESSIONS:-1000}
PRESENCE_RATE=${PRESENCE_RATE:-200}
SAMPLE=${SAMPLE:-10}
PORT=${PORT:-24439}
OUT=${OUT:-bench/results}
ABUSE_ROWS=${ABUSE_ROWS:-}
ROUTER_EXTRA=${ROUTER_EXTRA:-}
LOG_DIR=${LOG_DIR:-}

to_seconds() { # humantime-ish (1h30m, 30m, 90s, 90) -> seconds
  local rest=$1 total=0
  [[ $rest =~ ^[0-9]+$ ]] && { echo "$rest"; return; }
  while [[ $rest =~ ^([0-9]+)(h|m|s)(.*)$ ]]; do
    case ${BASH_REMATCH[2]} in
      h) total=$((total + BASH_REMATCH[1] * 3600)) ;;
      m) total=$((total + BASH_REMATCH[1] * 60)) ;;
      s) total=$((total + BASH_REMATCH[1])) ;;
    esac
    rest=${BASH_REMATCH[3]}
  done
  [ -z "$rest" ] && [ "$total" -gt 0 ] || { echo "bad duration: $1" >&2; return 1; }
  echo "$total"
}
DURATION_S=$(to_seconds "$DURATION")
WARMUP=${WARMUP:-$(( DURATION_S / 4 < 300 ? DURATION_S / 4 : 300 ))}

if [ -z "${ABUSE_BIN:-}" ]; then
  for dir in target/perf/deps target/debug/deps; do
    ABUSE_BIN=$(find "$dir" -maxdepth 1 -name 'abuse-*' -type f -executable -printf '%T@ %p\n' \
      2>/dev/null | sort -rn | head -1 | cut -d' ' -f2-)
    [ -n "$ABUSE_BIN" ] && break
  done
  [ -n "$ABUSE_BIN" ] || {
    echo "no abuse test binary: cargo test --profile perf -p switchboard-tests --test abuse --no-run" \
      "(or ABUSE_BIN=none)" >&2
    exit 2
  }
fi
for b in switchboard switchboard-load; do
  [ -x "$BIN/$b" ] || { echo "$BIN/$b missing: cargo build --profile perf --bins" >&2; exit 2; }
done

STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p "$OUT"
REPORT="$OUT/$STAMP-soak.md"
CSV="$OUT/$STAMP-soak-rss.csv"
WORK=$(mktemp -d)
# The abuse loop's test process is its own child: stop it by its pid first.
cleanup() {
  touch "$WORK/stop"
  if [ -s "$WORK/abuse.pid" ]; then kill "$(cat "$WORK/abuse.pid")" 2>/dev/null || true; fi
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
source bench/scripts/router.sh
write_router_config "$PORT" "$ROUTER_EXTRA"
start_router
START=$(date +%s)
echo "soak: router pid $ROUTER on 127.0.0.1:$PORT; $DURATION of load (warm-up ${WARMUP} s);" \
  "abuse binary: $ABUSE_BIN; report: $REPORT" >&2

sampler() {
  local hz t rss sessions cpu
  hz=$(getconf CLK_TCK)
  echo "t_s,rss_kib,sessions,cpu_s" > "$CSV"
  while [ ! -e "$WORK/stop-sampling" ] && kill -0 "$ROUTER" 2>/dev/null; do
    t=$(( $(date +%s) - START ))
    rss=$(rss_kib "$ROUTER" 2>/dev/null || echo 0)
    sessions=$(router_sessions 2>/dev/null || echo "")
    cpu=$(awk -v hz="$hz" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$ROUTER/stat" 2>/dev/null || echo "")
    echo "$t,$rss,$sessions,$cpu" >> "$CSV"
    sleep "$SAMPLE"
  done
}

abuse_loop() { # one line per round to abuse.rounds: "N pass|fail|cut"
  local round=0 status
  while [ ! -e "$WORK/stop" ]; do
    round=$((round + 1))
    # shellcheck disable=SC2086 # ABUSE_ROWS is a list of filters
    "$ABUSE_BIN" --ignored --nocapture $ABUSE_ROWS > "$WORK/abuse-$round.out" 2>&1 &
    echo $! > "$WORK/abuse.pid"
    status=0
    wait "$!" || status=$?
    if [ -e "$WORK/stop" ] && [ "$status" != 0 ]; then
      echo "$round cut" >> "$WORK/abuse.rounds"
    elif [ "$status" = 0 ]; then
      echo "$round pass" >> "$WORK/abuse.rounds"
    else
      echo "$round fail" >> "$WORK/abuse.rounds"
    fi
  done
}

COMMON=(--server "127.0.0.1:$PORT" --cert-sha256 "$FP" --secret-file "$WORK/secret" --quiet)
CHURN_CMD=("$BIN/switchboard-load" churn "${COMMON[@]}" --sessions "$SESSIONS"
  --connect-rate "$CONNECT_RATE" --rate "$RATE" --reconnect-rate "$RECONNECT_RATE"
  --duration "$DURATION" --json "$WORK/churn.json")
PRESENCE_CMD=("$BIN/switchboard-load" presence "${COMMON[@]}" --sessions "$PRESENCE_SESSIONS"
  --user-prefix presence- --rate "$PRESENCE_RATE" --watch 10 --duration "$DURATION"
  --json "$WORK/presence.json")

sampler &
SAMPLER=$!
touch "$WORK/abuse.rounds"
if [ "$ABUSE_BIN" != none ]; then abuse_loop & ABUSE=$!; else ABUSE=; fi
"${CHURN_CMD[@]}" > "$WORK/churn.out" 2>&1 &
CHURN=$!
"${PRESENCE_CMD[@]}" > "$WORK/presence.out" 2>&1 &
PRESENCE=$!
CHURN_STATUS=0; wait "$CHURN" || CHURN_STATUS=$?
PRESENCE_STATUS=0; wait "$PRESENCE" || PRESENCE_STATUS=$?
LOAD_END=$(( $(date +%s) - START ))

# The end of the load: the last sample, taken now.
echo "$LOAD_END,$(rss_kib "$ROUTER" 2>/dev/null || echo 0),$(router_sessions 2>/dev/null || echo),"  >> "$CSV"
touch "$WORK/stop-sampling" "$WORK/stop"
if [ -s "$WORK/abuse.pid" ]; then kill "$(cat "$WORK/abuse.pid")" 2>/dev/null || true; fi
[ -z "$ABUSE" ] || wait "$ABUSE" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true

ALIVE=no
kill -0 "$ROUTER" 2>/dev/null && ALIVE=yes
LIVEZ=$(python3 -c 'import sys, urllib.request
try: print(urllib.request.urlopen(sys.argv[1] + "/livez", timeout=5).status)
except Exception as e: print(e)' "$ADMIN")
ROUTER_STATUS=none
if [ "$ALIVE" = yes ]; then
  kill -TERM "$ROUTER"
  ROUTER_STATUS=0; wait "$ROUTER" || ROUTER_STATUS=$?
fi
PANICS=$(grep -c "panicked" "$WORK/router.out" || true)
if [ -n "$LOG_DIR" ]; then
  mkdir -p "$LOG_DIR"
  cp "$WORK"/router.out "$WORK"/churn.* "$WORK"/presence.* "$WORK"/abuse-* "$LOG_DIR"/ 2>/dev/null || true
fi

# The last complete round's ABUSE lines, and the first failure's panics.
LAST_PASS=$(awk '$2 != "cut" {n = $1} END {print n}' "$WORK/abuse.rounds")
FIRST_FAIL=$(awk '$2 == "fail" {print $1; exit}' "$WORK/abuse.rounds")
: > "$WORK/abuse.lines"; : > "$WORK/abuse.failure"
[ -z "$LAST_PASS" ] || grep -h "^ABUSE " "$WORK/abuse-$LAST_PASS.out" > "$WORK/abuse.lines" || true
[ -z "$FIRST_FAIL" ] || grep -h -A3 "panicked at" "$WORK/abuse-$FIRST_FAIL.out" | head -20 \
  > "$WORK/abuse.failure" || true

python3 - "$CSV" "$WARMUP" "$WORK" "$REPORT" <<PY
import json, os, subprocess, sys
csv, warmup, work, report = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = [l.split(",") for l in open(csv).read().split("\n")[1:] if l]
samples = [(int(r[0]), int(r[1])) for r in rows if r[1] not in ("", "0")]
warm = next(((t, k) for t, k in samples if t >= warmup), samples[-1])
end = samples[-1]
peak = max(k for _, k in samples)
growth = (end[1] - warm[1]) / warm[1] * 100
def rev():
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
        return head + (" + uncommitted changes" if dirty else "")
    except OSError:
        return "?"
mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
out = []
p = out.append
p(f"# Soak $STAMP")
p("")
p(f"Build \`{rev()}\`, {os.cpu_count()} cores, {int(mem) / 1048576:.0f} GiB. Load for $DURATION "
  f"(ended {end[0]} s after the router started); RSS sampled every $SAMPLE s "
  f"(\`{os.path.basename(csv)}\`). Router: \`$BIN/switchboard serve\`, dev defaults, heartbeat 30 s"
  + (", plus \`$ROUTER_EXTRA\`" if "$ROUTER_EXTRA" else "") + ".")
p("")
p("    " + "${CHURN_CMD[*]}".replace("$WORK/", ""))
p("    " + "${PRESENCE_CMD[*]}".replace("$WORK/", ""))
p("    " + "$ABUSE_BIN --ignored --nocapture $ABUSE_ROWS (in a loop)")
p("")
p("## Router memory")
p("")
p("| after warm-up | at the end | growth | peak |")
p("|---|---|---|---|")
p(f"| {warm[1] / 1024:.0f} MiB (t = {warm[0]} s) | {end[1] / 1024:.0f} MiB (t = {end[0]} s) | "
  f"{growth:+.1f} % | {peak / 1024:.0f} MiB |")
p("")
p("## Load generators")
p("")
p("| scenario | exit | sessions opened / asked | routed / refused | delivered | lost | duplicated | reordered | reconnects | violations |")
p("|---|---|---|---|---|---|---|---|---|---|")
violations, notes = 0, []
for name, status in (("churn", $CHURN_STATUS), ("presence", $PRESENCE_STATUS)):
    try:
        r = json.load(open(f"{work}/{name}.json"))
    except (OSError, ValueError):
        p(f"| {name} | {status} | no report | | | | | | | |")
        violations += 1
        continue
    t = r.get("traffic") or {}
    found = r["violations"]
    # PROTOCOL.md §9.6: a newer event about a user replaces the one still
    # queued for a watcher, and the presence scenario counts each replaced
    # event as lost. Stale versions (its "reordered") are the real failure.
    replaced = [v for v in found if name == "presence" and "never reached their watcher" in v]
    found = [v for v in found if v not in replaced]
    violations += len(found) + (status != 0 and not replaced)
    p(f"| {name} | {status} | {r['sessions_opened']} / {r['sessions_requested']} | "
      f"{t.get('routed')} / {t.get('refused')} | {t.get('delivered')} | {t.get('lost')} | "
      f"{t.get('duplicated')} | {t.get('reordered')} | {r.get('reconnects') or '-'} | "
      f"{len(found)} |")
    notes.extend(f"{name}: {v}" for v in found[:5])
    notes.extend(f"{name} (not counted as a violation: PROTOCOL.md §9.6 lets a newer event "
                 f"about a user replace one still queued for a watcher, which this scenario "
                 f"counts as lost): {v}" for v in replaced)
if notes:
    p("")
    p("\n".join(f"- {note}" for note in notes))
p("")
rounds = [l.split() for l in open(f"{work}/abuse.rounds").read().splitlines()]
count = lambda kind: sum(1 for _, k in rounds if k == kind)
p("## Abuse experiments")
p("")
if "$ABUSE_BIN" == "none":
    p("Skipped (ABUSE_BIN=none).")
else:
    p(f"{len(rounds)} rounds: {count('pass')} passed, {count('fail')} failed, {count('cut')} cut off "
      "at the end of the load. The last complete round:")
    p("")
    p("\`\`\`")
    p(open(f"{work}/abuse.lines").read().rstrip() or "(no complete round)")
    p("\`\`\`")
    failure = open(f"{work}/abuse.failure").read().rstrip()
    if failure:
        p("")
        p("The first failed round:")
        p("")
        p("\`\`\`")
        p(failure)
        p("\`\`\`")
p("")
p("## Router")
p("")
p(f"Alive at the end of the load: **$ALIVE** (/livez: $LIVEZ); panics in its log: $PANICS; "
  f"exit status after SIGTERM: $ROUTER_STATUS.")
ok = "$ALIVE" == "yes" and $PANICS == 0 and violations == 0 and count("fail") == 0
p("")
p(f"Result: **{'PASS' if ok else 'FAIL'}**")
open(report, "w").write("\n".join(out) + "\n")
print("\n".join(out))
sys.exit(0 if ok else 1)
PY
