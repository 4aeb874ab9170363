"""Bayesian optimisation over the space's categorical decisions: TPE (``bo``) and BOHB (``bohb``).

``bo`` is the Tree-structured Parzen Estimator (Bergstra et al., NeurIPS 2011): split the results at the quantile
``gamma`` into good and bad, model each group with a Parzen (kernel) density, ``l(x)`` and ``g(x)``, and propose
the candidate maximising ``l(x)/g(x)``, which is proportional to expected improvement. The densities are the
multivariate kernel densities of BOHB (Falkner et al., ICML 2018): a product over decisions of the
Aitchison-Aitken kernel for categories (``1 - bw`` for the same option, ``bw / (k - 1)`` for each other), mixed
with a uniform prior of weight one as in TPE. Candidates are drawn from ``l`` with a widened bandwidth
(``bandwidth_factor``, BOHB's default 3), and only candidates the space holds and that were never proposed are
scored, so a benchmark table's gaps and repeats cost nothing. Architectures asked in the same batch but not yet told
join the bad group (a "constant liar"), which spreads a batch out.

``bohb`` is BOHB: Hyperband's brackets (:class:`nas.fidelity.Hyperband`) with proposals from the model of the largest
budget holding at least ``min_points`` results (default: decisions + 2, the paper's ``N_min + 1`` with
``N_min = d + 1``), and a fraction ``random_fraction`` (the paper's 1/3) drawn uniformly, which keeps Hyperband's
guarantee. Each budget (epochs) has its own observations.

Why our own code rather than Optuna's ``TPESampler``: the sampler proposes one point per ``ask``, so a combination a
table does not hold or an architecture already proposed must be told as a failed trial and asked again; on
nas-bench-graph (44 % of the combinations exist) that grew to ~0.2 s per proposal after 300 results. Scoring a
batch of candidates filtered up front costs milliseconds, and BOHB's per-budget models are the paper's.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nas.fidelity import Hyperband
from nas.spaces.base import Architecture, InvalidArchitectureError, SearchSpace
from nas.strategies.base import STRATEGIES, Failure, Observation, Strategy
from nas.strategies.rl import categorical_view


class CategoricalKDE:
    """Product Aitchison-Aitken kernel density over integer-coded categorical vectors, plus a uniform prior."""

    def __init__(self, points: np.ndarray, sizes: np.ndarray, bandwidth: float, prior_weight: float = 1.0) -> None:
        self.points = np.asarray(points, dtype=np.int64).reshape(-1, len(sizes))
        self.sizes = np.asarray(sizes, dtype=np.int64)
        uniform = (self.sizes - 1) / self.sizes  # the bandwidth at which the kernel is flat
        self.bw = np.minimum(bandwidth, uniform)
        self.prior_weight = prior_weight

    def log_density(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.int64).reshape(-1, len(self.sizes))
        log_prior = -np.log(self.sizes).sum()
        if not len(self.points):
            return np.full(len(x), log_prior)
        same = x[:, None, :] == self.points[None, :, :]
        other = np.where(self.sizes > 1, self.bw / np.maximum(self.sizes - 1, 1), 1.0)
        log_k = np.where(same, np.log1p(-self.bw), np.log(other)).sum(axis=2)  # (candidates, points)
        mix = np.concatenate([log_k, np.full((len(x), 1), log_prior + np.log(self.prior_weight))], axis=1)
        top = mix.max(axis=1, keepdims=True)
        return (top[:, 0] + np.log(np.exp(mix - top).sum(axis=1))) - np.log(len(self.points) + self.prior_weight)

    def sample(self, n: int, rng: np.random.Generator, bandwidth: float) -> np.ndarray:
        """Draws from the kernel mixture (points picked uniformly), each decision re-drawn with prob ``bw``."""
        bw = np.minimum(bandwidth, (self.sizes - 1) / self.sizes)
        if not len(self.points):
            return np.stack([rng.integers(k, size=n) for k in self.sizes], axis=1)
        base = self.points[rng.integers(len(self.points), size=n)].copy()
        for d, k in enumerate(self.sizes):
            if k < 2:
                continue
            move = rng.random(n) < bw[d] * k / (k - 1)  # re-draw uniformly: lands on another option w.p. bw
            base[move, d] = rng.integers(k, size=int(move.sum()))
        return base


@STRATEGIES.register(
    "bo", paper="Bergstra et al., NeurIPS 2011 (TPE); kernel of Falkner et al., ICML 2018",
    kwargs=("n_startup", "gamma", "bandwidth", "bandwidth_factor", "n_candidates", "random_fraction"),
)
class TPEStrategy(Strategy):
    """Bayesian optimisation with a tree-structured Parzen estimator over the categorical decisions."""

    name = "bo"

    def __init__(self, space: SearchSpace, *, n_startup: int = 10, gamma: float = 0.15, bandwidth: float = 0.2,
                 bandwidth_factor: float = 3.0, n_candidates: int = 64, random_fraction: float = 0.0,
                 per_budget: bool = False, min_points: int | None = None, **kwargs: Any) -> None:
        super().__init__(space, **kwargs)
        if not 0 < gamma < 1:
            raise ValueError(f"gamma must be in (0, 1), got {gamma}")
        if not 0 < bandwidth < 1 or bandwidth_factor < 1:
            raise ValueError(f"need 0 < bandwidth < 1 and bandwidth_factor >= 1, got {bandwidth}, {bandwidth_factor}")
        if not 0 <= random_fraction < 1:
            raise ValueError(f"random_fraction must be in [0, 1), got {random_fraction}")
        if n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
        self.decisions = categorical_view(space, self.name)
        self.sizes = np.array([len(options) for _, options in self.decisions])
        self.n_startup = max(2, n_startup)
        self.gamma, self.bandwidth, self.bandwidth_factor = gamma, bandwidth, bandwidth_factor
        self.n_candidates, self.random_fraction = n_candidates, random_fraction
        self.per_budget = per_budget
        self.min_points = min_points if min_points is not None else len(self.decisions) + 2
        self.observations: dict[float, list[tuple[tuple[int, ...], float]]] = {}

    def model_budget(self) -> float | None:
        """The budget whose results the model is fitted on: the one of a single-fidelity search, or BOHB's rule
        (the largest budget with ``min_points`` results); ``None`` while there are too few (sample uniformly)."""
        need = self.min_points if self.per_budget else self.n_startup
        ready = [b for b, obs in self.observations.items() if len(obs) >= need]
        return max(ready) if ready else None

    # -- ask ------------------------------------------------------------------------------------------
    def propose(self, n: int) -> list[Architecture]:
        budget = self.model_budget()
        if budget is None:
            return self._random_unseen(n)
        obs = self.observations[budget]
        x = np.array([c for c, _ in obs])
        y = np.array([v for _, v in obs])
        order = np.argsort(-y, kind="stable")
        n_good = max(1, math.ceil(self.gamma * len(y)))
        good, bad = x[order[:n_good]], list(x[order[n_good:]])
        out: list[Architecture] = []
        keys: set[str] = set()
        for _ in range(n):
            if self.random_fraction and self.rng.random() < self.random_fraction:
                pick = next((a for a in self._random_unseen(3) if self.key(a) not in keys), None)
            else:
                pick = self._best_candidate(good, np.array(bad).reshape(-1, len(self.sizes)), keys)
            if pick is None:
                break
            keys.add(self.key(pick))
            out.append(pick)
            bad.append(np.array(self.space.categorical_index(pick)))  # constant liar: pending counts as bad
        return out

    def _best_candidate(self, good: np.ndarray, bad: np.ndarray, taken: set[str]) -> Architecture | None:
        l_model = CategoricalKDE(good, self.sizes, self.bandwidth)
        g_model = CategoricalKDE(bad, self.sizes, self.bandwidth)
        cands = l_model.sample(self.n_candidates, self.rng, self.bandwidth * self.bandwidth_factor)
        valid: list[tuple[np.ndarray, Architecture]] = []
        for c in np.unique(cands, axis=0):
            try:
                arch = self.space.from_categorical(c)
            except InvalidArchitectureError:
                continue  # a combination the space does not hold
            if not self.is_seen(arch) and self.key(arch) not in taken:
                valid.append((c, arch))
        if not valid:
            return None
        points = np.stack([c for c, _ in valid])
        ratio = l_model.log_density(points) - g_model.log_density(points)
        return valid[int(np.argmax(ratio))][1]

    # -- tell -----------------------------------------------------------------------------------------
    def observe(self, obs: Observation) -> None:
        budget = float(obs.result.fidelity.get("epochs", 0.0)) if self.per_budget else 0.0
        finite = [v for group in self.observations.values() for _, v in group if np.isfinite(v)]
        value = obs.score if np.isfinite(obs.score) else (min(finite) - 1.0 if finite else 0.0)  # infeasible: worst
        self.observations.setdefault(budget, []).append((self.space.categorical_index(obs.arch), float(value)))

    def on_failure(self, failure: Failure) -> None:
        return None  # a failed evaluation says nothing about the architecture's accuracy


@STRATEGIES.register(
    "bohb", paper="Falkner et al., ICML 2018 (BOHB): Hyperband brackets, per-budget TPE proposals",
    multi_fidelity=True, kwargs=("min_epochs", "max_epochs", "eta", "min_points", "random_fraction"),
)
class BOHB(Hyperband):
    """Hyperband whose candidates come from TPE fitted on the largest budget with enough results."""

    name = "bohb"

    def __init__(self, space: SearchSpace, *, min_points: int | None = None, random_fraction: float = 1 / 3,
                 **kwargs: Any) -> None:
        shared = {k: kwargs[k] for k in ("seed", "metric", "constraints", "warm_start", "pool") if k in kwargs}
        proposer = TPEStrategy(space, per_budget=True, min_points=min_points, random_fraction=random_fraction,
                               **shared)
        kwargs.pop("warm_start", None)  # the proposer serves the warm start
        super().__init__(space, proposer=proposer, **kwargs)
        self.model = proposer
