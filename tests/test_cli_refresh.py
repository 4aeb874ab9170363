"""The ``nasops`` entry point as a user runs it: bad input gets one line and exit code 2, never a traceback.

In-process through :func:`pipelines.cli.app.run` (what the console script exits with, ``support_cli``); the
``--version`` test runs the real interpreter, as ``test_cli_proxies`` does the installed console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support_cli import CliResult, nasops

NASOPS = [sys.executable, "-m", "pipelines.cli.app"]


def run_cli(*args: str, home: Path, **env: str | None) -> CliResult:
    """``nasops ARGS`` in this process with ``NASOPS_HOME=home`` (and no tracking URI left by another test)."""
    return nasops(*args, home=home, env=env)


def _assert_user_error(proc: CliResult | subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


@pytest.fixture
def bad_csv(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
    frame.loc[3, "b"] = np.inf  # a missing value would be imputed; an infinite one is refused
    frame["y"] = (np.arange(40) % 2).astype(float)
    frame.loc[5, "y"] = np.nan
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    return path


def test_refresh_rejects_bad_data_before_any_work(tmp_path, bad_csv):
    proc = run_cli("refresh", "--data", str(bad_csv), "--target", "y", home=tmp_path / "h")
    _assert_user_error(proc, "2 problems", "'b' has 1 infinite values", "1 rows have no label")
    proc = run_cli("refresh", "--data", str(bad_csv), home=tmp_path / "h")
    _assert_user_error(proc, "--target COLUMN", "a, b, c, y")
    proc = run_cli("refresh", "--data", str(tmp_path / "none.parquet"), "--target", "y", home=tmp_path / "h")
    _assert_user_error(proc, "does not exist")
    assert not (tmp_path / "h" / "mlflow.db").exists()  # nothing was started, nothing half-written


def test_refresh_rejects_bad_options(tmp_path):
    proc = run_cli("refresh", "--budget", "0", home=tmp_path / "h")
    _assert_user_error(proc, "invalid refresh configuration", "search.budget")
    proc = run_cli("refresh", "--epochs", "0", home=tmp_path / "h")
    _assert_user_error(proc, "invalid refresh configuration", "retrain.epochs")
    config = tmp_path / "c.yaml"
    config.write_text("search:\n  no_such_option: 1\n")
    proc = run_cli("refresh", "--config", str(config), home=tmp_path / "h")
    _assert_user_error(proc, "no_such_option")


def test_schedule_validates_cron_and_builds_the_deployment(tmp_path):
    proc = run_cli("schedule", "--cron", "0 3 * *", home=tmp_path / "h")
    _assert_user_error(proc, "not a valid cron expression")
    proc = run_cli("schedule", "--cron", "0 3 * * 0", "--check", home=tmp_path / "h")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["cron"] == "0 3 * * 0" and info["deployment"] == "model_refresh/nasops-refresh"
    assert info["parameters"]["config"]["data"] == "digits"


def test_status_on_an_empty_store_says_what_to_do(tmp_path):
    proc = run_cli("status", home=tmp_path / "h")
    assert proc.returncode == 0, proc.stderr
    assert "run `nasops refresh` first" in proc.stdout
    proc = run_cli("status", "--json", home=tmp_path / "h")
    assert json.loads(proc.stdout)["versions"] == []


def test_dead_tracking_server_is_a_clear_error(tmp_path):
    proc = nasops("status", home=tmp_path / "h", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
                                                      "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                                                      "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"})
    _assert_user_error(proc, "cannot reach the MLflow tracking store", "127.0.0.1:9")


def test_an_unknown_space_ends_before_prefect_or_any_store_starts(tmp_path):
    """Defect: `--space foo` started Prefect, ran data prep, printed 72 lines of traceback, then the error."""
    proc = run_cli("refresh", "--space", "foo", home=tmp_path / "h")
    _assert_user_error(proc, "unknown search space 'foo'; choose one of: mlp, nb201, tabular, vit")
    assert len(proc.stderr.strip().splitlines()) == 1 and "prefect" not in proc.stderr.lower()
    assert not (tmp_path / "h" / "mlflow.db").exists() and not (tmp_path / "h" / "refreshes").exists()


def test_an_image_space_on_a_table_is_named_not_swapped(tmp_path):
    """Defect: `--space nb201` on tabular data silently ran `mlp`."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 4)), columns=list("abcd"))
    frame["y"] = np.arange(200) % 2
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    proc = run_cli("refresh", "--data", str(path), "--target", "y", "--space", "nb201", home=tmp_path / "h")
    _assert_user_error(proc, "'nb201' cannot take inputs shaped (4,)", "mlp")


def test_version_flag():
    proc = subprocess.run([*NASOPS, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("nasops ")


def test_an_out_of_range_option_value_is_a_usage_error_not_a_traceback(tmp_path):
    """typer's option coercion raises its vendored click's BadParameter: it must end as a usage error (exit 2)."""
    proc = run_cli("status", "--window-s", "0", home=tmp_path / "h")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "Invalid value for '--window-s'" in proc.stderr


def test_a_bad_drift_spec_is_refused_by_refresh_before_anything_runs(tmp_path):
    """`nasops refresh --drift nope=1` started the whole refresh (Prefect, search, training) and failed only in the
    canary's traffic process; now it is one line, exit 2, and nothing is written."""
    home = tmp_path / "home"
    done = run_cli("refresh", "--drift", "nope=1", home=home)
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1 and "bad drift spec" in done.stderr, done.stderr
    assert not (home / "mlflow.db").exists()
