"""Drift during a canary: per-interval data drift of each variant's inputs and challenger-vs-champion prediction
drift (computed by the controller each judged interval against the drift reference stored with the rollout,
stored in the rollout record, published by every gateway worker as ``nasops_drift_share``), plus the end-of-canary
Evidently report.

Drift is measured on the *distinct* inputs of a window: replayed traffic repeats a small prod split many times, and
duplicated rows make every two-sample test see a difference that is not there. A window with too few distinct rows
is reported as too small to judge (None), not as "no drift".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from monitoring.drift import data_drift_share, features_frame, prediction_drift
from monitoring.sources import label_key
from monitoring.vocabulary import CHALLENGER, CHAMPION, VARIANTS
from pipelines.control.config import CanaryConfig

MIN_DISTINCT_ROWS = 10

log = logging.getLogger("nasops.canary")


RowEncoder = Callable[[list[dict]], np.ndarray]
"""Named raw rows (a table model's logged inputs) -> the encoded features its training rows are in."""


def distinct_inputs(frame: pd.DataFrame, variant: str | None = None, *, include_shadow: bool = True,
                    encode: RowEncoder | None = None) -> np.ndarray:
    """The distinct input rows a variant (or, with None, the gateway) received: one per value, whatever the
    number of requests, fallbacks or shadow copies that carried it. A table model's named raw rows are encoded
    with ``encode`` first (without one they cannot be compared with a float reference: empty)."""
    rows = frame if variant is None else frame[frame["variant"] == variant]
    if not include_shadow and "shadow" in rows:
        rows = rows[~rows["shadow"].astype(bool)]
    if rows.empty:
        return np.empty((0, 0))
    if isinstance(rows["inputs"].iloc[0], dict):
        if encode is None:
            return np.empty((0, 0))
        named = [r for r in rows["inputs"].tolist() if isinstance(r, dict)]
        x = encode(named) if named else np.empty((0, 0))
    else:
        x = np.array(rows["inputs"].tolist(), dtype=float)
    return np.unique(x, axis=0) if x.ndim == 2 and len(x) else x


def predictions(frame: pd.DataFrame, variant: str) -> list:
    """A variant's predicted labels as comparable strings, or a regression's values (all floats) as they are."""
    rows = frame[(frame["variant"] == variant) & frame["prediction"].notna()]
    values = rows["prediction"].tolist()
    if values and all(isinstance(p, float) for p in values):
        return values
    return [label_key(p) for p in values]


def interval_drift(frame: pd.DataFrame, reference: pd.DataFrame, cfg: CanaryConfig,
                   encode: RowEncoder | None = None) -> dict[str, float | None]:
    """Drift shares of each variant's distinct inputs in one window, and challenger-vs-champion prediction drift
    (None: too few samples to judge)."""
    out: dict[str, float | None] = {}
    for variant in VARIANTS:
        x = distinct_inputs(frame, variant, encode=encode)
        out[variant] = (data_drift_share(reference, features_frame(x, list(reference.columns)),
                                         threshold=cfg.drift_threshold).share
                        if len(x) >= MIN_DISTINCT_ROWS else None)
    champ, chall = predictions(frame, CHAMPION), predictions(frame, CHALLENGER)
    enough = len(champ) >= MIN_DISTINCT_ROWS and len(chall) >= MIN_DISTINCT_ROWS
    out["prediction"] = prediction_drift(champ, chall) if enough else None
    return out


def no_drift(note: str) -> dict[str, Any]:
    """An interval's drift entry when it cannot be computed: every share None, and why (shown in the evidence)."""
    return {**{variant: None for variant in VARIANTS}, "prediction": None, "note": note}
