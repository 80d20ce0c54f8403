#!/usr/bin/env bash
# Durable pushes before/after a change: the same load (`quiver-bench push` of the AFTER build:
# the view `clicks` of benches/push_rss.yaml, fresh user ids per push, online and offline)
# against a fresh server of each build, alternating, ROUNDS each. Prints the load generator's
# table per server and the server's peak RSS and push-log file count.
#
# usage: push_ab.sh BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS] [SECONDS_PER_CELL]
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=$1 AFTER=$2 ROUNDS=${3:-2} SECONDS_PER_CELL=${4:-3}
WORK=${QUIVER_BENCH_DATA:-/tmp/quiver-bench}/push-ab
mkdir -p "$WORK" && cp benches/push_rss.yaml "$WORK/features.yaml"

run() {  # run BIN_DIR NAME
  rm -rf "$WORK/data" "$WORK/addr"
  "$1/quiver" serve --data-dir "$WORK/data" --grpc-addr 127.0.0.1:0 --listener-addr-file "$WORK/addr" \
    --log warn --push-log-compaction-interval 0 --source-root "$WORK" &
  local pid=$!
  while [ ! -s "$WORK/addr" ]; do sleep 0.05; done
  local url="http://$(cat "$WORK/addr")"
  "$1/quiver" apply -f "$WORK/features.yaml" --server "$url" >/dev/null
  echo "== $2"
  "$AFTER/quiver-bench" push --server "$url" --concurrency 1,32 --rows 1,1000 \
    --seconds "$SECONDS_PER_CELL" 2>>"$WORK/push.jsonl"
  echo "server peak RSS $(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' /proc/$pid/status)," \
    "push-log files $(find "$WORK/data/offline" -name '*.parquet' | wc -l)"
  kill -TERM $pid; wait $pid || true
}

for round in $(seq "$ROUNDS"); do
  run "$BEFORE" "round $round before"
  run "$AFTER" "round $round after"
done
