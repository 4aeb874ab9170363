"""The data a search trains on, as plain numpy arrays (no framework, no files of ours).

``pipelines`` prepares and validates the user's data and saves it with :meth:`TaskData.save`; everything in ``nas``
takes a :class:`TaskData`. Features are stored flat and raw (as the user's data has them: what a client will send
to the gateway), ``(n, prod(input_shape))`` float32, with a per-feature ``feature_mean``/``feature_std`` computed on
the training split. Networks see standardised ``(n, *input_shape)`` tensors: :meth:`TaskData.tensors` does both, and
the served model carries the same standardisation, so production inputs need no preprocessing by the caller.

A user's table that needs encoding (text columns, missing values; ``meta["input_form"] == "table"``) is stored
encoded for ``train``/``val``/``test`` (what the networks train on) and raw for ``prod``: ``x_prod`` is then an
object array of the raw rows in the input schema's column order (numbers, text, booleans, ``None`` for missing),
which is what a client sends to the served model, and what the tournament and the canary replay.

A regression (``meta["task"] == "regression"``, ``num_classes`` 1) stores its target as float32 in its own units,
with ``meta["target_mean"]``/``meta["target_std"]`` of the training split; :meth:`TaskData.tensors` hands the
networks the standardised target, and the served model inverts the scaling (:class:`nas.export.FlatInputRegressor`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where tensors are made: the traffic process loads data without it
    import torch

SPLITS = ("train", "val", "test", "prod")


@dataclass
class TaskData:
    """Splits of a classification (or regression) task with the shape a network sees and the number of classes
    (1 for a regression: one output)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    input_shape: tuple[int, ...]
    num_classes: int
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    x_prod: np.ndarray | None = None
    y_prod: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    feature_mean: np.ndarray | None = None
    feature_std: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(d) for d in self.input_shape)
        width = int(np.prod(self.input_shape))
        mean = np.zeros(width) if self.feature_mean is None else self.feature_mean
        std = np.ones(width) if self.feature_std is None else self.feature_std
        self.feature_mean = np.broadcast_to(np.asarray(mean, dtype=np.float32), (width,)).copy()
        std = np.broadcast_to(np.asarray(std, dtype=np.float32), (width,)).copy()
        std[~np.isfinite(std) | (std <= 0)] = 1.0  # constant features stay constant instead of exploding
        self.feature_std = std
        label_type = np.float32 if self.is_regression else np.int64
        if self.is_regression and "target_mean" not in self.meta and self.y_train is not None:
            y = np.asarray(self.y_train, dtype=np.float64)
            self.meta["target_mean"] = float(y.mean())
            self.meta["target_std"] = float(y.std()) if float(y.std()) > 0 else 1.0
        for split in SPLITS:
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            if x is None:
                continue
            if split == "prod" and self.raw_prod:
                self.x_prod = np.asarray(x, dtype=object).reshape(len(x), -1)
                self.y_prod = np.asarray(y, dtype=label_type)
                continue
            x = np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), -1)
            if x.shape[1] != width:
                raise ValueError(
                    f"x_{split} has {x.shape[1]} features but input_shape {self.input_shape} needs {width}"
                )
            setattr(self, f"x_{split}", x)
            setattr(self, f"y_{split}", np.asarray(y, dtype=label_type))

    @property
    def task(self) -> str:
        """``classification`` or ``regression`` (prepared data from before regression existed: classification)."""
        return str(self.meta.get("task", "classification"))

    @property
    def is_regression(self) -> bool:
        return self.task == "regression"

    @property
    def score_key(self) -> str:
        """The validation metric a search and a retraining maximise: ``val_accuracy``, or ``val_neg_rmse`` (minus the
        RMSE in the target's units) for a regression."""
        return "val_neg_rmse" if self.is_regression else "val_accuracy"

    @property
    def target_scale(self) -> tuple[float, float]:
        """``(mean, std)`` of a regression target on the training split (``(0, 1)`` for a classifier)."""
        if not self.is_regression:
            return 0.0, 1.0
        return float(self.meta["target_mean"]), float(self.meta["target_std"])

    def standardize_target(self, y: np.ndarray) -> np.ndarray:
        """A regression target in its own units -> what the networks are trained on."""
        mean, std = self.target_scale
        return ((np.asarray(y, dtype=np.float64) - mean) / std).astype(np.float32)

    @property
    def raw_prod(self) -> bool:
        """``x_prod`` holds a table's raw rows (what clients send), not the encoded features (see the module)."""
        return self.meta.get("input_form") == "table"

    def standardize(self, x: np.ndarray) -> np.ndarray:
        """Raw flat features -> what the networks are trained on."""
        return ((np.asarray(x, dtype=np.float32) - self.feature_mean) / self.feature_std).astype(np.float32)

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised ``(x, y)`` of a split shaped for the network: ``(n, *input_shape)`` and ``(n,)``."""
        import torch

        x = getattr(self, f"x_{split}")
        y = getattr(self, f"y_{split}")
        if x is None:
            raise ValueError(f"this TaskData has no {split!r} split")
        target = torch.from_numpy(self.standardize_target(y)) if self.is_regression else torch.from_numpy(y)
        return torch.from_numpy(self.standardize(x)).reshape(len(x), *self.input_shape), target

    def batch(self, size: int = 64, seed: int = 0, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        """A seeded random batch (for zero-cost proxies), stratification not needed at this size."""
        import torch

        x, y = self.tensors(split)
        rng = np.random.default_rng(seed)
        idx = rng.choice(len(x), size=min(size, len(x)), replace=False)
        index = torch.from_numpy(np.sort(idx))
        return x[index], y[index]

    def subset(self, fraction: float, seed: int = 0) -> TaskData:
        """The same task with a seeded fraction of the training rows (for low-fidelity evaluations)."""
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        if fraction == 1:
            return self
        rng = np.random.default_rng(seed)
        n = max(self.num_classes, round(len(self.x_train) * fraction))
        idx = np.sort(rng.choice(len(self.x_train), size=min(n, len(self.x_train)), replace=False))
        return TaskData(
            self.x_train[idx], self.y_train[idx], self.x_val, self.y_val, self.input_shape, self.num_classes,
            self.x_test, self.y_test, self.x_prod, self.y_prod, dict(self.meta), self.feature_mean, self.feature_std,
        )

    # -- persistence --------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write one ``.npz`` (arrays) beside nothing else: metadata travels inside it as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: v for s in SPLITS for k in (f"x_{s}", f"y_{s}") if (v := getattr(self, k)) is not None}
        if self.raw_prod and "x_prod" in arrays:  # raw rows mix types: JSON, so the file loads without pickle
            arrays["x_prod_raw"] = np.array(json.dumps(arrays.pop("x_prod").tolist()))
        meta = {"input_shape": list(self.input_shape), "num_classes": self.num_classes, **self.meta}
        np.savez_compressed(
            path,
            meta=np.array(json.dumps(meta)),
            feature_mean=self.feature_mean,
            feature_std=self.feature_std,
            **arrays,
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> TaskData:
        with np.load(Path(path), allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            arrays = {k: f[k] for k in f.files if k != "meta"}
        if "x_prod_raw" in arrays:
            rows = json.loads(str(arrays.pop("x_prod_raw")))
            raw = np.empty((len(rows), len(rows[0]) if rows else 0), dtype=object)
            if rows:
                raw[:] = rows
            arrays["x_prod"] = raw
        shape = tuple(meta.pop("input_shape"))
        classes = int(meta.pop("num_classes"))
        return cls(input_shape=shape, num_classes=classes, meta=meta, **arrays)  # type: ignore[arg-type]
