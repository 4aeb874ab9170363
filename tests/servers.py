"""The one server harness of the test suite: Prometheus, PostgreSQL, an MLflow tracking server, a Prefect API server.

Every server here is real (no mocks) and handled the same way by :class:`ServerProcess`:

- started on 127.0.0.1 on a free port, in its own process group (``start_new_session``), so whatever it forks
  (uvicorn workers, PostgreSQL backends) is stopped with it;
- readiness is *polled* (its health endpoint, or a connection for PostgreSQL) until it answers, never slept for;
  a server that exits while starting fails at once with the tail of its log;
- stopped by its PID and process group (never by program name), also at interpreter exit if a run dies mid-way;
- its log is kept in a file, and its tail is attached to the report of any test that fails while it runs.

::

    from servers import start_prometheus, start_postgres, start_mlflow, start_prefect, wait_until

    with start_prometheus(["127.0.0.1:8000"], scrape_interval="1s", rule_files=[...]) as prom:
        prom.wait_for("sum(nasops_requests_total)", lambda v: v >= 10)
    with start_postgres() as pg:
        engine = sqlalchemy.create_engine(pg.url)   # postgresql+psycopg://nasops@127.0.0.1:PORT/nasops
    with start_mlflow(tmp_path / "server") as server:
        os.environ["MLFLOW_TRACKING_URI"] = server.url
    with start_prefect() as prefect:
        prefect.api_url                               # http://127.0.0.1:PORT/api

Starting a server is only allowed in a test marked ``@pytest.mark.slow``: ``make test-fast`` (``-m "not slow"``)
must start none, and :func:`require_slow` fails an unmarked test that tries, naming the fix. This module is a
pytest plugin (``pytest_plugins`` in ``conftest.py``) for that check and for the log tails.

A missing binary skips the test with a visible reason, except under ``CI=true`` where it fails: CI must not pass
by skipping its integration tests (``unavailable`` holds that rule; ``require_binary`` applies it to a binary).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

import httpx
import pytest
import yaml

T = TypeVar("T")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(message: str) -> NoReturn:
    """Skip the calling test with ``message``; under ``CI=true`` fail it instead (CI must not pass by skipping)."""
    if in_ci():
        pytest.fail(f"{message}; CI=true does not allow skipping this test", pytrace=False)
    pytest.skip(message)
    raise AssertionError("unreachable")


def require_binary(name: str, install_hint: str) -> str:
    """The path of ``name`` on PATH; skip the test if absent (fail under ``CI=true``)."""
    path = shutil.which(name)
    if path:
        return path
    unavailable(f"{name!r} is not installed ({install_hint})")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05,
               message: str = "condition") -> T:
    """Poll ``condition()`` until it returns something truthy (returned); AssertionError naming ``message`` after
    ``timeout`` seconds. The replacement for a fixed ``time.sleep`` that hopes a server is ready by then."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message}: not true within {timeout:g} s")
        time.sleep(interval)


# --- the rule: servers start only in slow tests, and their logs reach failure reports ---------------------------

_CURRENT_ITEM: list[pytest.Item] = []
# (title, log tail) of the servers stopped during the running test: a server in a ``with`` block inside the test
# is stopped (and its directory removed) before the report of the failure is made.
_STOPPED_IN_TEST: list[tuple[str, str]] = []
_LOG_TAIL_CHARS = 3000


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    _CURRENT_ITEM.append(item)
    _STOPPED_IN_TEST.clear()
    try:
        return (yield)
    finally:
        _CURRENT_ITEM.pop()
        _STOPPED_IN_TEST.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    report = yield
    if report.failed:
        logs = [*_STOPPED_IN_TEST, *((server.log_title, server.log_tail(_LOG_TAIL_CHARS)) for server in _RUNNING)]
        for title, tail in logs:
            report.sections.append((title, tail))
    return report


def require_slow(what: str) -> None:
    """Fail the running test unless it is marked ``slow``: ``what`` it does (start a server, train models) is
    kept out of ``make test-fast``. Outside a pytest test (a script using this harness) it allows everything."""
    if not _CURRENT_ITEM:
        return
    item = _CURRENT_ITEM[-1]
    if item.get_closest_marker("slow") is None:
        pytest.fail(f"{item.nodeid} {what} but is not marked slow: add @pytest.mark.slow to it (or "
                    "`pytestmark = pytest.mark.slow` to its module) so `make test-fast` (pytest -m 'not slow') "
                    "starts no server and trains no model", pytrace=False)


# --- one server process ------------------------------------------------------------------------------------------

_RUNNING: list[ServerProcess] = []


