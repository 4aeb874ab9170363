"""Combine zero-cost proxies into one ranking: training-free (rank aggregation) or calibrated on a few trained nets.

Proxies live on incomparable scales (synflow spans orders of magnitude, nwot is a log-determinant), so they are
combined through *ranks* within the pool being scored. ``rank_aggregate`` sums, per architecture, the (weighted)
``log(rank / n)`` of each proxy — the non-linear aggregation of AZ-NAS (Lee & Ham, CVPR 2024): an architecture must
do well on every proxy, since one bad rank drags the sum down much more than one good rank lifts it. ``method=
"mean"`` gives the plain mean rank instead.

``calibrate`` fits weights from a handful of trained architectures (a ridge-regularised non-negative regression of
the accuracy ranks on the proxies' log-ranks, each proxy allowed either direction, solved with
``scipy.optimize.nnls``), and :class:`CalibratedEnsemble` carries those weights to and from JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import nnls
from scipy.stats import rankdata

from nas.proxies.context import WORST_SCORE
from nas.registry import Registry

AGGREGATION_PAPER = "Lee & Ham 2024 (AZ-NAS non-linear rank aggregation)"

ENSEMBLE_REGISTRY: Registry[Callable[[], list[str]]] = Registry("ensemble")
"""Named proxy sets: each entry's builder returns its members; metadata ``needs_data``, ``chosen_on``, ``paper``."""


def register_ensemble(
    name: str, *, summary: str = "", needs_data: bool, chosen_on: str, paper: str = AGGREGATION_PAPER
) -> Callable[[Callable[[], list[str]]], Callable[[], list[str]]]:
    """Decorator: ``@register_ensemble("data_free", needs_data=False, chosen_on=...)`` above ``def members()``."""
    return ENSEMBLE_REGISTRY.register(name, summary=summary, needs_data=needs_data, chosen_on=chosen_on,
                                      paper=paper)


@register_ensemble("ensemble", needs_data=True,
                   chosen_on="proxies with Spearman >= 0.1 on a 60-cell NB201 development table (digits, seed 1)")
def _ensemble() -> list[str]:
    """The training-free default with data: epe_nas + meco + zen (docs/benchmarks-proxies.md)."""
    return ["epe_nas", "meco", "zen"]


@register_ensemble("literature", needs_data=True,
                   chosen_on="the strongest single proxies on NAS-Bench-201 / CIFAR-10 in their papers")
def _literature() -> list[str]:
    """SynFlow, NASWOT, ZiCo and MeCo."""
    return ["synflow", "nwot", "zico", "meco"]


@register_ensemble("data_free", needs_data=False, chosen_on="fixed by hand: the data-free quality proxies")
def _data_free() -> list[str]:
    """Without data: synflow + meco + zen (proxies that only need the input shape)."""
    return ["synflow", "meco", "zen"]


@register_ensemble("nb201_data_free", needs_data=False,
                   chosen_on="every equal-weight subset of the data-free proxies (log and mean aggregation), "
                             "best Spearman on NAS-Bench-201 CIFAR-10 (12-epoch table) only")
def _nb201_data_free() -> list[str]:
    """meco alone: no data-free combination beat it on NB201 CIFAR-10 (docs/benchmarks-proxies.md)."""
    return ["meco"]


class _EnsembleMembers(Mapping[str, list[str]]):
    """``ENSEMBLES[name]`` -> the members of a registered ensemble (a read-only view of the registry)."""

    def __getitem__(self, name: str) -> list[str]:
        if name not in ENSEMBLE_REGISTRY:
            raise KeyError(name)
        return list(ENSEMBLE_REGISTRY.get(name)())

    def __iter__(self) -> Iterator[str]:
        return iter(ENSEMBLE_REGISTRY.names())

    def __len__(self) -> int:
        return len(ENSEMBLE_REGISTRY)

    def __repr__(self) -> str:
        return repr(dict(self.items()))


ENSEMBLES: Mapping[str, list[str]] = _EnsembleMembers()
"""Named proxy sets, each aggregated with equal weights by :func:`rank_aggregate` (see :data:`ENSEMBLE_REGISTRY`)."""

METHODS = ("log", "mean")


def _is_worst(values: np.ndarray) -> np.ndarray:
    return ~np.isfinite(values) | (values <= WORST_SCORE / 2)


