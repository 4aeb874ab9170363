"""A fitted non-network model (a LightGBM or a linear baseline) in the served form of a network.

The gateway runs one execution path for every version: validated rows -> (a table model's fitted encoder) ->
``module(torch.Tensor (n, F))`` -> logits -> softmax (``serving.models.LoadedModel.predict_proba``).
:class:`EstimatorModule` is a parameter-free ``torch.nn.Module`` that fits that seam: it takes the same raw flat
features as :class:`nas.export.FlatInputClassifier`, applies the same training-split standardisation, and answers
the estimator's log-probabilities as logits (their softmax is the estimator's probabilities), or a regression's
``(n, 1)`` values in the target's units. So a baseline is logged, registered, loaded and served exactly like a
network (the pytorch flavour for a float matrix, inside :class:`nas.table_model.TableClassifier` for a raw table),
and nothing downstream asks which kind of model it holds.

The estimator is duck-typed (``predict_proba`` / ``predict`` and ``classes_``): this module imports neither
LightGBM nor scikit-learn; unpickling the estimator imports its own library.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

PROBABILITY_FLOOR = 1e-12
"""Log-probabilities are taken of at least this: a class the estimator gives 0 stays finite (and ~0 after softmax)."""


class EstimatorModule(nn.Module):
    """``(n, F)`` raw float features -> standardise -> ``estimator`` -> log-probabilities ``(n, C)`` (a classifier)
    or values ``(n, 1)`` (a regression, ``num_classes`` 0)."""

    serialization_format = "pickle"
    """How MLflow's pytorch flavour must save it: torch.export cannot trace a call into the estimator."""

    def __init__(self, estimator: Any, mean: np.ndarray, std: np.ndarray, num_classes: int) -> None:
        super().__init__()
        self.estimator = estimator
        self.num_classes = int(num_classes)
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float32)))
        self.register_buffer("std", torch.as_tensor(np.asarray(std, dtype=np.float32)))

    @property
    def num_features(self) -> int:
        return int(self.mean.numel())

    @property
    def regression(self) -> bool:
        return self.num_classes == 0

    def standardize(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """Raw features -> what the estimator was fitted on (the networks' standardisation, float64 for the
        estimator's own input checks)."""
        x = torch.as_tensor(np.asarray(x, dtype=np.float32)) if isinstance(x, np.ndarray) else x
        return ((x.detach().to(torch.float32) - self.mean) / self.std).numpy().astype(np.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.standardize(x)
        if self.regression:
            return torch.from_numpy(np.asarray(self.estimator.predict(z), dtype=np.float32).reshape(len(z), 1))
        probs = np.zeros((len(z), self.num_classes), dtype=np.float64)
        # a class absent from the training rows has no column of its own: it keeps probability 0
        probs[:, np.asarray(self.estimator.classes_, dtype=np.int64)] = self.estimator.predict_proba(z)
        return torch.from_numpy(np.log(np.maximum(probs, PROBABILITY_FLOOR)).astype(np.float32))
