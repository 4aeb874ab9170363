"""The deployable forms of a trained network: an ONNX file checked against PyTorch, and an int8 CPU model.

Three jobs, one function each, so the refresh (registration) and the search (objectives) take only what they need:

- :func:`export_onnx` writes the served model (:class:`nas.export.FlatInputClassifier`, raw ``(n, F)`` float32 in,
  logits out, dynamic batch) to ONNX with PyTorch's TorchScript exporter (``dynamo=False``): it needs no package
  beyond ``onnx``, whereas the ``torch.export`` exporter (the default since PyTorch 2.9) also needs ``onnxscript``.
  :func:`check_onnx` runs the file in onnxruntime next to PyTorch and reports the max abs logit difference and the
  argmax agreement; :class:`OnnxClassifier` is the onnxruntime session as a predictor.
- :func:`quantize_int8` is post-training int8 quantization with ``torch.ao.quantization`` on the CPU backend
  (``x86``, fbgemm kernels): *dynamic* (weights int8, activations quantized on the fly; Jacob et al., CVPR 2018
  for the affine int8 scheme) for networks without convolutions, *static* FX graph mode with observers calibrated
  on a few batches of training data for convolutional ones (Krishnamoorthi, 2018, "Quantizing deep convolutional
  networks for efficient inference: a whitepaper").
- :func:`int8_objectives` gives ``latency_int8_ms`` and ``int8_accuracy_drop`` (plus the fp32 figures they are
  relative to), measured side by side, for a search or registration objective.

``onnx`` and ``onnxruntime`` are imported only when needed; a missing one raises ``ImportError`` naming the install.
"""

from __future__ import annotations

import copy
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nas.export import FlatInputClassifier

ONNX_OPSET = 17
INPUT_NAME = "features"
OUTPUT_NAME = "logits"
QUANT_BACKEND = "x86"
QUANT_METHODS = ("auto", "dynamic", "static")
FX_LOCK = threading.RLock()
"""Held by whoever runs FX tracing *or* any module next to it: ``torch.fx`` patches ``nn.Module.__call__`` for the
whole process while it traces, so a network called in another thread meanwhile (a concurrent training) fails with
``NameError: module is not installed as a submodule``. :class:`nas.evaluators.TrainingEvaluator` with ``int8``
holds it for a whole evaluation, so such evaluations in a thread pool run one at a time."""


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{module} is needed for this (pip install {module}); it is in nasops' requirements") from exc


# -- ONNX ------------------------------------------------------------------------------------------------------------
def num_features_of(model: nn.Module, num_features: int | None = None) -> int:
    """``F`` of a served model: given, or a :class:`FlatInputClassifier`'s own (other modules must be told)."""
    if num_features is not None:
        return int(num_features)
    if isinstance(model, FlatInputClassifier):
        return int(model.num_features)
    raise TypeError(f"{type(model).__name__} is not a FlatInputClassifier and does not say how many features it "
                    "takes: pass num_features")


