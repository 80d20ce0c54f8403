# %% [markdown]
# # Quiver from Python: the quickstart's project, cell by cell
#
# Run `./scripts/quickstart` once (it writes `./quiver-quickstart/`), serve that directory,
# then run this file (or paste its cells into a notebook):
#
#     quiver serve --data-dir ./quiver-data &
#     python3 python/examples/notebook.py ./quiver-quickstart
#
# The server comes from `$QUIVER_SERVER` (default http://127.0.0.1:50051).

# %%
import datetime as dt
import pathlib
import sys

import pyarrow.parquet as pq

import quiver

project = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "quiver-quickstart")
client = quiver.Client()

# %% Definitions: plan, then apply (atomic, versioned)
plan = client.plan(project / "features")
print("changes:", [(c["action"], c["name"]) for c in plan.get("changes", [])])
print("registry version:", client.apply(project / "features")["registry_version"])
print("views:", [v.name for v in client.list_feature_views()])

# %% Materialize the last day of the demo data into the online store
data = pq.read_table(project / "data" / "driver_stats.parquet", columns=["event_timestamp"])
newest = max(data.column("event_timestamp").to_pylist())
job = client.materialize(newest - dt.timedelta(days=1), newest + dt.timedelta(hours=1))
print("materialized:", job["keys_written"], "keys")

# %% Online features, as a model server reads them
online = client.get_online_features(
    service="driver_model",
    entity_rows=[{"driver_id": 1001}, {"driver_id": 1002}, {"driver_id": 9999}],
)
print(online.to_pandas())
print("statuses:", online.statuses["conv_rate"])

# %% A point-in-time correct training set for the demo's labels
labels = pq.read_table(project / "data" / "labels.parquet").to_pandas()
training = client.get_historical_features(entity_df=labels, service="driver_model")
frame = training.to_pandas()
print(f"{len(frame)} rows from {training.feature_service}@{training.version}")
print(frame.head())
