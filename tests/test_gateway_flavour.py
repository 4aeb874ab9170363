"""The gateway serves a flavour (NASOPS_GATEWAY_FLAVOUR): the ONNX or int8 artifact registration logged next to a
version, behind the same /predict; a version without one is served in PyTorch with a note in load_errors.

Real parts: a SQLite MLflow registry (fixtures_registry.build_registry), deploy artifacts logged by
pipelines.deploy_artifacts, gateway worker processes (serving.server.start_gateway, process mode) over HTTP.
"""

from __future__ import annotations

import time

import httpx
import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from support_models import digits_data

from monitoring.vocabulary import tag
from pipelines import deploy_artifacts as da
from serving.server import start_gateway

pytestmark = pytest.mark.slow  # trains models, builds a registry, starts gateway processes

TOKEN = "flavour-admin-token-0123456789abcdefghijklmnop"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def flavoured_registry(tmp_path_factory):
    """Champion (linear) with ONNX + int8 artifacts; challenger (MLP) with none (registered before they existed)."""
    from fixtures_registry import build_registry

    reg = build_registry(tmp_path_factory.mktemp("flavour-registry"))
    client = MlflowClient(reg.tracking_uri, reg.tracking_uri)
    champion = mlflow.pytorch.load_model(f"models:/{reg.model_name}/{reg.champion_version}").eval()
    report = da.log_deploy_artifacts(champion, reg.x_test, digits_data()[0], model_name=reg.model_name,
                                     version=reg.champion_version, client=client, int8="always")
    assert report.errors == {}, report.errors
    with torch.no_grad():
        expected = champion(torch.from_numpy(reg.x_test)).argmax(1).numpy()
    return reg, [reg.classes[i] for i in expected]


def _predict_all(url: str, x: np.ndarray) -> list:
    r = httpx.post(f"{url}/predict", json={"inputs": x.tolist()}, timeout=30)
    r.raise_for_status()
    body = r.json()
    assert body["variant"] == "champion"
    return body["predictions"]


def _state(url: str) -> dict:
    return httpx.get(f"{url}/admin/state", headers=AUTH, timeout=10).json()


@pytest.mark.parametrize("flavour", ["onnx", "int8"])
def test_gateway_serves_the_flavour_with_the_pytorch_labels(flavoured_registry, flavour):
    reg, expected = flavoured_registry
    settings = reg.gateway_settings(flavour=flavour, challenger_weight=0.0, admin_token=TOKEN)
    with start_gateway(settings, mode="process", workers=1) as gw:
        state = _state(gw.url)
        assert state["models"]["champion"]["flavour"] == flavour
        got = _predict_all(gw.url, reg.x_test)
        labels = [p["label"] if isinstance(p, dict) else p for p in got]
        agreement = float(np.mean([a == b for a, b in zip(labels, expected, strict=True)]))
        if flavour == "onnx":
            assert agreement == 1.0
        else:  # int8 rounds weights: a row near a decision boundary may flip
            assert agreement >= 0.95, agreement
        # the challenger has no artifact: served in PyTorch, and the gateway says so
        assert state["models"]["challenger"]["flavour"] == "pytorch"
        note = state["load_errors"]["flavour:challenger"]
        assert f"no usable {flavour} form" in note and "serving pytorch" in note
        assert state["ready"] is True


def test_default_flavour_is_pytorch_and_has_no_note(flavoured_registry):
    reg, expected = flavoured_registry
    with start_gateway(reg.gateway_settings(challenger_weight=0.0, admin_token=TOKEN), mode="process") as gw:
        state = _state(gw.url)
        assert state["models"]["champion"]["flavour"] == "pytorch"
        assert not any(k.startswith("flavour:") for k in state["load_errors"])
        got = _predict_all(gw.url, reg.x_test)
        assert [p["label"] if isinstance(p, dict) else p for p in got] == expected


