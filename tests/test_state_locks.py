"""One state directory, several processes (adversarial round 3, finding 2): two `nasops refresh` of one model at once
registered v3 and v4 and the first one's canary judged and promoted the second's version; on a fresh directory one
of them died with an MLflow migration traceback. Now a refresh holds a lock per model name, and the embedded store
is opened (created) by one process at a time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.errors import UserError
from pipelines.locks import refresh_lock

ROOT = Path(__file__).resolve().parent.parent


def test_a_second_refresh_of_the_same_model_is_refused_in_one_line_naming_the_first(tmp_path):
    with refresh_lock(tmp_path, "credit"):
        with pytest.raises(UserError) as refused, refresh_lock(tmp_path, "credit"):
            pass
        message = str(refused.value)
        assert "already running" in message and f"pid {os.getpid()}" in message and "\n" not in message
        with refresh_lock(tmp_path, "churn"):  # another model refreshes beside it
            pass
    with refresh_lock(tmp_path, "credit"):  # released when the first ends
        pass


def test_a_killed_refresh_leaves_no_stale_lock(tmp_path):
    code = ("import sys, os; from pathlib import Path; from pipelines.locks import refresh_lock; "
            "lock = refresh_lock(Path(sys.argv[1]), 'credit'); lock.__enter__(); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, cwd=ROOT, timeout=120)
    with refresh_lock(tmp_path, "credit"):
        pass


@pytest.mark.slow
def test_commands_opening_a_fresh_store_at_once_all_succeed(tmp_path):
    """Three processes create the embedded MLflow store of one fresh state directory at the same moment."""
    code = ("from pipelines.settings import Settings; from pipelines.tracking import Tracking; "
            "print(Tracking.open(Settings()).experiment_id)")
    env = {**os.environ, "NASOPS_HOME": str(tmp_path / "home")}
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outcomes = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outcomes]
    assert len({out.strip() for out, _ in outcomes}) == 1  # one experiment, found by all three
