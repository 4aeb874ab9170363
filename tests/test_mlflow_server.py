"""``MLFLOW_TRACKING_URI`` pointing at a real ``mlflow server`` on loopback works like the embedded SQLite store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from pipelines.settings import Settings
from pipelines.tracking import client as tracking_client


@pytest.mark.slow  # starts an MLflow tracking server (the mlflow_server fixture of conftest.py)
def test_registration_and_status_against_a_tracking_server(nasops_home, mlflow_server, tmp_path):
    from pipelines import registry
    from pipelines.config import RetrainConfig
    from pipelines.contracts import Lineage
    from pipelines.data import DataSpec, prepare
    from pipelines.retrain import register_baseline
    from pipelines.tracking import configure_mlflow

    settings = Settings()
    assert settings.tracking_uri == mlflow_server
    configure_mlflow(settings)
    prepared = prepare(DataSpec(source="digits", max_rows=400), settings.data_dir)
    lineage = Lineage(dataset_fingerprint=prepared.fingerprint, data_source="digits", refresh_run_id="r")
    with mlflow.start_run(run_name="refresh"):
        out = register_baseline(prepared.path, settings.model_name, RetrainConfig(epochs=2), lineage).model_dump()
    client = tracking_client(Settings())
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
