"""The refresh-level metric: what a team ranks and judges models by, defined once for every stage.

A refresh names one metric (``--metric``, or the default :func:`default_metric` picks from the target), and every
stage reads it from this registry: the search and retraining rank (and early-stop) by its offline scorer, the
tournament and the canary judge compare its per-row online measure, and the registered version records it
(``nasops.metric``). Offline and online are the same quantity: the online measure is the per-row term whose mean
(or root mean square) *is* the offline metric on the same rows, so a challenger that wins offline is asked to win
the same contest online.

Entries are registered with :func:`register_metric` (the timm way); the metadata beside each says which tasks it
applies to, which way is better, its offline scorer, its online measure and how the judge compares it. Offline
scorers take the true labels (class indices, or numbers) and the model's output (class probabilities ``(n, k)``,
or predicted numbers) and use numpy only: this module sits in the light core (no scikit-learn, no torch).

ROC AUC and F1 are not means of per-row terms (AUC ranks pairs, F1 is a ratio of counts), so no per-row online
measure equals them; they are **offline only** here, and a refresh that would canary a model on them is refused in
one line (:func:`online_problem`) rather than judged on something else under their name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["IMBALANCE_SHARE", "Metric", "default_metric", "get_metric", "metric_names", "minority_share",
           "register_metric", "resolve_params", "scorer"]

IMBALANCE_SHARE = 0.2
"""A binary target whose rarer class holds less than this share of the rows is *imbalanced*: it does not default
to accuracy, and the metrics that reward finding the rare class train with class weights."""
LOG_LOSS_FLOOR = 1e-6
"""Probabilities are clipped here before the log: one confidently wrong row costs at most -log(1e-6) = 13.8 nats,
so a single row cannot make a variant's mean infinite (the gateway logs probabilities to 6 decimals)."""

_METRICS: dict[str, Metric] = {}


@dataclass(frozen=True)
class Metric:
    """One metric and everything each stage needs to use it (see the module docstring)."""

    name: str
    label: str
    tasks: tuple[str, ...]
    higher_is_better: bool
    score: Callable[..., float]
    """``score(y_true, output, classes, **params) -> float`` in the metric's own direction"""
    online_measure: str | None
    """the prediction-log measure whose per-row values the judge compares (None: offline only)"""
    online_statistic: str = "mean"
    effect: str = "absolute"
    tolerance: float = 0.02
    """the judge's margin (non-inferiority) and powered gain (superiority), in the effect's unit"""
    params: tuple[str, ...] = ()
    needs_positive: bool = False
    """a target of more than two classes must name ``positive_class`` (F1 of which class?)"""
    class_weighting: bool = False
    """an imbalanced binary target trains with inverse-frequency class weights under this metric (it rewards
    finding the rare class); proper scoring rules (log loss) do not: weights would bias the probabilities"""
    offline_only_reason: str = ""
    description: str = ""

    @property
    def online(self) -> bool:
        return self.online_measure is not None

    def signed(self, value: float) -> float:
        """The value as a score where higher is better (what the search and retraining maximise)."""
        return float(value) if self.higher_is_better else -float(value)


def register_metric(metric: Metric) -> Metric:
    if metric.name in _METRICS:
        raise ValueError(f"metric {metric.name!r} is already registered")
    _METRICS[metric.name] = metric
    return metric


def metric(**meta: Any) -> Callable[[Callable[..., float]], Callable[..., float]]:
    """Decorator: register the decorated offline scorer as a metric with ``meta`` (the :class:`Metric` fields)."""
    def wrap(fn: Callable[..., float]) -> Callable[..., float]:
        register_metric(Metric(score=fn, **meta))
        return fn
    return wrap


def metric_names(task: str | None = None) -> list[str]:
    return sorted(n for n, m in _METRICS.items() if task is None or task in m.tasks)


def get_metric(name: str) -> Metric:
    """The metric called ``name``; an unknown name is a ``ValueError`` listing the known ones."""
    try:
        return _METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; choose one of: {', '.join(metric_names())}") from None


# -- helpers of the scorers ------------------------------------------------------------------------------------------
def _labels(y_true: Any) -> np.ndarray:
    return np.asarray(y_true).reshape(-1).astype(np.int64)


def _proba(output: Any, n: int) -> np.ndarray:
    p = np.asarray(output, dtype=np.float64)
    if p.ndim != 2 or len(p) != n:
        raise ValueError(f"expected class probabilities shaped (n={n}, classes), got {p.shape}")
    return p


def class_index(value: Any, classes: Sequence[Any]) -> int:
    """The position of a class label among ``classes`` (``1``, ``1.0`` and ``"1"`` are one class)."""
    keys = [str(c) for c in classes]
    for candidate in (value, str(value), _int_text(value)):
        if str(candidate) in keys:
            return keys.index(str(candidate))
    raise ValueError(f"class {value!r} is not one of the model's classes {list(classes)}")


def _int_text(value: Any) -> str:
    try:
        return str(int(float(value))) if float(value).is_integer() else str(value)
    except (TypeError, ValueError):
        return str(value)


