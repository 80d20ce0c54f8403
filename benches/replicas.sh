#!/usr/bin/env bash
# Replicas over one Redis Cluster (3 primaries on loopback, Debian's redis-server) and one
# registry (`--registry-store file://`): 1, 2 and 3 Quiver replicas, each loaded by its own
# `quiver-bench online` at concurrency 32 x batch 1 (and batch 100) at the same time, ROUNDS
# rounds. Per replica count it records every replica's QPS, p99 and CPU per request, and the
# primaries' CPU per request; `benches/usl.py` then fits the Universal Scalability Law to the
# measured costs and projects QPS and p99 to 16 replicas and 12 shards (a projection).
#
# Everything shares this machine's cores: the absolute QPS of N replicas is bounded by them,
# which is why the projection works from CPU per request, not from the QPS sum.
#
# usage: replicas.sh BIN_DIR [ROUNDS] [SECONDS_PER_CELL]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$1 ROUNDS=${2:-2} SECONDS_PER_CELL=${3:-6}
DATA=${QUIVER_BENCH_DATA:-/tmp/quiver-bench}
WORK=$DATA/replicas
[ -f "$DATA/driver_hourly.parquet" ] || "$BIN/quiver-bench" gen --out "$DATA" --entities 10000 --hours 720
rm -rf "$WORK" && mkdir -p "$WORK"

source benches/serve.sh
PORTS=(17101 17102 17103)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  stop_redis_cluster
}
trap cleanup EXIT
start_redis_cluster "$WORK"

SHARED=(--online-store "redis+cluster://127.0.0.1:${PORTS[0]}" --registry-store "file://$WORK/registry")
mkdir -p "$WORK/registry"
URLS=()
for i in 1 2 3; do  # replica 1 applies and materializes; the others find both in the stores
  mkdir -p "$WORK/r$i"
  if [ "$i" = 1 ]; then serve_quiver "$BIN" "$WORK/r$i" "${SHARED[@]}" --replica-id "r$i"
  else SKIP_LOAD=1 serve_quiver "$BIN" "$WORK/r$i" "${SHARED[@]}" --replica-id "r$i"; fi
  PIDS+=("$PID"); URLS+=("$URL")
done

for round in $(seq "$ROUNDS"); do
  for n in 1 2 3; do
    for batch in 1 100; do
      redis_before=$(redis_cpu)
      started=$(date +%s.%N)
      for i in $(seq 0 $((n - 1))); do
        "$BIN/quiver-bench" online --server "${URLS[$i]}" --server-pid "${PIDS[$i]}" --concurrency 32 \
          --batch "$batch" --seconds "$SECONDS_PER_CELL" --max-requests 10000000 \
          > "$WORK/out-$round-$n-$batch-$i.md" 2> "$WORK/cell-$round-$n-$batch-$i.jsonl" &
      done
      wait $(jobs -p | tail -n "$n")
      redis_spent=$(echo "$(redis_cpu) - $redis_before" | bc)
      python3 - "$WORK" "$round" "$n" "$batch" "$redis_spent" <<'PY' >> "$WORK/replicas.jsonl"
import json, sys
work, rnd, n, batch, redis = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
cells = [json.loads(open(f"{work}/cell-{rnd}-{n}-{batch}-{i}.jsonl").read().strip().splitlines()[-1])["get"]
         for i in range(n)]
requests = sum(c["requests"] for c in cells)
print(json.dumps({"round": int(rnd), "replicas": n, "batch": int(batch),
                  "qps": [c["qps"] for c in cells], "p99_ms": [c["p99_ms"] for c in cells],
                  "quiver_cpu_us": [c["server_cpu_us"] for c in cells],
                  "redis_cpu_us": redis * 1e6 / requests}))
PY
      tail -n 1 "$WORK/replicas.jsonl"
    done
  done
done
python3 benches/usl.py "$WORK/replicas.jsonl"
