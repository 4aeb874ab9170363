"""Confidence-based performance estimation (CBPE): a classifier's accuracy on live traffic before its labels come.

The idea is NannyML's CBPE (https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html;
implemented here from its description, no code taken): when a model's scores are *calibrated*, the probability that a
prediction is right is its calibrated top-class probability, so the mean of that over the served rows estimates the
accuracy, and the expected confusion matrix (each row's calibrated class probabilities summed by predicted class)
estimates the other confusion-matrix metrics. Raw softmax scores of a neural network are not calibrated (usually
overconfident: Guo et al., "On Calibration of Modern Neural Networks", ICML 2017), so registration fits a map from
the top-class probability to correctness on the held-out validation rows with isotonic regression (Zadrozny & Elkan,
"Transforming classifier scores into accurate multiclass probability estimates", KDD 2002) and stores its knots with
the version (:class:`monitoring.core.model_ref.Calibration`, ``pipelines/calibration.py``). Here the map is applied
with ``np.interp``: no scikit-learn in the control plane.

What it cannot see (docs/canary.md, "The label-free accuracy estimate"): a change of P(label | input) (concept
drift: the same inputs now mean another class) leaves the scores, and so the estimate, unchanged; and under covariate
drift the map fitted on in-distribution rows can itself be wrong (a network stays confident on inputs it has never
seen), so the estimate is a first-interval signal, not a replacement for the labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from monitoring.core.model_ref import Calibration
from monitoring.vocabulary import VARIANTS

__all__ = ["ESTIMATED_METRICS", "MISSING_METRICS", "apply_calibration", "beside_realised", "estimate",
           "estimated_accuracy", "expected_confusion", "expected_correct", "probability_rows"]


def apply_calibration(top: np.ndarray, calibration: Calibration) -> np.ndarray:
    """P(correct) of each row from its top-class probability (piecewise linear between the knots, constant beyond
    them, as scikit-learn's ``IsotonicRegression(out_of_bounds="clip")`` predicts)."""
    values = np.interp(np.asarray(top, dtype=float), calibration.x, calibration.y)
    return np.clip(values, 0.0, 1.0)


def probability_rows(values: Iterable[Any]) -> list[np.ndarray]:
    """The logged probability vectors that are there (a failed row, or a regression's, has none)."""
    out = []
    for p in values:
        if isinstance(p, list | tuple | np.ndarray) and len(p):
            out.append(np.asarray(p, dtype=float))
    return out


def expected_correct(rows: pd.DataFrame, calibration: Calibration | None) -> np.ndarray:
    """The ``expected_correct`` measure: per served row with probabilities, the calibrated probability that its
    prediction is right; its mean is the estimated accuracy. No map (a version registered before maps were fitted,
    or a regression) gives no sample: the judge reads NoData, never an uncalibrated guess."""
    if calibration is None or rows.empty or "probabilities" not in rows:
        return np.array([], dtype=float)
    tops = [float(p.max()) for p in probability_rows(rows["probabilities"])]
    return apply_calibration(np.asarray(tops, dtype=float), calibration) if tops else np.array([], dtype=float)


def estimated_accuracy(rows: pd.DataFrame, calibration: Calibration | None) -> float | None:
    """The mean of :func:`expected_correct` (None without a map or a row with probabilities)."""
    values = expected_correct(rows, calibration)
    return float(values.mean()) if len(values) else None


def expected_confusion(probabilities: np.ndarray, calibration: Calibration | None) -> np.ndarray:
    """The expected confusion matrix ``M[true, predicted]`` of ``(n, C)`` probability rows: each row adds its
    class probabilities to the column of its predicted class. With a map, the predicted class's probability is the
    calibrated one and the rest (``1 - p``) is shared among the other classes in proportion to their raw
    probabilities: the stored map calibrates the top class only (NannyML fits one calibrator per class, one vs rest;
    until the registration stores those, the off-diagonal split is the model's own)."""
    probs = np.asarray(probabilities, dtype=float)
    if probs.ndim != 2 or not len(probs):
        raise ValueError("expected_confusion needs an (n, C) array of probabilities with n >= 1")
    predicted = probs.argmax(axis=1)
    rows = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)
    if calibration is not None:
        top = rows[np.arange(len(rows)), predicted]
        right = apply_calibration(top, calibration)
        others = rows.copy()
        others[np.arange(len(rows)), predicted] = 0.0
        mass = others.sum(axis=1, keepdims=True)
        share = np.where(mass > 0, others / np.maximum(mass, 1e-12), 0.0)
        rows = share * (1.0 - right)[:, None]
        rows[np.arange(len(rows)), predicted] = right
    matrix = np.zeros((probs.shape[1], probs.shape[1]))
    np.add.at(matrix.T, predicted, rows)  # matrix[:, j] += each row predicted j
    return matrix


