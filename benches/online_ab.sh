#!/usr/bin/env bash
# GetOnlineFeatures vs Echo before/after a change: for each build a fresh server over the same
# materialized view (the 7.2 M-row source of `quiver-bench gen`, 10,000 keys), then
# `quiver-bench online` of the AFTER build at concurrency 1 and 32 x batch 1, 100 and 1,000,
# alternating builds, ROUNDS each. Prints the load generator's table (get/Echo per cell) and
# the server's CPU seconds (user + system) over the whole load.
#
# usage: online_ab.sh BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS] [SECONDS_PER_CELL] [EXTRA SERVE FLAGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=$1 AFTER=$2 ROUNDS=${3:-2} SECONDS_PER_CELL=${4:-3}
shift $(($# < 4 ? $# : 4))
DATA=${QUIVER_BENCH_DATA:-/tmp/quiver-bench}
WORK=$DATA/online-ab
[ -f "$DATA/driver_hourly.parquet" ] || "$AFTER/quiver-bench" gen --out "$DATA" --entities 10000 --hours 720
mkdir -p "$WORK"

source benches/serve.sh

run() {  # run BIN_DIR NAME [SERVE FLAGS...]
  local bin=$1 name=$2; shift 2
  serve_quiver "$bin" "$WORK" "$@"
  echo "== $name"
  local before_cpu; before_cpu=$(cpu_seconds $PID)
  "$AFTER/quiver-bench" online --server "$URL" --server-pid $PID --concurrency 1,32 --batch 1,100,1000 \
    --seconds "$SECONDS_PER_CELL" 2>>"$WORK/online.jsonl"
  echo "server CPU over the load: $(echo "$(cpu_seconds $PID) - $before_cpu" | bc) s"
  kill -TERM $PID; wait $PID || true
}

for round in $(seq "$ROUNDS"); do
  run "$BEFORE" "round $round before" "$@"
  run "$AFTER" "round $round after" "$@"
done
