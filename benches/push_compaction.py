"""Export and materialization after many single-row pushes, with and without push-log
compaction, against the same rows pushed at once (issue 12, "Push log").

Usage: push_compaction.py QUIVER_BIN [PUSHES] [CONCURRENCY]

Three fresh servers serve the view `clicks` of benches/push_rss.yaml (push-only source):
  bulk       the PUSHES rows in one Push;
  single     PUSHES single-row Pushes, --push-log-compaction-interval 0 (no compaction);
  compacted  PUSHES single-row Pushes, --push-log-compaction-interval 1, then waits until the
             push log stops shrinking.
Rows: user i % 10,000, event time t0 + i, online and offline. Then, per server: a server-side
export of 10,000 labels (every user at t0 + PUSHES) timed REPEAT times (median), and one
materialization of the whole range. Prints a table; ratios are against `bulk` in the same run.
"""

import os
import pathlib
import statistics
import sys
import tempfile
import threading
import time

import grpc
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import push_rss  # noqa: E402
from bench_server import QuiverServer  # noqa: E402

T0 = 1_800_000_000_000_000
USERS = 10_000
REPEAT = 3
MANIFEST = pathlib.Path(__file__).parent / "push_rss.yaml"


def push_request(first, rows):
    return push_rss.push_request(rows, first, USERS)


class Server(QuiverServer):
    def __init__(self, binary, root, compaction):
        super().__init__(binary, root, "--source-root", str(root), "--labels-root", str(root),
                         "--push-log-compaction-interval", str(compaction))
        self.cli("apply", "-f", str(MANIFEST))

    def files(self):
        log = self.root / "data" / "offline" / "clicks"
        return sum(1 for p in log.iterdir() if p.suffix == ".parquet" and not p.name.startswith("."))


def push_singly(target, pushes, concurrency):
    """PUSHES single-row pushes from CONCURRENCY threads; returns pushes per second."""
    next_row = iter(range(pushes))
    lock = threading.Lock()

    def worker():
        with grpc.insecure_channel(target) as channel:
            push = channel.unary_unary("/quiver.v1.OnlineService/Push")
            while True:
                with lock:
                    i = next(next_row, None)
                if i is None:
                    return
                push(push_request(i, 1), timeout=60)

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return pushes / (time.monotonic() - started)


def timed(fn, repeat):
    times = []
    for _ in range(repeat):
        started = time.monotonic()
        fn()
        times.append(time.monotonic() - started)
    return statistics.median(times)


def measure(server, pushes, repeat):
    labels = server.root / "labels.parquet"
    pq.write_table(pa.table({
        "user_id": pa.array(range(USERS), pa.int64()),
        "event_timestamp": pa.array([T0 + pushes] * USERS, pa.timestamp("us", tz="UTC")),
    }), labels)
    export = timed(lambda: server.cli(
        "export", "--server-side", "--features", "clicks:a,clicks:b,clicks:s",
        "--labels", str(labels), "--out", "train.parquet", "--overwrite"), repeat)
    start = "2027-01-15T00:00:00Z"
    materialize = timed(lambda: server.cli(
        "materialize", "--start", start, "--end", "2027-01-16T00:00:00Z"), 1)
    return export, materialize


def main():
    binary = sys.argv[1]
    pushes = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    concurrency = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, compaction in [("bulk", 0), ("single", 0), ("compacted", 1)]:
            root = pathlib.Path(tmp) / name
            root.mkdir()
            server = Server(binary, root, compaction)
            rate, settle = None, None
            if name == "bulk":
                with grpc.insecure_channel(server.target, options=[
                        ("grpc.max_send_message_length", 256 << 20)]) as channel:
                    channel.unary_unary("/quiver.v1.OnlineService/Push")(
                        push_request(0, pushes), timeout=600)
            else:
                rate = push_singly(server.target, pushes, concurrency)
                if compaction:
                    started, last = time.monotonic(), None
                    while last != server.files():
                        last = server.files()
                        time.sleep(3)
                    settle = time.monotonic() - started - 3
            files = server.files()
            export, materialize = measure(server, pushes, 1 if name == "single" else REPEAT)
            results[name] = (files, rate, settle, export, materialize)
            server.stop()
    base = results["bulk"]
    print(f"{pushes} rows, {concurrency} pushing threads, {os.cpu_count()} cores")
    print("| case | push-log files | pushes/s | compaction settled after | export s | x bulk | materialize s | x bulk |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (files, rate, settle, export, materialize) in results.items():
        print(f"| {name} | {files} | {f'{rate:.0f}' if rate else '-'} | "
              f"{f'{settle:.0f} s' if settle is not None else '-'} | {export:.2f} | "
              f"{export / base[3]:.2f} | {materialize:.2f} | {materialize / base[4]:.2f} |")


if __name__ == "__main__":
    main()
