"""Drift during a canary: per-interval data drift of each variant's inputs and challenger-vs-champion prediction
drift (computed by the controller each judged interval, stored in the rollout record, published by every gateway
worker as ``nasops_drift_share``), plus the end-of-canary Evidently report.

Drift is measured on the *distinct* inputs of a window: replayed traffic repeats a small prod split many times, and
duplicated rows make every two-sample test see a difference that is not there. A window with too few distinct rows
is reported as too small to judge (None), not as "no drift".
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from monitoring.drift import data_drift_share, features_frame, prediction_drift
from monitoring.sources import label_key
from monitoring.vocabulary import CHALLENGER, CHAMPION, VARIANTS
from pipelines.canary.config import CanaryConfig

MIN_DISTINCT_ROWS = 10

log = logging.getLogger("nasops.canary")


def distinct_inputs(frame: pd.DataFrame, variant: str | None = None, *, include_shadow: bool = True) -> np.ndarray:
    """The distinct input rows a variant (or, with None, the gateway) received: one per value, whatever the
    number of requests, fallbacks or shadow copies that carried it."""
    rows = frame if variant is None else frame[frame["variant"] == variant]
    if not include_shadow and "shadow" in rows:
        rows = rows[~rows["shadow"].astype(bool)]
    if rows.empty or isinstance(rows["inputs"].iloc[0], dict):  # a table model's named raw rows: no float matrix
        return np.empty((0, 0))
    x = np.array(rows["inputs"].tolist(), dtype=float)
    return np.unique(x, axis=0) if x.ndim == 2 and len(x) else x


def predictions(frame: pd.DataFrame, variant: str) -> list:
    """A variant's predicted labels as comparable strings, or a regression's values (all floats) as they are."""
    rows = frame[(frame["variant"] == variant) & frame["prediction"].notna()]
    values = rows["prediction"].tolist()
    if values and all(isinstance(p, float) for p in values):
        return values
    return [label_key(p) for p in values]


def interval_drift(frame: pd.DataFrame, reference: pd.DataFrame, cfg: CanaryConfig) -> dict[str, float | None]:
    """Drift shares of each variant's distinct inputs in one window, and challenger-vs-champion prediction drift
    (None: too few samples to judge)."""
    out: dict[str, float | None] = {}
    for variant in VARIANTS:
        x = distinct_inputs(frame, variant)
        out[variant] = (data_drift_share(reference, features_frame(x, list(reference.columns)),
                                         threshold=cfg.drift_threshold).share
                        if len(x) >= MIN_DISTINCT_ROWS else None)
    champ, chall = predictions(frame, CHAMPION), predictions(frame, CHALLENGER)
    enough = len(champ) >= MIN_DISTINCT_ROWS and len(chall) >= MIN_DISTINCT_ROWS
    out["prediction"] = prediction_drift(champ, chall) if enough else None
    return out
