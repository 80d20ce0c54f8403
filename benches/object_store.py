"""The same server-side export from object storage and from local files (issue 12, "Object
storage"): sources and labels read from, and the export written to, an S3-compatible server
(moto, on loopback) against the same files on the local disk, in the same run.

Usage: object_store.py QUIVER_BIN DATA_DIR [LABELS]

DATA_DIR holds `quiver-bench gen`'s driver_hourly.parquet, features.yaml and
labels_<LABELS>.parquet (default 100000). Two fresh servers:
  local  --source-root/--labels-root DATA_DIR, exports in its data directory;
  s3     --source-root s3://quiver-bench/features, --labels-root s3://quiver-bench/labels,
         --export-dir s3://quiver-bench/exports, the files uploaded there first.
Each runs the export REPEAT times (median wall time of `quiver export --server-side`). The
two outputs must hold the same rows. moto is a Python server: its per-request cost is part of
what the s3 figure measures, so the ratio is an upper bound for a real S3 endpoint's CPU
cost and a lower bound for its latency.
"""

import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import boto3
import pyarrow.parquet as pq

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from bench_server import QuiverServer  # noqa: E402

REPEAT = 3
BUCKET = "quiver-bench"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server(QuiverServer):
    def export(self, labels, out):
        times = []
        for _ in range(REPEAT):
            start = time.monotonic()
            self.cli("export", "--server-side", "--overwrite", "--service", "driver_model",
                     "--labels", labels, "--out", out)
            times.append(time.monotonic() - start)
        return statistics.median(times)


def moto_baseline(s3):
    """What moto itself costs: one whole-object GET and ten 8 MiB ranged GETs of the source."""
    key = "features/driver_hourly.parquet"
    start = time.monotonic()
    size = len(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    whole = time.monotonic() - start
    start = time.monotonic()
    for i in range(10):
        first = i * 8 << 20
        s3.get_object(Bucket=BUCKET, Key=key, Range=f"bytes={first}-{first + (8 << 20) - 1}")["Body"].read()
    ranged = (time.monotonic() - start) / 10
    return (f"GET of all {size / 1e6:.0f} MB {whole:.2f} s; one 8 MiB ranged GET {ranged:.3f} s "
            f"({8 * 1.048576 / ranged:.0f} MB/s)")


def ranged_gets(log):
    """Ranged GETs of the source object moto has logged so far."""
    log.flush()
    with open(log.name) as lines:
        return sum(1 for line in lines if "GET /quiver-bench/features/" in line and '" 206 ' in line)


def main():
    binary, data = sys.argv[1], pathlib.Path(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
    labels = data / f"labels_{n}.parquet"
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tempfile.NamedTemporaryFile(mode="w+", suffix=".log")
    moto = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=log)
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")
        deadline = time.monotonic() + 60
        while True:
            try:
                s3.create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        s3.upload_file(str(data / "driver_hourly.parquet"), BUCKET,
                       "features/driver_hourly.parquet")
        s3.upload_file(str(labels), BUCKET, f"labels/{labels.name}")
        baseline = moto_baseline(s3)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = pathlib.Path(tmp)
            results = {}
            local = Server(binary, tmp / "local", "--source-root", str(data),
                           "--labels-root", str(data))
            local.cli("apply", "-f", str(data / "features.yaml"))
            results["local"] = local.export(str(labels), "local.parquet")
            local.stop()
            manifest = (data / "features.yaml").read_text().replace(
                "parquet: driver_hourly.parquet",
                f"parquet: s3://{BUCKET}/features/driver_hourly.parquet")
            (tmp / "s3.yaml").write_text(manifest)
            options = [f"aws_endpoint={endpoint}", "aws_allow_http=true", "aws_region=us-east-1",
                       "aws_access_key_id=bench", "aws_secret_access_key=bench"]
            remote = Server(binary, tmp / "s3",
                            "--source-root", f"s3://{BUCKET}/features",
                            "--labels-root", f"s3://{BUCKET}/labels",
                            "--export-dir", f"s3://{BUCKET}/exports",
                            *[a for o in options for a in ("--object-store-option", o)])
            remote.cli("apply", "-f", str(tmp / "s3.yaml"))
            before = ranged_gets(log)
            results["s3"] = remote.export(f"s3://{BUCKET}/labels/{labels.name}", "s3.parquet")
            requests = (ranged_gets(log) - before) / REPEAT
            remote.stop()
            s3.download_file(BUCKET, "exports/s3.parquet", str(tmp / "s3.parquet"))
            a = pq.read_table(tmp / "local/data/exports/local.parquet")
            b = pq.read_table(tmp / "s3.parquet")
            same = a.replace_schema_metadata(None).equals(b.replace_schema_metadata(None))
        print(f"export of {n} labels x {pq.ParquetFile(data / 'driver_hourly.parquet').metadata.num_rows} rows, median of {REPEAT}")
        print("| where | wall s | vs local |")
        print("|---|---|---|")
        for where, seconds in results.items():
            print(f"| {where} | {seconds:.2f} | {seconds / results['local']:.2f}x |")
        print(f"outputs identical: {same}")
        print(f"moto alone, same object: {baseline}")
        print(f"ranged GETs of the source per s3 export: {requests:.0f}")
        if not same:
            sys.exit(1)
    finally:
        moto.terminate()
        moto.wait(timeout=30)


if __name__ == "__main__":
    main()
