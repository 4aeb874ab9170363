"""Performance predictors by name: ``get_predictor("mlp", seed=0)`` or ``get_predictor("lgbm")``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nas.predictors.base import Predictor
from nas.predictors.gbdt import LightGBMEnsemble
from nas.predictors.mlp import MLPEnsemble

PREDICTORS: dict[str, Callable[..., Predictor]] = {"mlp": MLPEnsemble, "lgbm": LightGBMEnsemble}


def list_predictors() -> list[str]:
    return sorted(PREDICTORS)


def get_predictor(name: str, **kwargs: Any) -> Predictor:
    """A fresh predictor; unknown names raise ``KeyError`` naming the valid ones."""
    if name not in PREDICTORS:
        raise KeyError(f"unknown predictor {name!r}; choose one of: {', '.join(list_predictors())}")
    return PREDICTORS[name](**kwargs)


__all__ = ["LightGBMEnsemble", "MLPEnsemble", "Predictor", "get_predictor", "list_predictors"]
