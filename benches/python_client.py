"""The Python client's cost over the wire, next to baselines measured in the same run:

- online: `quiver.Client.get_online_features(service=..., entity_rows=[dicts]).to_dict()`
  against a raw grpcio call of the same RPC with a prebuilt request (what any generated stub
  does), at batch 1 and 100, concurrency 1;
- training: `get_historical_features(entity_df=<labels parquet>, service=...).to_pandas()`
  (upload, join, stream back) in rows/s, against reading the same rows from a local Parquet
  file with pyarrow into pandas.

Usage: python3 benches/python_client.py URL LABELS_PARQUET [SECONDS_PER_CELL]
(`benches/python_client.sh` starts the server on the benchmark data and calls this.)
"""

import random
import statistics
import sys
import tempfile
import time

import grpc
import pyarrow.parquet as pq

import quiver
from quiver.v1 import online_pb2, online_pb2_grpc, types_pb2

SERVICE = "driver_model"
KEYS = 10_000


def timed(call, seconds):
    """Latencies (ms) of `call()` repeated for `seconds` after a short warm-up."""
    for _ in range(50):
        call()
    latencies, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - start) * 1e3)
    return latencies


def summary(latencies):
    ordered = sorted(latencies)
    return {"p50": statistics.median(ordered), "p99": ordered[int(len(ordered) * 0.99) - 1],
            "qps": len(ordered) / (sum(ordered) / 1e3)}


def online(url, seconds):
    channel = grpc.insecure_channel(url.removeprefix("http://"))
    stub = online_pb2_grpc.OnlineServiceStub(channel)
    client = quiver.Client(url)
    rng = random.Random(7)
    print("| batch | raw grpcio p50 ms | p99 ms | quiver.Client p50 ms | p99 ms | client/raw p50 | client/raw QPS |")
    print("|---|---|---|---|---|---|---|")
    for batch in (1, 100):
        keys = [rng.randrange(KEYS) for _ in range(batch)]
        request = online_pb2.GetOnlineFeaturesRequest(
            feature_service=SERVICE,
            entities=[types_pb2.NamedColumn(
                name="driver_id", column=types_pb2.Column(
                    int64_values=types_pb2.Int64Values(values=keys)))])
        rows = [{"driver_id": k} for k in keys]
        raw = summary(timed(lambda: stub.GetOnlineFeatures(request, timeout=10), seconds))
        py = summary(timed(lambda: client.get_online_features(
            service=SERVICE, entity_rows=rows).to_dict(), seconds))
        print(f"| {batch} | {raw['p50']:.3f} | {raw['p99']:.3f} | {py['p50']:.3f} | "
              f"{py['p99']:.3f} | {py['p50'] / raw['p50']:.2f} | {py['qps'] / raw['qps']:.2f} |")
    client.close()
    channel.close()


def training(url, labels):
    with quiver.Client(url, timeout=None) as client, tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        frame = client.get_historical_features(entity_df=labels, service=SERVICE).to_pandas()
        quiver_s = time.perf_counter() - start
        rows = len(frame)
        path = f"{tmp}/same_rows.parquet"
        client.get_historical_features(entity_df=labels, service=SERVICE).to_parquet(path)
        start = time.perf_counter()
        local = pq.read_table(path).to_pandas()
        local_s = time.perf_counter() - start
        assert len(local) == rows
    print("| rows | quiver get_historical_features -> pandas s | rows/s | local Parquet -> pandas s | rows/s | quiver/local rows/s |")
    print("|---|---|---|---|---|---|")
    print(f"| {rows:,} | {quiver_s:.2f} | {rows / quiver_s:,.0f} | {local_s:.2f} | "
          f"{rows / local_s:,.0f} | {local_s / quiver_s:.2f} |")


def main():
    url, labels = sys.argv[1], sys.argv[2]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
    print(f"== online (concurrency 1, {seconds:g} s per cell, {SERVICE})")
    online(url, seconds)
    print(f"\n== training set from {labels}")
    training(url, labels)


if __name__ == "__main__":
    main()
