"""One metric's samples for the judge, with optional per-row weights: the time-matched comparison.

Why: the judging window is cumulative since the rollout started while the challenger's share grows (5 % -> 25 % ->
50 % -> 100 %), so the challenger's rows come mostly from late intervals and the champion's from early ones. Any
trend over the rollout (load building up, the day's traffic mix changing) then reads as a difference between the
models: an A/A canary on a host getting busier is "slower". Post-stratification by rollout step removes it: the
champion's rows are re-weighted to the challenger's time composition (in each stratum, champion weight =
challenger rows / champion rows, challenger weight 1), and a stratum where one variant served nothing gives the
other's rows weight 0 (nothing to compare them with). This is the standard post-stratified (direct
standardisation) estimator; the judge turns the weights into weighted means with Kish's effective sample size
``n_eff = (sum w)^2 / sum w^2`` (Kish, L. (1965). *Survey Sampling*. Wiley) for the sequential test, and into van
Elteren's stratified Wilcoxon test (van Elteren, P. H. (1960). "On the combination of independent two-sample tests
of Wilcoxon." Bull. Int. Statist. Inst. 37) and weighted quantiles for the fixed-horizon one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MetricSamples",
    "matched_stats",
    "pseudo_stats",
    "stratify",
    "stratum_of",
    "stratum_weights",
    "weighted_quantile",
    "weighted_stats",
]


@dataclass
class MetricSamples:
    """Champion and challenger samples of one metric, with optional per-row weights and stratum ids.

    Iterates as ``(champion, challenger)`` so that ``b, c = samples[name]`` keeps working where weights do not
    matter. ``None`` weights mean 1 per row (the cumulative comparison).
    """

    champion: np.ndarray
    challenger: np.ndarray
    champion_weights: np.ndarray | None = None
    challenger_weights: np.ndarray | None = None
    champion_strata: np.ndarray | None = None
    challenger_strata: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.champion = np.asarray(self.champion, dtype=float).ravel()
        self.challenger = np.asarray(self.challenger, dtype=float).ravel()
        for side in ("champion", "challenger"):
            for kind in ("weights", "strata"):
                name = f"{side}_{kind}"
                value = getattr(self, name)
                if value is not None:
                    value = np.asarray(value, dtype=float if kind == "weights" else int).ravel()
                    if len(value) != len(getattr(self, side)):
                        raise ValueError(f"{name} has {len(value)} entries for {len(getattr(self, side))} samples")
                    setattr(self, name, value)

    def __iter__(self) -> Iterator[np.ndarray]:
        yield self.champion
        yield self.challenger

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> np.ndarray:
        return (self.champion, self.challenger)[index]

    @property
    def weighted(self) -> bool:
        return self.champion_weights is not None or self.challenger_weights is not None

    def side(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(values, weights, strata)`` of one side (0 champion, 1 challenger), non-finite values and zero
        weights dropped; weights are ones when none were given."""
        values = (self.champion, self.challenger)[index]
        weights = (self.champion_weights, self.challenger_weights)[index]
        strata = (self.champion_strata, self.challenger_strata)[index]
        weights = np.ones(len(values)) if weights is None else weights
        keep = np.isfinite(values) & (weights > 0)
        return values[keep], weights[keep], (None if strata is None else strata[keep])


