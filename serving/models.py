"""Models the gateway serves, loaded from the MLflow registry by alias, with what validation needs to know.

A :class:`LoadedModel` is immutable: hot reload builds a new one and swaps the reference, so a request that
already holds the old one finishes on it (nothing in flight is dropped).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient


class InvalidModelOutput(RuntimeError):
    """The model answered, but not with finite logits of the expected shape (a broken challenger)."""


@dataclass(frozen=True)
class LoadedModel:
    """One registered model version in memory."""

    alias: str
    name: str
    version: str
    module: torch.nn.Module
    n_features: int
    classes: list = field(default_factory=list)
    feature_names: list[str] | None = None
    loaded_at: float = field(default_factory=time.time)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Softmax probabilities ``(n, C)`` for float32 rows ``(n, F)``; raises :class:`InvalidModelOutput`."""
        with torch.inference_mode():
            logits = self.module(torch.from_numpy(x))
        if not isinstance(logits, torch.Tensor):
            raise InvalidModelOutput(f"model returned {type(logits).__name__}, expected a tensor of logits")
        if logits.ndim != 2 or logits.shape[0] != x.shape[0] or logits.shape[1] != self.num_classes:
            raise InvalidModelOutput(
                f"model returned shape {tuple(logits.shape)}, expected ({x.shape[0]}, {self.num_classes})"
            )
        probs = torch.softmax(logits.float(), dim=1).numpy()
        if not np.isfinite(probs).all():
            raise InvalidModelOutput("model returned non-finite logits")
        return probs

    def labels(self, probs: np.ndarray) -> list:
        return [self.classes[i] for i in probs.argmax(axis=1)]

    def describe(self) -> dict:
        return {"alias": self.alias, "version": self.version, "n_features": self.n_features,
                "num_classes": self.num_classes, "loaded_at": self.loaded_at}


def resolve_alias(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version an alias points at, or None when the model or the alias does not exist."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _json_tag(tags: dict, key: str):
    raw = tags.get(key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _signature_width(model_dir: str) -> tuple[int | None, int | None]:
    """``(F, C)`` from the logged signature (TensorSpec float32 (-1, F) -> (-1, C)); None where absent."""
    from mlflow.models import Model

    try:
        signature = Model.load(model_dir).signature
    except Exception:
        return None, None
    if signature is None:
        return None, None

    def width(schema) -> int | None:
        try:
            shape = schema.inputs[0].shape
        except (AttributeError, IndexError, TypeError):
            return None
        return int(shape[-1]) if shape and len(shape) == 2 and shape[-1] and shape[-1] > 0 else None

    return width(signature.inputs), width(signature.outputs) if signature.outputs else None


def load_version(client: MlflowClient, name: str, alias: str, version: str) -> LoadedModel:
    """Load ``models:/name/version`` and its contract (features from the signature, class labels from tags)."""
    import mlflow.artifacts
    import mlflow.pytorch

    mv = client.get_model_version(name, version)
    tags = dict(mv.tags or {})
    # Resolve and fetch through this client's store, not MLflow's process-wide URIs (or MLFLOW_*_URI variables
    # another part of the process may have set): two gateways on two registries can share a process.
    source = client.get_model_version_download_uri(name, version)
    model_dir = mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=client.tracking_uri)
    module = mlflow.pytorch.load_model(model_dir, map_location="cpu")
    with contextlib.suppress(Exception):  # torch.export (pt2) modules refuse .eval(); MLflow set them up already
        module.eval()
    n_features, n_out = _signature_width(model_dir)
    feature_names = _json_tag(tags, "nasops.features")
    if n_features is None and feature_names:
        n_features = len(feature_names)
    if n_features is None:
        shape = _json_tag(tags, "nasops.input_shape")
        n_features = math.prod(shape) if shape else None
    if n_features is None:
        raise ValueError(
            f"model {name} version {version} has no input signature and no nasops.features/nasops.input_shape "
            "tag: the gateway cannot validate requests for it; log it with a TensorSpec signature"
        )
    classes = _json_tag(tags, "nasops.classes")
    if not classes:
        if n_out is None:
            with torch.inference_mode():
                n_out = int(module(torch.zeros(1, n_features)).shape[1])
        classes = list(range(n_out))
    return LoadedModel(alias=alias, name=name, version=str(version), module=module, n_features=int(n_features),
                       classes=list(classes), feature_names=feature_names)

