"""``nasops serve`` runs the gateway alone against the registry; bad options are one-line errors (exit 2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from servers import free_port

pytestmark = pytest.mark.slow  # starts gateways and trains models


def start_serve(env: dict, *extra: str, attempts: int = 3) -> tuple[subprocess.Popen, str]:
    """``nasops serve`` on a free port, retried if another program takes the port while it starts (other test
    suites run on this machine too): /healthz must name the instance id given to this process."""
    for _ in range(attempts):
        port = free_port()
        instance = f"cli-test-{port}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli.app", "serve", "--port", str(port), "--weight", "0",
             "--poll-interval-s", "0", *extra], env={**env, "NASOPS_GATEWAY_INSTANCE_ID": instance},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"{url}/healthz", timeout=1)
                if health.status_code == 200 and health.json().get("instance") == instance:
                    return proc, url
                break  # someone else answers on this port
            except httpx.HTTPError:
                time.sleep(0.2)
        proc.kill()
        proc.communicate(timeout=30)
    raise AssertionError("nasops serve did not come up on a port of its own")


def test_nasops_serve_answers_and_stops_cleanly(shared_registry):
    env = {**os.environ, "NASOPS_HOME": str(shared_registry.home)}
    for leaked in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "NASOPS_MODEL_NAME"):
        env.pop(leaked, None)  # set in os.environ by mlflow.set_*_uri calls of earlier tests
    shared_registry.end_manual_rollout()  # an earlier test's admin split is durable routing state on this log
    proc, url = start_serve(env, "--model-name", shared_registry.model_name)  # issue 24: serve had no --model-name
    try:
        assert httpx.get(f"{url}/readyz").status_code == 200
        r = httpx.post(f"{url}/predict", json={"inputs": [shared_registry.x_test[0].tolist()]})
        assert r.status_code == 200, r.text
        assert r.json()["variant"] == "champion"
        assert r.json()["model_version"] == shared_registry.champion_version
        assert httpx.get(f"{url}/admin/state").status_code == 404  # no token: admin off
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    # Ctrl-C as for every command (README): uvicorn drains and shuts down, then one line and exit 130
    assert proc.returncode == 130, out
    assert "Application shutdown complete" in out and out.count("interrupted (Ctrl-C)") == 1, out
    assert f"gateway on {url}" in out.replace("\n", "")


def test_nasops_serve_rejects_bad_options_without_a_traceback(shared_registry):
    from support_cli import nasops  # in-process: the console script's own run(argv) and exit-code mapping

    out = nasops("serve", "--weight", "1.5", home=shared_registry.home)
    assert out.returncode == 2 and "challenger_weight" in out.stderr and "Traceback" not in out.stderr
    out = nasops("serve", "--mode", "yolo", home=shared_registry.home)
    assert out.returncode == 2 and "--mode" in out.stderr and "Traceback" not in out.stderr