def test_a_broken_artifact_falls_back_to_pytorch(flavoured_registry, tmp_path):
    """The version's tag names an ONNX file that is not a model: served in PyTorch, with the reason."""
    reg, _ = flavoured_registry
    client = MlflowClient(reg.tracking_uri, reg.tracking_uri)
    mv = client.get_model_version(reg.model_name, reg.challenger_version)
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"not an onnx file")
    client.log_artifact(mv.run_id, str(bogus), artifact_path="deploy")
    client.set_model_version_tag(reg.model_name, reg.challenger_version, tag(da.ONNX_ARTIFACT), "deploy/model.onnx")
    try:
        from serving.flavours import load_flavoured

        loaded = load_flavoured(client, reg.model_name, "challenger", reg.challenger_version, "onnx")
        assert loaded.flavour == "pytorch" and "deploy/model.onnx" in loaded.flavour_note
        probs = loaded.predict_proba(reg.x_test[:5])
        assert probs.shape == (5, len(reg.classes))
    finally:
        client.delete_model_version_tag(reg.model_name, reg.challenger_version, tag(da.ONNX_ARTIFACT))


def _p50_ms(url: str, rows: np.ndarray, n: int = 200) -> float:
    times = []
    with httpx.Client(base_url=url, timeout=10) as c:
        for i in range(n):
            body = {"inputs": [rows[i % len(rows)].tolist()]}
            t0 = time.perf_counter()
            c.post("/predict", json=body).raise_for_status()
            times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def test_measure_onnx_vs_pytorch_gateway_latency(flavoured_registry):
    """Not an assertion on speed (a shared 2-core machine): the figure printed for docs/deploy.md."""
    reg, _ = flavoured_registry
    figures = {}
    for flavour in ("pytorch", "onnx"):
        with start_gateway(reg.gateway_settings(flavour=flavour, challenger_weight=0.0), mode="process") as gw:
            _p50_ms(gw.url, reg.x_test, 30)
            figures[flavour] = _p50_ms(gw.url, reg.x_test)
    print(f"gateway /predict p50 at batch 1 over HTTP: {figures}")
    assert all(v > 0 for v in figures.values())


def test_a_latency_int8_refresh_registers_a_model_whose_onnx_and_int8_forms_serve(nasops_home, prefect_server):
    """The issue's done-means: a refresh with objective latency_int8 registers a challenger carrying its ONNX
    export and int8 variant, and a gateway process serves each of them on /predict with PyTorch's labels."""
    from pipelines.refresh import RefreshConfig, model_refresh
    from pipelines.settings import Settings
    from serving.config import GatewaySettings

    config = RefreshConfig(data="digits", seed=0, top_k=1, skip_canary=True, skip_tournament=True,
                           search={"pool_size": 16, "prefilter_keep": 4, "budget": 2, "warm_start": 2,
                                   "fidelity": {"epochs": 1, "data_fraction": 0.3}, "objective": "latency_int8"},
                           retrain={"epochs": 3, "patience": 2})
    result = model_refresh(config)
    assert result.search.objective == "latency_int8"
    settings = Settings()
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    version = result.challenger.version
    tags = client.get_model_version(result.model_name, version).tags
    assert tags.get(tag(da.ONNX_ARTIFACT)) == "deploy/model.onnx", tags.get(tag(da.ONNX_ERROR))
    assert tags.get(tag(da.INT8_ARTIFACT)) == "deploy/model_int8.pt", tags.get(tag(da.INT8_ERROR))
    for key in (da.LATENCY_FP32, da.LATENCY_ONNX, da.LATENCY_INT8):
        assert float(tags[tag(key)]) > 0
    from nas.datasets import bundled_task

    rows = bundled_task("digits", seed=0).x_test[:64]
    answers = {}
    for flavour in ("pytorch", "onnx", "int8"):
        gw_settings = GatewaySettings(tracking_uri=settings.tracking_uri, model_name=result.model_name,
                                      prediction_log_url=f"sqlite:///{nasops_home / f'log-{flavour}.db'}",
                                      poll_interval_s=0, challenger_weight=1.0, follow_rollouts=False,
                                      admin_token=TOKEN, flavour=flavour)
        with start_gateway(gw_settings, mode="process") as gw:
            state = _state(gw.url)
            assert state["models"]["challenger"]["version"] == version
            assert state["models"]["challenger"]["flavour"] == flavour, state["load_errors"]
            r = httpx.post(f"{gw.url}/predict", json={"inputs": rows.tolist()}, timeout=30)
            r.raise_for_status()
            assert r.json()["variant"] == "challenger"
            answers[flavour] = [p["label"] if isinstance(p, dict) else p for p in r.json()["predictions"]]
    assert answers["onnx"] == answers["pytorch"]
    assert np.mean([a == b for a, b in zip(answers["int8"], answers["pytorch"], strict=True)]) >= 0.95
