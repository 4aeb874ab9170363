"""Predictor-guided search in the manner of BANANAS (White et al. 2021), with zero-cost proxies as features.

Each round: fit an ensemble predictor on every told result (features = the space's architecture encoding plus
log-scaled zero-cost proxy scores, as in White et al. 2021 "How powerful are performance predictors"), draw
candidates from mutations of the best architectures so far and from the zero-cost pre-filtered pool, score them
with an acquisition function over the ensemble's mean and spread, and propose the best ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy.stats import norm

from nas.predictors import get_predictor
from nas.spaces.base import Architecture
from nas.strategies.base import STRATEGIES, Strategy

ProxySource = Mapping[str, Mapping[str, float]] | Callable[[Architecture], Mapping[str, float]]
ACQUISITIONS = ("its", "ucb", "ei", "greedy")


def acquisition(kind: str, mean: np.ndarray, std: np.ndarray, best: float, rng: np.random.Generator,
                kappa: float = 0.5) -> np.ndarray:
    """Higher is better. ``its``: independent Thompson sampling (one draw from N(mean, std) per candidate, as in
    BANANAS); ``ucb``: mean + kappa*std; ``ei``: expected improvement over ``best``; ``greedy``: the mean alone
    (no exploration bonus; White et al. 2021 found it competitive in BANANAS's ablation)."""
    if kind == "greedy":
        return np.asarray(mean, dtype=float)
    if kind == "its":
        return rng.normal(mean, std)
    if kind == "ucb":
        return mean + kappa * std
    if kind == "ei":
        s = np.maximum(std, 1e-9)
        z = (mean - best) / s
        return (mean - best) * norm.cdf(z) + s * norm.pdf(z)
    raise ValueError(f"unknown acquisition {kind!r}; choose one of: {', '.join(ACQUISITIONS)}")


@STRATEGIES.register(
    "predictor", paper="White et al., AAAI 2021 (BANANAS)",
    kwargs=("predictor", "acquisition", "proxies", "n_init", "n_parents", "mutations_per_parent", "pool_candidates",
            "random_candidates", "predictor_kwargs"),
)
class PredictorGuided(Strategy):
    """BANANAS-style search: ensemble predictor + acquisition over mutation and pool candidates."""

    name = "predictor"

    def __init__(
        self,
        space,
        *,
        predictor: str = "lgbm",  # chosen on NB201 CIFAR-10 (benchmarks/search.py --tune, docs/benchmarks-search.md)
        acquisition: str = "ucb",
        proxies: ProxySource | None = None,
        n_init: int = 8,
        n_parents: int = 10,
        mutations_per_parent: int = 10,
        pool_candidates: int = 500,
        random_candidates: int = 20,
        predictor_kwargs: Mapping | None = None,
        **kwargs,
    ) -> None:
        super().__init__(space, **kwargs)
        if acquisition not in ACQUISITIONS:
            raise ValueError(f"unknown acquisition {acquisition!r}; choose one of: {', '.join(ACQUISITIONS)}")
        get_predictor(predictor)  # fail now on a bad name, not after the initial random phase
        self.predictor_name, self.acquisition = predictor, acquisition
        self.predictor_kwargs = dict(predictor_kwargs or {})
        self.proxies = proxies
        self.n_init, self.n_parents, self.mutations_per_parent = n_init, n_parents, mutations_per_parent
        self.pool_candidates, self.random_candidates = pool_candidates, random_candidates
        self.model = None
        self._fitted_on = -1
        self._proxy_names: list[str] | None = None
        self._proxy_cache: dict[str, np.ndarray] = {}
        self.predicted: dict[str, float] = {}  # arch -> predicted mean when it was proposed (prospective tau)

    # -- features -----------------------------------------------------------------------------------
    def _proxy_vector(self, arch: Architecture) -> np.ndarray:
        if self.proxies is None:
            return np.zeros(0)
        key = arch.string
        if key not in self._proxy_cache:
            if callable(self.proxies):
                scores = self.proxies(arch)
            else:
                scores = self.proxies.get(key, {})
            if self._proxy_names is None and scores:
                self._proxy_names = sorted(scores)
            names = self._proxy_names or []
            raw = np.array([scores.get(n, np.nan) for n in names], dtype=np.float64)
            self._proxy_cache[key] = np.sign(raw) * np.log1p(np.abs(raw))  # proxies span many decades
        return self._proxy_cache[key]

    def features(self, archs: Sequence[Architecture]) -> np.ndarray:
        enc = np.stack([np.asarray(a.encode(), dtype=np.float64) for a in archs])
        if self.proxies is None:
            return enc
        prefetch = getattr(self.proxies, "prefetch", None)  # a source that scores many at once (on a cluster)
        if prefetch is not None:
            prefetch([a for a in archs if a.string not in self._proxy_cache])
        prox = [self._proxy_vector(a) for a in archs]
        width = max(len(p) for p in prox)
        prox_arr = np.stack([np.pad(p, (0, width - len(p)), constant_values=np.nan) for p in prox])
        return np.concatenate([enc, prox_arr], axis=1)

    # -- predictor ----------------------------------------------------------------------------------
    def _training_set(self) -> tuple[list[Architecture], np.ndarray]:
        obs = [o for o in self.history if np.isfinite(o.score)]
        return [o.arch for o in obs], np.array([o.score for o in obs])

    def _fit(self) -> bool:
        archs, y = self._training_set()
        if len(archs) < max(2, self.n_init):
            return False
        if self._fitted_on != len(self.history):
            x = self.features(archs)
            self._impute = np.where(np.isfinite(x), x, np.nan)
            self._col_mean = np.nan_to_num(np.nanmean(self._impute, axis=0)) if x.size else np.zeros(0)
            seed = int(self.seed) * 100_003 + len(self.history)
            self.model = get_predictor(self.predictor_name, seed=seed, **self.predictor_kwargs)
            self.model.fit(self._fill(x), y)
            self._fitted_on = len(self.history)
        return True

    def _fill(self, x: np.ndarray) -> np.ndarray:
        bad = ~np.isfinite(x)
        if bad.any():
            x = x.copy()
            x[bad] = np.take(self._col_mean, np.nonzero(bad)[1])
        return x

    def predict(self, archs: Sequence[Architecture]) -> np.ndarray | None:
        """Predicted metric for ``archs`` (``None`` before the predictor has enough data)."""
        if not archs or not self._fit():
            return None
        return self.model.predict(self._fill(self.features(archs)))[0]

    # -- candidates ---------------------------------------------------------------------------------
    def _candidates(self) -> list[Architecture]:
        cands: dict[str, Architecture] = {}
        ranked = sorted((o for o in self.history if np.isfinite(o.score)), key=lambda o: -o.score)
        for parent in ranked[: self.n_parents]:
            for _ in range(self.mutations_per_parent):
                child = self._mutate_unseen(parent.arch, attempts=5)
                if child is not None:
                    cands.setdefault(self.key(child), child)
        if self.pool:
            fresh = [a for a in self.pool if not self.is_seen(a)]
            if len(fresh) > self.pool_candidates:
                fresh = [fresh[i] for i in np.sort(self.rng.choice(len(fresh), self.pool_candidates, replace=False))]
            for a in fresh:
                cands.setdefault(self.key(a), a)
        for _ in range(self.random_candidates):
            a = self.space.sample(self.rng)
            if not self.is_seen(a):
                cands.setdefault(self.key(a), a)
        return list(cands.values())

    def propose(self, n: int) -> list[Architecture]:
        if not self._fit():
            # initial design: the pre-filtered pool's best if there is one, else uniform samples
            if self.pool:
                fresh = [a for a in self.pool if not self.is_seen(a)][:n]
                if fresh:
                    return fresh
            return self._random_unseen(n)
        cands = self._candidates()
        if not cands:
            return []
        mean, std = self.model.predict(self._fill(self.features(cands)))
        best = max(o.score for o in self.history if np.isfinite(o.score))
        acq = acquisition(self.acquisition, mean, std, best, self.rng)
        order = np.argsort(-acq, kind="stable")[:n]
        out = [cands[i] for i in order]
        for i in order:
            self.predicted[cands[i].string] = float(mean[i])
        return out
