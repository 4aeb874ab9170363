"""What a variant did on live traffic, defined once: requests, errors, fallbacks, latency, labelled accuracy.

The judge's prediction-log source, the canary report, the shadow tournament and ``nasops status`` all read the
prediction log through these definitions, so one log always gives one error count:

- a **request** is one ``request_id`` a variant handled (a batch counts once);
- an **error** is a request the variant failed to answer (status ``error`` or ``timeout``);
- a **fallback** is a request the champion answered because the challenger failed (status ``fallback`` on the
  champion's row): an answer, not an error — the challenger's own row carries the error;
- **latency** is per answered request (errors excluded: a timeout's latency is the timeout, not the model);
- **accuracy** is over labelled rows only (labels arrive late, through ``/feedback``); for a regression model
  (numeric predictions and labels) **rmse** and **mae** are, over the same rows, from ``|prediction - label|``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

FAILED_STATUSES: tuple[str, ...] = ("error", "timeout")
FALLBACK_STATUS = "fallback"


def requests_of(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per request of one variant's log rows."""
    return rows.drop_duplicates("request_id")


def error_flags(rows: pd.DataFrame) -> np.ndarray:
    """1.0 per request the variant failed to answer, 0.0 per answered one."""
    return requests_of(rows)["status"].isin(FAILED_STATUSES).to_numpy(dtype=float)


def answered_latency_ms(rows: pd.DataFrame) -> np.ndarray:
    """Latency of each answered request, in milliseconds."""
    requests = requests_of(rows)
    return requests.loc[~requests["status"].isin(FAILED_STATUSES), "latency_ms"].to_numpy(dtype=float)


def correct_flags(rows: pd.DataFrame) -> np.ndarray:
    """1.0 / 0.0 per labelled row."""
    return rows["correct"].dropna().astype(float).to_numpy()


def absolute_errors(rows: pd.DataFrame) -> np.ndarray:
    """``|prediction - label|`` of each labelled row whose prediction and label are numbers (a regression's log)."""
    both = rows[rows["prediction"].notna() & rows["label"].notna()]
    errors = [abs(float(p) - float(y)) for p, y in zip(both["prediction"], both["label"], strict=True)
              if _is_number(p) and _is_number(y)]
    return np.asarray(errors, dtype=float)


LABEL_MEASURES = ("log_loss", "balanced_correct", "cost")
"""Per-labelled-row terms of the refresh-level metrics (``monitoring.core.metrics``) beyond ``correct`` and
``abs_error``: their mean over a variant's labelled rows is the metric on those rows."""


def label_measure(measure: str, rows: pd.DataFrame, *, classes: Sequence[Any] = (),
                  reference: Mapping[str, float] | None = None,
                  params: Mapping[str, Any] | None = None) -> np.ndarray:
    """The per-row terms of ``measure`` (one of :data:`LABEL_MEASURES`) over the labelled rows of ``rows``:

    - ``log_loss``: ``-log p(true class)`` from the logged probabilities (in ``classes`` order), p clipped at
      :data:`monitoring.core.metrics.LOG_LOSS_FLOOR`;
    - ``balanced_correct``: 1/0 correct weighted by ``1 / (k * share of the true class)`` in ``reference`` (the
      training label mix), so the mean is the balanced accuracy when the labels arrive in the training mix;
    - ``cost``: ``cost_matrix[true, predicted]`` of ``params``.
    Rows whose label is not one of ``classes`` (or without probabilities, for log loss) give no term."""
    from monitoring.core.metrics import LOG_LOSS_FLOOR, class_index, cost_matrix

    if measure not in LABEL_MEASURES:
        raise ValueError(f"unknown label measure {measure!r}; known: {', '.join(LABEL_MEASURES)}")
    matrix = cost_matrix(classes, params or {}) if measure == "cost" else None
    labelled = rows[rows["correct"].notna() & rows["label"].notna()]
    out: list[float] = []
    for label, prediction, probs, correct in zip(labelled["label"], labelled["prediction"],
                                                 labelled["probabilities"], labelled["correct"], strict=True):
        try:
            if measure == "log_loss" and probs:
                p = float(probs[class_index(label, classes)])
                out.append(-math.log(min(max(p, LOG_LOSS_FLOOR), 1.0)))
            elif measure == "balanced_correct":
                share = (reference or {}).get(_key(label))
                weight = 1.0 / (len(reference or {}) * share) if share else 1.0
                out.append(float(bool(correct)) * weight)
            elif matrix is not None:
                out.append(float(matrix[class_index(label, classes), class_index(prediction, classes)]))
        except (IndexError, ValueError):  # a label outside the model's classes: no term (it is no such row)
            continue
    return np.asarray(out, dtype=float)


def _key(label: Any) -> str:
    """A class label as the training mix spells it (``3``, ``3.0`` and ``"3"`` are one class)."""
    if isinstance(label, float) and label.is_integer():
        return str(int(label))
    return str(label)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def regression_summary(rows: pd.DataFrame) -> dict[str, float | None]:
    """Online RMSE and MAE of a regression variant's labelled rows (None without any)."""
    errors = absolute_errors(rows) if len(rows) else np.array([])
    if not len(errors):
        return {"rmse": None, "mae": None}
    return {"rmse": float(np.sqrt(np.mean(errors**2))), "mae": float(errors.mean())}


def summarize(frame: pd.DataFrame, variant: str) -> dict[str, Any]:
    """The online facts of one variant in a prediction-log frame (JSON-able; None where there is no sample)."""
    rows = frame[frame["variant"] == variant] if len(frame) else frame
    if rows.empty:
        return {"requests": 0, "errors": 0, "fallbacks": 0, "error_rate": None, "labelled_rows": 0,
                "correct_rows": 0, "accuracy": None, "p50_ms": None, "p99_ms": None}
    requests = requests_of(rows)
    errors = error_flags(rows)
    latency = answered_latency_ms(rows)
    correct = correct_flags(rows)
    return {
        "requests": len(requests),
        "errors": int(errors.sum()),
        "fallbacks": int((requests["status"] == FALLBACK_STATUS).sum()),
        "error_rate": float(errors.mean()) if len(errors) else None,
        "labelled_rows": len(correct),
        "correct_rows": int(correct.sum()),
        "accuracy": float(correct.mean()) if len(correct) else None,
        "p50_ms": float(np.percentile(latency, 50)) if len(latency) else None,
        "p99_ms": float(np.percentile(latency, 99)) if len(latency) else None,
    }


def summarize_variants(frame: pd.DataFrame, variants: tuple[str, ...] | list[str]) -> dict[str, dict[str, Any]]:
    return {variant: summarize(frame, variant) for variant in variants}
