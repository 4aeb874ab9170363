"""The strategy seam (ask/tell, the Optuna way): a strategy proposes architectures and learns from results.

A strategy never trains anything. It keeps what it was told (``history``), never proposes an architecture twice
(by canonical form), can be warm-started with a list to try first (the top of the zero-cost ranking), and draws
every random choice from one seeded generator, so a serial search is reproducible.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from nas.evaluators import Result
from nas.objectives import Constraints, objective_value
from nas.spaces.base import Architecture, SearchSpace


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
        score = objective_value(result.metrics, self.metric, self.constraints)
        obs = Observation(arch, result, score)
        self.history.append(obs)
        self.observe(obs)

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
