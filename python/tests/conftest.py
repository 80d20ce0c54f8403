"""A real `quiver serve` (the workspace's binary) per test session on 127.0.0.1:0, with a
project covering every feature type, applied and materialized.

The binary: $QUIVER_BIN, else $CARGO_TARGET_DIR/debug/quiver, else target/debug/quiver.
"""

from __future__ import annotations

import datetime as dt
import os
import pathlib
import signal
import subprocess
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
TS = pa.timestamp("us", tz="UTC")

MANIFEST = """\
kind: Entity
name: user
join_keys: [{name: user_id, type: int64}]
---
kind: Source
name: user_source
parquet: data/users.parquet
event_time: event_timestamp
created_time: created
push: true
---
kind: FeatureView
name: user_features
entities: [user]
source: user_source
ttl: 0s
features:
  - {name: f_int64, type: int64}
  - {name: f_int32, type: int32}
  - {name: f_float32, type: float32}
  - {name: f_float64, type: float64}
  - {name: f_bool, type: bool}
  - {name: f_string, type: string}
  - {name: f_bytes, type: bytes}
  - {name: f_timestamp, type: timestamp}
  - {name: f_list, type: list<float32>}
---
kind: FeatureService
name: model
features: [{view: user_features}]
"""

FEATURES = ["f_int64", "f_int32", "f_float32", "f_float64", "f_bool", "f_string", "f_bytes",
            "f_timestamp", "f_list"]


def source_table() -> pa.Table:
    """Users 1 and 2 with every type (two rows each: the later one wins), user 3 all null."""
    rows = [
        # user, hour, int64, int32, float32, float64, bool, string, bytes, ts, list
        (1, 0, 10, 1, 0.5, 1.25, True, "a", b"\x00a", T0, [0.5, 1.5]),
        (1, 2, 11, 2, 1.5, 2.25, False, "b", b"\x01b", T0 + dt.timedelta(days=1), [2.5]),
        (2, 1, -7, -3, -0.25, -9.5, True, "é", b"", T0 - dt.timedelta(days=1), []),
        (3, 1, None, None, None, None, None, None, None, None, None),
    ]
    columns = list(zip(*rows))
    return pa.table({
        "user_id": pa.array(columns[0], pa.int64()),
        "event_timestamp": pa.array([T0 + dt.timedelta(hours=h) for h in columns[1]], TS),
        "created": pa.array([T0 + dt.timedelta(hours=h) for h in columns[1]], TS),
        "f_int64": pa.array(columns[2], pa.int64()),
        "f_int32": pa.array(columns[3], pa.int32()),
        "f_float32": pa.array(columns[4], pa.float32()),
        "f_float64": pa.array(columns[5], pa.float64()),
        "f_bool": pa.array(columns[6], pa.bool_()),
        "f_string": pa.array(columns[7], pa.string()),
        "f_bytes": pa.array(columns[8], pa.binary()),
        "f_timestamp": pa.array(columns[9], TS),
        "f_list": pa.array(columns[10], pa.list_(pa.float32())),
    })


def quiver_binary() -> str:
    if os.environ.get("QUIVER_BIN"):
        return os.environ["QUIVER_BIN"]
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    path = target / "debug" / "quiver"
    if not path.exists():
        pytest.fail(f"{path} is missing: build it (cargo build -p quiver-cli) or set QUIVER_BIN")
    return str(path)


class Server:
    def __init__(self, root: pathlib.Path, *extra: str) -> None:
        self.root = root
        addr_file = root / "addr"
        self.process = subprocess.Popen(
            [quiver_binary(), "serve", "--grpc-addr", "127.0.0.1:0", "--log", "warn",
             "--data-dir", str(root / "data"), "--listener-addr-file", str(addr_file),
             "--source-root", str(root), "--labels-root", str(root), *extra],
            stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not addr_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("quiver serve did not start")
            time.sleep(0.02)
        self.addr = addr_file.read_text().splitlines()[0]
        self.url = f"http://{self.addr}"

    def cli(self, *args: str) -> str:
        done = subprocess.run([quiver_binary(), *args, "--server", self.url],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("quiver")
    (root / "data").mkdir()
    pq.write_table(source_table(), root / "data" / "users.parquet")
    (root / "features").mkdir()
    (root / "features" / "users.yaml").write_text(MANIFEST.replace("data/", "../data/"))
    return root


@pytest.fixture(scope="session")
def server(project) -> Server:
    # Every served row is logged: training sets can be built from what serving returned.
    server = Server(project, "--served-log-sample-rate", "1.0")
    server.cli("apply", "-f", str(project / "features"))
    server.cli("materialize", "--start", (T0 - dt.timedelta(days=2)).isoformat(),
               "--end", (T0 + dt.timedelta(days=1)).isoformat())
    yield server
    server.stop()
