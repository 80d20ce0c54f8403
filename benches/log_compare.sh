#!/usr/bin/env bash
# Online benchmark with served-row logging off, at 1 % and at 100 % (one build), as in
# benches/README.md. Run from the data directory (the server's working directory is the
# source root):
#   cd /tmp/quiver-bench && benches/log_compare.sh BIN_DIR
# BIN_DIR holds release `quiver` and `quiver-bench`; data from `quiver-bench gen` (benches/run.sh).
# Env: ROUNDS=2 SECONDS_PER_CELL=2 OUT_DIR=/tmp/quiver-logbench-runs
set -euo pipefail
BIN=$(realpath "$1")
DATA=${QUIVER_BENCH_DATA:-/tmp/quiver-bench}
ROUNDS=${ROUNDS:-2}; SECONDS_PER_CELL=${SECONDS_PER_CELL:-2}; RATES="0 0.01 1"
TS=$(date +%Y%m%d-%H%M%S); RUN_DIR=${OUT_DIR:-/tmp/quiver-logbench-runs}/log-$TS; mkdir -p "$RUN_DIR"
WORK=$(mktemp -d /tmp/quiver-logbench.XXXXXX)
PID=""
cleanup() { [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
log() { echo "[$(date +%T)] $*" | tee -a "$RUN_DIR/run.log" >&2; }
cat "$DATA"/*.parquet >/dev/null
for round in $(seq 1 "$ROUNDS"); do
  for rate in $RATES; do
    tag="r${round}-rate${rate}"; dir="$WORK/$tag"; addr="$WORK/addr"; rm -f "$addr"
    log "$tag: serve"
    "$BIN/quiver" serve --data-dir "$dir" --grpc-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 \
      --listener-addr-file "$addr" --log warn --served-log-sample-rate "$rate" >"$RUN_DIR/$tag.server.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 1200); do [ -f "$addr" ] && break; sleep 0.05; done
    URL="http://$(head -1 "$addr")"; METRICS="$(sed -n 2p "$addr")"
    timeout 120 "$BIN/quiver" apply -f "$DATA/features.yaml" --server "$URL" >"$RUN_DIR/$tag.apply.log" 2>&1
    timeout 900 "$BIN/quiver" materialize --start 2025-12-01T00:00:00Z --end 2026-03-01T00:00:00Z \
      --server "$URL" >"$RUN_DIR/$tag.materialize.log" 2>&1
    log "$tag: online"
    timeout 600 "$BIN/quiver-bench" online --server "$URL" --service driver_model --keys 10000 \
      --seconds "$SECONDS_PER_CELL" >"$RUN_DIR/$tag.online.md" 2>"$RUN_DIR/$tag.online.jsonl"
    curl -s "http://$METRICS/metrics" | grep '^quiver_served_log' >"$RUN_DIR/$tag.metrics" || true
    kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    du -sb "$dir/served_log" 2>/dev/null | cut -f1 >"$RUN_DIR/$tag.log_bytes" || echo 0 >"$RUN_DIR/$tag.log_bytes"
    rm -rf "$dir"
  done
done
python3 - "$RUN_DIR" "$ROUNDS" >"$RUN_DIR/summary.md" <<'PY'
import json,sys,statistics
from pathlib import Path
d=Path(sys.argv[1]); rates=["0","0.01","1"]; rounds=range(1, int(sys.argv[2]) + 1)
def cells(tag):
    out={}
    for l in (d/f"{tag}.online.jsonl").read_text().splitlines():
        if l.strip().startswith("{"):
            j=json.loads(l); out[(j["concurrency"],j["batch"])]=j
    return out
data={(r,rate):cells(f"r{r}-rate{rate}") for r in rounds for rate in rates}
print("| concurrency | batch | get QPS off | get QPS 1 % | get QPS 100 % | get/echo off | get/echo 1 % | get/echo 100 % | 1 % vs off | 100 % vs off |")
print("|---|---|---|---|---|---|---|---|---|---|")
for k in sorted(data[(1,"0")]):
    q={rate: statistics.fmean(data[(r,rate)][k]["get"]["qps"] for r in rounds) for rate in rates}
    ge={rate: statistics.fmean(data[(r,rate)][k]["get"]["qps"]/data[(r,rate)][k]["echo"]["qps"] for r in rounds) for rate in rates}
    print(f"| {k[0]} | {k[1]} | {q['0']:.0f} | {q['0.01']:.0f} | {q['1']:.0f} | {ge['0']:.3f} | {ge['0.01']:.3f} | {ge['1']:.3f} | {ge['0.01']/ge['0']:.2f} | {ge['1']/ge['0']:.2f} |")
for r in rounds:
    for rate in rates:
        m = (d / f"r{r}-rate{rate}.metrics").read_text().strip().replace("\n", "; ")
        b = (d / f"r{r}-rate{rate}.log_bytes").read_text().strip()
        print(f"- round {r} rate {rate}: log bytes {b}; {m}")
PY
cat "$RUN_DIR/summary.md"
