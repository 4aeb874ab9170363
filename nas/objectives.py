"""Hardware-aware objectives: hard constraints (max parameters, max latency) and the Pareto front.

The refresh asks for things like "the most accurate architecture under 2 ms"; a constraint turns that into a yes/no
per result, and the Pareto front shows what the accuracy costs in latency or size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Constraints:
    """Upper bounds a result must meet; ``None`` means unbounded."""

    max_params: float | None = None
    max_latency_ms: float | None = None
    latency_key: str = "latency_ms"
    """The metric ``max_latency_ms`` bounds: fp32 ``latency_ms``, or ``latency_int8_ms`` (objective latency_int8)."""

    def __post_init__(self) -> None:
        for name in ("max_params", "max_latency_ms"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 (or None for no bound), got {value}")

    @property
    def active(self) -> bool:
        return self.max_params is not None or self.max_latency_ms is not None

    def violations(self, metrics: Mapping[str, float]) -> list[str]:
        """Sentences naming each broken bound; a bound whose metric is missing counts as broken."""
        out = []
        for bound, key in ((self.max_params, "params"), (self.max_latency_ms, self.latency_key)):
            if bound is None:
                continue
            value = metrics.get(key)
            if value is None:
                out.append(f"{key} was not measured but a bound of {bound:g} was set")
            elif value > bound:
                out.append(f"{key}={value:g} exceeds the bound {bound:g}")
        return out

    def satisfied(self, metrics: Mapping[str, float]) -> bool:
        return not self.violations(metrics)


def objective_value(metrics: Mapping[str, float], metric: str, constraints: Constraints | None = None) -> float:
    """The value strategies maximise: the metric, or ``-inf`` when a constraint is broken."""
    if constraints is not None and not constraints.satisfied(metrics):
        return float("-inf")
    if metric not in metrics:
        raise KeyError(f"result has no metric {metric!r}; it has: {', '.join(sorted(metrics))}")
    return float(metrics[metric])


def pareto_front(points: Sequence[Mapping[str, float]], maximize: str, minimize: str) -> list[int]:
    """Indices of the non-dominated points (higher ``maximize``, lower ``minimize``), sorted by ``minimize``.

    A point is dominated if another is at least as good on both and strictly better on one. O(n log n): sort by the
    cost, then keep every point that beats the best accuracy seen at a lower cost.
    """
    rows = [(i, float(p[maximize]), float(p[minimize])) for i, p in enumerate(points)
            if maximize in p and minimize in p and np.isfinite(p[maximize]) and np.isfinite(p[minimize])]
    rows.sort(key=lambda r: (r[2], -r[1]))
    front: list[int] = []
    best = -np.inf
    for i, acc, _cost in rows:
        if acc > best:
            front.append(i)
            best = acc
    return front


def best_feasible(
    points: Sequence[Mapping[str, float]], metric: str, constraints: Constraints | None = None
) -> int | None:
    """Index of the highest ``metric`` among points meeting ``constraints`` (``None`` if none does)."""
    best, best_i = -np.inf, None
    for i, p in enumerate(points):
        value = objective_value(p, metric, constraints) if metric in p else -np.inf
        if value > best:
            best, best_i = value, i
    return best_i
