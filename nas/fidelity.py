"""Multi-fidelity: spend few epochs on many candidates and many epochs only on the promising ones.

Successive halving (Jamieson & Talwalkar, AISTATS 2016) trains every candidate for ``min_epochs``, keeps the best
``1/eta``, multiplies the epochs by ``eta``, and repeats up to ``max_epochs``. Hyperband (Li et al., JMLR 2018)
runs several such brackets that trade the number of candidates against their starting budget, hedging against a
low fidelity that ranks badly.

Both are *schedulers* on the strategy seam: :class:`SuccessiveHalving` and :class:`Hyperband` are strategies whose
trials carry a fidelity (``{"epochs": e}``), so they run on the one search loop (:func:`nas.search.run_search`)
with its journal, failed trials, batching and resume. Candidates come from a *proposer* (any strategy's ``ask``);
every result is told back to it, so a model-based proposer learns from every fidelity (BOHB, in
:mod:`nas.strategies.bo`, is Hyperband with a per-budget TPE proposer). A failed trial scores ``-inf`` in its rung.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nas.evaluators import Evaluator, Result
from nas.objectives import Constraints
from nas.spaces.base import Architecture, SearchSpace
from nas.strategies.base import STRATEGIES, Failure, Strategy, Trial


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


def hyperband_brackets(min_epochs: int, max_epochs: int, eta: int) -> list[tuple[int, int]]:
    """``(candidates, starting epochs)`` of each Hyperband bracket, most exploratory first: bracket ``s`` starts
    ``ceil((s_max+1)/(s+1) * eta^s)`` candidates at ``max_epochs * eta^-s`` epochs (Li et al. 2018, Alg. 1)."""
    rung_epochs(min_epochs, max_epochs, eta)  # validates
    s_max = math.floor(math.log(max_epochs / min_epochs, eta) + 1e-9)
    return [(math.ceil((s_max + 1) / (s + 1) * eta**s), max(min_epochs, round(max_epochs * eta ** (-s))))
            for s in range(s_max, -1, -1)]


class _Bracket:
    """The state of one successive-halving bracket: which rung, what is left to emit, what was scored."""

    def __init__(self, archs: Sequence[Architecture], epochs: list[int], eta: int) -> None:
        self.epochs, self.eta = epochs, eta
        self.rungs: list[Rung] = [Rung(epochs[0])]
        self.todo: list[Architecture] = list(archs)
        self.inflight: dict[str, Architecture] = {}
        self.done = not self.todo

    @property
    def rung(self) -> Rung:
        return self.rungs[-1]

    def fidelity(self) -> dict[str, float]:
        return {"epochs": self.rung.epochs}

    def next(self, n: int) -> list[Trial]:
        out = []
        while self.todo and len(out) < n:
            arch = self.todo.pop(0)
            self.inflight[arch.string] = arch
            out.append(Trial(arch, self.fidelity()))
        return out

    def owns(self, trial: Trial) -> bool:
        return trial.arch.string in self.inflight and trial.fidelity == self.fidelity()

    def record(self, trial: Trial, result: Result, score: float) -> None:
        self.inflight.pop(trial.arch.string)
        self.rung.results.append((trial.arch, result, score if np.isfinite(score) else -np.inf))
        if self.todo or self.inflight:
            return
        alive = len(self.rung.results)
        if alive <= 1 or len(self.rungs) == len(self.epochs):
            self.done = True
            return
        ranked = sorted(self.rung.results, key=lambda t: -t[2])  # stable: ties keep the order they were told
        self.todo = [a for a, _, _ in ranked[: max(1, alive // self.eta)]]
        self.rungs.append(Rung(self.epochs[len(self.rungs)]))

    def summary(self) -> HalvingResult:
        evaluations = sum(len(r.results) for r in self.rungs)
        return HalvingResult(self.rungs, evaluations, sum(r.epochs * len(r.results) for r in self.rungs))


class _Proposer:
    """Candidates for the brackets: a strategy, or bare ``ask``/``tell`` callables (the function API)."""

    def __init__(self, ask: Callable[[int], list[Architecture]],
                 tell: Callable[[Architecture, Result], None] | None = None,
                 fail: Callable[[Architecture, str, dict | None], None] | None = None) -> None:
        self.ask, self._tell, self._fail = ask, tell, fail

    @classmethod
    def of(cls, strategy: Strategy) -> _Proposer:
        return cls(strategy.ask, strategy.tell, strategy.tell_failure)

    def tell(self, arch: Architecture, result: Result) -> None:
        if self._tell is not None:
            self._tell(arch, result)

    def fail(self, failure: Failure) -> None:
        if self._fail is not None:
            self._fail(failure.arch, failure.error, failure.fidelity)


class HalvingScheduler(Strategy):
    """Brackets of successive halving run one after another; subclasses say which brackets and which candidates.

    Trials of the current bracket are handed out as the loop has free slots; a rung promotes once all its trials
    were told, so a parallel loop waits (``ask_trials`` returns nothing) at the end of each rung.
    """

    multi_fidelity = True

    def __init__(self, space: SearchSpace, *, proposer: Strategy | _Proposer | None = None,
                 min_epochs: int = 1, max_epochs: int = 9, eta: int = 3, **kwargs: Any) -> None:
        super().__init__(space, **kwargs)
        rung_epochs(min_epochs, max_epochs, eta)  # validates
        self.min_epochs, self.max_epochs, self.eta = min_epochs, max_epochs, eta
        if proposer is None:
            from nas.strategies.simple import RandomSearch

            proposer = RandomSearch(space, seed=self.seed, metric=self.metric, constraints=self.constraints,
                                    warm_start=self._warm, pool=self.pool)
            self._warm = []  # the proposer serves the warm start
        self.proposer = proposer if isinstance(proposer, _Proposer) else _Proposer.of(proposer)
        self.brackets: list[_Bracket] = []
        self._plan = list(self.plan())
        self._round_size = 0

    def plan(self) -> list[tuple[int, int]]:
        """``(candidates, starting epochs)`` per bracket."""
        raise NotImplementedError

    def candidates(self, n: int) -> list[Architecture]:
        return self.proposer.ask(n)

    def next_round(self) -> list[tuple[int, int]]:
        """The brackets to run once the plan is used up (none: the scheduler is finished)."""
        return []

    def _current(self) -> _Bracket | None:
        while not self.brackets or self.brackets[-1].done:
            if not self._plan:
                self._plan = list(self.next_round()) if self._round_size else []
                self._round_size = 0
                if not self._plan:
                    return None
            n, start = self._plan.pop(0)
            archs = self.candidates(n)
            if not archs:
                self._plan = []
                return None
            self._round_size += 1
            self.brackets.append(_Bracket(archs, rung_epochs(start, self.max_epochs, self.eta), self.eta))
        return self.brackets[-1]

    # -- the trial seam -----------------------------------------------------------------------------
    def ask_trials(self, n: int = 1) -> list[Trial]:
        bracket = self._current()
        return bracket.next(n) if bracket is not None else []

    def tell_trial(self, trial: Trial, result: Result) -> None:
        Strategy.tell(self, trial.arch, result)
        self.proposer.tell(trial.arch, result)
        self._record(trial, result, self.history[-1].score)

    def fail_trial(self, trial: Trial, error: str) -> None:
        failure = Failure(trial.arch, error, trial.fidelity)
        self.failed.append(failure)
        self.proposer.fail(failure)
        self._record(trial, Result({}, fidelity=dict(trial.fidelity or {})), -np.inf)

    def _record(self, trial: Trial, result: Result, score: float) -> None:
        for bracket in reversed(self.brackets):
            if bracket.owns(trial):
                bracket.record(trial, result, score)
                return

    # -- arch-level ask/tell (a scheduler re-evaluates architectures, so ask may repeat one) -------
    def ask(self, n: int = 1) -> list[Architecture]:
        if n < 1:
            raise ValueError(f"ask(n) needs n >= 1, got {n}")
        return [t.arch for t in self.ask_trials(n)]

    def tell(self, arch: Architecture, result: Result) -> None:
        for bracket in reversed(self.brackets):
            if arch.string in bracket.inflight:
                self.tell_trial(Trial(arch, bracket.fidelity()), result)
                return
        Strategy.tell(self, arch, result)
        self.proposer.tell(arch, result)

    def propose(self, n: int) -> list[Architecture]:  # pragma: no cover - ask_trials replaces it
        return []

    def summaries(self) -> list[HalvingResult]:
        return [b.summary() for b in self.brackets]


class SuccessiveHalving(HalvingScheduler):
    """One bracket of successive halving (Jamieson & Talwalkar 2016) over ``n`` proposed candidates."""

    name = "successive_halving"

    def __init__(self, space: SearchSpace, *, n: int = 27, **kwargs: Any) -> None:
        if n < 1:
            raise ValueError(f"successive halving needs n >= 1 candidates, got {n}")
        self.n = n
        super().__init__(space, **kwargs)

    def plan(self) -> list[tuple[int, int]]:
        return [(self.n, self.min_epochs)]


@STRATEGIES.register(
    "hyperband", paper="Li et al., JMLR 2018 (Hyperband); random proposals", multi_fidelity=True,
    kwargs=("min_epochs", "max_epochs", "eta", "proposer"),
)
class Hyperband(HalvingScheduler):
    """Hyperband (Li et al. 2018): successive-halving brackets from most exploratory to plain full training,
    candidates drawn by the proposer (uniform random by default); repeats the brackets until the budget ends."""

    name = "hyperband"

    def plan(self) -> list[tuple[int, int]]:
        return hyperband_brackets(self.min_epochs, self.max_epochs, self.eta)

    def next_round(self) -> list[tuple[int, int]]:
        return self.plan()  # Li et al. run Hyperband in a loop until the budget is spent


# -- the function API (kept for notebooks): the same schedulers, run by the search loop ---------------------------
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
    journal: str | None = None,
) -> HalvingResult:
    """Evaluate ``archs`` on a geometric epoch ladder, keeping the top ``1/eta`` at each rung (at least one)."""
    from nas.search import run_search

    if not archs:
        raise ValueError("successive halving needs at least one architecture")
    fixed = list(archs)
    proposer = _Proposer(lambda n: [fixed.pop(0) for _ in range(min(n, len(fixed)))])
    sched = SuccessiveHalving(archs[0].space, n=len(fixed), proposer=proposer, min_epochs=min_epochs,
                              max_epochs=max_epochs, eta=eta, metric=metric or evaluator.metric,
                              constraints=constraints)
    run_search(sched, evaluator, budget=_planned(len(archs), min_epochs, max_epochs, eta), fidelity=base_fidelity,
               journal=journal, on_result=_adapt(on_result, sched))
    return sched.summaries()[0]


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
    journal: str | None = None,
) -> list[HalvingResult]:
    """One round of Hyperband's brackets, most exploratory first. ``ask`` supplies candidates (a strategy's
    ``ask``); ``tell`` receives every result (a strategy's ``tell``)."""
    from nas.search import run_search

    first = ask(1)
    if not first:
        return []
    queue = list(first)

    def ask_with_first(n: int) -> list[Architecture]:
        out = queue[:n]
        del queue[:n]
        return out + (ask(n - len(out)) if len(out) < n else [])

    sched = Hyperband(first[0].space, proposer=_Proposer(ask_with_first, tell), min_epochs=min_epochs,
                      max_epochs=max_epochs, eta=eta, metric=metric or evaluator.metric, constraints=constraints)
    budget = sum(_planned(n, start, max_epochs, eta) for n, start in sched.plan())
    run_search(sched, evaluator, budget=budget, journal=journal)
    return sched.summaries()


def _planned(n: int, min_epochs: int, max_epochs: int, eta: int) -> int:
    """Trials one bracket of ``n`` candidates runs (its evaluation budget)."""
    total, alive = 0, n
    for level, _ in enumerate(rung_epochs(min_epochs, max_epochs, eta)):
        if level > 0:
            alive = max(1, alive // eta)
        total += alive
        if alive == 1:
            break
    return total


def _adapt(on_result: Callable[[Architecture, Result], None] | None, sched: Strategy):
    if on_result is None:
        return None

    def call(rec) -> None:
        on_result(sched.space.from_string(rec.arch), rec.result)

    return call
