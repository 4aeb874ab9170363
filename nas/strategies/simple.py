"""The baselines every NAS paper compares against: random search, regularized evolution and local search."""

from __future__ import annotations

from collections import deque

from nas.spaces.base import Architecture
from nas.strategies.base import STRATEGIES, Observation, Strategy


@STRATEGIES.register("random", paper="Li & Talwalkar, UAI 2019 (random search and reproducibility for NAS)",
                     kwargs=())
class RandomSearch(Strategy):
    """Uniform samples from the space, never repeated (Li & Talwalkar 2019: a strong baseline)."""

    name = "random"

    def propose(self, n: int) -> list[Architecture]:
        return self._random_unseen(n)


@STRATEGIES.register("evolution", paper="Real et al., AAAI 2019 (regularized evolution)",
                     kwargs=("population_size", "tournament_size"))
class RegularizedEvolution(Strategy):
    """Aging evolution (Real et al. 2019): tournament-select a parent from the population, mutate it once, and
    retire the *oldest* member when a child joins, so old lucky results cannot dominate forever.
    """

    name = "evolution"

    def __init__(self, space, *, population_size: int = 20, tournament_size: int = 5, **kwargs) -> None:
        super().__init__(space, **kwargs)
        if not 1 <= tournament_size <= population_size:
            raise ValueError(f"need 1 <= tournament_size ({tournament_size}) <= population_size ({population_size})")
        self.population_size, self.tournament_size = population_size, tournament_size
        self.population: deque[Observation] = deque()

    def observe(self, obs: Observation) -> None:
        self.population.append(obs)
        if len(self.population) > self.population_size:
            self.population.popleft()

    def propose(self, n: int) -> list[Architecture]:
        if len(self.population) < self.population_size:
            return self._random_unseen(n)  # the initial population is random
        out: list[Architecture] = []
        members = list(self.population)
        for _ in range(n):
            picks = self.rng.choice(len(members), size=self.tournament_size, replace=False)
            parent = max((members[i] for i in picks), key=lambda o: o.score)
            child = self._mutate_unseen(parent.arch)
            if child is not None and all(child.string != c.string for c in out):
                out.append(child)
        return out


@STRATEGIES.register("local", paper="White et al., UAI 2021 (local search is state of the art for NAS benchmarks)",
                     kwargs=())
class LocalSearch(Strategy):
    """Hill climbing over neighbours (White et al. 2020, "Local search is state of the art for NAS benchmarks"):
    evaluate the neighbours of the current architecture in random order, move to the best one if it improves,
    otherwise restart from a random architecture (the next result told becomes the new centre).
    """

    name = "local"

    def __init__(self, space, **kwargs) -> None:
        super().__init__(space, **kwargs)
        self.center: Observation | None = None
        self.queue: list[Architecture] = []
        self.scores: dict[str, float] = {}

    def observe(self, obs: Observation) -> None:
        self.scores[self.key(obs.arch)] = obs.score
        if self.center is None:
            self._set_center(obs)

    def _set_center(self, obs: Observation | None) -> None:
        self.center = obs
        self.queue = []
        if obs is not None:
            fresh = [a for a in self.space.neighbours(obs.arch) if not self.is_seen(a)]
            self.queue = [fresh[i] for i in self.rng.permutation(len(fresh))]

    def _move(self) -> None:
        """The neighbourhood is exhausted: climb to the best told neighbour, or restart at a local optimum."""
        assert self.center is not None
        keys = {self.key(a) for a in self.space.neighbours(self.center.arch)}
        told = [o for o in self.history if self.key(o.arch) in keys and o.score > self.center.score]
        self._set_center(max(told, key=lambda o: o.score) if told else None)

    def propose(self, n: int) -> list[Architecture]:
        out: list[Architecture] = []
        for _ in range(10 * n + 100):
            if len(out) >= n:
                break
            if self.center is None:
                out.extend(self._random_unseen(1))  # start or restart; its result becomes the centre
                break
            if self.queue:
                arch = self.queue.pop(0)
                if not self.is_seen(arch):
                    out.append(arch)
            else:
                self._move()
        return out
