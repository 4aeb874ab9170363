"""The deployable artifact in the registry: ONNX (checked in onnxruntime) and int8 next to a registered version.

Fast tests build the artifacts without MLflow; slow ones log them into a real SQLite registry (build_registry) and
through the refresh's own registration (pipelines.retrain._register), and read them back from the store.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support_models import digits_data, mlp_classifier, train_small
from torch import nn

from monitoring.vocabulary import tag
from pipelines import deploy_artifacts as da

pytestmark = pytest.mark.slow  # trains small models; some build a registry


@pytest.fixture(scope="module")
def digits():
    return digits_data()


@pytest.fixture(scope="module")
def mlp(digits):
    x_tr, y_tr, _, _ = digits
    return train_small(mlp_classifier(), x_tr, y_tr, steps=60).eval()


class NotExportable(nn.Module):
    """Leaves torch for numpy mid-forward: neither tracing nor ONNX can follow it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.tanh(self.fc(x).detach().numpy()))


class Noisy(nn.Module):
    """Answers differently on every call: the exported file cannot agree with it, so the check must refuse it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + 10 * torch.randn(x.shape[0], 10)


def test_onnx_and_int8_are_built_checked_and_timed(mlp, digits, tmp_path):
    _, _, x_te, _ = digits
    report, files = da.build_deploy_artifacts(mlp, x_te, digits[0], tmp_path, int8="always")
    assert report.errors == {}
    assert report.onnx_check["ok"] and report.onnx_check["argmax_agreement"] == 1.0
    assert set(report.latency_ms) == {"fp32", "onnx", "int8"} and all(v > 0 for v in report.latency_ms.values())
    assert set(files) == {"onnx", "int8"} and all(p.exists() for p in files.values())
    assert report.int8_method == "dynamic" and report.int8_agreement >= 0.95
    tags = report.tags()
    assert float(tags[tag(da.LATENCY_ONNX)]) > 0 and json.loads(tags[tag(da.ONNX_CHECK)])["ok"] is True


def test_int8_is_kept_only_where_it_is_faster(mlp, digits, tmp_path):
    report, files = da.build_deploy_artifacts(mlp, digits[2], digits[0], tmp_path, int8="auto")
    faster = report.latency_ms["int8"] < report.latency_ms["fp32"]
    assert ("int8" in files) == faster
    assert (report.int8_skipped is None) == faster
    never, files = da.build_deploy_artifacts(mlp, digits[2], digits[0], tmp_path / "n", int8="never")
    assert "int8" not in files and "int8" not in never.latency_ms and never.int8_skipped


def test_a_model_that_cannot_be_exported_is_a_reason_not_a_crash(digits, tmp_path):
    report, files = da.build_deploy_artifacts(NotExportable().eval(), digits[2], digits[0], tmp_path, int8="never")
    assert "onnx" not in files and report.errors["onnx"]
    assert report.tags()[tag(da.ONNX_ERROR)] == report.errors["onnx"]
    assert "fp32" in report.latency_ms  # still timed: the PyTorch model is what will be served


def test_an_export_that_disagrees_with_pytorch_is_refused(digits, tmp_path):
    torch.manual_seed(0)
    report, files = da.build_deploy_artifacts(Noisy().eval(), digits[2], digits[0], tmp_path, int8="never")
    assert "onnx" not in files
    assert "disagrees with PyTorch" in report.errors["onnx"] and report.onnx_check["ok"] is False


def test_logged_next_to_the_version_and_loadable_from_the_store(nasops_home, digits):
    import mlflow.artifacts
    import mlflow.pytorch
    from fixtures_registry import build_registry
    from mlflow.tracking import MlflowClient

    from nas.deploy import OnnxClassifier, load_int8

    reg = build_registry(nasops_home)
    client = MlflowClient(reg.tracking_uri, reg.tracking_uri)
    module = mlflow.pytorch.load_model(f"models:/{reg.model_name}/{reg.challenger_version}").eval()
    report = da.log_deploy_artifacts(module, reg.x_test, digits[0], model_name=reg.model_name,
                                     version=reg.challenger_version, client=client, int8="always")
    assert report.errors == {} and report.onnx_artifact == "deploy/model.onnx"
    mv = client.get_model_version(reg.model_name, reg.challenger_version)
    tags = mv.tags
    for key in (da.LATENCY_FP32, da.LATENCY_ONNX, da.LATENCY_INT8):
        assert float(tags[tag(key)]) > 0
    assert tags[tag(da.ONNX_ARTIFACT)] == "deploy/model.onnx" and tags[tag(da.INT8_ARTIFACT)] == "deploy/model_int8.pt"
    files = {a.path for a in client.list_artifacts(mv.run_id, "deploy")}
    assert files == {"deploy/model.onnx", "deploy/model_int8.pt", "deploy/deploy_report.json"}
    onnx_path = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="deploy/model.onnx",
                                                    tracking_uri=reg.tracking_uri)
    with torch.no_grad():
        expected = module(torch.from_numpy(reg.x_test)).numpy()
    got = OnnxClassifier(onnx_path, threads=1).logits(reg.x_test)
    assert np.abs(got - expected).max() < 1e-4 and (got.argmax(1) == expected.argmax(1)).all()
    int8_path = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="deploy/model_int8.pt",
                                                    tracking_uri=reg.tracking_uri)
    with torch.no_grad():
        agree = (load_int8(int8_path)(torch.from_numpy(reg.x_test)).argmax(1).numpy() == expected.argmax(1)).mean()
    assert agree >= 0.95


def test_a_registry_failure_while_logging_is_a_warning_not_a_crash(mlp, digits):
    class Broken:
        def get_model_version(self, *a, **k):
            raise ConnectionError("registry went away")

        def set_model_version_tag(self, *a, **k):
            raise ConnectionError("registry went away")

    report = da.log_deploy_artifacts(mlp, digits[2], digits[0], model_name="m", version="1", client=Broken())
    assert "registry went away" in report.errors["deploy"]


def test_the_refresh_registration_logs_the_artifacts_and_its_cost_is_small(nasops_home):
    """Through pipelines.retrain._register (pt2 model logging, as a refresh does): the version carries the ONNX
    artifact and the three latencies, and the deploy step costs a fraction of the registration."""
    import time

    import mlflow
    from mlflow.tracking import MlflowClient

    from nas.datasets import bundled_task
    from nas.export import FlatInputClassifier
    from nas.spaces import get_space
    from pipelines.retrain import _register
    from pipelines.settings import Settings
    from pipelines.tracking import configure_mlflow

    data = bundled_task("digits", seed=0)
    space = get_space("mlp")
    net = space.build(space.from_string("depth=1|widths=64|act=relu|norm=none|dropout=0.0|residual=0"),
                      data.num_classes, data.input_shape)
    model = FlatInputClassifier(net, data.input_shape, data.feature_mean, data.feature_std).eval()
    settings = Settings(home=nasops_home, model_name="deploy-test")
    configure_mlflow(settings)
    with mlflow.start_run():
        started = time.perf_counter()
        version = _register(model, data, model_name="deploy-test", tags={"role": "nas"})
        total = time.perf_counter() - started
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    tags = client.get_model_version("deploy-test", version).tags
    assert tags[tag(da.ONNX_ARTIFACT)] == "deploy/model.onnx", tags.get(tag(da.ONNX_ERROR))
    assert json.loads(tags[tag(da.ONNX_CHECK)])["ok"] is True
    assert float(tags[tag(da.LATENCY_FP32)]) > 0 and float(tags[tag(da.LATENCY_ONNX)]) > 0
    deploy_s = float(tags[tag(da.DEPLOY_SECONDS)])
    print(f"registration {total:.2f} s, of which deploy artifacts {deploy_s:.2f} s")
    assert deploy_s < 10.0


def test_a_table_model_gets_its_network_exported_and_served_behind_its_encoder(nasops_home, tmp_path):
    """A raw-table version (pyfunc with its fitted encoder): the artifacts hold the network on encoded features,
    and serving.flavours swaps only that network, so named records get PyTorch's probabilities from ONNX."""
    import mlflow
    from mlflow.tracking import MlflowClient
    from test_raw_tables import raw_table, write_csv

    from nas.data import TaskData
    from nas.export import FlatInputClassifier
    from nas.trainer import TrainConfig, train
    from pipelines.data import DataSpec, prepare
    from pipelines.retrain import _register
    from pipelines.settings import Settings
    from pipelines.tracking import configure_mlflow
    from serving.flavours import load_flavoured

    prepared = prepare(DataSpec(source=write_csv(raw_table(), tmp_path / "raw.csv"), target="label"),
                       tmp_path / "out")
    data = TaskData.load(prepared.path)
    net = nn.Sequential(nn.Linear(data.x_train.shape[1], 16), nn.ReLU(), nn.Linear(16, data.num_classes))
    train(net, data, TrainConfig(epochs=3, seed=0))
    model = FlatInputClassifier(net, data.input_shape, data.feature_mean, data.feature_std).eval()
    settings = Settings(home=nasops_home, model_name="customers")
    configure_mlflow(settings)
    with mlflow.start_run():
        version = _register(model, data, model_name="customers", tags={"role": "nas"}, int8="always")
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    tags = client.get_model_version("customers", version).tags
    assert tags[tag("input_form")] == "table"
    assert tags[tag(da.ONNX_ARTIFACT)] == "deploy/model.onnx", tags.get(tag(da.ONNX_ERROR))
    records = [{"color": "red", "size": 1.2, "weight": 0.1, "member": True},
               {"color": None, "size": None, "weight": -0.3, "member": False},
               {"color": "purple", "size": 0.0, "weight": 0.5, "member": True}]
    base = load_flavoured(client, "customers", "champion", version, "pytorch")
    for flavour in ("onnx", "int8"):
        served = load_flavoured(client, "customers", "champion", version, flavour)
        assert served.flavour == flavour and served.input_form == "table", served.flavour_note
        got, want = served.predict_proba(records), base.predict_proba(records)
        if flavour == "onnx":
            assert np.abs(got - want).max() < 1e-5
        assert served.labels(got) == base.labels(want) or flavour == "int8"
