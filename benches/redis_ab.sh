#!/usr/bin/env bash
# GetOnlineFeatures per replica with online rows in a local Redis Cluster (3 primaries on
# loopback, Debian's redis-server) vs the embedded RocksDB store, in the same run: one server
# each over the same materialized view (the 7.2 M-row source of `quiver-bench gen`, 10,000
# keys), `quiver-bench online` at concurrency 1 and 32 x batch 1 and 100, ROUNDS rounds
# alternating. Prints each table and the server's CPU per request (Redis's own CPU is not
# in it: it is reported separately, summed over the primaries).
#
# usage: redis_ab.sh BIN_DIR [ROUNDS] [SECONDS_PER_CELL]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$1 ROUNDS=${2:-2} SECONDS_PER_CELL=${3:-3}
DATA=${QUIVER_BENCH_DATA:-/tmp/quiver-bench}
WORK=$DATA/redis-ab
[ -f "$DATA/driver_hourly.parquet" ] || "$BIN/quiver-bench" gen --out "$DATA" --entities 10000 --hours 720
rm -rf "$WORK" && mkdir -p "$WORK"

source benches/serve.sh
PORTS=(17001 17002 17003)
trap stop_redis_cluster EXIT
start_redis_cluster "$WORK"

run() {  # run NAME [SERVE FLAGS...]
  local name=$1; shift
  serve_quiver "$BIN" "$WORK" "$@"
  echo "== $name"
  local redis_before; redis_before=$(redis_cpu)
  "$BIN/quiver-bench" online --server "$URL" --server-pid $PID --concurrency 1,32 --batch 1,100 \
    --seconds "$SECONDS_PER_CELL" 2>>"$WORK/online.jsonl"
  echo "redis CPU over the load (all primaries): $(echo "$(redis_cpu) - $redis_before" | bc) s"
  kill -TERM $PID; wait $PID || true
}

for round in $(seq "$ROUNDS"); do
  run "round $round embedded rocksdb"
  redis-cli -p "${PORTS[0]}" --cluster call "127.0.0.1:${PORTS[0]}" flushall >/dev/null
  run "round $round redis cluster (3 primaries)" --online-store "redis+cluster://127.0.0.1:${PORTS[0]}"
done
