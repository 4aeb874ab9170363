"""Search strategies by name: ``get_strategy("predictor", space, seed=0, pool=..., proxies=...)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nas.spaces.base import SearchSpace
from nas.strategies.base import Observation, Strategy
from nas.strategies.predictor import PredictorGuided, acquisition
from nas.strategies.simple import LocalSearch, RandomSearch, RegularizedEvolution
from nas.strategies.warmstart import zero_cost_order

STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "random": RandomSearch,
    "evolution": RegularizedEvolution,
    "local": LocalSearch,
    "predictor": PredictorGuided,
}


def list_strategies() -> list[str]:
    return list(STRATEGIES)


def get_strategy(name: str, space: SearchSpace, *, seed: int = 0, **kwargs: Any) -> Strategy:
    """A fresh strategy over ``space``; unknown names raise ``KeyError`` naming the valid ones."""
    if name not in STRATEGIES:
        raise KeyError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    if name != "predictor":
        kwargs.pop("proxies", None)  # only the predictor uses proxy features; the rest accept the same call
        for key in ("predictor", "acquisition", "n_init"):
            kwargs.pop(key, None)
    return STRATEGIES[name](space, seed=seed, **kwargs)


__all__ = [
    "LocalSearch",
    "Observation",
    "PredictorGuided",
    "RandomSearch",
    "RegularizedEvolution",
    "Strategy",
    "acquisition",
    "get_strategy",
    "list_strategies",
    "zero_cost_order",
]
