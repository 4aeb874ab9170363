"""`nasops status` reads the registry without MLflow (issue 24: 18–26 s on a busy host, most of it importing MLflow):
the light view must say exactly what MLflow's client says, from the embedded SQLite store and from a tracking server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipelines import registry, registry_view

ROOT = Path(__file__).resolve().parent.parent
MODEL = "view-model"


def _fill(client: MlflowClient) -> None:
    client.create_registered_model(MODEL)
    run = client.create_run(client.get_experiment_by_name("Default").experiment_id)
    for i in range(4):
        client.create_model_version(MODEL, source=f"{run.info.artifact_uri}/model-{i}", run_id=run.info.run_id,
                                    tags={"nasops.arch": f"mlp-{i}", "nasops.task": "classification",
                                          "other.tag": "x"})
    client.set_registered_model_alias(MODEL, "champion", "2")
    client.set_registered_model_alias(MODEL, "challenger", "3")
    client.set_registered_model_alias(MODEL, "previous-champion", "2")
    client.set_model_version_tag(MODEL, "1", "rejected", "worse on accuracy")
    client.delete_model_version(MODEL, "4")
    client.create_registered_model("another-model")
    client.create_model_version("another-model", source=f"{run.info.artifact_uri}/x", run_id=run.info.run_id)


def test_the_view_of_an_embedded_store_is_what_mlflow_says(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    _fill(client)
    expected = registry.list_versions(client, MODEL)
    seen = registry_view.list_versions(uri, MODEL)
    assert seen == expected and [r["version"] for r in seen] == ["3", "2", "1"]
    assert seen[1]["aliases"] == ["champion", "previous-champion"] and seen[2]["rejected"] == "worse on accuracy"
    assert registry_view.list_versions(uri, "never-registered") == []
    assert registry_view.list_versions("databricks://profile", MODEL) is None  # not readable here: MLflow reads it


@pytest.mark.slow
def test_the_view_of_a_tracking_server_is_what_mlflow_says(tmp_path):
    from servers import start_mlflow

    with start_mlflow(tmp_path / "mlflow") as server:
        client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
        _fill(client)
        assert registry_view.list_versions(server.url, MODEL) == registry.list_versions(client, MODEL)
        assert registry_view.list_versions(server.url, "never-registered") == []


def test_status_imports_no_mlflow(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    uri = f"sqlite:///{home / 'mlflow.db'}"
    _fill(MlflowClient(tracking_uri=uri, registry_uri=uri))
    code = ("import sys; from pipelines.cli.app import run; code = run(['status', '--model-name', 'view-model']); "
            "print('MLFLOW-IMPORTED' if 'mlflow' in sys.modules else 'no-mlflow', code)")
    env = {**os.environ, "NASOPS_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("NASOPS_PREDICTION_LOG_URL", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().endswith("no-mlflow 0"), out.stdout[-2000:] + out.stderr[-2000:]
    assert "mlp-2" in out.stdout or "champion" in out.stdout
