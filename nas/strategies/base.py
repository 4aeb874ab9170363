"""The strategy seam (ask/tell, the Optuna way): a strategy proposes architectures and learns from results.

A strategy never trains anything. It keeps what it was told (``history``), never proposes an architecture twice
(by canonical form), can be warm-started with a list to try first (the top of the zero-cost ranking), and draws
every random choice from one seeded generator, so a serial search is reproducible.

The search loop (:func:`nas.search.run_search`) talks to a strategy through *trials*: ``ask_trials(n)`` returns
:class:`Trial` objects (an architecture and, for multi-fidelity schedulers, the fidelity to evaluate it at),
``tell_trial`` hands back a result and ``fail_trial`` an evaluation that raised (a failed trial, as Optuna's
``TrialState.FAIL``: recorded, never retried, never a model input). A plain strategy's trials are its ``ask``
proposals at the loop's fidelity; schedulers such as successive halving (:mod:`nas.fidelity`) override the three.

Every strategy registers itself in :data:`STRATEGIES` with ``@STRATEGIES.register(name, paper=..., kwargs=(...))``;
``kwargs`` names the strategy's own keyword arguments (beyond :data:`SHARED_KWARGS`), which
:func:`nas.strategies.get_strategy` checks.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nas.evaluators import Result
from nas.objectives import Constraints, objective_value
from nas.registry import Registry
from nas.spaces.base import Architecture, SearchSpace

STRATEGIES: Registry[type[Strategy]] = Registry(
    "strategy",
    modules=("nas.strategies.simple", "nas.strategies.predictor", "nas.fidelity", "nas.strategies.rl",
             "nas.strategies.bo"),
)
"""Strategy classes by name, filled by ``@STRATEGIES.register`` above each class."""

SHARED_KWARGS: tuple[str, ...] = ("seed", "metric", "constraints", "warm_start", "pool")
"""Keyword arguments every strategy takes (see :class:`Strategy`)."""


@dataclass(frozen=True)
class Trial:
    """One evaluation to run: an architecture and the fidelity overrides for it (``None``: the loop's fidelity)."""

    arch: Architecture
    fidelity: dict[str, float] | None = None

    @property
    def key(self) -> str:
        """Identity of the trial in a journal: the architecture and the requested fidelity."""
        return trial_key(self.arch.string, self.fidelity)


def trial_key(arch: str, fidelity: dict[str, Any] | None) -> str:
    return arch if not fidelity else f"{arch}@{json.dumps(fidelity, sort_keys=True)}"


@dataclass
class Failure:
    """A trial whose evaluation raised: what was tried and the error, kept out of every model."""

    arch: Architecture
    error: str
    fidelity: dict[str, float] | None = field(default=None)


@dataclass
class Observation:
    """One told result: the architecture, its full result and the value the strategy maximises."""

    arch: Architecture
    result: Result
    score: float


class Strategy(ABC):
    """Base class: bookkeeping shared by every strategy; subclasses implement :meth:`propose`."""

    name = ""

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int = 0,
        metric: str = "val_accuracy",
        constraints: Constraints | None = None,
        warm_start: Sequence[Architecture] = (),
        pool: Sequence[Architecture] | None = None,
    ) -> None:
        self.space = space
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.metric = metric
        self.constraints = constraints
        self.pool = list(pool) if pool is not None else None
        self.history: list[Observation] = []
        self.failed: list[Failure] = []
        self._seen: set[str] = set()
        self._warm = [a for a in self._dedupe(warm_start)]

    # -- public API ---------------------------------------------------------------------------------
    def ask(self, n: int = 1) -> list[Architecture]:
        """``n`` architectures never proposed before (fewer only when the space runs out)."""
        if n < 1:
            raise ValueError(f"ask(n) needs n >= 1, got {n}")
        out: list[Architecture] = []
        while self._warm and len(out) < n:
            arch = self._warm.pop(0)
            if self.key(arch) not in self._seen:
                self._mark(arch)
                out.append(arch)
        if len(out) < n:
            for arch in self.propose(n - len(out)):
                if self.key(arch) not in self._seen:
                    self._mark(arch)
                    out.append(arch)
        if len(out) < n:  # the subclass came up short: fill with unseen random samples
            for arch in self._random_unseen(n - len(out)):
                self._mark(arch)
                out.append(arch)
        return out

    def tell(self, arch: Architecture, result: Result) -> None:
        """Record a result (an architecture told without being asked is accepted: resume replays do that)."""
        self._seen.add(self.key(arch))
        score = self.score(result)
        obs = Observation(arch, result, score)
        self.history.append(obs)
        self.observe(obs)

    def tell_failure(self, arch: Architecture, error: str, fidelity: dict[str, float] | None = None) -> None:
        """Record an evaluation that raised: never proposed again, never in ``history`` (so no model learns from
        a made-up score), passed to :meth:`on_failure`."""
        self._seen.add(self.key(arch))
        failure = Failure(arch, error, fidelity)
        self.failed.append(failure)
        self.on_failure(failure)

    # -- the trial seam the search loop uses ---------------------------------------------------------
    multi_fidelity = False
    """True for schedulers that choose a fidelity per trial (successive halving, Hyperband, BOHB)."""

    def ask_trials(self, n: int = 1) -> list[Trial]:
        """Up to ``n`` trials to run now. Fewer (even none) means: the strategy waits for results in flight, or,
        with nothing in flight, the space is exhausted."""
        return [Trial(a) for a in self.ask(n)]

    def tell_trial(self, trial: Trial, result: Result) -> None:
        self.tell(trial.arch, result)

    def fail_trial(self, trial: Trial, error: str) -> None:
        self.tell_failure(trial.arch, error, trial.fidelity)

    def score(self, result: Result) -> float:
        """The value this strategy maximises for ``result`` (``-inf`` when a constraint is broken)."""
        return objective_value(result.metrics, self.metric, self.constraints)

    @property
    def best(self) -> Observation | None:
        feasible = [o for o in self.history if np.isfinite(o.score)]
        return max(feasible, key=lambda o: o.score) if feasible else None

    # -- for subclasses -----------------------------------------------------------------------------
    @abstractmethod
    def propose(self, n: int) -> list[Architecture]:
        """Up to ``n`` candidates; the base class drops already-seen ones and fills up with random samples."""

    def observe(self, obs: Observation) -> None:
        """Hook called after each :meth:`tell` (default: nothing beyond the shared history)."""
        return None

    def on_failure(self, failure: Failure) -> None:
        """Hook called after each :meth:`tell_failure` (default: nothing beyond ``failed``)."""
        return None

    def key(self, arch: Architecture) -> str:
        return self.space.canonicalize(arch).string

    def is_seen(self, arch: Architecture) -> bool:
        return self.key(arch) in self._seen

    def _mark(self, arch: Architecture) -> None:
        self._seen.add(self.key(arch))

    def _dedupe(self, archs: Iterable[Architecture]) -> list[Architecture]:
        out, keys = [], set()
        for a in archs:
            k = self.key(a)
            if k not in keys:
                keys.add(k)
                out.append(a)
        return out

    def _random_unseen(self, n: int, attempts_per: int = 200) -> list[Architecture]:
        """Up to ``n`` distinct uniform samples never proposed before (not marked: :meth:`ask` marks)."""
        out: list[Architecture] = []
        keys: set[str] = set()
        for _ in range(n * attempts_per):
            if len(out) >= n:
                break
            arch = self.space.sample(self.rng)
            key = self.key(arch)
            if key not in self._seen and key not in keys:
                keys.add(key)
                out.append(arch)
        return out

    def _mutate_unseen(self, parent: Architecture, attempts: int = 50) -> Architecture | None:
        """A mutation of ``parent`` not proposed before (repeated mutation walks further if needed)."""
        arch = parent
        for _ in range(attempts):
            arch = self.space.mutate(arch, self.rng)
            if not self.is_seen(arch):
                return arch
        return None
