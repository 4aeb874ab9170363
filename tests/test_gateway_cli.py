"""``nasops serve`` runs the gateway alone against the registry; bad options are one-line errors (exit 2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
from fixtures_registry import shared_registry  # noqa: F401  (pytest fixture)
from servers import free_port


def out_so_far(proc: subprocess.Popen) -> str:
    return "" if proc.poll() is None else proc.stdout.read()


def test_nasops_serve_answers_and_stops_cleanly(shared_registry):  # noqa: F811
    port = free_port()
    env = {**os.environ, "NASOPS_HOME": str(shared_registry.home), "NASOPS_MODEL_NAME": shared_registry.model_name}
    for leaked in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID"):
        env.pop(leaked, None)  # set in os.environ by mlflow.set_*_uri calls of earlier tests
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli.app", "serve", "--port", str(port), "--weight", "0", "--poll-interval",
         "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert httpx.get(f"{url}/readyz").status_code == 200, out_so_far(proc)
        r = httpx.post(f"{url}/predict", json={"inputs": [shared_registry.x_test[0].tolist()]})
        assert r.status_code == 200, r.text
        assert r.json()["variant"] == "champion"
        assert r.json()["model_version"] == shared_registry.champion_version
        assert httpx.get(f"{url}/admin/state").status_code == 404  # no token: admin off
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert f"gateway on {url}" in out.replace("\n", "")


def test_nasops_serve_rejects_bad_options_without_a_traceback(shared_registry):  # noqa: F811
    env = {**os.environ, "NASOPS_HOME": str(shared_registry.home)}
    out = subprocess.run([sys.executable, "-m", "pipelines.cli.app", "serve", "--weight", "1.5"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "challenger_weight" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "pipelines.cli.app", "serve", "--mode", "yolo"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--mode" in out.stderr and "Traceback" not in out.stderr
