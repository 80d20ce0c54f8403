"""Training sets over Arrow Flight: values against an independent point-in-time reference,
row by row against the CLI's export, streamed to Parquet with bounded client memory, and the
JSON Flight command from a plain pyarrow client."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq

import quiver
from conftest import FEATURES, T0, TS, source_table
from test_client import labels


def point_in_time_reference(label_rows):
    """For each label: the latest source row of its user at or before the label's time."""
    source = source_table().to_pylist()
    out = []
    for label in label_rows:
        known = [r for r in source if r["user_id"] == label["user_id"]
                 and r["event_timestamp"] <= label["event_timestamp"]]
        best = max(known, key=lambda r: r["event_timestamp"], default=None)
        out.append({name: (best[name] if best else None) for name in FEATURES})
    return out


def test_training_set_is_point_in_time_correct_and_typed(server):
    with quiver.Client(server.url) as client:
        job = client.get_historical_features(entity_df=labels().to_pandas(), service="model")
        assert job.feature_service == "model" and job.version == 1 and job.fingerprint
        table = job.to_arrow()
    assert table.column("label").to_pylist() == [0, 1, 1, 0]  # label order kept
    reference = point_in_time_reference(labels().to_pylist())
    for name in FEATURES:
        assert table.column(name).to_pylist() == [r[name] for r in reference], name
        assert table.schema.field(name).type == source_table().schema.field(name).type


def test_training_set_equals_the_cli_export_row_by_row(server, tmp_path):
    labels_path = tmp_path / "labels.parquet"
    pq.write_table(labels(), labels_path)
    cli_out = tmp_path / "cli.parquet"
    server.cli("export", "--service", "model", "--labels", str(labels_path),
               "--out", str(cli_out))
    with quiver.Client(server.url) as client:
        python_out = tmp_path / "python.parquet"
        rows = client.get_historical_features(entity_df=labels_path,
                                              service="model").to_parquet(python_out)
    assert rows == 4
    cli_rows = pq.read_table(cli_out).to_pylist()
    python_table = pq.read_table(python_out)
    assert python_table.to_pylist() == cli_rows
    assert python_table.schema.metadata[b"quiver.feature_service"] == b"model"


def test_a_large_training_set_streams_to_parquet_in_bounded_memory(server, tmp_path):
    rows = 1_000_000
    big = pa.table({
        "user_id": pa.array([1 + i % 3 for i in range(rows)], pa.int64()),
        "event_timestamp": pa.array([T0 + dt.timedelta(hours=3)] * rows, TS),
    })
    labels_path = tmp_path / "big_labels.parquet"
    pq.write_table(big, labels_path, row_group_size=100_000)
    del big
    out = tmp_path / "big.parquet"
    peak = 0
    with quiver.Client(server.url, timeout=None) as client:
        job = client.get_historical_features(entity_df=labels_path,
                                             features=["user_features:f_int64"])
        with pq.ParquetWriter(out, job.schema) as writer:
            for batch in job.batches():
                writer.write_batch(batch)
                peak = max(peak, pa.total_allocated_bytes())
    assert pq.ParquetFile(out).metadata.num_rows == rows
    # A materialized 1 M-row result is ~16 MB of Arrow memory; streaming keeps far less live.
    assert peak < 8 << 20, f"peak Arrow allocation {peak} bytes"


def test_a_json_flight_command_needs_no_protobuf(server):
    client = flight.connect(f"grpc+tcp://{server.addr}")
    descriptor = flight.FlightDescriptor.for_path("labels", "json_labels")
    writer, _ = client.do_put(descriptor, labels().schema)
    writer.write_table(labels())
    writer.close()
    command = json.dumps({"feature_service": "model", "labels_upload": "json_labels",
                          "full_names": True}).encode()
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
    table = client.do_get(info.endpoints[0].ticket).read_all()
    assert "user_features__f_int64" in table.column_names and table.num_rows == 4
    bad = json.dumps({"feature_service": "model", "label_upload": "x"}).encode()
    try:
        client.get_flight_info(flight.FlightDescriptor.for_command(bad))
        raise AssertionError("an unknown key was accepted")
    except pa.ArrowException as e:
        error = quiver.errors.from_flight_error(e)
        assert isinstance(error, quiver.InvalidArgument) and "label_upload" in error.message


def test_a_training_set_from_the_served_log_holds_the_served_values(server):
    users = [{"user_id": 1}, {"user_id": 2}, {"user_id": 3}, {"user_id": 99}]
    with quiver.Client(server.url) as client:
        served = client.get_online_features(service="model", entity_rows=users,
                                            request_id="py-log-1").to_arrow()
        labels = pa.table({
            "user_id": pa.array([3, 1, 99, 2, 1], pa.int64()),
            "request_id": ["py-log-1", "py-log-1", "py-log-1", "py-log-1", "py-other"],
            "event_timestamp": pa.array([T0] * 5, TS),
        })
        table = client.get_historical_features(entity_df=labels, service="model",
                                                from_served_log="request_id").to_arrow()
        now = dt.datetime.now(dt.timezone.utc)
        later = pa.table({"user_id": labels.column("user_id"),
                          "event_timestamp": pa.array([now] * 5, TS)})
        by_keys = client.get_historical_features(
            entity_df=later, service="model", from_served_log="keys",
            max_age=dt.timedelta(hours=1)).to_arrow()
    row_of = {1: 0, 2: 1, 3: 2, 99: 3}
    for name in FEATURES:
        column = served.column(name).to_pylist()
        want = [column[row_of[u]] for u in [3, 1, 99, 2]] + [None]
        # The exact types served, floats included (a float32 stays a float32).
        assert table.schema.field(name).type == served.schema.field(name).type, name
        assert table.column(name).to_pylist() == want, name
        assert by_keys.column(name).to_pylist()[:4] == want[:4], name
    matched = table.column("served_at").to_pylist()
    assert all(m is not None for m in matched[:4]) and matched[4] is None
    assert by_keys.column("served_request_id").to_pylist()[:4] == ["py-log-1"] * 4
