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
