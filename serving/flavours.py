"""Which form of a registered version the gateway runs: ``pytorch`` (the logged model), ``onnx`` or ``int8``.

Registration logs the deployable forms next to each version (``pipelines/deploy_artifacts.py``): an ONNX file
checked against PyTorch in onnxruntime, and, where int8 was faster or asked for, a TorchScript int8 file; their
run-relative paths are the version tags ``nasops.onnx_artifact`` / ``nasops.int8_artifact``. With
``NASOPS_GATEWAY_FLAVOUR=onnx`` (or ``int8``) the gateway loads the version as usual (contract, classes, a table
model's encoder) and swaps its module for that file, behind the same ``predict_proba``: validation, routing and
logging do not know the difference. A version without the file (registered before, or its export failed) is
served in PyTorch, with a warning in the log and a note (:attr:`LoadedModel.flavour_note`) the gateway shows in
``load_errors``: serving never stops because a faster form is missing.

This module reads the files itself (onnxruntime, ``torch.jit``) rather than through ``nas.deploy``: ``serving``
imports no ``nas`` code (a table model's encoder arrives unpickled, by MLflow).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Literal

import numpy as np
import torch
from mlflow.tracking import MlflowClient

from monitoring.vocabulary import tag
from serving.models import LoadedModel, load_version

log = logging.getLogger(__name__)

Flavour = Literal["pytorch", "onnx", "int8"]
FLAVOURS: tuple[str, ...] = ("pytorch", "onnx", "int8")
ARTIFACT_TAG = {"onnx": "onnx_artifact", "int8": "int8_artifact"}
WHY_MISSING_TAGS = {"onnx": ("onnx_error",), "int8": ("int8_error", "int8_skipped")}
ONNX_INPUT, ONNX_OUTPUT = "features", "logits"


class OnnxModule:
    """An onnxruntime session (CPU, one intra-op thread) as a callable ``torch.Tensor (n, F) -> logits``."""

    def __init__(self, path: str, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = np.ascontiguousarray(x.detach().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
        return torch.from_numpy(self.session.run([ONNX_OUTPUT], {ONNX_INPUT: rows})[0])

    def eval(self) -> OnnxModule:
        return self


def _load_int8(path: str) -> torch.nn.Module:
    import warnings

    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        return torch.jit.load(path, map_location="cpu").eval()


def _fallback(loaded: LoadedModel, flavour: str, why: str) -> LoadedModel:
    note = f"version {loaded.version}: no usable {flavour} form ({why}); serving pytorch"
    log.warning("%s %s", loaded.alias, note)
    return dataclasses.replace(loaded, flavour="pytorch", flavour_note=note)


def with_flavour(client: MlflowClient, loaded: LoadedModel, flavour: str) -> LoadedModel:
    """``loaded`` running ``flavour``: its module swapped for the version's ONNX / int8 artifact, or, where the
    version has none (or it does not load), the PyTorch model with a ``flavour_note`` saying why."""
    if flavour == "pytorch":
        return loaded
    if flavour not in ARTIFACT_TAG:
        raise ValueError(f"flavour must be one of {', '.join(FLAVOURS)}, got {flavour!r}")
    mv = client.get_model_version(loaded.name, loaded.version)
    tags = dict(mv.tags or {})
    artifact = tags.get(tag(ARTIFACT_TAG[flavour]))
    if not artifact:
        why = next((tags[tag(k)] for k in WHY_MISSING_TAGS[flavour] if tags.get(tag(k))),
                   "no artifact logged; registered before deploy artifacts existed?")
        return _fallback(loaded, flavour, why)
    try:
        import mlflow.artifacts

        path = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=artifact,
                                                   tracking_uri=client.tracking_uri)
        module: Any = OnnxModule(path) if flavour == "onnx" else _load_int8(path)
        with torch.inference_mode():
            out = module(torch.zeros(1, loaded.n_features if loaded.table is None else _encoded_width(loaded)))
        if tuple(out.shape) != (1, loaded.num_classes):
            raise ValueError(f"it answers shape {tuple(out.shape)} for one row, expected (1, {loaded.num_classes})")
    except Exception as exc:
        return _fallback(loaded, flavour, f"{artifact}: {type(exc).__name__}: {exc}")
    log.info("%s version %s serves its %s form (%s)", loaded.alias, loaded.version, flavour, artifact)
    return dataclasses.replace(loaded, module=module, flavour=flavour, flavour_note=None)


def _encoded_width(loaded: LoadedModel) -> int:
    """The width the network of a table model sees (after its encoder)."""
    return int(getattr(loaded.module, "num_features", 0)) or len(loaded.feature_names or [])


def load_flavoured(client: MlflowClient, name: str, alias: str, version: str, flavour: str = "pytorch") -> LoadedModel:
    """:func:`serving.models.load_version`, then :func:`with_flavour`: what the gateway calls."""
    return with_flavour(client, load_version(client, name, alias, version), flavour)
