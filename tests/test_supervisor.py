"""Children die with their parent: ``kill -9`` of ``nasops refresh`` leaves nothing of its own running (issue: the
canary's gateway, ~630 MB with its admin API on, and the temporary Prefect server kept running), and no gateway
run directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

NASOPS = [sys.executable, "-m", "pipelines.cli.app"]


def _carrying(marker: bytes) -> list[int]:
    from pipelines.supervisor import pids_with_env

    return pids_with_env(marker.decode())


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_the_watchdog_stops_only_what_carries_its_token(tmp_path):
    from pipelines import supervisor

    env = {**os.environ, supervisor.OWNER_ENV: "t-test-1"}
    mine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env, start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        assert supervisor.stop_owned("t-test-1", exclude={os.getpid()}) == [mine.pid]
        assert mine.wait(timeout=10) is not None and other.poll() is None
    finally:
        for proc in (mine, other):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_kill_9_of_a_refresh_leaves_no_gateway_and_no_prefect_server(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "NASOPS_HOME": str(home)}
    for key in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "NASOPS_OWNER_TOKEN"):
        env.pop(key, None)
    marker = f"NASOPS_HOME={home}".encode()
    log = open(tmp_path / "refresh.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([*NASOPS, "refresh", "--max-rows", "400", "--pool-size", "20", "--budget", "2",
                             "--epochs", "1", "--top-k", "1", "--skip-tournament"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:  # until the canary's gateway is up
            assert proc.poll() is None, (tmp_path / "refresh.log").read_text()[-3000:]
            if any("serving.workers" in _cmdline(p) for p in _carrying(marker)):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the canary's gateway never started")
        children = [p for p in _carrying(marker) if p != proc.pid]
        assert any("prefect" in _cmdline(p) for p in children)  # the temporary Prefect API server
        run_dirs = list(Path(tempfile.gettempdir()).glob(f"nasops-gateway-{proc.pid}-*"))
        assert run_dirs  # the gateway's Prometheus files and control file
        proc.send_signal(signal.SIGKILL)  # only the refresh itself, as a user's kill -9 would
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _carrying(marker):
            time.sleep(0.2)
        assert _carrying(marker) == [], [_cmdline(p) for p in _carrying(marker)]
        assert not any(p.exists() for p in run_dirs)  # removed by the watchdog
    finally:
        for pid in _carrying(marker):
            os.kill(pid, signal.SIGKILL)
        log.close()