def _has_exited(pid: int) -> bool:
    """Whether child ``pid`` has exited, *without reaping it*: while it is an unreaped zombie its PID (= its process
    group id) cannot be given to another process, so signalling the group afterwards cannot hit a stranger."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # already reaped
        return True


class ServerProcess:
    """A server started in its own process group with its output in ``log_path``.

    ``stop`` sends ``stop_signal`` (to the whole group, or to the leader only when the server stops its own
    children, like PostgreSQL's postmaster), waits, then SIGKILLs whatever is left of the group, and removes
    ``workdir``. Safe to call twice; registered with ``atexit`` until stopped.
    """

    def __init__(self, name: str, argv: Sequence[str], *, workdir: Path, log_path: Path | None = None,
                 env: dict[str, str] | None = None, stop_signal: int = signal.SIGTERM, signal_group: bool = True,
                 stop_timeout: float = 20.0, remove_workdir: bool = True, **popen_kwargs) -> None:
        self.name = name
        self.workdir = workdir
        self.log_path = log_path or workdir / f"{re.sub(r'[^a-z0-9]+', '-', name.lower())}.log"
        self._stop_signal = stop_signal
        self._signal_group = signal_group
        self._stop_timeout = stop_timeout
        self._remove_workdir = remove_workdir
        self._stopped = False
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env, cwd=popen_kwargs.pop("cwd", workdir), start_new_session=True,
                                            **popen_kwargs)
        self.pid = self.process.pid
        _RUNNING.append(self)
        atexit.register(self.stop)

    @property
    def exited(self) -> bool:
        return _has_exited(self.pid)

    @property
    def log_title(self) -> str:
        return f"{self.name} (pid {self.pid}) log {self.log_path}, last lines"

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, probe: Callable[[], bool], timeout: float, what: str = "ready") -> None:
        """Poll ``probe()`` (False or an exception: not yet) until True; RuntimeError with the log tail when the
        server exits first or ``timeout`` passes. The server is left running on failure: the caller stops it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exited:
                raise RuntimeError(f"{self.name} (pid {self.pid}) exited before it was {what}; its log:\n"
                                   f"{self.log_tail()}")
            try:
                if probe():
                    return
            except (httpx.HTTPError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} (pid {self.pid}) was not {what} within {timeout:g} s; its log:\n"
                           f"{self.log_tail()}")

    def wait_http(self, url: str, timeout: float, accept: Callable[[httpx.Response], bool] | None = None) -> None:
        """Poll ``url`` until it answers 200 (and ``accept(response)``, when given)."""
        def probe() -> bool:
            response = httpx.get(url, timeout=2)
            return response.status_code == 200 and (accept is None or accept(response))

        self.wait_ready(probe, timeout, what=f"answering {url}")

    def _signal(self, sig: int, group: bool) -> None:
        try:
            if group:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.exited:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        if not self.exited:
            self._signal(self._stop_signal, self._signal_group)
            self._wait_exit(self._stop_timeout)
        if self.process.returncode is None:  # not reaped yet, so its group id is still ours: kill what is left
            self._signal(signal.SIGKILL, True)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        if self in _RUNNING:
            _RUNNING.remove(self)
        if _CURRENT_ITEM:  # kept for the report, should the test fail
            _STOPPED_IN_TEST.append((self.log_title, self.log_tail(_LOG_TAIL_CHARS)))
        if self._remove_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"nasops-{prefix}-"))


# --- Prometheus --------------------------------------------------------------------------------------------------

class PrometheusServer(ServerProcess):
    """A running Prometheus: ``url``, instant ``query``, ``value``, ``wait_for`` a condition, ``stop``."""

    url: str

    def api(self, path: str, **params) -> dict:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus API {path} {params} failed: {body}")
        return body["data"]

    def query(self, promql: str) -> list[dict]:
        """Instant query; the result vector (each item has ``metric`` labels and ``value`` = [ts, "str"])."""
        data = self.api("query", query=promql)
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return result

    def value(self, promql: str) -> float | None:
        """The single value of a query that returns one sample (None when empty)."""
        result = self.query(promql)
        if not result:
            return None
        if len(result) != 1:
            raise AssertionError(f"{promql!r} returned {len(result)} series, expected one")
        return float(result[0]["value"][1])

    def wait_for(self, promql: str, predicate: Callable[[float], bool], timeout: float = 30.0) -> float:
        """Poll ``promql`` (one sample) until ``predicate(value)`` holds; the value, or AssertionError."""
        last: list[float | None] = [None]

        def holds() -> bool:
            last[0] = self.value(promql)
            return last[0] is not None and predicate(last[0])

        try:
            wait_until(holds, timeout=timeout, interval=0.25, message=promql)
        except AssertionError:
            raise AssertionError(f"{promql!r} never satisfied the condition within {timeout}s "
                                 f"(last value {last[0]})") from None
        return last[0]


