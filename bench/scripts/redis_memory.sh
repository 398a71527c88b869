#!/usr/bin/env bash
# Redis memory per idle session and per stored offline message, for the
# cluster engine's layout (issue 24; ARCHITECTURE.md "Engine"), measured on
# a throwaway redis-server (Debian's, as CI installs) on a loopback port:
# the growth of INFO's used_memory divided by what was written.
#
# - sessions: one field per online user (a 12-byte id, a 17-byte packed
#   row: node, session count, a device hash, version, last seen) in bucket
#   hashes, for several bucket counts. Redis keeps a hash of at most
#   hash-max-listpack-entries (512) small fields as one listpack, far
#   smaller than a hash table: the bucket count decides which one it is.
# - messages: packed inbox entries (15 bytes of header, 60 of ids, an
#   80-byte payload) on per-user lists, with 1, 10 and 100 per list.
#
#   bench/scripts/redis_memory.sh            # 200,000 of each
#   N=1000000 bench/scripts/redis_memory.sh
set -euo pipefail
N=${N:-200000}
PORT=${PORT:-26399}
DIR=$(mktemp -d)
trap 'redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$DIR" \
  > "$DIR/server.log" 2>&1 &
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.1; done

used() { redis-cli -p "$PORT" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p'; }

# Writes redis protocol for: sessions N BUCKETS | messages N PER_LIST
generate() {
  python3 - "$@" <<'PY'
import random, sys, zlib
out = sys.stdout.buffer
rng = random.Random(1)
def resp(*args):
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    out.write(b"".join(parts))
mode, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    if mode == "sessions":
        user = "user-%07d" % i
        bucket = zlib.crc32(user.encode()) % k
        resp("HSET", "sb:{%d}:u" % bucket, user, rng.randbytes(17))
    else:
        user = "user-%07d" % (i % max(1, n // k))
        bucket = zlib.crc32(user.encode()) % 16384
        resp("RPUSH", "sb:{%d}:ib:%s" % (bucket, user), rng.randbytes(15 + 60 + 80))
PY
}

measure() { # what n mode k -> bytes per item
  redis-cli -p "$PORT" flushall >/dev/null
  local before after
  before=$(used)
  generate "$2" "$N" "$3" | redis-cli -p "$PORT" --pipe >/dev/null
  after=$(used)
  echo "$1: $(( (after - before) / N )) B each"
}

echo "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), $N items"
for buckets in 256 1024 4096; do
  measure "idle session, $buckets bucket hashes ($(( N / buckets )) fields each)" sessions "$buckets"
done
for per in 1 10 100; do
  measure "stored message, $per per inbox" messages "$per"
done
