"""Search strategies by name: ``get_strategy("predictor", space, seed=0, pool=..., proxies=...)``.

Each strategy class registers itself in :data:`STRATEGIES` (a :class:`nas.registry.Registry`) next to its
definition, with its paper and the keyword arguments it takes; :func:`get_strategy` checks a call against them.
"""

from __future__ import annotations

from typing import Any

import nas.strategies.simple  # noqa: F401  (first: the baselines lead the registry's order)
from nas.spaces.base import SearchSpace
from nas.strategies.base import SHARED_KWARGS, STRATEGIES, Failure, Observation, Strategy, Trial
from nas.strategies.predictor import PredictorGuided, acquisition
from nas.strategies.simple import LocalSearch, RandomSearch, RegularizedEvolution
from nas.strategies.warmstart import zero_cost_order

CONTEXT_KWARGS: tuple[str, ...] = ("proxies",)
"""What a caller may offer every strategy; a strategy that does not list it in its ``kwargs`` ignores it."""


def list_strategies(*, multi_fidelity: bool | None = None) -> list[str]:
    """Registered names in registration order; ``multi_fidelity`` keeps only schedulers (True) or only
    single-fidelity strategies (False)."""
    names = STRATEGIES.names()
    if multi_fidelity is None:
        return names
    return [n for n in names if bool(STRATEGIES.entry(n).metadata.get("multi_fidelity")) == multi_fidelity]


def strategy_kwargs(name: str) -> tuple[str, ...]:
    """The keyword arguments strategy ``name`` accepts (its own plus :data:`SHARED_KWARGS`)."""
    return SHARED_KWARGS + tuple(STRATEGIES.entry(name).metadata.get("kwargs", ()))


def get_strategy(name: str, space: SearchSpace, *, seed: int = 0, **kwargs: Any) -> Strategy:
    """A fresh strategy over ``space``; unknown names raise ``KeyError`` naming the valid ones, an argument the
    strategy does not take raises ``ValueError`` naming the ones it does."""
    entry = STRATEGIES.entry(name)
    accepted = strategy_kwargs(name)
    for key in CONTEXT_KWARGS:
        if key not in accepted:
            kwargs.pop(key, None)
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise ValueError(f"strategy {name!r} takes no argument {unknown[0]!r}; it takes: {', '.join(accepted)}")
    return entry.builder(space, seed=seed, **kwargs)


__all__ = [
    "CONTEXT_KWARGS",
    "STRATEGIES",
    "Failure",
    "LocalSearch",
    "Observation",
    "PredictorGuided",
    "RandomSearch",
    "RegularizedEvolution",
    "Strategy",
    "Trial",
    "acquisition",
    "get_strategy",
    "list_strategies",
    "strategy_kwargs",
    "zero_cost_order",
]