def start_prometheus(
    scrape_targets: Sequence[str],
    scrape_interval: str = "1s",
    *,
    rule_files: Sequence[str | Path] = (),
    metrics_path: str = "/metrics",
    job_name: str = "nasops-gateway",
    timeout: float = 60.0,
) -> PrometheusServer:
    """Start Prometheus scraping ``scrape_targets`` ("host:port") and return once ``/-/ready`` answers."""
    require_slow("starts a Prometheus server")
    binary = require_binary("prometheus", "Debian: apt-get install prometheus; `make system-deps` does it")
    workdir = _workdir("prometheus")
    rules = []
    for i, rule_file in enumerate(rule_files):
        target = workdir / f"rules-{i}.yml"
        shutil.copy(rule_file, target)
        rules.append(str(target))
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval,
                   "scrape_timeout": scrape_interval},
        "rule_files": rules,
        "scrape_configs": [{"job_name": job_name, "metrics_path": metrics_path,
                            "static_configs": [{"targets": list(scrape_targets)}]}],
    }
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    server = PrometheusServer(
        "prometheus",
        [binary, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        workdir=workdir,
    )
    server.url = f"http://127.0.0.1:{port}"
    try:
        server.wait_http(f"{server.url}/-/ready", timeout)
    except BaseException:
        server.stop()
        raise
    return server


# --- PostgreSQL --------------------------------------------------------------------------------------------------

POSTGRES_HINT = "Debian: apt-get install postgresql; `make system-deps` does it"
POSTGRES_BINARIES = ("initdb", "postgres")


def _version_key(bindir: Path) -> tuple[int, str]:
    name = bindir.parent.name
    return (int(name) if name.isdigit() else -1, name)


def postgres_binaries() -> dict[str, str]:
    """Paths of ``initdb`` and ``postgres``: the newest ``/usr/lib/postgresql/<version>/bin`` that has both
    (Debian keeps them off PATH), else PATH. Skips the test when missing (fails under ``CI=true``)."""
    for bindir in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True):
        paths = {name: bindir / name for name in POSTGRES_BINARIES}
        if all(path.is_file() and os.access(path, os.X_OK) for path in paths.values()):
            return {name: str(path) for name, path in paths.items()}
    found = {name: shutil.which(name) for name in POSTGRES_BINARIES}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        unavailable(f"PostgreSQL server binaries {missing} were found neither under /usr/lib/postgresql/*/bin nor on "
                    f"PATH ({POSTGRES_HINT})")
    return {name: str(path) for name, path in found.items()}


def _server_account() -> dict:
    """``subprocess`` keyword arguments that run the server as its owner: the current user, or, for root (which
    initdb and postgres refuse), the ``postgres`` system user that the Debian package creates."""
    if os.geteuid() != 0:
        return {}
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        unavailable("running as root, and PostgreSQL refuses to run as root; no 'postgres' system user exists to run "
                    f"it as ({POSTGRES_HINT}, which creates that user; or run the tests as a normal user)")
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": [], "_owner": account}


