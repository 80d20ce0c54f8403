#!/usr/bin/env bash
# Runs every benchmark on this machine and prints the figures for benches/README.md.
# Needs a release build: ROCKSDB_LIB_DIR may point at an already built librocksdb.a to skip
# RocksDB's C++ build (see benches/README.md). Uses loopback only; bounded durations.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${QUIVER_BIN_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/quiver-release}/release}
DATA=${QUIVER_BENCH_DATA:-/tmp/quiver-bench}
SECONDS_PER_CELL=${SECONDS_PER_CELL:-3}
mkdir -p "$DATA"
python3 -m pip install --quiet --disable-pip-version-check duckdb==2.0.1 pyarrow==22.0.0

echo "== machine"; nproc; free -g | head -2; uname -r
[ -f "$DATA/driver_hourly.parquet" ] || "$BIN/quiver-bench" gen --out "$DATA" --entities 10000 --hours 720

serve() {  # serve DATA_DIR -> sets PID and URL
  rm -f "$DATA/addr"
  "$BIN/quiver" serve --data-dir "$1" --grpc-addr 127.0.0.1:0 --listener-addr-file "$DATA/addr" --log warn \
    --source-root "$DATA" --labels-root "$DATA" &
  PID=$!
  while [ ! -f "$DATA/addr" ]; do sleep 0.05; done
  URL="http://$(cat "$DATA/addr")"
}
peak() { awk '/VmHWM/ {printf "%.0f MiB\n", $2/1024}' "/proc/$1/status"; }
stop() { kill -TERM "$1"; wait "$1" || true; }

echo "== materialize (7.2 M-row source, 9 features)"
rm -rf "$DATA/server"
serve "$DATA/server"
"$BIN/quiver" apply -f "$DATA/features.yaml" --server "$URL" >/dev/null
/usr/bin/time -f "client wall %e s" "$BIN/quiver" materialize --start 2025-12-01T00:00:00Z --end 2026-03-01T00:00:00Z --server "$URL"
echo "server peak RSS after materialize: $(peak $PID)"

echo "== online serving: GetOnlineFeatures vs Echo (same run, same request shapes)"
"$BIN/quiver-bench" online --server "$URL" --service driver_model --keys 10000 --seconds "$SECONDS_PER_CELL" 2>"$DATA/online.jsonl"
stop $PID

echo "== offline export vs DuckDB ASOF JOIN"
for n in 10000 100000 1000000; do
  serve "$DATA/server"
  out="$DATA/server/exports/quiver_$n.parquet"
  "$BIN/quiver" export --server-side --overwrite --service driver_model --labels "$DATA/labels_$n.parquet" \
    --out "quiver_$n.parquet" --server "$URL" | head -1
  echo "quiver server peak RSS ($n labels, includes the server's baseline): $(peak $PID)"
  stop $PID
  python3 benches/duckdb_asof.py "$DATA/driver_hourly.parquet" "$DATA/labels_$n.parquet" "$DATA/duckdb_$n.parquet" "$out"
done
