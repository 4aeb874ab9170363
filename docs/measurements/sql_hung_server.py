"""Wall time of `nasops refresh` against a PostgreSQL port that accepts and never answers (default 10 s connect
timeout), and of one refused at once (a missing SQLite file: the CLI's own start). Run: .venv/bin/python THIS_FILE."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def timed(data: str) -> str:
    env = {**os.environ, "NASOPS_HOME": tempfile.mkdtemp()}
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli.app", "refresh", "--data", data, "--query",
                           "SELECT 1", "--target", "y"], capture_output=True, text=True, env=env, cwd=ROOT)
    return f"exit {proc.returncode} after {time.monotonic() - t0:.1f} s: {proc.stderr.strip()}"


def main() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        print("hung server:", timed(f"postgresql://ana:pw@127.0.0.1:{sock.getsockname()[1]}/shop"))
    print("missing file:", timed("sqlite:////nonexistent/shop.db"))


if __name__ == "__main__":
    main()
