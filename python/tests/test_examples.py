"""python/examples/notebook.py runs as the README says: after `quiver quickstart`, against
a server of that project."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from conftest import Server, quiver_binary

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "notebook.py"


def test_the_notebook_example_runs_on_the_quickstart_project(tmp_path):
    project = tmp_path / "quiver-quickstart"
    subprocess.run([quiver_binary(), "quickstart", "--dir", str(project)], check=True,
                   capture_output=True, timeout=300)
    server = Server(tmp_path)
    try:
        done = subprocess.run([sys.executable, str(EXAMPLE), str(project)],
                              env={**os.environ, "QUIVER_SERVER": server.url},
                              capture_output=True, text=True, timeout=300)
    finally:
        server.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rows from driver_model@1" in done.stdout
    assert "statuses: ['PRESENT', 'PRESENT', 'NOT_FOUND']" in done.stdout
