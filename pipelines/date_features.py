"""Date and timestamp columns as numbers a network can use, inside the fitted preprocessing.

:class:`DateParts` is a scikit-learn transformer (it sits in the ``ColumnTransformer`` of
:func:`pipelines.preprocessing.build_preprocessor`, so it is pickled with the registered model): ISO date strings or
timestamps in, per column ``year``, ``month``, ``day of week``, ``day of year`` and, when the training data has a
time of day, ``hour`` out, as floats (missing or unparseable cells are NaN, imputed by the next step). The served
model therefore takes the raw date strings a client sends. Which parts a column gets is decided on the training
split (``fit``), so serving never changes the width.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from nas.dates import parse_iso_utc

PARTS = ("year", "month", "dayofweek", "dayofyear")
ISO_DATE = r"^\s*\d{4}-\d{2}-\d{2}"
"""What an ISO date or timestamp string starts with (``2024-01-31``, ``2024-01-31 10:00``, ``2024-01-31T10:00Z``)."""


def parse_dates(values: pd.Series) -> pd.Series:
    """Timestamps in UTC (naive ones are taken as UTC), NaT where a cell is missing or not a date."""
    if pd.api.types.is_datetime64_any_dtype(values):
        stamps = pd.to_datetime(values, errors="coerce", utc=True)
        return pd.Series(stamps, index=values.index)
    # cell by cell (nas.dates: pandas' column parser lets one cell's offset shift the naive cells after it), once
    # per distinct value
    cells = values.astype(object).where(values.notna(), None)
    parsed = {v: parse_iso_utc(v) for v in pd.unique(cells[cells.notna()])}
    stamps = pd.to_datetime([parsed.get(v) if v is not None else None for v in cells], utc=True)
    return pd.Series(stamps, index=values.index)


class DateParts(TransformerMixin, BaseEstimator):
    """Each date column -> year, month, day of week (Monday 0), day of year, and hour if any training value has a
    time of day other than midnight."""

    def fit(self, X: pd.DataFrame, y: Any = None) -> DateParts:
        frame = pd.DataFrame(X)
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.n_features_in_ = frame.shape[1]
        self.hours_ = []
        for c in frame.columns:
            stamps = parse_dates(frame[c]).dropna()
            self.hours_.append(bool(((stamps.dt.hour != 0) | (stamps.dt.minute != 0)).any()))
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        frame = pd.DataFrame(X, columns=list(self.feature_names_in_)) if not isinstance(X, pd.DataFrame) else X
        blocks = []
        for j, c in enumerate(frame.columns):
            stamps = parse_dates(frame[c])
            parts = [getattr(stamps.dt, p) for p in PARTS] + ([stamps.dt.hour] if self.hours_[j] else [])
            blocks.append(np.column_stack([p.to_numpy(dtype=np.float64, na_value=np.nan) for p in parts]))
        return np.hstack(blocks) if blocks else np.empty((len(frame), 0))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = []
        for name, hour in zip(self.feature_names_in_, self.hours_, strict=True):
            names += [f"{name}_{p}" for p in PARTS] + ([f"{name}_hour"] if hour else [])
        return np.asarray(names, dtype=object)
