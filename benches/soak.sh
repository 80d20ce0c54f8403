#!/usr/bin/env bash
# Soak: a fresh server (loopback, release build) under mixed online reads and pushes for
# SOAK_SECONDS (default 600), reported every SOAK_WINDOW seconds (default 30) by
# `quiver-bench soak` (rates, p99s, errors, server RSS), then the server's own error counts
# from /metrics. Bounded and
# loopback-only. Targets (issue 8): 0 errors, RSS drift under 10 % from the warm first window.
#
#   benches/soak.sh            # QUIVER_BIN_DIR: where `quiver` and `quiver-bench` are
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${QUIVER_BIN_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/quiver-release}/release}
SOAK_SECONDS=${SOAK_SECONDS:-600}
SOAK_WINDOW=${SOAK_WINDOW:-30}
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
"$BIN/quiver-bench" soak --server "$URL" --server-pid "$PID" --seconds "$SOAK_SECONDS" --window "$SOAK_WINDOW"

echo
echo "== the server's own figures at the end (/metrics): non-OK RPCs by code, memory"
exec 3<>"/dev/tcp/${METRICS%:*}/${METRICS#*:}"
printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
grep -E '^(quiver_rpc_requests_total|quiver_rocksdb_(memtable|block_cache)_bytes|process_resident_memory_bytes)' <&3 |
  grep -v 'code="OK"' || true