def _accuracy(m: np.ndarray, **_: Any) -> float:
    return float(np.trace(m) / m.sum())


def _balanced_accuracy(m: np.ndarray, **_: Any) -> float:
    support = m.sum(axis=1)
    recalls = np.diag(m)[support > 0] / support[support > 0]
    return float(recalls.mean())


def _f1(m: np.ndarray, *, positive: int | None = None, **_: Any) -> float:
    if positive is None:
        raise ValueError("an F1 estimate needs the index of the positive class")
    tp = m[positive, positive]
    fp, fn = m[:, positive].sum() - tp, m[positive, :].sum() - tp
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn > 0 else 0.0


def _cost(m: np.ndarray, *, cost: Sequence[Sequence[float]] | None = None, **_: Any) -> float:
    if cost is None:
        raise ValueError("a cost estimate needs the cost matrix (cost[true][predicted])")
    return float((m * np.asarray(cost, dtype=float)).sum() / m.sum())


ESTIMATED_METRICS: Mapping[str, Callable[..., float]] = {
    "accuracy": _accuracy, "balanced_accuracy": _balanced_accuracy, "f1": _f1, "cost": _cost}
"""Metrics estimated from the expected confusion matrix (``cost``: mean cost per row of ``cost[true][predicted]``)."""
MISSING_METRICS: Mapping[str, str] = {
    "log_loss": "needs calibrated probabilities of every class (one calibrator per class), not the top-class map",
    "roc_auc": "needs per-class calibrated scores to build the expected ROC curve (NannyML's CBPE does)",
    "rmse": "a regression: needs a model of the expected error (NannyML's direct loss estimation), not a calibration",
    "mae": "a regression: needs a model of the expected error (NannyML's direct loss estimation), not a calibration",
}
"""Metrics the label-free estimate does not cover yet, and what each would need."""


def estimate(metric: str, probabilities: np.ndarray, calibration: Calibration | None, **options: Any) -> float:
    """The label-free estimate of ``metric`` (a key of :data:`ESTIMATED_METRICS`) over ``(n, C)`` probability rows;
    ``options``: ``positive`` (F1's class index), ``cost`` (the cost matrix). A metric of :data:`MISSING_METRICS` is
    a ``ValueError`` saying what it would need."""
    if metric in MISSING_METRICS:
        raise ValueError(f"no label-free estimate of {metric!r} yet: it {MISSING_METRICS[metric]}")
    if metric not in ESTIMATED_METRICS:
        raise ValueError(f"unknown metric {metric!r}; estimated: {', '.join(ESTIMATED_METRICS)}")
    return ESTIMATED_METRICS[metric](expected_confusion(probabilities, calibration), **options)


def beside_realised(evidence: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Per variant, one phrase putting the estimate beside the realised accuracy of the same judged window (from a
    verdict's evidence rows: the ``expected_correct`` and ``correct`` measures); empty without an estimate row."""
    rows = {r.get("measure"): r for r in evidence}
    est, real = rows.get("expected_correct"), rows.get("correct")
    if est is None:
        return {}
    out = {}
    for variant in VARIANTS:
        value, n = est.get(f"{variant}_value"), est.get(f"n_{variant}") or 0
        text = (f"accuracy estimated {value:.3f} over {n} rows (label-free)" if n and value is not None
                else "accuracy estimate –")
        if real is not None:
            r_value, r_n = real.get(f"{variant}_value"), real.get(f"n_{variant}") or 0
            text += (f" · realised {r_value:.3f} from {r_n} labels" if r_n and r_value is not None
                     else " · realised – (no labels yet)")
        out[variant] = text
    return out