def stratify(champion_ts: np.ndarray, challenger_ts: np.ndarray, boundaries: Sequence[float]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-row weights and stratum ids from row timestamps and stratum boundaries ``[t0, t1, ...]`` (unix s).

    A row belongs to the stratum ``[t_i, t_{i+1})`` it was served in (rows before ``t0`` or from the last
    boundary on form strata of their own). Returns ``(champion weights, challenger weights, champion strata,
    challenger strata)``: the champion re-weighted to the challenger's time composition, 0 where a stratum lacks
    either variant.
    """
    s_b, s_c = stratum_of(champion_ts, boundaries), stratum_of(challenger_ts, boundaries)
    w_b, w_c = stratum_weights(s_b, s_c)
    return w_b, w_c, s_b, s_c


def stratum_of(ts, boundaries: Sequence[float]) -> np.ndarray:
    """Stratum id of each timestamp: ``i`` for ``[t_{i-1}, t_i)``, 0 before ``t0``, ``len`` from the last on."""
    return np.searchsorted(np.asarray(sorted(boundaries), dtype=float), np.asarray(ts, dtype=float), side="right")


def stratum_weights(champion_strata: np.ndarray, challenger_strata: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row weights from stratum ids: champion rows weighted ``n_c,s / n_b,s`` (the challenger's time
    composition), challenger rows 1; both 0 in a stratum that lacks either variant."""
    s_b = np.asarray(champion_strata, dtype=int)
    s_c = np.asarray(challenger_strata, dtype=int)
    size = int(max(s_b.max(initial=-1), s_c.max(initial=-1))) + 1
    n_b = np.bincount(s_b, minlength=size).astype(float)
    n_c = np.bincount(s_c, minlength=size).astype(float)
    both = (n_b > 0) & (n_c > 0)
    w_b = np.where(both, n_c / np.maximum(n_b, 1.0), 0.0)
    return w_b[s_b], both[s_c].astype(float)


def pseudo_stats(sw, sw2, swx, swx2) -> tuple:
    """Weighted sums -> ``(n, sum, sum of squares)`` that the unweighted code reads as the weighted mean and
    variance with Kish's effective ``n = (sum w)^2 / sum w^2`` (all ones: the plain statistics)."""
    sw, sw2, swx, swx2 = (np.asarray(x, dtype=float) for x in (sw, sw2, swx, swx2))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(sw > 0, swx / np.where(sw > 0, sw, 1.0), 0.0)
        var = np.where(sw > 0, swx2 / np.where(sw > 0, sw, 1.0) - mean**2, 0.0)
        n_eff = np.where(sw2 > 0, sw**2 / np.where(sw2 > 0, sw2, 1.0), 0.0)
    return n_eff, n_eff * mean, n_eff * (np.maximum(var, 0.0) + mean**2)


def weighted_stats(values: np.ndarray, weights: np.ndarray | None = None) -> tuple:
    """``(n, sum, sum of squares)`` of weighted samples, as :func:`pseudo_stats`."""
    values = np.asarray(values, dtype=float)
    if weights is None:
        return len(values), float(values.sum()), float((values**2).sum())
    w = np.asarray(weights, dtype=float)
    return tuple(float(x) for x in pseudo_stats(w.sum(), (w**2).sum(), (w * values).sum(), (w * values**2).sum()))


def matched_stats(n_b, n_c, s_b, s_c, q_b, q_c) -> tuple[tuple, tuple]:
    """Time-matched ``(n, sum, sum of squares)`` of both sides from per-stratum sums (strata on the last axis):
    the champion re-weighted to the challenger's composition, strata missing a side dropped (as :func:`stratify`).
    Vectorised over leading axes (the simulation benchmark's canaries)."""
    n_b, n_c = np.asarray(n_b, dtype=float), np.asarray(n_c, dtype=float)
    both = (n_b > 0) & (n_c > 0)
    w_b = np.where(both, n_c / np.where(n_b > 0, n_b, 1.0), 0.0)
    w_c = both.astype(float)
    champion = pseudo_stats((w_b * n_b).sum(-1), (w_b**2 * n_b).sum(-1), (w_b * s_b).sum(-1), (w_b * q_b).sum(-1))
    challenger = pseudo_stats((w_c * n_c).sum(-1), (w_c * n_c).sum(-1), (w_c * s_c).sum(-1), (w_c * q_c).sum(-1))
    return champion, challenger


def weighted_quantile(values: np.ndarray, weights: np.ndarray | None, q: float) -> float:
    """The ``q`` quantile (0-1) of weighted samples (the inverse of the weighted empirical distribution, midpoint
    convention), for the median / p99 rows of a time-matched comparison."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan")
    if weights is None:
        return float(np.quantile(values, q))
    order = np.argsort(values)
    v, w = values[order], np.asarray(weights, dtype=float)[order]
    cum = np.cumsum(w) - 0.5 * w
    total = w.sum()
    if total <= 0:
        return float("nan")
    return float(np.interp(q * total, cum, v))
