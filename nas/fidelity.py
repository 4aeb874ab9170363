"""Multi-fidelity: spend few epochs on many candidates and many epochs only on the promising ones.

Successive halving (Jamieson & Talwalkar 2016) trains every candidate for ``min_epochs``, keeps the best
``1/eta``, multiplies the epochs by ``eta``, and repeats up to ``max_epochs``. Hyperband (Li et al. 2018) runs
several such brackets that trade the number of candidates against their starting budget, hedging against a
low fidelity that ranks badly. Candidates come from any strategy's ``ask``; every result is told back to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from nas.evaluators import Evaluator, Result
from nas.objectives import Constraints, objective_value
from nas.spaces.base import Architecture


@dataclass
class Rung:
    """One level of a successive-halving bracket: the epochs used and what each candidate scored."""

    epochs: int
    results: list[tuple[Architecture, Result, float]] = field(default_factory=list)


@dataclass
class HalvingResult:
    rungs: list[Rung]
    evaluations: int
    epochs_spent: int

    @property
    def best(self) -> tuple[Architecture, Result, float]:
        return max(self.rungs[-1].results, key=lambda t: t[2])


def rung_epochs(min_epochs: int, max_epochs: int, eta: int) -> list[int]:
    """``min_epochs * eta^i`` capped at ``max_epochs``, ending with ``max_epochs`` exactly."""
    if min_epochs < 1 or max_epochs < min_epochs:
        raise ValueError(f"need 1 <= min_epochs ({min_epochs}) <= max_epochs ({max_epochs})")
    if eta < 2:
        raise ValueError(f"eta must be >= 2, got {eta}")
    out, e = [], min_epochs
    while e < max_epochs:
        out.append(e)
        e *= eta
    return [*out, max_epochs]


def successive_halving(
    archs: Sequence[Architecture],
    evaluator: Evaluator,
    *,
    min_epochs: int = 1,
    max_epochs: int = 9,
    eta: int = 3,
    metric: str | None = None,
    constraints: Constraints | None = None,
    base_fidelity: Mapping[str, float] | None = None,
    on_result: Callable[[Architecture, Result], None] | None = None,
) -> HalvingResult:
    """Evaluate ``archs`` on a geometric epoch ladder, keeping the top ``1/eta`` at each rung (at least one)."""
    if not archs:
        raise ValueError("successive halving needs at least one architecture")
    metric = metric or evaluator.metric
    alive = list(archs)
    rungs: list[Rung] = []
    evaluations = spent = 0
    for level, epochs in enumerate(rung_epochs(min_epochs, max_epochs, eta)):
        if level > 0:
            ranked = sorted(rungs[-1].results, key=lambda t: -t[2])
            alive = [a for a, _, _ in ranked[: max(1, len(ranked) // eta)]]
        rung = Rung(epochs)
        for arch in alive:
            result = evaluator.evaluate(arch, {**(base_fidelity or {}), "epochs": epochs})
            score = objective_value(result.metrics, metric, constraints)
            rung.results.append((arch, result, score if np.isfinite(score) else -np.inf))
            evaluations += 1
            spent += epochs
            if on_result is not None:
                on_result(arch, result)
        rungs.append(rung)
        if len(alive) == 1:
            break
    return HalvingResult(rungs, evaluations, spent)


def hyperband(
    ask: Callable[[int], list[Architecture]],
    evaluator: Evaluator,
    *,
    min_epochs: int = 1,
    max_epochs: int = 27,
    eta: int = 3,
    metric: str | None = None,
    constraints: Constraints | None = None,
    tell: Callable[[Architecture, Result], None] | None = None,
) -> list[HalvingResult]:
    """Hyperband's brackets, most exploratory first: bracket ``s`` starts ``ceil((s_max+1)/(s+1) * eta^s)``
    candidates at ``max_epochs * eta^-s`` epochs. ``ask`` supplies candidates (a strategy's ``ask``); ``tell``
    receives every result (a strategy's ``tell``)."""
    s_max = math.floor(math.log(max_epochs / min_epochs, eta) + 1e-9)
    brackets = []
    for s in range(s_max, -1, -1):
        n = math.ceil((s_max + 1) / (s + 1) * eta**s)
        start = max(min_epochs, round(max_epochs * eta ** (-s)))
        archs = ask(n)
        if not archs:
            break
        brackets.append(successive_halving(archs, evaluator, min_epochs=start, max_epochs=max_epochs, eta=eta,
                                           metric=metric, constraints=constraints, on_result=tell))
    return brackets
