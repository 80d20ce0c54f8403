#!/usr/bin/env bash
# The offline join past memory: 10,000 entities x 7,200 hourly rows (72 M rows, 9 features) and
# 1 M labels, exported by Quiver with --offline-memory-limit 1 GiB (so the view is joined in
# partitions spilled to disk) next to DuckDB's ASOF JOIN with memory_limit='1GB' on the same
# files, in the same run. Prints each engine's wall time and peak RSS, and checks that the two
# outputs agree value for value.
#
# Needs a release build (see benches/README.md) and about 12 GB of disk under
# QUIVER_SCALE_DATA (data 2.7 GB, spill files up to about 7 GB while the export runs).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${QUIVER_BIN_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/quiver-release}/release}
DATA=${QUIVER_SCALE_DATA:-/tmp/quiver-scale}
LIMIT=${OFFLINE_MEMORY_LIMIT:-1073741824}
mkdir -p "$DATA"
python3 -m pip install --quiet --disable-pip-version-check duckdb==2.0.1 pyarrow==22.0.0

echo "== machine"; nproc; free -g | head -2; df -h "$DATA" | tail -1
[ -f "$DATA/labels_1000000.parquet" ] ||
  "$BIN/quiver-bench" gen --out "$DATA" --entities 10000 --hours 7200 --labels 1000000
ls -l "$DATA/driver_hourly.parquet"

rm -rf "$DATA/server" "$DATA/addr" && mkdir -p "$DATA/server"
"$BIN/quiver" serve --data-dir "$DATA/server" --grpc-addr 127.0.0.1:0 \
  --listener-addr-file "$DATA/addr" --log info --offline-memory-limit "$LIMIT" \
  --source-root "$DATA" --labels-root "$DATA" 2>"$DATA/server.log" &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true' EXIT
while [ ! -s "$DATA/addr" ]; do sleep 0.05; done
URL="http://$(cat "$DATA/addr")"
"$BIN/quiver" apply -f "$DATA/features.yaml" --server "$URL" >/dev/null
echo "server RSS before the export: $(awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' /proc/$PID/status)"

echo "== quiver export (--offline-memory-limit $LIMIT)"
/usr/bin/time -f "quiver client wall %e s" "$BIN/quiver" export --server-side --overwrite \
  --service driver_model --labels "$DATA/labels_1000000.parquet" --out quiver_scale.parquet \
  --server "$URL" | head -1
echo "quiver server peak RSS: $(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' /proc/$PID/status)"
sed 's/\x1b\[[0-9;]*m//g' "$DATA/server.log" | grep -o 'partitions=[0-9]*' | head -1 ||
  echo "(the export did not spill)"
kill -TERM $PID; wait $PID || true; trap - EXIT
left=$(find "$DATA/server/spill" -type f 2>/dev/null | wc -l)
echo "spill files left after the export: $left"

echo "== duckdb ASOF JOIN (memory_limit='1GB', threads 2), compared with Quiver's output"
DUCKDB_MEMORY_LIMIT=1GB DUCKDB_TEMP_DIRECTORY="$DATA/duckdb.tmp" \
  python3 benches/duckdb_asof.py "$DATA/driver_hourly.parquet" "$DATA/labels_1000000.parquet" \
  "$DATA/duckdb_scale.parquet" "$DATA/server/exports/quiver_scale.parquet"
