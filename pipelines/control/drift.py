"""Drift during a canary: per-interval data drift of each variant's inputs and challenger-vs-champion prediction
drift (computed by the controller each judged interval against the drift reference stored with the rollout,
stored in the rollout record, published by every gateway worker as ``nasops_drift_share``), plus the end-of-canary
Evidently report.

A table model's inputs are compared raw, column by column, with the raw training rows its data preparation saved
(:mod:`monitoring.drift` ``table_frame``): no encoder, so no training file and no scikit-learn here.

Drift is measured on the *distinct* inputs of a window: replayed traffic repeats a small prod split many times, and
duplicated rows make every two-sample test see a difference that is not there. A window with too few distinct rows
is reported as too small to judge (None), not as "no drift".
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from monitoring.drift import (
    data_drift_share,
    features_frame,
    is_number,
    numeric_columns,
    prediction_drift,
    table_frame,
)
from monitoring.sources import label_key
from monitoring.vocabulary import CHALLENGER, CHAMPION, VARIANTS
from pipelines.control.config import CanaryConfig

MIN_DISTINCT_ROWS = 10
DRIFT_ROWS = 5000
"""Rows per variant an interval's drift reads (a hashed pseudo-random subset, :func:`monitoring.log_aggregates.
sample_inputs`): the share of drifted features and the prediction drift are tests of two distributions, which a few
thousand rows per side settle as well as a million; more rows only made a reconcile read gigabytes of JSON."""

log = logging.getLogger("nasops.canary")


HASHED_NOTE = "inputs logged as hashes (log_inputs=hash): no input drift"


@dataclass
class ServedInputs:
    """The distinct input rows a window served, in the reference's columns, and what was left out of them: rows
    logged as ``sha256:`` hashes (the gateway's ``log_inputs=hash``), and rows that are not the model's shape (no
    input kept by the log's retention, another width, another form of row)."""

    frame: pd.DataFrame
    hashed: int = 0
    left_out: int = 0

    def note(self) -> str:
        """Why rows were not compared ("" when every row was)."""
        parts = []
        if self.hashed:
            parts.append(f"{self.hashed} input row(s) logged as hashes (log_inputs=hash) left out" if len(self.frame)
                         else HASHED_NOTE)
        if self.left_out:
            parts.append(f"{self.left_out} logged input row(s) not of the model's shape were left out")
        return "; ".join(parts)


def _hashed(row: Any) -> bool:
    return isinstance(row, str) and row.startswith("sha256:")


def _float_rows(inputs: list, width: int | None) -> list[list]:
    """The flat rows of numbers of the model's width (``width`` None: the most common width among them)."""
    flat = [r for r in inputs if isinstance(r, list | tuple) and r and all(is_number(v) for v in r)]
    if width is None and flat:
        widths = Counter(len(r) for r in flat)
        width = widths.most_common(1)[0][0]
    return [r for r in flat if len(r) == width]


def served_inputs(frame: pd.DataFrame, reference: pd.DataFrame | None, variant: str | None = None, *,
                  include_shadow: bool = True) -> ServedInputs:
    """The distinct input rows a variant (or, with None, the gateway) received, in the reference's columns: one per
    value, whatever the number of requests, fallbacks or shadow copies that carried it. A float-matrix model's
    feature rows as floats; a table model's named raw rows as they were sent (numeric columns as numbers, the
    others as categories, as in its raw reference). Without a reference: only for counting. Hashed rows and rows
    that are not the model's shape are counted, never compared: a log is not a contract."""
    rows = frame if variant is None else frame[frame["variant"] == variant]
    if not include_shadow and "shadow" in rows:
        rows = rows[~rows["shadow"].astype(bool)]
    inputs = rows["inputs"].tolist() if len(rows) else []
    hashed = sum(1 for r in inputs if _hashed(r))
    columns = None if reference is None else list(reference.columns)
    named = [r for r in inputs if isinstance(r, dict)]
    floats = _float_rows(inputs, None if columns is None else len(columns))
    if named and len(named) >= len(floats):  # a table model's named rows (the other form: another model's)
        served = table_frame(named, columns, None if reference is None else numeric_columns(reference))
        kept = len(named)
    else:
        served = (features_frame(np.array(floats, dtype=float), columns) if floats
                  else pd.DataFrame(columns=columns or []))
        kept = len(floats)
    return ServedInputs(served.drop_duplicates(ignore_index=True), hashed, len(inputs) - hashed - kept)


def distinct_inputs(frame: pd.DataFrame, reference: pd.DataFrame | None, variant: str | None = None, *,
                    include_shadow: bool = True) -> pd.DataFrame:
    """:func:`served_inputs`' distinct rows alone."""
    return served_inputs(frame, reference, variant, include_shadow=include_shadow).frame


def comparable(reference: pd.DataFrame, served: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both frames without the columns that hold no value on one side (a column the served rows never carry, e.g.
    a challenger's own column after ``--allow-schema-change``): no test can compare an empty column."""
    keep = [c for c in reference.columns if reference[c].notna().any() and served[c].notna().any()]
    return reference[keep], served[keep]


def predictions(frame: pd.DataFrame, variant: str) -> list:
    """A variant's predicted labels as comparable strings, or a regression's values (all floats) as they are."""
    rows = frame[(frame["variant"] == variant) & frame["prediction"].notna()]
    values = rows["prediction"].tolist()
    if values and all(isinstance(p, float) for p in values):
        return values
    return [label_key(p) for p in values]


def interval_drift(frame: pd.DataFrame, reference: pd.DataFrame, cfg: CanaryConfig) -> dict[str, Any]:
    """Drift shares of each variant's distinct inputs in one window, and challenger-vs-champion prediction drift
    (None: too few samples to judge); ``note`` says which logged rows were not compared, when some were not."""
    out: dict[str, Any] = {}
    notes: list[str] = []
    for variant in VARIANTS:
        served = served_inputs(frame, reference, variant)
        rows = served.frame
        out[variant] = _share(reference, rows, cfg) if len(rows) >= MIN_DISTINCT_ROWS else None
        if served.note():
            notes.append(f"{variant}: {served.note()}")
    champ, chall = predictions(frame, CHAMPION), predictions(frame, CHALLENGER)
    enough = len(champ) >= MIN_DISTINCT_ROWS and len(chall) >= MIN_DISTINCT_ROWS
    out["prediction"] = prediction_drift(champ, chall) if enough else None
    if notes:
        out["note"] = "; ".join(notes)
    return out


def _share(reference: pd.DataFrame, served: pd.DataFrame, cfg: CanaryConfig) -> float | None:
    ref, cur = comparable(reference, served)
    return data_drift_share(ref, cur, threshold=cfg.drift_threshold).share if ref.shape[1] else None


def no_drift(note: str) -> dict[str, Any]:
    """An interval's drift entry when it cannot be computed: every share None, and why (shown in the evidence)."""
    return {**{variant: None for variant in VARIANTS}, "prediction": None, "note": note}
