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
    report: str | None = None,
    warm_order: np.ndarray | None = None,
) -> tuple[np.ndarray, list[float]]:
    """One seeded search on the table; returns the best-so-far trace and the predictor's pool Kendall τ values
    (on ``tau_rows`` random rows not evaluated yet, every ``tau_every`` evaluations).

    With ``report`` (e.g. the test column while ``metric`` is the validation column) the trace holds the
    ``report`` value of the architecture that is best by ``metric`` so far: the NAS-Bench-201 convention (Dong &
    Yang, ICLR 2020), where a search never sees the figure its regret is measured on. ``warm_order`` (row indices,
    best first) replaces the equal-weight zero-cost ranking of the table's proxy columns for the pool and warm
    start (e.g. a named ensemble's ranking)."""
    space = space or TableSpace(table.archs)
    evaluator = TabularEvaluator(table, metric)
    kwargs: dict[str, Any] = dict(strategy_kwargs or {})
    if strategy == "predictor" and (table.proxies or warm_order is not None):
        order = zero_cost_order(table.proxies) if warm_order is None else warm_order
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
    if report is not None and values:
        shown = [r.result.metrics.get(report, -np.inf) if r.ok else -np.inf for r in result.records]
        best_at = [int(np.argmax(values[: k + 1])) for k in range(len(values))]  # first of ties: what was kept
        trace = [shown[i] if np.isfinite(values[i]) else -np.inf for i in best_at]
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
    report: str | None = None,
    warm_order: np.ndarray | None = None,
    first_seed: int = 0,
) -> dict[str, StrategyCurve]:
    """Run every strategy for ``seeds`` seeds on the table; returns their best-so-far curves (of ``report`` when
    given, see :func:`table_search`). ``first_seed`` shifts the seeds (tuning and reporting on disjoint seeds)."""
    import time

    from nas.tabular import proxy_lookup

    space = TableSpace(table.archs)
    proxies = proxy_lookup(table) if table.proxies else None
    out: dict[str, StrategyCurve] = {}
    for name in strategies:
        start = time.perf_counter()
        traces, taus = [], []
        for k, seed in enumerate(range(first_seed, first_seed + seeds)):
            trace, tau = table_search(table, metric, name, seed=seed, budget=budget, batch=batch,
                                      pool_size=pool_size, warm_start=warm_start, proxies=proxies, space=space,
                                      strategy_kwargs=(strategy_kwargs or {}).get(name), report=report,
                                      warm_order=warm_order)
            traces.append(trace)
            taus.extend(tau)
            if progress is not None:
                progress(name, k)
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
    out["ratios"] = reach_ratios(out, tolerances)
    return out


def reach_ratios(s: Mapping[str, Any], tolerances: Sequence[float] = (0.005, 0.01),
                 baselines: Sequence[str] = ("random", "evolution")) -> dict[str, dict[str, float]]:
    """``ratios[f"{name}_vs_{base}"][f"evals_to_{tol}"]`` = base's mean (censored) evaluations to come within
    ``tol`` of the optimum divided by ``name``'s: how many times fewer evaluations ``name`` needed. A ratio that
    involves seeds that never got there is censored (the base's true mean is then larger than shown)."""
    out: dict[str, dict[str, float]] = {}
    strategies = s["strategies"]
    for base in (b for b in baselines if b in strategies):
        for name in (n for n in strategies if n != base and n not in baselines):
            out[f"{name}_vs_{base}"] = {
                f"evals_to_{tol:g}": float(strategies[base][f"evals_to_{tol:g}"]["mean_censored"]
                                           / strategies[name][f"evals_to_{tol:g}"]["mean_censored"])
                for tol in tolerances
            }
    return out


def subset(table: BenchmarkTable, rows: np.ndarray) -> BenchmarkTable:
    """The table restricted to ``rows`` (metrics, proxies and cost sliced alike)."""
    rows = np.sort(np.asarray(rows))
    return BenchmarkTable(
        [table.archs[i] for i in rows], {m: v[rows] for m, v in table.metrics.items()},
        {p: v[rows] for p, v in table.proxies.items()}, None if table.cost is None else table.cost[rows],
        {m: {e: v[rows] for e, v in lv.items()} for m, lv in table.fidelities.items()}, source=table.source,
    )


def compare_on_subsamples(
    table: BenchmarkTable,
    metric: str,
    strategies: Sequence[str],
    *,
    fraction: float,
    seeds: int = 20,
    report: str | None = None,
    first_seed: int = 0,
    **kwargs: Any,
) -> dict[str, StrategyCurve]:
    """Like :func:`compare_strategies`, but seed ``s`` searches its own random ``fraction`` of the rows.

    A zero-cost warm start is the same ranking for every seed, so on the full table its first evaluations are one
    outcome repeated ``seeds`` times; on a different subsample per seed they differ, and the spread over seeds
    says how much a result rests on a few well-ranked cells. Each seed's regret is against its own subsample's
    optimum; the returned traces are shifted so that ``table.optimum(report or metric) - best`` is that regret
    (so :func:`summary` with the full table's optimum reads them unchanged).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    target = report or metric
    optimum = table.optimum(target)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in strategies}
    taus: dict[str, list[float]] = {n: [] for n in strategies}
    seconds: dict[str, float] = dict.fromkeys(strategies, 0.0)
    for seed in range(first_seed, first_seed + seeds):
        rows = np.random.default_rng(20_000 + seed).choice(len(table), round(fraction * len(table)),
                                                            replace=False)
        sub = subset(table, rows)
        curves = compare_strategies(sub, metric, strategies, seeds=1, report=report, first_seed=seed, **kwargs)
        shift = optimum - sub.optimum(target)
        for name, curve in curves.items():
            parts[name].append(curve.best[0] + shift)
            taus[name].extend(curve.taus)
            seconds[name] += curve.seconds
    return {n: StrategyCurve(n, np.stack(parts[n]), seconds[n], taus[n]) for n in strategies}
