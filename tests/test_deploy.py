"""The deployable artifact: ONNX round-trips within tolerance, int8 answers with the same classes on most rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.datasets import bundled_task
from nas.deploy import (
    OnnxClassifier,
    check_onnx,
    export_onnx,
    has_conv,
    int8_objectives,
    quantize_int8,
)
from nas.export import FlatInputClassifier
from nas.spaces import get_space
from nas.trainer import TrainConfig, train

NB201 = "|nor_conv_1x1~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|skip_connect~1|avg_pool_3x3~2|"
MLP = "depth=2|widths=64-64|act=relu|norm=batch|dropout=0|residual=1"


@pytest.fixture(scope="module")
def data():
    return bundled_task("digits")


def _served(data, space, arch: str, epochs: int) -> FlatInputClassifier:
    torch.manual_seed(0)
    net = space.build(space.from_string(arch), data.num_classes, data.input_shape)
    train(net, data, TrainConfig(epochs=epochs, data_fraction=0.5))
    return FlatInputClassifier(net, data.input_shape, data.feature_mean, data.feature_std).eval()


@pytest.fixture(scope="module")
def conv_model(data):
    return _served(data, get_space("nb201", C=8, N=1), NB201, epochs=3)


@pytest.fixture(scope="module")
def mlp_model(data):
    return _served(data, get_space("mlp"), MLP, epochs=5)


@pytest.mark.parametrize("which", ["conv_model", "mlp_model"])
def test_onnx_round_trip_matches_torch(which, data, tmp_path, request):
    model = request.getfixturevalue(which)
    path = export_onnx(model, tmp_path / "m.onnx")
    check = check_onnx(model, path, data.x_test)
    assert check.rows == len(data.x_test)
    assert check.max_abs_diff < 1e-4
    assert check.argmax_agreement == 1.0 and check.ok
    # dynamic batch: one row and an odd-sized batch both answer with the right shape
    session = OnnxClassifier(path, threads=1)
    assert session.logits(data.x_test[:1]).shape == (1, data.num_classes)
    assert session.predict(data.x_test[:37]).shape == (37,)


def test_export_rejects_a_bare_network(tmp_path):
    with pytest.raises(TypeError, match="FlatInputClassifier"):
        export_onnx(torch.nn.Linear(4, 2), tmp_path / "x.onnx")  # type: ignore[arg-type]


def _agreement(a: torch.nn.Module, b: torch.nn.Module, x: np.ndarray) -> float:
    with torch.no_grad():
        xt = torch.from_numpy(x)
        return float((a(xt).argmax(1) == b(xt).argmax(1)).float().mean())


def test_static_int8_conv_net_agrees_on_most_rows(conv_model, data):
    assert has_conv(conv_model)
    q = quantize_int8(conv_model, data.x_train)
    assert any("quantized" in type(m).__module__ for m in q.modules())  # really int8 kernels, not a copy
    assert _agreement(conv_model, q, data.x_test) >= 0.95
    # the original is untouched
    assert not any("quantized" in type(m).__module__ for m in conv_model.modules())


def test_dynamic_int8_mlp_agrees_on_most_rows(mlp_model, data):
    q = quantize_int8(mlp_model, data.x_train)
    assert any(type(m).__name__ == "Linear" and "quantized" in type(m).__module__ for m in q.modules())
    assert _agreement(mlp_model, q, data.x_test) >= 0.95


def test_int8_objectives_report_latency_and_drop(mlp_model, data):
    out = int8_objectives(mlp_model, data.x_val, data.y_val, data.x_train, repeats=5)
    assert out["latency_int8_ms"] > 0 and out["latency_fp32_ms"] > 0
    assert out["int8_accuracy_drop"] == pytest.approx(out["accuracy_fp32"] - out["accuracy_int8"])
    assert abs(out["int8_accuracy_drop"]) < 0.05


def test_quantize_rejects_unknown_method(mlp_model, data):
    with pytest.raises(ValueError, match="method must be one of"):
        quantize_int8(mlp_model, data.x_train, method="int4")


ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "deploy.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, **(env or {})}, timeout=600)


def test_benchmark_refuses_bad_arguments_in_one_line(tmp_path, capsys):
    """In-process through the script's ``main(argv)`` (what its ``__main__`` exits with); an exception would fail
    the test, as a traceback would."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("deploy_benchmark", ROOT / "benchmarks" / "deploy.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--rounds", "0"]) == 2
    assert "--rounds" in capsys.readouterr().err
    assert bench.main(["--data", str(tmp_path / "missing.npz")]) == 2
    assert "missing.npz" in capsys.readouterr().err


@pytest.mark.slow
def test_benchmark_on_a_registered_model(tmp_path, data, mlp_model):
    """A version logged as the refresh logs it (MLflow pt2 program + nasops tags) is rebuilt and benchmarked."""
    import mlflow
    import mlflow.pytorch
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("deploy-test")
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(mlp_model, name="model", registered_model_name="winner",
                                        input_example=data.x_val[:2])
    client = MlflowClient(uri)
    version = str(info.registered_model_version)
    space = get_space("mlp")
    for key, value in {"space": "mlp", "space_config": json.dumps(space.config()), "arch": MLP,
                       "input_shape": json.dumps(list(data.input_shape)),
                       "classes": json.dumps(list(range(data.num_classes))), "role": "nas"}.items():
        client.set_model_version_tag("winner", version, f"nasops.{key}", value)
    out = _bench("--model-uri", f"models:/winner/{version}", "--rounds", "1", "--per-round", "4", "--json",
                 env={"MLFLOW_TRACKING_URI": uri})
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert set(result["flavours"]) == {"registered/fp32", "registered/int8", "registered/onnx"}
    assert result["checks"]["registered"]["onnx"]["ok"]
    fp32 = result["flavours"]["registered/fp32"]["accuracy"]
    assert fp32 == pytest.approx(float((mlp_model(torch.from_numpy(data.x_test)).argmax(1).numpy()
                                        == data.y_test).mean()))
    assert result["flavours"]["registered/onnx"]["accuracy"] == pytest.approx(fp32)
