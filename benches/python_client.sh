#!/usr/bin/env bash
# The Python client's benchmark (benches/python_client.py) on the benchmark data of run.sh:
# a release server on loopback, applied and materialized, then the client against raw grpcio
# and local Parquet in the same run. QUIVER_BIN_DIR: where the release `quiver` is.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${QUIVER_BIN_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/quiver-release}/release}
DATA=${QUIVER_BENCH_DATA:-/tmp/quiver-bench}
LABELS=${LABELS:-$DATA/labels_1000000.parquet}
[ -f "$DATA/driver_hourly.parquet" ] || "$BIN/quiver-bench" gen --out "$DATA" --entities 10000 --hours 720
python3 -m pip install --quiet --disable-pip-version-check ./python
WORK=$(mktemp -d /tmp/quiver-pybench.XXXXXX)
PID=
trap '[ -n "$PID" ] && { kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null; }; rm -rf "$WORK"' EXIT
"$BIN/quiver" serve --data-dir "$WORK/data" --grpc-addr 127.0.0.1:0 --listener-addr-file "$WORK/addr" \
  --log warn --source-root "$DATA" --labels-root "$DATA" &
PID=$!
while [ ! -s "$WORK/addr" ]; do sleep 0.05; done
URL="http://$(head -n 1 "$WORK/addr")"
"$BIN/quiver" apply -f "$DATA/features.yaml" --server "$URL" >/dev/null
"$BIN/quiver" materialize --start 2025-12-01T00:00:00Z --end 2026-03-01T00:00:00Z --server "$URL" >/dev/null
echo "machine: $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
python3 benches/python_client.py "$URL" "$LABELS" "${SECONDS_PER_CELL:-3}"
