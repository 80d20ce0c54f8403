"""Every client method against a real server: values and types, statuses, errors, the
registry, pushes, materialization and the asyncio client."""

from __future__ import annotations

import asyncio
import datetime as dt

import pyarrow as pa
import pytest

import quiver
from conftest import FEATURES, T0, TS, source_table


def latest_rows():
    """The source's latest row per user, as Python values: the reference for online reads."""
    table = source_table().to_pylist()
    latest = {}
    for row in table:
        key = row["user_id"]
        if key not in latest or row["event_timestamp"] > latest[key]["event_timestamp"]:
            latest[key] = row
    return latest


def test_online_values_types_and_statuses(server):
    with quiver.Client(server.url) as client:
        response = client.get_online_features(
            service="model", entity_rows=[{"user_id": 1}, {"user_id": 2}, {"user_id": 3},
                                          {"user_id": 99}])
    assert response.feature_service == "model" and response.feature_service_version == 1
    assert len(response.fingerprint) > 8
    table = response.to_arrow()
    assert table.column_names == ["user_id", *FEATURES]
    expected_types = source_table().schema
    for name in FEATURES:
        assert table.schema.field(name).type == expected_types.field(name).type, name
    reference = latest_rows()
    values = response.to_dict()
    assert values["user_id"] == [1, 2, 3, 99]
    for name in FEATURES:
        want = [reference[1][name], reference[2][name], None, None]
        assert values[name] == want, name
    statuses = response.statuses
    assert statuses["f_int64"] == ["PRESENT", "PRESENT", "NULL_VALUE", "NOT_FOUND"]
    served = response.event_timestamps["user_features"]
    assert served[:3] == [reference[k]["event_timestamp"] for k in (1, 2, 3)]
    assert served[3] is None


def test_online_frames_and_feature_refs(server):
    import pandas as pd
    import polars as pl

    with quiver.Client(server.url) as client:
        by_refs = client.get_online_features(
            features=["user_features:f_float32", "user_features:f_list"],
            entity_rows=pd.DataFrame({"user_id": [2, 1]}), full_names=True)
        frame = by_refs.to_pandas()
        assert list(frame.columns) == ["user_id", "user_features__f_float32",
                                       "user_features__f_list"]
        assert frame["user_features__f_float32"].tolist() == [-0.25, 1.5]
        polars = client.get_online_features(service="model@1",
                                            entity_rows=pl.DataFrame({"user_id": [1]}))
        assert polars.to_polars()["f_string"].to_list() == ["b"]
        columnar = client.get_online_features(service="model", entity_rows={"user_id": [1]})
        assert columnar.to_dict()["f_int64"] == [11]


def test_errors_map_to_the_hierarchy_with_the_servers_message(server):
    with quiver.Client(server.url) as client:
        with pytest.raises(quiver.NotFound) as missing:
            client.get_online_features(service="nope", entity_rows=[{"user_id": 1}])
        assert "nope" in str(missing.value)
        with pytest.raises(quiver.InvalidArgument):
            client.get_online_features(features=["no_colon"], entity_rows=[{"user_id": 1}])
        with pytest.raises(quiver.FailedPrecondition):
            client.get_online_features(service="model", entity_rows=[{"user_id": 1}],
                                       expected_fingerprint="0" * 16)
        with pytest.raises(quiver.NotFound):
            client.get_historical_features(entity_df=labels(), service="nope")
        with pytest.raises(ValueError):
            client.get_online_features(entity_rows=[{"user_id": 1}])
    with quiver.Client("http://127.0.0.1:1", timeout=2, retries=1) as closed:
        with pytest.raises(quiver.Unavailable):
            closed.list_entities()


def test_registry_listing_plan_and_apply(server, project):
    with quiver.Client(server.url) as client:
        assert [e.name for e in client.list_entities()] == ["user"]
        assert [s.name for s in client.list_data_sources()] == ["user_source"]
        assert [v.name for v in client.list_feature_views()] == ["user_features"]
        service = client.get_feature_service("model")
        assert service.kind == "feature_service" and service.version == 1
        view = client.get_feature_view("user_features@1")
        assert [f["name"] for f in view.spec["features"]] == FEATURES
        assert [v.version for v in client.list_versions("feature_view", "user_features")] == [1]
        plan = client.plan(project / "features")
        assert plan.get("changes", []) == [] and not plan.get("breaking", False)
        applied = client.apply(project / "features")
        assert int(applied["registry_version"]) == 1


