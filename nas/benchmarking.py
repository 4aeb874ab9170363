"""Strategy comparison on a benchmark table: many seeded searches per strategy, regret curves, and how many
evaluations each strategy needs to come within a tolerance of the table's optimum.

Every search runs on the one search loop (:func:`nas.search.run_search`), serially in batches (``ask(batch)`` then
``tell`` each, so the predictor refits once a batch, as BANANAS does), seeded, so a comparison is reproducible. The
predictor's candidate pool and warm start are the table's zero-cost ranking by :func:`zero_cost_order`, the rank
aggregation the refresh's pre-filter uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nas.evaluators import TabularEvaluator
from nas.search import run_search
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
    tau_rows: int = 500,
    tau_every: int = 50,
) -> tuple[np.ndarray, list[float]]:
    """One seeded search on the table; returns the best-so-far trace and the predictor's pool Kendall τ values
    (on ``tau_rows`` random rows not evaluated yet, every ``tau_every`` evaluations)."""
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
    rows = np.random.default_rng(10_000 + seed).choice(len(table), min(tau_rows, len(table)), replace=False)
    result = run_search(strat, evaluator, budget=budget, batch=batch, tau_every=tau_every,
                        pool_truth=evaluator.true_value, tau_pool=[space.from_string(table.archs[i]) for i in rows])
    values = [r.result.metrics.get(metric, -np.inf) if r.ok else -np.inf for r in result.records]
    trace = list(np.maximum.accumulate(values)) if values else []
    trace += [trace[-1] if trace else -np.inf] * (budget - len(trace))
    return np.array(trace, dtype=float), [t["tau_pool"] for t in result.tau if "tau_pool" in t]


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
