"""Feast's documented calls (https://docs.feast.dev: "Feature retrieval", "Push source",
"Materialization"), written as a Feast user writes them, with only the import and the
constructor changed: they run against Quiver and return Feast's shapes."""

from __future__ import annotations

import datetime as dt
import enum

import pandas as pd

import quiver
from conftest import T0


class PushMode(enum.Enum):  # Feast's feast.data_source.PushMode, as a user's code passes it
    ONLINE = 1
    OFFLINE = 2
    ONLINE_AND_OFFLINE = 3


def test_feast_calls_run_unchanged(server):
    store = quiver.Client(server.url)  # was: FeatureStore(repo_path=".")

    feature_vector = store.get_online_features(
        features=["user_features:f_int64", "user_features:f_string"],
        entity_rows=[{"user_id": 1}, {"user_id": 2}],
    ).to_dict()
    assert feature_vector == {"user_id": [1, 2], "f_int64": [11, -7], "f_string": ["b", "é"]}

    feature_service = store.get_feature_service("model")
    by_service = store.get_online_features(features=feature_service,
                                           entity_rows=[{"user_id": 1}]).to_dict()
    assert by_service["f_int64"] == [11]

    entity_df = pd.DataFrame.from_dict({
        "user_id": [1, 2],
        "event_timestamp": [T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=2)],
    })
    training_df = store.get_historical_features(
        entity_df=entity_df,
        features=["user_features:f_int64", "user_features:f_float64"],
    ).to_df()
    assert list(training_df["f_int64"]) == [10, -7]

    event_df = pd.DataFrame.from_dict({
        "user_id": [700],
        "event_timestamp": [T0 + dt.timedelta(days=4)],
        "f_int64": [70],
        "f_int32": [7],
        "f_float32": [0.5],
        "f_float64": [7.5],
        "f_bool": [True],
        "f_string": ["seven"],
        "f_bytes": [b"7"],
        "f_timestamp": [T0],
        "f_list": [None],
    })
    store.push("user_source", event_df, to=PushMode.ONLINE)
    pushed = store.get_online_features(features=["user_features:f_int64"],
                                       entity_rows=[{"user_id": 700}]).to_dict()
    assert pushed["f_int64"] == [70]

    store.materialize(start_date=T0 - dt.timedelta(days=2), end_date=T0 + dt.timedelta(days=1))
    store.materialize_incremental(end_date=T0 + dt.timedelta(days=1))
    store.close()
