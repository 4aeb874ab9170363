"""Models the gateway serves, loaded from the MLflow registry by alias, with what validation needs to know (the
registry's :class:`~serving.backend.ServedModel`; :mod:`serving.registry_backend` is the backend that loads them).

A :class:`LoadedModel` is immutable: hot reload builds a new one and swaps the reference, so a request that
already holds the old one finishes on it (nothing in flight is dropped).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from monitoring.core.model_ref import ModelRef
from monitoring.core.tasks import get_task
from serving.backend import InvalidModelOutput

__all__ = ["InvalidModelOutput", "LoadedModel", "load_version", "resolve_alias"]


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
    table: Any = None
    """A raw-table model (:class:`nas.table_model.TableClassifier`): it encodes validated named rows itself."""
    input_schema: list[dict] | None = None
    """The raw columns of a table model: ``{"name", "type", "optional"}`` (None for a float-matrix model)."""
    flavour: str = "pytorch"
    """The form ``module`` runs (``pytorch``, ``onnx``, ``int8``; see :mod:`serving.flavours`)."""
    flavour_note: str | None = None
    """Why the flavour asked for is not the one served (its artifact is missing or did not load), else None."""
    dropped_columns: dict[str, str] = field(default_factory=dict)
    """Columns of the training table the refresh did not use (``nasops.dropped_columns``): accepted and ignored."""
    task: str = "classification"
    """``regression``: the module answers one value per row in the target's units (no classes, no softmax)."""

    @property
    def regression(self) -> bool:
        """A number per row in the target's units (the core task kind's ``numeric_labels``), not classes."""
        return get_task(self.task).numeric_labels

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_form(self) -> str:
        return "table" if self.table is not None else "tensor"

    def predict_proba(self, x: np.ndarray | list[dict]) -> np.ndarray:
        """Softmax probabilities ``(n, C)`` for float32 rows ``(n, F)`` (or, for a table model, validated named
        rows, encoded by the model's own fitted transformer); raises :class:`InvalidModelOutput`."""
        if self.table is not None:
            if isinstance(x, np.ndarray):  # validated against a float-matrix champion: not this model's contract
                raise TypeError("a table model takes named rows, not a float matrix (champion and challenger have "
                                "different input schemas)")
            x = self.table.encode_records(x)
        with torch.inference_mode():
            logits = self.module(torch.from_numpy(x))
        if not isinstance(logits, torch.Tensor):
            raise InvalidModelOutput(f"model returned {type(logits).__name__}, expected a tensor of logits")
        if self.regression:
            return _values(logits, x.shape[0])
        if logits.ndim != 2 or logits.shape[0] != x.shape[0] or logits.shape[1] != self.num_classes:
            raise InvalidModelOutput(
                f"model returned shape {tuple(logits.shape)}, expected ({x.shape[0]}, {self.num_classes})"
            )
        probs = torch.softmax(logits.float(), dim=1).numpy()
        if not np.isfinite(probs).all():
            raise InvalidModelOutput("model returned non-finite logits")
        return probs

    def input_flags(self, rows: list[dict]) -> list[dict[str, str]] | None:
        """A table model's per-row ``{column: "unseen_category" | "unparseable"}`` (None: nothing to flag)."""
        flag = getattr(self.table, "input_flags", None)
        return flag(rows) if flag is not None else None

    def labels(self, probs: np.ndarray) -> list:
        """Predicted class labels, or a regression's values as floats."""
        if self.regression:
            return [float(v) for v in probs[:, 0]]
        return [self.classes[i] for i in probs.argmax(axis=1)]

    def describe(self) -> dict:
        return {"alias": self.alias, "version": self.version, "n_features": self.n_features,
                "num_classes": self.num_classes, "loaded_at": self.loaded_at, "input_form": self.input_form,
                "task": self.task,
                "flavour": self.flavour, **({"flavour_note": self.flavour_note} if self.flavour_note else {})}


def _values(out: torch.Tensor, rows: int) -> np.ndarray:
    """A regression's ``(n, 1)`` float64 values (the model inverted the target scaling); raises
    :class:`InvalidModelOutput` on another shape or a non-finite value."""
    if out.ndim != 2 or out.shape[0] != rows or out.shape[1] != 1:
        raise InvalidModelOutput(f"model returned shape {tuple(out.shape)}, expected ({rows}, 1) values")
    values = out.double().numpy()
    if not np.isfinite(values).all():
        raise InvalidModelOutput("model returned non-finite values")
    return values


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


def _load_table_model(model_dir: str) -> Any:
    """The :class:`nas.table_model.TableClassifier` of a raw-table model (a pyfunc without a pytorch flavour),
    else None."""
    from mlflow.models import Model

    try:
        flavors = Model.load(model_dir).flavors
    except Exception:
        return None
    if "pytorch" in flavors or "python_function" not in flavors:
        return None
    import mlflow.pyfunc

    python_model = mlflow.pyfunc.load_model(model_dir).unwrap_python_model()
    if not hasattr(python_model, "encode") or not hasattr(python_model, "schema"):
        raise ValueError(f"the pyfunc model at {model_dir} is not a nasops table model (no encode/schema)")
    python_model.module.eval()
    return python_model


def load_version(client: MlflowClient, name: str, alias: str, version: str) -> LoadedModel:
    """Load ``models:/name/version`` and its contract (features from the signature, class labels from tags)."""
    import mlflow.artifacts
    import mlflow.pytorch

    mv = client.get_model_version(name, version)
    tags = dict(mv.tags or {})
    ref = ModelRef.from_version(mv)  # the version's nasops.* tags: task, classes, features
    # Resolve and fetch through this client's store, not MLflow's process-wide URIs (or MLFLOW_*_URI variables
    # another part of the process may have set): two gateways on two registries can share a process.
    source = client.get_model_version_download_uri(name, version)
    model_dir = mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=client.tracking_uri)
    task, numeric = ref.task, ref.kind.numeric_labels
    table = _load_table_model(model_dir)
    if table is not None:
        classes = [] if numeric else ref.classes or table.classes
        return LoadedModel(alias=alias, name=name, version=str(version), module=table.module,
                           n_features=len(table.schema), classes=list(classes), feature_names=table.columns,
                           table=table, input_schema=table.schema, task=task,
                           dropped_columns=dict(_json_tag(tags, "nasops.dropped_columns") or {}))
    module = mlflow.pytorch.load_model(model_dir, map_location="cpu")
    with contextlib.suppress(Exception):  # torch.export (pt2) modules refuse .eval(); MLflow set them up already
        module.eval()
    n_features, n_out = _signature_width(model_dir)
    feature_names = ref.feature_names or None
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
    if numeric:
        return LoadedModel(alias=alias, name=name, version=str(version), module=module, n_features=int(n_features),
                           classes=[], feature_names=feature_names, task=task)
    classes = ref.classes
    if not classes:
        if n_out is None:
            with torch.inference_mode():
                n_out = int(module(torch.zeros(1, n_features)).shape[1])
        classes = list(range(n_out))
    return LoadedModel(alias=alias, name=name, version=str(version), module=module, n_features=int(n_features),
                       classes=list(classes), feature_names=feature_names, task=task)

