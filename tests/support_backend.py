"""A stand-in :class:`serving.backend.ModelBackend` for in-process gateway tests: deterministic numpy models, no
PyTorch, no registry.

``StandInBackend(aliases={"champion": StandInModel(...), ...})`` serves each alias's model; tests move an alias
with :meth:`StandInBackend.point` (a new version, or None to remove the alias) and then reload the gateway, exactly
as a registry alias move is followed. A model's answer is a fixed function of its version and the input (a seeded
linear map and a softmax), so two versions disagree and a test can recompute any answer; ``fault`` breaks it on
purpose: ``"nan"`` (non-finite output), ``"nan_above"`` (non-finite for rows whose first value exceeds 100, a
valid input), ``"raise"`` (an exception), ``"shape"`` (a mis-shaped answer), ``"slow"`` (answers after 0.5 s),
``"load"`` (the version cannot be loaded).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.backend import InvalidModelOutput


@dataclass(frozen=True)
class StandInModel:
    """A served model without a network: ``softmax(x @ W(version))`` over ``classes`` (or ``x.sum() + version``
    for ``task="regression"``)."""

    version: str
    n_features: int = 4
    classes: list = field(default_factory=lambda: [0, 1, 2])
    feature_names: list[str] | None = None
    input_schema: list[dict] | None = None
    task: str = "classification"
    fault: str | None = None
    alias: str = ""
    name: str = "standin"
    flavour_note: str | None = None
    loaded_at: float = field(default_factory=time.time)

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def weights(self) -> np.ndarray:
        seed = int.from_bytes(hashlib.blake2b(self.version.encode(), digest_size=4).digest(), "big")
        return np.random.default_rng(seed).normal(size=(self._width(), max(1, self.num_classes)))

    def _width(self) -> int:
        return len(self.input_schema) if self.input_schema is not None else self.n_features

    def _encode(self, x: np.ndarray | list[dict]) -> np.ndarray:
        if self.input_schema is None:
            if not isinstance(x, np.ndarray):
                raise TypeError("a float-matrix model takes a float matrix, not named rows")
            return x.astype(np.float64)
        if isinstance(x, np.ndarray):
            raise TypeError("a table model takes named rows, not a float matrix")
        return np.array([[_cell(row.get(c["name"])) for c in self.input_schema] for row in x], dtype=np.float64)

    def predict_proba(self, x: np.ndarray | list[dict]) -> np.ndarray:
        if self.fault == "raise":
            raise RuntimeError("stand-in model fault")
        if self.fault == "slow":
            time.sleep(0.5)
        rows = self._encode(x)
        if self.regression:
            out = rows.sum(axis=1, keepdims=True) + float(self.version)
        else:
            logits = rows @ self.weights()
            out = np.exp(logits - logits.max(axis=1, keepdims=True))
            out = out / out.sum(axis=1, keepdims=True)
        if self.fault == "nan":
            out = np.full_like(out, np.nan)
        if self.fault == "nan_above":
            out = np.where(rows[:, :1] > 100, np.nan, out)
        if self.fault == "shape":
            out = out[:, :1]
        if not np.isfinite(out).all():
            raise InvalidModelOutput("model returned non-finite values")
        if not self.regression and out.shape[1] != self.num_classes:
            raise InvalidModelOutput(f"model returned shape {out.shape}, expected (n, {self.num_classes})")
        return out

    def labels(self, probs: np.ndarray) -> list:
        if self.regression:
            return [float(v) for v in probs[:, 0]]
        return [self.classes[i] for i in probs.argmax(axis=1)]

    def describe(self) -> dict[str, Any]:
        return {"alias": self.alias, "version": self.version, "n_features": self.n_features,
                "num_classes": self.num_classes, "loaded_at": self.loaded_at, "task": self.task,
                "input_form": "tensor" if self.input_schema is None else "table", "flavour": "standin"}


def _cell(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool | int | float):
        return float(value)
    return float(int.from_bytes(hashlib.blake2b(str(value).encode(), digest_size=2).digest(), "big") % 7)


class StandInBackend:
    """Aliases -> stand-in models, moved by the test; counts loads (a reload of an unchanged alias loads nothing)."""

    def __init__(self, aliases: dict[str, StandInModel | None] | None = None) -> None:
        self.aliases: dict[str, StandInModel | None] = dict(aliases or {})
        self.loads: list[tuple[str, str]] = []
        self.started = False
        self.unreachable = False

    def point(self, alias: str, model: StandInModel | None) -> None:
        """Move ``alias`` to ``model`` (None: delete the alias)."""
        self.aliases[alias] = model

    def start(self) -> None:
        self.started = True

    def resolve(self, alias: str) -> str | None:
        if self.unreachable:
            raise ConnectionError("stand-in registry unreachable")
        model = self.aliases.get(alias)
        return None if model is None else model.version

    def load(self, alias: str, version: str, load_as: str) -> StandInModel:
        model = self.aliases.get(alias)
        if model is None or model.version != version:
            raise LookupError(f"alias {alias!r} no longer points at version {version}")
        if model.fault == "load":
            raise RuntimeError(f"version {version} cannot be loaded")
        self.loads.append((alias, version))
        return StandInModel(**{**model.__dict__, "alias": load_as, "loaded_at": time.time()})
