"""A `quiver serve` process for the Python benchmarks: started on a free loopback port (the
address read from --listener-addr-file), driven through the CLI, stopped with SIGTERM."""

import subprocess
import time


class QuiverServer:
    def __init__(self, binary, root, *flags):
        self.binary, self.root = binary, root
        root.mkdir(parents=True, exist_ok=True)
        addr = root / "addr"
        self.process = subprocess.Popen(
            [binary, "serve", "--grpc-addr", "127.0.0.1:0", "--data-dir", str(root / "data"),
             "--listener-addr-file", str(addr), "--log", "warn", *flags],
            stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not addr.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("quiver serve did not start")
            time.sleep(0.02)
        self.target = addr.read_text().splitlines()[0]

    def cli(self, *args):
        """Runs `quiver ARGS --server ...`; its standard output, or an error with both streams."""
        done = subprocess.run([self.binary, *args, "--server", f"http://{self.target}"],
                              capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(done.stdout + done.stderr)
        return done.stdout

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=120)
