"""The predictor seam: learn accuracy from (features, accuracy) pairs, predict a mean and a spread.

The spread is what acquisition functions (Thompson sampling, UCB, EI) trade against the mean, so every predictor is
an ensemble and reports the standard deviation across its members (BANANAS, White et al. 2021).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from nas.registry import Registry


class Predictor(ABC):
    """``fit(x, y)`` then ``predict(x) -> (mean, std)``; inputs are float arrays ``(n, d)``."""

    name: str = ""

    @abstractmethod
    def fit(self, x: np.ndarray, y: np.ndarray) -> Predictor: ...

    @abstractmethod
    def predict_members(self, x: np.ndarray) -> np.ndarray:
        """Predictions of every ensemble member, ``(members, n)``."""

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        preds = self.predict_members(x)
        return preds.mean(axis=0), preds.std(axis=0)


class Standardizer:
    """Column-wise z-scoring fitted on the training features (constant columns are left at zero)."""

    def fit(self, x: np.ndarray) -> Standardizer:
        self.mean = x.mean(axis=0)
        std = x.std(axis=0)
        self.std = np.where(std > 1e-12, std, 1.0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)


PREDICTORS: Registry[type[Predictor]] = Registry("predictor", modules=("nas.predictors.mlp", "nas.predictors.gbdt"))
"""Predictor classes by name, filled by ``@PREDICTORS.register`` above each class."""
