"""``MLFLOW_TRACKING_URI`` pointing at a real ``mlflow server`` on loopback works like the embedded SQLite store."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path, monkeypatch):
    """A real tracking server on 127.0.0.1 with its own SQLite store and artifact directory, stopped afterwards."""
    port = _free_port()
    store = tmp_path / "server"
    store.mkdir()
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
        "--artifacts-destination", str(store / "artifacts"), "--workers", "1",
    ]
    log = (tmp_path / "mlflow-server.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(tmp_path / 'mlflow-server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise RuntimeError("mlflow server did not answer /health within 90 s")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


def test_registration_and_status_against_a_tracking_server(nasops_home, mlflow_server, tmp_path):
    from pipelines import registry
    from pipelines.data import DataSpec, prepare
    from pipelines.retrain import RetrainConfig, register_baseline
    from pipelines.settings import Settings
    from pipelines.tracking import configure_mlflow

    settings = Settings()
    assert settings.tracking_uri == mlflow_server
    configure_mlflow(settings)
    prepared = prepare(DataSpec("digits", max_rows=400), settings.data_dir)
    with mlflow.start_run(run_name="refresh"):
        out = register_baseline(prepared.path, settings.model_name, RetrainConfig(epochs=2),
                                {"dataset_fingerprint": prepared.fingerprint})
    client = registry.client_for_active()
    champion = registry.alias_version(client, settings.model_name, registry.CHAMPION)
    assert str(champion.version) == out["version"] == "1"
    assert not (nasops_home / "mlflow.db").exists()  # nothing went to the embedded store
    # the served artifact went through the server's artifact proxy and loads back
    import torch

    model = mlflow.pytorch.load_model(f"models:/{settings.model_name}@champion")
    assert tuple(model(torch.zeros(3, 64)).shape) == (3, 10)

    proc = subprocess.run([sys.executable, "-m", "pipelines.cli.app", "status", "--json"], capture_output=True,
                          text=True, timeout=120, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["versions"][0]["aliases"] == ["champion"]
    assert Path(nasops_home).exists()
