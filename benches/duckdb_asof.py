"""DuckDB's ASOF JOIN over the same Parquet files with Quiver's semantics, for the offline
benchmark: latest row by (event_timestamp, created) with event_timestamp <= label time, TTL
2h inclusive, one output row per label in input order. Prints JSON: wall seconds, peak RSS.

usage: duckdb_asof.py FEATURES.parquet LABELS.parquet OUT.parquet [QUIVER_OUT.parquet]
With QUIVER_OUT, also checks that both outputs agree row by row on every feature."""

import json
import os
import resource
import sys
import time

import duckdb

FEATURES = ["conv_rate", "acc_rate", "avg_daily_trips", "rating", "vehicle_type", "zone", "active", "trips_today", "last_trip"]
TTL = "INTERVAL 2 HOUR"


def main():
    features, labels, out = sys.argv[1:4]
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    # Optional: DuckDB's memory limit and where it spills (the scale benchmark sets both).
    if os.environ.get("DUCKDB_MEMORY_LIMIT"):
        con.execute(f"SET memory_limit = '{os.environ['DUCKDB_MEMORY_LIMIT']}'")
    if os.environ.get("DUCKDB_TEMP_DIRECTORY"):
        con.execute(f"SET temp_directory = '{os.environ['DUCKDB_TEMP_DIRECTORY']}'")
    cols = ", ".join(f"f.{c}" for c in FEATURES)
    nulled = ", ".join(f"CASE WHEN f.event_timestamp >= l.event_timestamp - {TTL} THEN f.{c} END AS {c}" for c in FEATURES)
    started = time.time()
    con.execute(f"""
        COPY (
          WITH f AS (
            SELECT * FROM read_parquet('{features}')
            QUALIFY row_number() OVER (PARTITION BY driver_id, event_timestamp ORDER BY created DESC) = 1
          ),
          l AS (SELECT *, row_number() OVER () AS __row FROM read_parquet('{labels}'))
          SELECT l.driver_id, l.event_timestamp, l.label, {nulled}
          FROM l ASOF LEFT JOIN f ON l.driver_id = f.driver_id AND l.event_timestamp >= f.event_timestamp
          ORDER BY l.__row
        ) TO '{out}' (FORMAT parquet)
    """)
    wall = time.time() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"engine": "duckdb", "duckdb": duckdb.__version__, "memory_limit": con.execute("SELECT current_setting('memory_limit')").fetchone()[0], "seconds": round(wall, 3), "peak_rss_mib": round(peak_kib / 1024, 1)}
    if len(sys.argv) > 4:
        import pyarrow.parquet as pq
        quiver = pq.read_table(sys.argv[4])
        duck = pq.read_table(out)
        assert quiver.num_rows == duck.num_rows, (quiver.num_rows, duck.num_rows)
        mismatches = 0
        for c in FEATURES:
            a, b = quiver.column(c).to_pylist(), duck.column(c).to_pylist()
            mismatches += sum(1 for x, y in zip(a, b) if x != y)
        result["rows"] = quiver.num_rows
        result["mismatched_values"] = mismatches
    print(json.dumps(result))


if __name__ == "__main__":
    main()
