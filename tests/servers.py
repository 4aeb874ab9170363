"""Real servers for tests, started on 127.0.0.1 and stopped afterwards (no mocks).

``start_prometheus`` runs the real Prometheus binary (Debian package ``prometheus``) on a free loopback port with
a temporary config and storage directory::

    from servers import start_prometheus

    with start_prometheus(["127.0.0.1:8000"], scrape_interval="1s", rule_files=[...]) as prom:
        prom.wait_for("sum(nasops_requests_total)", lambda v: v >= 10)
        prom.query('rate(nasops_requests_total[1m])')

``start_postgres`` creates a throw-away PostgreSQL cluster (Debian package ``postgresql``: the server binaries in
``/usr/lib/postgresql/<version>/bin``) in a temporary directory and serves it on a free loopback port::

    with start_postgres() as pg:
        engine = sqlalchemy.create_engine(pg.url)   # postgresql+psycopg://nasops@127.0.0.1:PORT/nasops
        other_url = pg.create_database("second")

A missing binary skips the test with a visible reason, except under ``CI=true`` where it fails: CI must not pass
by skipping its integration tests (``unavailable`` holds that rule; ``require_binary`` applies it to a binary).
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import httpx
import pytest
import yaml


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


class PrometheusServer:
    """A running Prometheus: ``url``, instant ``query``, ``wait_for`` a condition, ``stop``."""

    def __init__(self, url: str, process: subprocess.Popen, workdir: Path, log_path: Path) -> None:
        self.url = url
        self.process = process
        self.workdir = workdir
        self.log_path = log_path

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
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.value(promql)
            if last is not None and predicate(last):
                return last
            time.sleep(0.25)
        raise AssertionError(f"{promql!r} never satisfied the condition within {timeout}s (last value {last})")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_prometheus(
    scrape_targets: Sequence[str],
    scrape_interval: str = "1s",
    *,
    rule_files: Sequence[str | Path] = (),
    metrics_path: str = "/metrics",
    job_name: str = "nasops-gateway",
    timeout: float = 60.0,
) -> PrometheusServer:
    """Start Prometheus scraping ``scrape_targets`` ("host:port") and return once it is ready."""
    binary = require_binary("prometheus", "Debian: apt-get install prometheus; `make system-deps` does it")
    workdir = Path(tempfile.mkdtemp(prefix="nasops-prometheus-"))
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
    url = f"http://127.0.0.1:{port}"
    log_path = workdir / "prometheus.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 - owned by the process below
    process = subprocess.Popen(
        [binary, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )
    log_file.close()
    server = PrometheusServer(url, process, workdir, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            server.stop()
            raise RuntimeError(f"prometheus exited with {process.returncode}:\n{tail}")
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"prometheus did not become ready on {url} within {timeout}s")


# --- PostgreSQL --------------------------------------------------------------------------------------------------

POSTGRES_HINT = "Debian: apt-get install postgresql; `make system-deps` does it"
POSTGRES_BINARIES = ("initdb", "pg_ctl", "postgres")


def _version_key(bindir: Path) -> tuple[int, str]:
    name = bindir.parent.name
    return (int(name) if name.isdigit() else -1, name)


def postgres_binaries() -> dict[str, str]:
    """Paths of ``initdb``, ``pg_ctl`` and ``postgres``: the newest ``/usr/lib/postgresql/<version>/bin`` that has
    all three (Debian keeps them off PATH), else PATH. Skips the test when missing (fails under ``CI=true``)."""
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


class PostgresServer:
    """A running throw-away PostgreSQL cluster: ``url`` of its database, ``create_database``, ``connect``, ``stop``.

    Authentication is ``trust`` for the superuser ``user``; it is reachable only on 127.0.0.1 and through a Unix
    socket inside its temporary directory, which ``stop`` removes.
    """

    host = "127.0.0.1"

    def __init__(self, *, port: int, user: str, database: str, process: subprocess.Popen, workdir: Path,
                 log_path: Path, pg_ctl: str, account: dict) -> None:
        self.port = port
        self.user = user
        self.database = database
        self.process = process
        self.workdir = workdir
        self.log_path = log_path
        self._pg_ctl = pg_ctl
        self._account = account
        self._stopped = False

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

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Fast shutdown (open sessions are cut), then remove the cluster directory. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        if self.process.poll() is None:
            kwargs = {k: v for k, v in self._account.items() if not k.startswith("_")}
            subprocess.run([self._pg_ctl, "stop", "-D", str(self.workdir / "data"), "-m", "fast", "-w", "-t", "30"],
                           cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                           timeout=40, **kwargs)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pg_ctl could not stop it: immediate shutdown, then kill
                self.process.send_signal(signal.SIGQUIT)
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_postgres(database: str = "nasops", *, user: str = "nasops", timeout: float = 60.0) -> PostgresServer:
    """Create a fresh cluster in a temporary directory, serve it on a free 127.0.0.1 port, create ``database``.

    Use it as a context manager (or call ``stop``): the server is stopped and its directory removed at the end.
    Skips the test when the binaries, or psycopg, are missing (fails under ``CI=true``).
    """
    binaries = postgres_binaries()
    try:
        import psycopg
    except ImportError:
        unavailable("the PostgreSQL driver psycopg is not installed (pip install 'psycopg[binary]')")
    account = _server_account()
    run_kwargs = {k: v for k, v in account.items() if not k.startswith("_")}
    workdir = Path(tempfile.mkdtemp(prefix="nasops-postgres-"))
    if "_owner" in account:
        os.chown(workdir, account["_owner"].pw_uid, account["_owner"].pw_gid)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    try:
        initdb = subprocess.run(
            [binaries["initdb"], "-D", str(workdir / "data"), "-U", user, "--auth=trust", "--encoding=UTF8",
             "--locale=C", "--no-sync"],
            cwd=workdir, env=env, capture_output=True, text=True, timeout=120, **run_kwargs,
        )
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    if initdb.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(f"initdb failed with {initdb.returncode}:\n{(initdb.stdout + initdb.stderr)[-2000:]}")
    log_path = workdir / "postgres.log"
    for _attempt in range(3):  # a free port can be taken between probing and binding: try another
        port = free_port()
        log_file = open(log_path, "wb")  # noqa: SIM115 - owned by the process below
        process = subprocess.Popen(
            [binaries["postgres"], "-D", str(workdir / "data"), "-h", "127.0.0.1", "-p", str(port),
             "-k", str(workdir), "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=60", "-c", "shared_buffers=16MB"],
            cwd=workdir, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, **run_kwargs,
        )
        log_file.close()
        server = PostgresServer(port=port, user=user, database=database, process=process, workdir=workdir,
                                log_path=log_path, pg_ctl=binaries["pg_ctl"], account=account)
        atexit.register(server.stop)  # a test run that dies mid-way must not leave a server behind
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with psycopg.connect(host="127.0.0.1", port=port, user=user, dbname="postgres", connect_timeout=2):
                    pass
                break
            except psycopg.OperationalError:
                time.sleep(0.1)
        if process.poll() is None and time.monotonic() < deadline:
            try:
                server.create_database(database)
            except BaseException:
                server.stop()
                raise
            return server
        tail = server.log_tail()
        if process.poll() is not None and "could not bind" in tail:
            atexit.unregister(server.stop)  # its directory is the next attempt's: do not remove it
            continue
        server.stop()
        raise RuntimeError(f"postgres did not become ready on 127.0.0.1:{port} within {timeout}s "
                           f"(exit code {process.poll()}):\n{tail}")
    shutil.rmtree(workdir, ignore_errors=True)
    raise RuntimeError(f"postgres could not bind a free loopback port in 3 attempts:\n{tail}")