def test_push_then_read_online(server):
    with quiver.Client(server.url) as client:
        at = T0 + dt.timedelta(days=3)
        rows = pa.table({
            "user_id": pa.array([500], pa.int64()),
            "event_timestamp": pa.array([at], TS),
            **{name: pa.array([value], source_table().schema.field(name).type)
               for name, value in [("f_int64", 5), ("f_int32", 6), ("f_float32", 0.75),
                                   ("f_float64", 8.5), ("f_bool", True), ("f_string", "x"),
                                   ("f_bytes", b"y"), ("f_timestamp", at), ("f_list", [1.0])]},
        })
        pushed = client.push("user_features", rows)
        assert pushed["views"][0]["written_online"] == "1"
        via_source = client.push("user_source", rows.to_pandas())
        assert via_source["views"][0]["view"] == "user_features"
        got = client.get_online_features(service="model", entity_rows=[{"user_id": 500}])
        assert got.to_dict()["f_string"] == ["x"] and got.to_dict()["f_list"] == [[1.0]]
        with pytest.raises(ValueError):
            client.push("user_features", rows, to="elsewhere")


def test_materialize_reports_progress(server):
    seen = []
    with quiver.Client(server.url) as client:
        job = client.materialize(T0 - dt.timedelta(days=2), "2026-01-02T00:00:00Z",
                                 views=["user_features"], progress=seen.append)
        assert job["state"] == "SUCCEEDED" and job["rows_scanned"] == 4
        # The run's profile is stored: it profiles the 4 rows scanned.
        (view,) = job["views"]
        assert view["profile_id"] is not None and view["violations"] == []
        assert seen and seen[-1]["state"] == "SUCCEEDED"
        again = client.materialize_incremental(T0 + dt.timedelta(days=1))
        assert again["state"] == "SUCCEEDED"


def test_async_client_matches_the_sync_one(server, project):
    async def run():
        async with quiver.AsyncClient(server.url) as client:
            response = await client.get_online_features(service="model",
                                                        entity_rows=[{"user_id": 1}])
            views = await client.list_feature_views()
            with pytest.raises(quiver.NotFound):
                await client.get_feature_service("nope")
            job = await client.get_historical_features(entity_df=labels(), service="model")
            table = await asyncio.to_thread(job.to_arrow)
            plan = await client.plan(project / "features")
            assert plan.get("changes", []) == []
            pushed = await client.push("user_source", {
                "user_id": [800], "event_timestamp": [T0 + dt.timedelta(days=5)],
                **{name: [None] for name in FEATURES}})
            assert pushed["views"][0]["view"] == "user_features"
            again = await client.get_online_features(service="model",
                                                     entity_rows=[{"user_id": 800}])
            assert again.statuses["f_int64"] == ["NULL_VALUE"]
            done = await client.materialize_incremental(T0 + dt.timedelta(days=1))
            assert done["state"] == "SUCCEEDED"
            return response.to_dict(), [v.name for v in views], table.num_rows

    values, views, rows = asyncio.run(run())
    with quiver.Client(server.url) as client:
        sync = client.get_online_features(service="model", entity_rows=[{"user_id": 1}])
    assert values == sync.to_dict() and views == ["user_features"] and rows == 4


def test_one_client_serves_many_threads(server):
    from concurrent.futures import ThreadPoolExecutor

    with quiver.Client(server.url) as client:
        def read(key):
            online = client.get_online_features(service="model", entity_rows=[{"user_id": key}])
            training = client.get_historical_features(entity_df=labels(), service="model")
            return online.to_dict()["f_int64"][0], training.to_arrow().num_rows

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(read, [1, 2] * 8))
    assert results == [(11, 4), (-7, 4)] * 8


def labels() -> pa.Table:
    return pa.table({
        "user_id": pa.array([1, 1, 2, 3], pa.int64()),
        "event_timestamp": pa.array([T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=3),
                                     T0, T0 + dt.timedelta(hours=5)], TS),
        "label": pa.array([0, 1, 1, 0], pa.int8()),
    })
