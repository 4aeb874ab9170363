"""The seam between the gateway and where its models come from: a :class:`ModelBackend` resolves an alias to a
version and loads that version as a :class:`ServedModel`.

The gateway (routing, fallback, shadow, logging, feedback, the admin API) only ever calls what these two protocols
name, so its whole HTTP contract can be exercised in-process against a deterministic stand-in
(``tests/support_backend.py``) without PyTorch or a registry, while production uses
:class:`serving.registry_backend.MlflowRegistryBackend` (the MLflow registry, PyTorch / ONNX / int8 forms). This
module imports neither PyTorch nor MLflow: it is on the gateway's import path whatever the backend.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["InvalidModelOutput", "ModelBackend", "ServedModel"]


class InvalidModelOutput(RuntimeError):
    """The model answered, but not with finite logits of the expected shape (a broken challenger)."""


@runtime_checkable
class ServedModel(Protocol):
    """One loaded model version, as the gateway uses it. Immutable: a reload builds a new one and swaps the
    reference, so a request that holds the old one finishes on it."""

    alias: str
    name: str
    version: str
    n_features: int
    classes: list
    feature_names: list[str] | None
    input_schema: list[dict] | None
    """The raw columns of a table model (None: a float-matrix model)."""
    task: str
    flavour_note: str | None

    @property
    def regression(self) -> bool: ...

    @property
    def num_classes(self) -> int: ...

    def predict_proba(self, x: np.ndarray | list[dict]) -> np.ndarray:
        """``(n, C)`` probabilities (a regression: ``(n, 1)`` values); raises :class:`InvalidModelOutput`."""
        ...

    def labels(self, probs: np.ndarray) -> list:
        """Predicted class labels (a regression: its values as floats)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What ``/admin/state`` shows of it."""
        ...


@runtime_checkable
class ModelBackend(Protocol):
    """Where the gateway's models come from (the registry in production, a stand-in in tests)."""

    def start(self) -> None:
        """Process-wide preparation before the first load (thread counts, ...); called once by the gateway."""
        ...

    def resolve(self, alias: str) -> str | None:
        """The version ``alias`` points at; None when the model or the alias does not exist. A store that cannot
        be read raises (the gateway keeps serving what it has and records the error)."""
        ...

    def load(self, alias: str, version: str, load_as: str) -> ServedModel:
        """Load ``version`` (resolved from ``alias``) to serve as variant ``load_as``; raises on failure."""
        ...