class PostgresServer(ServerProcess):
    """A running throw-away PostgreSQL cluster: ``url`` of its database, ``create_database``, ``connect``, ``stop``.

    Authentication is ``trust`` for the superuser ``user``; it is reachable only on 127.0.0.1 and through a Unix
    socket inside its temporary directory, which ``stop`` removes. ``stop`` is a fast shutdown (SIGINT to the
    postmaster: open sessions are cut), then SIGKILL for anything left of its process group.
    """

    host = "127.0.0.1"
    port: int
    user: str
    database: str

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg 3 driver) of the database created at start."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def connect(self, database: str | None = None, *, autocommit: bool = True):
        """A plain psycopg connection (for checks that should not go through the code under test)."""
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.user, dbname=database or self.database,
                               autocommit=autocommit, connect_timeout=5)

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` (lower-case identifier) and return its URL."""
        from psycopg import sql

        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"database name {name!r} must be a lower-case SQL identifier (a-z, 0-9, _)")
        with self.connect("postgres") as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)


def _initdb(initdb: str, workdir: Path, user: str, env: dict, run_kwargs: dict) -> None:
    proc = subprocess.run(
        [initdb, "-D", str(workdir / "data"), "-U", user, "--auth=trust", "--encoding=UTF8", "--locale=C",
         "--no-sync"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=120, **run_kwargs,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"initdb failed with {proc.returncode}:\n{(proc.stdout + proc.stderr)[-2000:]}")


def start_postgres(database: str = "nasops", *, user: str = "nasops", timeout: float = 60.0) -> PostgresServer:
    """Create a fresh cluster in a temporary directory, serve it on a free 127.0.0.1 port, create ``database``.

    Use it as a context manager (or call ``stop``): the server is stopped and its directory removed at the end.
    Skips the test when the binaries, or psycopg, are missing (fails under ``CI=true``).
    """
    require_slow("starts a PostgreSQL server")
    binaries = postgres_binaries()
    try:
        import psycopg
    except ImportError:
        unavailable("the PostgreSQL driver psycopg is not installed (pip install 'psycopg[binary]')")
    account = _server_account()
    run_kwargs = {k: v for k, v in account.items() if not k.startswith("_")}
    workdir = _workdir("postgres")
    if "_owner" in account:
        os.chown(workdir, account["_owner"].pw_uid, account["_owner"].pw_gid)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    try:
        _initdb(binaries["initdb"], workdir, user, env, run_kwargs)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise

    def accepts_connections() -> bool:
        try:
            with psycopg.connect(host="127.0.0.1", port=port, user=user, dbname="postgres", connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    for attempt in range(3):  # a free port can be taken between probing and binding: try another
        port = free_port()
        server = PostgresServer(
            "postgres",
            [binaries["postgres"], "-D", str(workdir / "data"), "-h", "127.0.0.1", "-p", str(port),
             "-k", str(workdir), "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=60", "-c", "shared_buffers=16MB"],
            workdir=workdir, log_path=workdir / f"postgres-{attempt}.log", env=env, stop_signal=signal.SIGINT,
            signal_group=False, stop_timeout=30, remove_workdir=False, **run_kwargs,
        )
        server.port, server.user, server.database = port, user, database
        try:
            server.wait_ready(accepts_connections, timeout, what="accepting connections")
        except RuntimeError:
            tail = server.log_tail()
            server.stop()
            if "could not bind" in tail:
                continue  # the same cluster directory, another port
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        except BaseException:
            server.stop()
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        server._remove_workdir = True
        try:
            server.create_database(database)
        except BaseException:
            server.stop()
            raise
        return server
    shutil.rmtree(workdir, ignore_errors=True)
    raise RuntimeError(f"postgres could not bind a free loopback port in 3 attempts:\n{tail}")


# --- MLflow tracking server --------------------------------------------------------------------------------------

class MlflowServer(ServerProcess):
    """A running ``mlflow server``: ``url`` (the tracking URI), its SQLite store and artifact directory."""

    url: str


def start_mlflow(store: Path | None = None, *, timeout: float = 120.0) -> MlflowServer:
    """``mlflow server`` on a free 127.0.0.1 port with its own SQLite store and proxied artifact directory under
    ``store`` (a temporary directory when None); returns once ``/health`` answers."""
    require_slow("starts an MLflow tracking server")
    workdir = _workdir("mlflow")
    store = Path(store) if store is not None else workdir
    store.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = MlflowServer(
        "mlflow server",
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
         "--artifacts-destination", str(store / "artifacts"), "--workers", "1"],
        workdir=workdir, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    server.url = f"http://127.0.0.1:{port}"
    try:
        server.wait_http(f"{server.url}/health", timeout)
    except BaseException:
        server.stop()
        raise
    return server


# --- Prefect API server ------------------------------------------------------------------------------------------

class PrefectServer(ServerProcess):
    """A running Prefect API server (``prefect.server.api.server:create_app`` under uvicorn, UI and background
    services off, as Prefect's own test harness runs it) with a temporary SQLite database: ``api_url``."""

    url: str

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"


def start_prefect(*, timeout: float = 120.0, services: bool = False) -> PrefectServer:
    """A Prefect API server on a free 127.0.0.1 port with its own ``PREFECT_HOME`` and SQLite database; returns
    once ``/api/health`` answers. Point clients at it with ``PREFECT_API_URL`` = ``api_url``.

    ``services``: run the server's background services too (the scheduler that turns a deployment's interval
    schedule into flow runs), as ``prefect server start`` does, with the scheduler looking every second."""
    require_slow("starts a Prefect API server")
    workdir = _workdir("prefect")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(workdir / "home"),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{workdir / 'prefect.db'}",
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",  # create_app: no UI, only the services an ephemeral server needs
        "PREFECT__SERVER_FINAL": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    if services:
        del env["PREFECT__SERVER_EPHEMERAL"]
        env.update({"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
                    "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1"})
    env.pop("PREFECT_API_URL", None)
    server = PrefectServer(
        "prefect server",
        [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app", "--host",
         "127.0.0.1", "--port", str(port), "--log-level", "warning", "--lifespan", "on"],
        workdir=workdir, env=env,
    )
    server.url = f"http://127.0.0.1:{port}"
    try:
        server.wait_http(f"{server.api_url}/health", timeout)
    except BaseException:
        server.stop()
        raise
    return server
