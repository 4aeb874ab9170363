"""Real servers for tests, started on 127.0.0.1 and stopped afterwards (no mocks).

``start_prometheus`` runs the real Prometheus binary (Debian package ``prometheus``) on a free loopback port with
a temporary config and storage directory::

    from servers import start_prometheus

    with start_prometheus(["127.0.0.1:8000"], scrape_interval="1s", rule_files=[...]) as prom:
        prom.wait_for("sum(nasops_requests_total)", lambda v: v >= 10)
        prom.query('rate(nasops_requests_total[1m])')

A missing binary skips the test with a visible reason, except under ``CI=true`` where it fails: CI must not pass
by skipping its integration tests (``require_binary`` holds that rule for any binary).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pytest
import yaml


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_binary(name: str, install_hint: str) -> str:
    """The path of ``name`` on PATH; skip the test if absent (fail under ``CI=true``)."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name!r} is not installed ({install_hint})"
    if in_ci():
        pytest.fail(f"{message}; CI=true does not allow skipping this test", pytrace=False)
    pytest.skip(message)
    raise AssertionError("unreachable")


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
