"""Strategy comparison on a benchmark table: many seeded searches per strategy, regret curves, and how many
evaluations each strategy needs to come within a tolerance of the table's optimum.

Driven in batches (``ask(batch)`` then ``tell`` each) so the predictor refits once per batch, as BANANAS does; the
loop is serial and seeded, so a comparison is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nas.evaluators import TabularEvaluator
from nas.strategies import get_strategy, zero_cost_order
from nas.tabular import BenchmarkTable, TableSpace


@dataclass
class StrategyCurve:
    """Per-seed best-so-far traces of one strategy (``best[seed][k]`` = best after k+1 evaluations)."""

    name: str
    best: np.ndarray
    seconds: float
    taus: list[float] = field(default_factory=list)

    def mean_best(self) -> np.ndarray:
        return self.best.mean(axis=0)

    def evals_to_reach(self, target: float) -> np.ndarray:
        """Evaluations each seed needed to reach ``target`` (``inf`` when it never did within the budget)."""
        hit = self.best >= target - 1e-12
        first = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, np.inf)
        return first.astype(float)


def table_search(
    table: BenchmarkTable,
    metric: str,
    strategy: str,
    *,
    seed: int,
    budget: int,
    batch: int = 1,
    pool_size: int = 1000,
    warm_start: int = 10,
    proxies: Mapping[str, Mapping[str, float]] | None = None,
    space: TableSpace | None = None,
    strategy_kwargs: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, list[float]]:
    """One seeded search on the table; returns the best-so-far trace and the predictor's pool Kendall τ values."""
    from scipy.stats import kendalltau

    space = space or TableSpace(table.archs)
    evaluator = TabularEvaluator(table, metric)
    kwargs: dict[str, Any] = dict(strategy_kwargs or {})
    if strategy == "predictor" and table.proxies:
        order = zero_cost_order(table.proxies)
        pool = [space.from_string(table.archs[i]) for i in order[:pool_size]]
        kwargs.setdefault("pool", pool)
        kwargs.setdefault("warm_start", pool[:warm_start])
        kwargs.setdefault("proxies", proxies)
    strat = get_strategy(strategy, space, seed=seed, metric=metric, **kwargs)
    trace: list[float] = []
    taus: list[float] = []
    best = -np.inf
    rng = np.random.default_rng(10_000 + seed)
    while len(trace) < budget:
        asked = strat.ask(min(batch, budget - len(trace)))
        if not asked:
            break
        for arch in asked:
            result = evaluator.evaluate(arch)
            strat.tell(arch, result)
            best = max(best, result.metrics[metric])
            trace.append(best)
        if strategy == "predictor" and len(trace) % 50 < batch:
            rows = rng.choice(len(table), min(500, len(table)), replace=False)
            sample = [space.from_string(table.archs[i]) for i in rows]
            sample = [a for a in sample if not strat.is_seen(a)]
            pred = strat.predict(sample)
            if pred is not None:
                taus.append(float(kendalltau(pred, [evaluator.true_value(a) for a in sample]).statistic))
    trace += [best] * (budget - len(trace))
    return np.array(trace), taus


def compare_strategies(
    table: BenchmarkTable,
    metric: str,
    strategies: Sequence[str],
    *,
    budget: int = 100,
    seeds: int = 20,
    batch: int = 1,
    pool_size: int = 1000,
    warm_start: int = 10,
    strategy_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, StrategyCurve]:
    """Run every strategy for ``seeds`` seeds on the table; returns their best-so-far curves."""
    import time

    from nas.tabular import proxy_lookup

    space = TableSpace(table.archs)
    proxies = proxy_lookup(table) if table.proxies else None
    out: dict[str, StrategyCurve] = {}
    for name in strategies:
        start = time.perf_counter()
        traces, taus = [], []
        for seed in range(seeds):
            trace, tau = table_search(table, metric, name, seed=seed, budget=budget, batch=batch,
                                      pool_size=pool_size, warm_start=warm_start, proxies=proxies, space=space,
                                      strategy_kwargs=(strategy_kwargs or {}).get(name))
            traces.append(trace)
            taus.extend(tau)
            if progress is not None:
                progress(name, seed)
        out[name] = StrategyCurve(name, np.stack(traces), time.perf_counter() - start, taus)
    return out


def summary(curves: Mapping[str, StrategyCurve], optimum: float, tolerances: Sequence[float] = (0.005, 0.01),
            checkpoints: Sequence[int] = (10, 25, 50, 100, 200, 300)) -> dict[str, Any]:
    """JSON-able figures: mean best/regret curves, regret at checkpoints, evaluations to reach each tolerance."""
    out: dict[str, Any] = {"optimum": optimum, "strategies": {}}
    for name, curve in curves.items():
        mean = curve.mean_best()
        budget = len(mean)
        entry: dict[str, Any] = {
            "budgets": list(range(1, budget + 1)),
            "mean_best": [float(v) for v in mean],
            "mean_regret": [float(optimum - v) for v in mean],
            "regret_at": {str(c): float(optimum - mean[c - 1]) for c in checkpoints if c <= budget},
            "seeds": int(curve.best.shape[0]),
            "seconds": curve.seconds,
        }
        for tol in tolerances:
            reach = curve.evals_to_reach(optimum - tol)
            entry[f"evals_to_{tol:g}"] = {
                "reached": int(np.isfinite(reach).sum()),
                "median": float(np.median(np.where(np.isfinite(reach), reach, budget + 1))),
                "mean_censored": float(np.mean(np.where(np.isfinite(reach), reach, budget + 1))),
            }
        if curve.taus:
            entry["predictor_tau_mean"] = float(np.mean(curve.taus))
        out["strategies"][name] = entry
    return out


def evaluations_ratio(curves: Mapping[str, StrategyCurve], optimum: float, *, target: str = "predictor",
                      against: str = "random") -> dict[str, float]:
    """How many times fewer evaluations ``target`` needs than ``against`` to reach the same mean regret.

    For each regret level the ``target`` strategy's mean curve reaches, the evaluations ``against`` needs for the
    same mean best (``inf`` if never within its budget); the ratio at the final level of ``target`` is returned
    with the level, plus the ratio for the regret ``against`` ends at.
    """
    a, b = curves[target].mean_best(), curves[against].mean_best()
    budget = len(a)

    def first(curve: np.ndarray, level: float) -> float:
        hit = np.flatnonzero(curve >= level - 1e-12)
        return float(hit[0] + 1) if len(hit) else float("inf")

    level = b[-1]  # what `against` achieves with its whole budget
    n_target = first(a, level)
    return {"regret_level": float(optimum - level), "evals_" + target: n_target, "evals_" + against: float(budget),
            "ratio": float(first(b, level) / n_target) if np.isfinite(n_target) else 0.0}