def proxy_ranks(values: Sequence[float], *, method: str = "log", reverse: bool = False) -> np.ndarray:
    """Per-architecture feature of one proxy: ``log(rank/n)`` (or ``rank/n``), worst values tied at the bottom.

    ``reverse`` reads the proxy the other way round (lower = better); worst values stay at the bottom.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    v = np.asarray(values, dtype=np.float64)
    worst = _is_worst(v)
    v = np.where(worst, -np.inf, -v if reverse else v)
    ranks = rankdata(v, method="average") / max(len(v), 1)  # ascending: higher score -> higher rank, ties averaged
    return np.log(ranks) if method == "log" else ranks


def rank_aggregate(
    scores: Mapping[str, Sequence[float]],
    weights: Mapping[str, float] | None = None,
    *,
    method: str = "log",
) -> np.ndarray:
    """One aggregate score per architecture (higher = better) from several proxies' scores over the same pool.

    ``weights`` (default: 1 for every proxy in ``scores``) selects and weighs proxies; a negative weight reads that
    proxy reversed (lower = better, as :func:`calibrate` may find on a task) with weight ``|w|``. An architecture
    with the worst value (``WORST_SCORE``, NaN or inf) in any selected proxy is ranked below every other.
    """
    if not scores:
        raise ValueError("rank_aggregate needs the scores of at least one proxy")
    weights = {name: 1.0 for name in scores} if weights is None else dict(weights)
    missing = [name for name in weights if name not in scores]
    if missing:
        raise KeyError(f"weights name proxies without scores: {', '.join(missing)}; scored: {', '.join(scores)}")
    if not all(np.isfinite(w) for w in weights.values()):
        raise ValueError(f"weights must be finite numbers, got {weights}")
    lengths = {len(scores[name]) for name in weights}
    if len(lengths) != 1:
        raise ValueError(f"every proxy must score the same architectures; got lengths {sorted(lengths)}")
    n = lengths.pop()
    total = np.zeros(n)
    worst = np.zeros(n, dtype=bool)
    for name, w in weights.items():
        values = np.asarray(scores[name], dtype=np.float64)
        worst |= _is_worst(values)
        if w != 0:
            total += abs(w) * proxy_ranks(values, method=method, reverse=w < 0)
    if worst.any() and (~worst).any():
        total[worst] = total[~worst].min() - 1.0
    return total


def ensemble_score(name: str, scores: Mapping[str, Sequence[float]], *, method: str = "log") -> np.ndarray:
    """:func:`rank_aggregate` of the named proxy set in :data:`ENSEMBLES`."""
    members = ENSEMBLE_REGISTRY.get(name)()  # an unknown name raises KeyError listing the valid ones
    return rank_aggregate(scores, {p: 1.0 for p in members}, method=method)


def calibrate(
    scores: Mapping[str, Sequence[float]],
    accuracies: Sequence[float],
    *,
    method: str = "log",
    ridge: float = 0.3,
    signed: bool = True,
) -> dict[str, float]:
    """Proxy weights fitted on a few trained architectures; their absolute values sum to 1.

    Each proxy gives two candidate features, its :func:`proxy_ranks` read as published (higher = better) and, with
    ``signed``, read reversed; both are centred and scaled to unit norm. Non-negative least squares
    (``scipy.optimize.nnls``) fits the centred accuracy ranks with a ridge penalty ``ridge·‖w − w0‖²`` whose
    target ``w0`` gives every proxy an equal weight in its published direction, so a handful of architectures
    can move the weights only as far as the data supports. A proxy keeps its stronger direction; a reversed one
    gets a negative weight (see :func:`rank_aggregate`).
    """
    names = list(scores)
    acc = np.asarray(accuracies, dtype=np.float64)
    if len(acc) < 3:
        raise ValueError(f"calibrate needs at least 3 trained architectures, got {len(acc)}")
    if any(len(scores[n]) != len(acc) for n in names):
        raise ValueError("every proxy must score exactly the architectures whose accuracies are given")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    directions = (False, True) if signed else (False,)
    columns = [proxy_ranks(scores[n], method=method, reverse=rev) for rev in directions for n in names]
    x = np.column_stack(columns)
    x -= x.mean(0)
    scale = np.linalg.norm(x, axis=0)
    x /= np.where(scale > 0, scale, 1.0)
    r = rankdata(acc)
    r = (r - r.mean()) / max(np.linalg.norm(r - r.mean()), 1e-12)
    p = len(names)
    prior = np.concatenate([np.full(p, 1.0 / p), np.zeros(p * (len(directions) - 1))])
    lam = np.sqrt(ridge)
    a = np.vstack([x, lam * np.eye(len(prior))])
    b = np.concatenate([r, lam * prior])
    w, _ = nnls(a, b)
    w = np.where(scale > 0, w, 0.0)
    forward, backward = w[:p], (w[p:] if signed else np.zeros(p))
    signed_w = np.where(forward >= backward, forward, -backward)
    if not np.abs(signed_w).sum() > 0:
        signed_w = np.full(p, 1.0 / p)
    signed_w = signed_w / np.abs(signed_w).sum()
    return {name: float(v) for name, v in zip(names, signed_w, strict=True)}


@dataclass
class CalibratedEnsemble:
    """Proxy weights fitted by :func:`calibrate`, applied by :func:`rank_aggregate`, saved as JSON."""

    weights: dict[str, float]
    method: str = "log"
    meta: dict = field(default_factory=dict)

    @classmethod
    def fit(
        cls, scores: Mapping[str, Sequence[float]], accuracies: Sequence[float], *, method: str = "log",
        ridge: float = 0.3, signed: bool = True,
    ) -> CalibratedEnsemble:
        """Fit :func:`calibrate` weights and remember how they were fitted."""
        weights = calibrate(scores, accuracies, method=method, ridge=ridge, signed=signed)
        return cls(weights, method, {"fitted_on": len(accuracies), "ridge": ridge, "signed": signed})

    @property
    def proxies(self) -> list[str]:
        return [name for name, w in self.weights.items() if w != 0]

    def score(self, scores: Mapping[str, Sequence[float]]) -> np.ndarray:
        return rank_aggregate(scores, self.weights, method=self.method)

    def to_json(self) -> str:
        return json.dumps({"weights": self.weights, "method": self.method, "meta": self.meta}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> CalibratedEnsemble:
        data = json.loads(text)
        if not isinstance(data, dict) or "weights" not in data:
            raise ValueError("a calibrated ensemble JSON needs a 'weights' object mapping proxy names to weights")
        return cls({str(k): float(v) for k, v in data["weights"].items()}, data.get("method", "log"),
                   data.get("meta", {}))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path) -> CalibratedEnsemble:
        return cls.from_json(Path(path).read_text())
