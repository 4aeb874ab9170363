"""A refresh killed with SIGKILL mid-search continues with ``nasops refresh --resume``: same refresh id, the search
journal continued (nothing finished is evaluated again), finished stages read back, and one registration each."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

NASOPS = [sys.executable, "-m", "pipelines.cli.app"]
OPTIONS = ["--pool-size", "60", "--budget", "4", "--epochs", "2", "--top-k", "2", "--skip-tournament",
           "--skip-canary", "--seed", "3"]


def _results(journal: Path) -> list[dict]:
    if not journal.exists():
        return []
    lines = [json.loads(line) for line in journal.read_text().splitlines() if line.strip().endswith("}")]
    return [r for r in lines if r.get("type") == "result"]


def _wait_for_results(home: Path, count: int, proc: subprocess.Popen, timeout_s: float = 600) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the refresh ended before it could be killed"
        for journal in home.glob("refreshes/*/search.jsonl"):
            if len(_results(journal)) >= count:
                return journal
        time.sleep(0.5)
    raise AssertionError(f"no {count} search results within {timeout_s} s")


def test_a_killed_refresh_resumes_where_it_stopped(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "NASOPS_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PREFECT_API_URL", None)  # its own ephemeral Prefect, as a user's laptop has
    log = open(tmp_path / "first.log", "wb")  # noqa: SIM115 - closed below
    first = subprocess.Popen([*NASOPS, "refresh", *OPTIONS], env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        journal = _wait_for_results(home, 2, first)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        log.close()
    before = _results(journal)
    record = json.loads((journal.parent / "refresh.json").read_text())
    assert record["status"] == "running"  # killed: nothing could mark it

    resumed = subprocess.run([*NASOPS, "refresh", "--resume", "--json", *OPTIONS], env=env, capture_output=True,
                             text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads(resumed.stdout)
    assert result["refresh_id"] == record["refresh_id"]
    # issue 24: the resume says what it reuses before it runs
    said = f"resuming refresh {record['refresh_id']} (attempt 2): read back: prepare_data; search: continues from "
    assert f"{said}{len(before)} of 4 trials" in resumed.stderr, resumed.stderr[-3000:]
    after = _results(journal)
    assert [r["arch"] for r in after[: len(before)]] == [r["arch"] for r in before]  # continued, not restarted
    assert len(after) == 4 and result["search"]["evaluations"] == 4
    assert len({r["index"] for r in after}) == 4  # no evaluation repeated
    record = json.loads((journal.parent / "refresh.json").read_text())
    assert record["status"] == "completed" and record["attempts"] == 2
    assert result["refresh_run_id"] == record["parent_run_id"]  # one MLflow parent run across both attempts
    # one baseline and top-k candidates, each registered once
    from support_cli import nasops  # the checks after the refresh: in-process (the console script's own mapping)

    status = nasops("status", "--json", home=home)
    versions = json.loads(status.stdout)["versions"]
    assert len(versions) == 3, [v["version"] for v in versions]
    assert {v["tags"]["seed"] for v in versions} == {"3"}
    # a completed refresh cannot be resumed again
    again = nasops("refresh", "--resume", *OPTIONS, home=home)
    assert again.returncode == 2 and "no unfinished refresh" in again.stderr
