#!/usr/bin/env bash
# Soak: a fresh server (loopback, release build) under mixed online reads and pushes for
# SOAK_SECONDS (default 600), reported every SOAK_WINDOW seconds (default 30) by
# `quiver-bench soak` (rates, p99s, errors, server RSS), then the server's own error counts
# from /metrics. Bounded and
# loopback-only. Targets (issue 8): 0 errors, RSS drift under 10 % (after SOAK_WARMUP seconds,
# default 120: the trend of the peaks and floors, see below).
#
#   benches/soak.sh            # QUIVER_BIN_DIR: where `quiver` and `quiver-bench` are
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${QUIVER_BIN_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/quiver-release}/release}
SOAK_SECONDS=${SOAK_SECONDS:-600}
SOAK_WINDOW=${SOAK_WINDOW:-30}
SOAK_WARMUP=${SOAK_WARMUP:-120}
WORK=$(mktemp -d /tmp/quiver-soak.XXXXXX)
PID=
trap '[ -n "$PID" ] && { kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null; }; rm -rf "$WORK"' EXIT

"$BIN/quiver" serve --data-dir "$WORK/data" --grpc-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 \
  --listener-addr-file "$WORK/addr" --log warn &
PID=$!
while [ ! -s "$WORK/addr" ]; do sleep 0.05; done
URL="http://$(head -n 1 "$WORK/addr")"
METRICS="$(sed -n 2p "$WORK/addr")"
"$BIN/quiver" apply -f benches/push_rss.yaml --server "$URL" >/dev/null

echo "== soak: ${SOAK_SECONDS}s, 8 readers (10 entities) + 2 writers (10 rows; every 100th push also offline)"
echo "machine: $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$BIN/quiver-bench" soak --server "$URL" --server-pid "$PID" --seconds "$SOAK_SECONDS" --window "$SOAK_WINDOW" |
  tee "$WORK/soak.md"

# RSS under steady load is a sawtooth (the online memtable fills to 64 MiB, flushes, starts
# again), so first-vs-last compares arbitrary points of it. The trend: after a warm-up, the peak
# and the floor of the second half against those of the first half.
echo
awk -F'|' -v warm="$SOAK_WARMUP" '
BEGIN { n = 0 }
$2 + 0 > warm && $8 + 0 > 0 { r[n] = $8 + 0; n++ }
END {
  if (n < 4) { print "RSS trend: too few windows after the warm-up"; exit }
  h = int(n / 2)
  p1 = 0; p2 = 0; f1 = 1e12; f2 = 1e12
  for (i = 0; i < n; i++) {
    v = r[i]
    if (i < h) { if (v > p1) p1 = v; if (v < f1) f1 = v }
    else { if (v > p2) p2 = v; if (v < f2) f2 = v }
  }
  printf "RSS trend after %d s of warm-up: peak %.1f -> %.1f MiB (%+.1f %%), floor %.1f -> %.1f MiB (%+.1f %%)\n", warm, p1, p2, (p2 - p1) / p1 * 100, f1, f2, (f2 - f1) / f1 * 100
}
' "$WORK/soak.md"

echo
echo "== the server's own figures at the end (/metrics): non-OK RPCs by code, memory"
exec 3<>"/dev/tcp/${METRICS%:*}/${METRICS#*:}"
printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
grep -E '^(quiver_rpc_requests_total|quiver_rocksdb_(memtable|block_cache)_bytes|process_resident_memory_bytes)' <&3 |
  grep -v 'code="OK"' || true