def positive_index(classes: Sequence[Any], params: Mapping[str, Any]) -> int:
    """The positive class of a binary metric: ``positive_class`` when named, else the last class (``1``, ``yes``:
    the sorted order puts the usual positive label last)."""
    if params.get("positive_class") is not None:
        return class_index(params["positive_class"], classes)
    if len(classes) != 2:
        raise ValueError(f"a target with {len(classes)} classes needs metric_params.positive_class")
    return len(classes) - 1


def cost_matrix(classes: Sequence[Any], params: Mapping[str, Any]) -> np.ndarray:
    """``cost[true, predicted]``, square in the number of classes, non-negative."""
    raw = params.get("cost_matrix")
    if raw is None:
        raise ValueError("metric cost needs metric_params.cost_matrix: one row per true class, one column per "
                         "predicted class, in the classes' sorted order")
    matrix = np.asarray(raw, dtype=np.float64)
    k = len(classes)
    if matrix.shape != (k, k) or not np.isfinite(matrix).all() or (matrix < 0).any():
        raise ValueError(f"metric_params.cost_matrix must be {k}x{k} non-negative numbers (classes {list(classes)}), "
                         f"got shape {matrix.shape}")
    return matrix


def rank_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """The Mann-Whitney form of ROC AUC: P(score of a positive > score of a negative), ties counting one half."""
    pos, neg = int(positive.sum()), int((~positive).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[positive].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


# -- the registry ----------------------------------------------------------------------------------------------------
CLASSIFICATION, REGRESSION = ("classification",), ("regression",)


@metric(name="accuracy", label="accuracy", tasks=CLASSIFICATION, higher_is_better=True, online_measure="correct",
        description="share of rows whose most probable class is the true one")
def accuracy(y_true: Any, output: Any, classes: Sequence[Any] = (), **_: Any) -> float:
    y = _labels(y_true)
    return float((_proba(output, len(y)).argmax(1) == y).mean()) if len(y) else float("nan")


@metric(name="balanced_accuracy", label="balanced accuracy", tasks=CLASSIFICATION, higher_is_better=True,
        online_measure="balanced_correct", class_weighting=True,
        description="mean per-class recall: each class counts as much as any other, whatever its share")
def balanced_accuracy(y_true: Any, output: Any, classes: Sequence[Any] = (), **_: Any) -> float:
    y = _labels(y_true)
    predicted = _proba(output, len(y)).argmax(1)
    recalls = [float((predicted[y == c] == c).mean()) for c in np.unique(y)]
    return float(np.mean(recalls)) if recalls else float("nan")


@metric(name="log_loss", label="log loss", tasks=CLASSIFICATION, higher_is_better=False, online_measure="log_loss",
        tolerance=0.01,
        description="mean -log p(true class) (nats, p clipped at 1e-6): a proper scoring rule, threshold-free")
def log_loss(y_true: Any, output: Any, classes: Sequence[Any] = (), **_: Any) -> float:
    y = _labels(y_true)
    p = _proba(output, len(y))
    return float(-np.log(np.clip(p[np.arange(len(y)), y], LOG_LOSS_FLOOR, 1.0)).mean()) if len(y) else float("nan")


@metric(name="roc_auc", label="ROC AUC", tasks=CLASSIFICATION, higher_is_better=True, online_measure=None,
        params=("positive_class",),
        offline_only_reason="ROC AUC ranks pairs of rows, it is not a mean of per-row terms, so the canary has no "
                            "per-row measure that equals it",
        description="binary: P(a positive scores above a negative); more classes: the mean one-vs-rest AUC")
def roc_auc(y_true: Any, output: Any, classes: Sequence[Any] = (), **params: Any) -> float:
    y = _labels(y_true)
    p = _proba(output, len(y))
    if p.shape[1] == 2 or params.get("positive_class") is not None:
        k = positive_index(classes or list(range(p.shape[1])), params)
        return rank_auc(p[:, k], y == k)
    values = [rank_auc(p[:, k], y == k) for k in range(p.shape[1])]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


@metric(name="f1", label="F1", tasks=CLASSIFICATION, higher_is_better=True, online_measure=None,
        params=("positive_class",), class_weighting=True, needs_positive=True,
        offline_only_reason="F1 is a ratio of counts over all rows, not a mean of per-row terms, so the canary has no "
                            "per-row measure that equals it",
        description="F1 of the positive class (metric_params.positive_class; binary default: the last class)")
def f1(y_true: Any, output: Any, classes: Sequence[Any] = (), **params: Any) -> float:
    y = _labels(y_true)
    p = _proba(output, len(y))
    k = positive_index(classes or list(range(p.shape[1])), params)
    predicted = p.argmax(1)
    tp = float(((predicted == k) & (y == k)).sum())
    denominator = float((predicted == k).sum() + (y == k).sum())
    return 2 * tp / denominator if denominator else 0.0


@metric(name="cost", label="cost per row", tasks=CLASSIFICATION, higher_is_better=False, online_measure="cost",
        params=("cost_matrix",), class_weighting=True,
        description="mean cost[true, predicted] of metric_params.cost_matrix (e.g. a missed default costs 10)")
def cost(y_true: Any, output: Any, classes: Sequence[Any] = (), **params: Any) -> float:
    y = _labels(y_true)
    p = _proba(output, len(y))
    matrix = cost_matrix(classes or list(range(p.shape[1])), params)
    return float(matrix[y, p.argmax(1)].mean()) if len(y) else float("nan")


def _errors(y_true: Any, output: Any) -> np.ndarray:
    return np.asarray(output, dtype=np.float64).reshape(-1) - np.asarray(y_true, dtype=np.float64).reshape(-1)


@metric(name="rmse", label="RMSE", tasks=REGRESSION, higher_is_better=False, online_measure="abs_error",
        online_statistic="rms", effect="relative", tolerance=0.1,
        description="root mean squared error, in the target's units")
def rmse(y_true: Any, output: Any, classes: Sequence[Any] = (), **_: Any) -> float:
    err = _errors(y_true, output)
    return float(np.sqrt(np.mean(err**2))) if len(err) else float("nan")


@metric(name="mae", label="MAE", tasks=REGRESSION, higher_is_better=False, online_measure="abs_error",
        effect="relative", tolerance=0.1, description="mean absolute error, in the target's units")
def mae(y_true: Any, output: Any, classes: Sequence[Any] = (), **_: Any) -> float:
    err = _errors(y_true, output)
    return float(np.abs(err).mean()) if len(err) else float("nan")


# -- choosing and checking ---------------------------------------------------------------------------------------
def minority_share(class_counts: Sequence[float]) -> float:
    counts = np.asarray(class_counts, dtype=np.float64)
    return float(counts.min() / counts.sum()) if len(counts) and counts.sum() > 0 else 1.0


def imbalanced(task: str, class_counts: Sequence[float]) -> bool:
    """A binary target whose rarer class is below :data:`IMBALANCE_SHARE` of the rows."""
    return task == "classification" and len(class_counts) == 2 and minority_share(class_counts) < IMBALANCE_SHARE


def default_metric(task: str, class_counts: Sequence[float] = ()) -> tuple[str, str]:
    """The metric a refresh uses when none is named, and why (one clause, printed by the refresh).

    Regression: RMSE. An imbalanced binary target: log loss — accuracy would rank "always the majority class" at
    the top (97 % on a 3 %-positive table), while log loss scores that constant answer at the entropy of the base
    rate, which any model with signal beats; it is a proper scoring rule, so it rewards calibrated probabilities
    (what a team thresholds later), and it is a mean of per-row terms, so the canary judges exactly it online (ROC
    AUC, the other usual choice, is not: see the module docstring). Otherwise: accuracy."""
    if task == "regression":
        return "rmse", "a numeric target"
    if imbalanced(task, class_counts):
        share = minority_share(class_counts)
        return "log_loss", (f"a binary target whose rarer class is {share:.1%} of the rows (below "
                            f"{IMBALANCE_SHARE:.0%}): accuracy would rank 'always the majority class' first")
    return "accuracy", "a classification target without a rare class"


def resolve_params(name: str, classes: Sequence[Any], params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check ``params`` against the metric and the target's classes; returns them as plain JSON values. A
    ``ValueError`` names what is wrong (unknown key, unknown class, a cost matrix of the wrong shape)."""
    entry = get_metric(name)
    params = dict(params or {})
    unknown = sorted(set(params) - set(entry.params))
    if unknown:
        accepted = ", ".join(entry.params) or "none"
        raise ValueError(f"metric {name} takes no metric_params {unknown} (accepted: {accepted})")
    if "positive_class" in params and params["positive_class"] is not None:
        params["positive_class"] = classes[class_index(params["positive_class"], classes)]
    if entry.needs_positive and classes:
        positive_index(classes, params)  # a multi-class target without a named class fails here
    if "cost_matrix" in entry.params:
        params["cost_matrix"] = cost_matrix(classes, params).tolist()
    return params


def online_problem(name: str) -> str | None:
    """Why the canary cannot judge ``name`` online (None: it can)."""
    entry = get_metric(name)
    if entry.online:
        return None
    return (f"metric {name} is offline only ({entry.offline_only_reason}); pass --skip-canary to rank by it "
            "offline, or choose an online metric (accuracy, balanced_accuracy, log_loss, cost, rmse, mae)")


def scorer(name: str, classes: Sequence[Any] = (), params: Mapping[str, Any] | None = None
           ) -> Callable[[Any, Any], float]:
    """``(y_true, output) -> float`` where higher is better: what the search, early stopping and retraining
    maximise (a lower-is-better metric is negated, as the search's ``val_neg_rmse`` is)."""
    entry, params = get_metric(name), dict(params or {})
    classes = list(classes)

    def score(y_true: Any, output: Any) -> float:
        return entry.signed(entry.score(y_true, output, classes, **params))

    return score
