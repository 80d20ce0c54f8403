# Sourced by the benchmark scripts: serve_quiver BIN_DIR WORK_DIR [SERVE FLAGS...] starts
# `quiver serve` on a free loopback port over WORK_DIR/data (the source root is $DATA),
# applies $DATA/features.yaml, materializes the whole source (both skipped with SKIP_LOAD=1,
# for a replica sharing the stores of one that did), and sets PID and URL.
# cpu_seconds PID prints a process's CPU time so far (user + system).
serve_quiver() {
  local bin=$1 work=$2; shift 2
  rm -rf "$work/data" "$work/addr"
  "$bin/quiver" serve --data-dir "$work/data" --grpc-addr 127.0.0.1:0 --listener-addr-file "$work/addr" \
    --log warn --source-root "$DATA" "$@" &
  PID=$!
  while [ ! -s "$work/addr" ]; do sleep 0.05; done
  URL="http://$(cat "$work/addr")"
  [ -n "${SKIP_LOAD:-}" ] && return
  "$bin/quiver" apply -f "$DATA/features.yaml" --server "$URL" >/dev/null
  "$bin/quiver" materialize --start 2025-12-01T00:00:00Z --end 2026-03-01T00:00:00Z --server "$URL" >/dev/null
}

cpu_seconds() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat"; }

# start_redis_cluster WORK_DIR: a Redis Cluster of the primaries on the ports in PORTS (no
# replicas, no persistence, noeviction) under WORK_DIR; stop_redis_cluster stops it.
# redis_cpu prints the CPU seconds its processes used so far.
start_redis_cluster() {
  local work=$1 port
  for port in "${PORTS[@]}"; do
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file "nodes-$port.conf" \
      --save "" --appendonly no --maxmemory-policy noeviction --dir "$work" --daemonize yes \
      --pidfile "$work/redis-$port.pid" --logfile "$work/redis-$port.log"
  done
  for port in "${PORTS[@]}"; do until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done; done
  redis-cli --cluster create "${PORTS[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >/dev/null
  until redis-cli -p "${PORTS[0]}" cluster info | grep -q cluster_state:ok; do sleep 0.1; done
  REDIS_WORK=$work
}
stop_redis_cluster() {
  local p
  for p in "${PORTS[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
}
redis_cpu() {
  local total=0 p
  for p in "${PORTS[@]}"; do total=$(echo "$total + $(cpu_seconds "$(cat "$REDIS_WORK/redis-$p.pid")")" | bc); done
  echo "$total"
}
