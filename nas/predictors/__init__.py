"""Performance predictors by name: ``get_predictor("mlp", seed=0)`` or ``get_predictor("lgbm")``.

Each predictor class registers itself in :data:`PREDICTORS` (a :class:`nas.registry.Registry`) with its paper and
the keyword arguments it takes.
"""

from __future__ import annotations

from typing import Any

from nas.predictors.base import PREDICTORS, Predictor
from nas.predictors.gbdt import LightGBMEnsemble
from nas.predictors.mlp import MLPEnsemble


def list_predictors() -> list[str]:
    """Names accepted by :func:`get_predictor`, sorted."""
    return sorted(PREDICTORS.names())


def get_predictor(name: str, **kwargs: Any) -> Predictor:
    """A fresh predictor; unknown names raise ``KeyError`` naming the valid ones."""
    return PREDICTORS.get(name)(**kwargs)


__all__ = ["PREDICTORS", "LightGBMEnsemble", "MLPEnsemble", "Predictor", "get_predictor", "list_predictors"]
