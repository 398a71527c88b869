#!/usr/bin/env bash
# Redis memory of the Redis engine's inboxes (issue 24; README "Keeping
# inboxes in Redis"), measured with the engine's own scripts
# (router/src/engine/inbox/*.lua) on a throwaway redis-server (Debian's, as
# CI installs) on a free loopback port: the growth of INFO's used_memory
# divided by what was written, and Redis's CPU per script call.
#
# - idle device: one attach per user (a device with a session and nothing
#   stored): the user's row in its bucket hash.
# - stored message: appends of a 140-byte Message (60 bytes of ids and
#   envelope, an 80-byte payload) with the 19-byte entry header, 1 and 10
#   per inbox.
#
#   bench/scripts/redis_memory.sh            # 100,000 of each
#   N=1000000 BUCKETS=16384 bench/scripts/redis_memory.sh
set -euo pipefail
N=${N:-100000}
BUCKETS=${BUCKETS:-4096}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LUA="$ROOT/router/src/engine/inbox"
# A port nothing listens on: this script flushes its server between steps.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DIR=$(mktemp -d)
trap 'redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$DIR" \
  > "$DIR/server.log" 2>&1 &
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.1; done

cli() { redis-cli -p "$PORT" "$@"; }
used() { cli info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p'; }
ATTACH=$(cli script load "$(cat "$LUA/common.lua" "$LUA/attach.lua")")
APPEND=$(cli script load "$(cat "$LUA/common.lua" "$LUA/append.lua")")

# Redis protocol for: attach N | append N PER_INBOX
generate() {
  python3 - "$@" "$BUCKETS" "$ATTACH" "$APPEND" <<'PY'
import struct, sys, zlib
mode, n, per, buckets, attach, append = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
out = sys.stdout.buffer
def resp(*args):
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    out.write(b"".join(parts))
now = 1765000000000
u48 = lambda v: struct.pack(">Q", v)[2:]
message = b"i" * 60 + b"p" * 80
entry = u48(now) + b"\x00" + u48(7) + u48(9) + message
for i in range(n):
    user = "user-%07d" % (i // per)
    k = zlib.crc32(user.encode()) % buckets
    keys = ("sb:{%d}:ib" % k, "sb:{%d}:il:%s" % (k, user))
    limits = (user, str(now), "1000", "1048576", "86400000", "50")
    if mode == "attach":
        resp("EVALSHA", attach, "2", *keys, *limits, str(zlib.crc32(b"phone")), "-1", "0")
    else:
        resp("EVALSHA", append, "2", *keys, *limits, entry, "0", "1")
PY
}

measure() { # label mode per_inbox -> bytes per item, µs per call
  cli flushall >/dev/null
  cli config resetstat >/dev/null
  local before after
  before=$(used)
  generate "$2" "$N" "$3" | cli --pipe >/dev/null
  after=$(used)
  local usec
  usec=$(cli info commandstats | sed -n 's/^cmdstat_evalsha:.*usec_per_call=\([0-9.]*\).*/\1/p')
  echo "$1: $(( (after - before) / N )) B each, ${usec} µs of Redis CPU per call"
}

echo "redis $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), $N items, $BUCKETS buckets"
measure "idle device (attached, nothing stored)" attach 1
measure "stored message, 1 per inbox" append 1
measure "stored message, 10 per inbox" append 10
