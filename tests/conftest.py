"""Shared fixtures: an isolated state dir, a real MLflow SQLite store, a real (temporary) Prefect server.

Nothing here is a mock: MLflow writes a real SQLite file, Prefect runs flows against a real temporary API server.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Offline and quiet before anything imports prefect or mlflow.
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="nasops-tests-"))
os.environ.setdefault("PREFECT_HOME", str(_SESSION_TMP / "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


@pytest.fixture(autouse=True)
def _torch_threads():
    """Two cores are all there is: keep each test's torch on one thread so parallel work stays predictable."""
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture
def nasops_home(tmp_path, monkeypatch) -> Path:
    """A fresh state dir (``NASOPS_HOME``) with its own SQLite MLflow store and prediction log."""
    home = tmp_path / "nasops-home"
    home.mkdir()
    monkeypatch.setenv("NASOPS_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("NASOPS_PREDICTION_LOG_URL", raising=False)
    return home


@pytest.fixture(scope="session")
def prefect_server():
    """A real temporary Prefect API server for the whole session (``prefect_test_harness``)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Under ``CI=true`` a skipped test is a failure: a missing server must not pass CI silently."""
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        return
    skipped = terminalreporter.stats.get("skipped", [])
    if skipped:
        terminalreporter.write_line(
            f"CI=true: {len(skipped)} test(s) skipped; in CI every test must run (install the missing server)",
            red=True,
        )
        for report in skipped:
            terminalreporter.write_line(f"  skipped: {report.nodeid} {report.longrepr}", red=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and reporter.stats.get("skipped") and session.exitstatus == 0:
        session.exitstatus = 1
