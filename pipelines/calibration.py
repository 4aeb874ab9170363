"""The calibration map a classifier version is registered with: its top-class probability -> P(prediction right).

Fitted on the validation split (held out from the weights; it chose the best epoch, as it does in Guo et al.'s
temperature scaling, but the test split stays untouched for the offline figures) with isotonic regression (Zadrozny
& Elkan 2002: monotone, no parametric form, preserves the mean, so the map's mean over the validation rows is their
accuracy). It is stored as a few knots (``nasops.calibration`` tag, and ``calibration.json`` in the training run)
that the control plane applies with ``np.interp`` for the label-free accuracy estimate (:mod:`monitoring.cbpe`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from monitoring.core.model_ref import Calibration
from monitoring.vocabulary import tag

__all__ = ["CALIBRATION_ARTIFACT", "MAX_KNOTS", "MIN_ROWS", "fit_calibration", "register_calibration",
           "top_and_correct"]

CALIBRATION_ARTIFACT = "calibration.json"
MAX_KNOTS = 64
"""At most this many knots are stored (a tag, read with every rollout record): beyond it the fitted step function is
sampled at quantiles of the validation scores."""
MIN_ROWS = 20
"""Fewer validation rows than this fit no map (the estimate is NoData rather than a map of a handful of rows)."""


def fit_calibration(top: np.ndarray, correct: np.ndarray, *, split: str = "val",
                    max_knots: int = MAX_KNOTS) -> Calibration | None:
    """Isotonic map of correctness (0/1) on the top-class probability; None with fewer than :data:`MIN_ROWS`
    rows with a finite probability."""
    from sklearn.isotonic import IsotonicRegression

    top = np.asarray(top, dtype=float)
    correct = np.asarray(correct, dtype=float)
    finite = np.isfinite(top)  # a row whose logits overflowed has no probability to calibrate
    top, correct = top[finite], correct[finite]
    if len(top) < MIN_ROWS:
        return None
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(top, correct)
    x, y = np.asarray(iso.X_thresholds_, dtype=float), np.asarray(iso.y_thresholds_, dtype=float)
    if len(x) > max_knots:
        x = np.unique(np.quantile(top, np.linspace(0.0, 1.0, max_knots)))
        y = iso.predict(x)
    x, keep = np.unique(np.round(x, 6), return_index=True)
    y = np.round(y[keep], 6)
    return Calibration(x=x.tolist(), y=y.tolist(), n=len(top), split=split)


def top_and_correct(model: Any, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The served module's top-class probability (softmax of its logits, as the gateway computes it) and whether
    its prediction is right, per row of raw inputs ``x``."""
    import torch

    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(torch.as_tensor(np.asarray(x, dtype=np.float32))).float(), dim=1).numpy()
    return probs.max(axis=1), (probs.argmax(axis=1) == np.asarray(y)).astype(float)


def register_calibration(model: Any, data: Any, model_name: str, version: str, client: Any = None
                         ) -> Calibration | None:
    """Fit the map of a classifier version on ``data``'s validation split, tag the version with it and log it in
    the active (training) run; None (nothing written) for a regression or too small a split."""
    import mlflow

    from monitoring.core.tasks import get_task
    from pipelines import registry

    if get_task(data.task).numeric_labels or data.x_val is None:
        return None
    calibration = fit_calibration(*top_and_correct(model, data.x_val, data.y_val))
    if calibration is None:
        return None
    body = calibration.model_dump(mode="json")
    client = client or registry.client_for_active()
    client.set_model_version_tag(model_name, version, tag("calibration"), json.dumps(body, separators=(",", ":")))
    active = mlflow.active_run()
    if active is not None:
        client.log_dict(active.info.run_id, body, CALIBRATION_ARTIFACT)
    return calibration
