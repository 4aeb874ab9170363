"""Shared fixtures: an isolated state dir, a real MLflow SQLite store, real Prefect and MLflow servers.

Nothing here is a mock: MLflow writes a real SQLite file, Prefect runs flows against a real API server started by
the server harness (``servers.py``). Two plugins are loaded for every test module, so no test imports fixtures:
``fixtures_registry`` (the ``registry`` and ``shared_registry`` fixtures: trained models in a real MLflow
registry) and ``servers`` (the harness's rule that only tests marked ``slow`` start servers, and server log tails
in failure reports).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["servers", "fixtures_registry", "pytester"]

# Offline and quiet before anything imports prefect or mlflow. Each pytest process (each xdist worker) has its own
# temporary directory, Prefect home and default state dir: never the user's, never another worker's.
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="nasops-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_TMP / "prefect")
os.environ["NASOPS_HOME"] = str(_SESSION_TMP / "home")
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


@pytest.fixture(autouse=True)
def _own_state_dir(tmp_path, monkeypatch) -> None:
    """No two tests share a ``NASOPS_HOME``: a test that sets none still gets its own (not created until used), so
    a test cannot pass on what an earlier one (or the other xdist worker) left there."""
    monkeypatch.setenv("NASOPS_HOME", str(tmp_path / "default-nasops-home"))


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
    """A real Prefect API server for the whole session (``servers.start_prefect``); flows run in this process
    report to it. Only tests marked ``slow`` may ask for it."""
    import prefect.context
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from servers import start_prefect

    # Prefect's own harness also makes these the process-global settings, for its worker threads that started
    # before the override; the helper is private, so it is used only where this Prefect version has it.
    global_settings = getattr(prefect.context, "_temporary_global_settings_context", None)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(start_prefect())
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: server.api_url}))
        if global_settings is not None:
            stack.enter_context(global_settings(prefect.context.get_settings_context()))
        yield server
        _drain_prefect_workers()


@pytest.fixture(scope="session")
def prefect_api_env(prefect_server) -> dict[str, str]:
    """What a ``nasops refresh`` *subprocess* needs in its environment to report to this worker's Prefect server
    instead of starting a temporary one of its own (~25 s per process, more on a busy machine). Tests that check
    the process tree of a refresh (SIGTERM, the watchdog, ``--resume`` as on a laptop) keep their own server."""
    return {"PREFECT_API_URL": prefect_server.api_url}


def _drain_prefect_workers() -> None:
    """Send the logs and events still queued in this process before the server they go to stops."""
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        with contextlib.suppress(RuntimeError):  # the worker never started
            result = APILogWorker.instance().drain()
            if inspect.isawaitable(result):
                await result
        result = EventsWorker.drain_all()
        if inspect.isawaitable(result):
            await result

    run_coro_as_sync(drain())


@pytest.fixture
def mlflow_server(tmp_path, monkeypatch) -> str:
    """A real ``mlflow server`` on 127.0.0.1 with its own SQLite store and artifact directory, set as
    ``MLFLOW_TRACKING_URI`` for the test; its URL. Only tests marked ``slow`` may ask for it."""
    from servers import start_mlflow

    with start_mlflow(tmp_path / "server") as server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        yield server.url


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist (``make test``), hand out the slow tests first so that the fast ones fill the gaps at the end
    instead of one worker running a long test alone. A single process keeps the file order (each module's
    fixtures set up once)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


_MODULE_FIXTURE = re.compile(r"@pytest\.fixture\(\s*scope=[\"'](module|class|package)[\"']")


@functools.cache
def _shares_a_module_fixture(path: Path) -> bool:
    """Whether the test module defines a module-, class- or package-scoped fixture (a refresh, a gateway, a
    trained model that its tests share)."""
    try:
        return bool(_MODULE_FIXTURE.search(path.read_text()))
    except OSError:
        return False


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadgroup`` (``make test``): single tests are handed to whichever worker is free, except that the
    tests of a module defining a shared (module/class-scoped) fixture go to one worker together, so that fixture
    is built once, not once per worker. (xdist's own loadgroup reads ``xdist_group`` marks through a node-id
    rewrite that pytest 9 no longer honours; this scheduler decides from the node id alone, in the controller.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    rootpath = config.rootpath

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if _shares_a_module_fixture(rootpath / module) else nodeid

    return SharedFixtureScheduling(config, log)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Under ``CI=true`` a skipped test is a failure: a missing server must not pass CI silently."""
    from servers import in_ci

    if not in_ci():
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
    from servers import in_ci

    if not in_ci():
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and reporter.stats.get("skipped") and session.exitstatus == 0:
        session.exitstatus = 1