def export_onnx(model: nn.Module, path: str | Path, *, opset: int = ONNX_OPSET,
                num_features: int | None = None) -> Path:
    """Write ``model`` as ONNX (input ``features`` ``(batch, F)`` float32, output ``logits``) and validate the file.

    ``model`` is the served form (:class:`FlatInputClassifier`, ``F`` read from it) or any module taking
    ``(n, F)`` float32 rows with ``num_features=F``.
    """
    onnx = _require("onnx")
    width = num_features_of(model, num_features)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = torch.zeros(2, width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation on every call
        torch.onnx.export(
            model, (example,), str(path), dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    onnx.checker.check_model(str(path))
    return path


class OnnxClassifier:
    """An onnxruntime session over an exported file: ``(n, F)`` raw features -> logits, on the CPU."""

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        ort = _require("onnxruntime")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(1)


@dataclass(frozen=True)
class OnnxCheck:
    """How an ONNX file agrees with the PyTorch model on the same rows."""

    rows: int
    max_abs_diff: float
    argmax_agreement: float
    atol: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.atol and self.argmax_agreement == 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def check_onnx(model: nn.Module, path: str | Path, x: np.ndarray, *, atol: float = 1e-4) -> OnnxCheck:
    """Run ``x`` through ``model`` and the ONNX file; max abs logit difference and argmax agreement."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"check_onnx needs a non-empty (n, F) float array, got shape {x.shape}")
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    got = OnnxClassifier(path).logits(x)
    return OnnxCheck(
        rows=len(x), max_abs_diff=float(np.abs(got - expected).max()),
        argmax_agreement=float((got.argmax(1) == expected.argmax(1)).mean()), atol=atol,
    )


# -- int8 ------------------------------------------------------------------------------------------------------------
def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def quantize_int8(model: nn.Module, calibration: np.ndarray | torch.Tensor, *, method: str = "auto",
                  batch_size: int = 64, batches: int = 4) -> nn.Module:
    """An int8 copy of ``model`` (the original is untouched) for CPU inference on the ``x86`` backend.

    ``method="auto"`` picks ``static`` (FX graph mode, observers calibrated on ``batches`` batches of
    ``calibration`` rows — inputs as ``model`` takes them) for networks with convolutions, ``dynamic`` otherwise
    (``nn.Linear`` weights int8; the FX pass is not needed since the Linear modules are swapped in place).
    """
    if method not in QUANT_METHODS:
        raise ValueError(f"method must be one of {', '.join(QUANT_METHODS)}, got {method!r}")
    from torch.ao import quantization as tq

    torch.backends.quantized.engine = QUANT_BACKEND
    model = copy.deepcopy(model).eval()
    if method == "auto":
        method = "static" if has_conv(model) else "dynamic"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        if method == "dynamic":
            return tq.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        x = torch.as_tensor(np.asarray(calibration, dtype=np.float32)) if not torch.is_tensor(calibration) \
            else calibration.to(torch.float32)
        if len(x) == 0:
            raise ValueError("static quantization needs calibration rows; got none")
        with FX_LOCK:
            prepared = prepare_fx(model, tq.get_default_qconfig_mapping(QUANT_BACKEND), example_inputs=(x[:1],))
            with torch.no_grad():
                for start in range(0, min(len(x), batch_size * batches), batch_size):
                    prepared(x[start : start + batch_size])
            return convert_fx(prepared)


def save_int8(model: nn.Module, path: str | Path, num_features: int) -> Path:
    """Save an int8 model (from :func:`quantize_int8`) as TorchScript, traced on ``(n, F)`` rows: the file loads
    with :func:`load_int8` alone, without the Python classes of the network (a gateway needs none of nasops')."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript announces its deprecation; tracing still works
        traced = torch.jit.trace(model.eval(), torch.zeros(2, int(num_features)), check_trace=False)
        torch.jit.save(traced, str(path))
    return path


def load_int8(path: str | Path) -> nn.Module:
    """Load a :func:`save_int8` file on the CPU with the x86 quantized kernels."""
    torch.backends.quantized.engine = QUANT_BACKEND
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location="cpu").eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on raw rows ``x`` (as the model takes them) and labels ``y``."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32))
            correct += int((model(xb).argmax(1).numpy() == y[start : start + batch_size]).sum())
    return correct / max(len(x), 1)


def latency_ms(fn, x: np.ndarray | torch.Tensor, *, repeats: int = 100, warmup: int = 10) -> np.ndarray:
    """Per-call wall times (ms) of ``fn(x)`` after a warm-up: the sample p50/p99 are read from."""
    times = np.empty(repeats)
    with torch.no_grad():
        for _ in range(warmup):
            fn(x)
        for i in range(repeats):
            t0 = time.perf_counter()
            fn(x)
            times[i] = time.perf_counter() - t0
    return times * 1000.0


def int8_objectives(model: FlatInputClassifier, x: np.ndarray, y: np.ndarray, calibration: np.ndarray, *,
                    method: str = "auto", repeats: int = 50) -> dict[str, float]:
    """``latency_int8_ms`` (median, batch 1) and ``int8_accuracy_drop`` (fp32 minus int8 accuracy on ``(x, y)``).

    ``x``/``calibration`` are raw ``(n, F)`` rows as served (e.g. ``TaskData.x_val`` / ``x_train``); fp32 latency
    is measured in the same call so the two latencies are comparable (interleaved, same process).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x must be (n, F) with one label per row; got x {x.shape}, y {np.shape(y)}")
    q = quantize_int8(model, calibration, method=method)
    fp32_acc, int8_acc = accuracy(model, x, y), accuracy(q, x, y)
    one = torch.from_numpy(x[:1])
    fp32_ms = float(np.median(latency_ms(model, one, repeats=repeats)))
    int8_ms = float(np.median(latency_ms(q, one, repeats=repeats)))
    return {"latency_fp32_ms": fp32_ms, "latency_int8_ms": int8_ms, "accuracy_fp32": fp32_acc,
            "accuracy_int8": int8_acc, "int8_accuracy_drop": fp32_acc - int8_acc}


def int8_metrics(net: nn.Module, data, *, repeats: int = 20, calibration_rows: int = 256) -> dict[str, float]:
    """The int8 figures of a *trained search candidate* (the bare network, standardised inputs shaped
    ``(n, *input_shape)``, as :class:`nas.evaluators.TrainingEvaluator` has it): ``latency_int8_ms`` (median, batch
    1, the int8 module as TorchScript like the registered artifact), ``accuracy_int8`` (validation accuracy of the
    int8 module) and ``int8_accuracy_drop`` (the fp32 validation accuracy minus that). For ``--objective
    latency_int8``: the search then ranks what would be deployed, not the fp32 network."""
    x_val, y_val = data.tensors("val")
    x_cal = data.tensors("train")[0][:calibration_rows]
    q = quantize_int8(net, x_cal)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        q = torch.jit.trace(q.eval(), x_val[:2], check_trace=False)
        fp32_acc = float((net.eval()(x_val).argmax(1) == y_val).float().mean())
        int8_acc = float((q(x_val).argmax(1) == y_val).float().mean())
    int8_ms = float(np.median(latency_ms(q, x_val[:1], repeats=repeats, warmup=3)))
    return {"latency_int8_ms": int8_ms, "accuracy_int8": int8_acc, "int8_accuracy_drop": fp32_acc - int8_acc}
