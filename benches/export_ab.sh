#!/usr/bin/env bash
# Before/after for a change on the offline path: the same server-side export (1 M labels over
# the 6.9 M-row view of `quiver-bench gen`) with two builds, alternating, ROUNDS each, a fresh
# server per round; then DuckDB's ASOF JOIN once for the ratio. Prints wall time (CLI call)
# and the server's peak RSS per round.
#
# usage: export_ab.sh BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=$1 AFTER=$2 ROUNDS=${3:-3}
DATA=${QUIVER_BENCH_DATA:-/tmp/quiver-bench}
LABELS=${LABELS:-1000000}
python3 -m pip install --quiet --disable-pip-version-check duckdb==2.0.1 pyarrow==22.0.0
[ -f "$DATA/driver_hourly.parquet" ] ||
  "$AFTER/quiver-bench" gen --out "$DATA" --entities 10000 --hours 720

run() {  # run BIN_DIR NAME
  rm -rf "$DATA/ab" "$DATA/ab.addr" && mkdir -p "$DATA/ab"
  "$1/quiver" serve --data-dir "$DATA/ab" --grpc-addr 127.0.0.1:0 --listener-addr-file "$DATA/ab.addr" \
    --log warn --source-root "$DATA" --labels-root "$DATA" &
  local pid=$!
  while [ ! -s "$DATA/ab.addr" ]; do sleep 0.05; done
  local url="http://$(cat "$DATA/ab.addr")"
  "$1/quiver" apply -f "$DATA/features.yaml" --server "$url" >/dev/null
  local start end
  start=$(date +%s.%N)
  "$1/quiver" export --server-side --overwrite --service driver_model \
    --labels "$DATA/labels_$LABELS.parquet" --out ab.parquet --server "$url" >/dev/null
  end=$(date +%s.%N)
  printf '%s wall %.2f s, peak RSS %s\n' "$2" "$(awk "BEGIN {print $end - $start}")" \
    "$(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' /proc/$pid/status)"
  kill -TERM $pid; wait $pid || true
}

for round in $(seq "$ROUNDS"); do
  run "$BEFORE" "round $round before"
  run "$AFTER" "round $round after "
done
python3 benches/duckdb_asof.py "$DATA/driver_hourly.parquet" "$DATA/labels_$LABELS.parquet" \
  "$DATA/duckdb_ab.parquet" "$DATA/ab/exports/ab.parquet"
