"""Drift with Evidently (0.7 API): production inputs against the training reference, and the challenger's
predictions against the champion's.

Two costs, two functions: :func:`data_drift_share` runs only Evidently's ``DriftedColumnsCount`` (about half a
second for 64 features: cheap enough for every canary interval), :func:`data_drift_report` runs the full
drifted share plus per-feature ``ValueDrift`` panels (the most shifted features, or all of them with the full
``DataDriftPreset``) and writes Evidently's HTML report (seconds: once per canary).

Both take float feature frames (:func:`features_frame`, a float-matrix model's inputs) or a raw table's named columns
(:func:`table_frame`, a table model's inputs as the gateway logs them): numeric columns are compared as numbers,
the others as categories, declared to Evidently rather than left to its type inference.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

PREDICTION_METHOD = "jensenshannon"  # distance in [0, 1]; Evidently's default threshold for it is 0.1
PREDICTION_THRESHOLD = 0.1
VALUE_METHOD = "wasserstein"  # a regression's predicted values: Wasserstein distance / the reference's std


@dataclass
class DataDrift:
    """Share (0-1) and count of drifted features, and whether the share reaches the dataset-drift threshold."""

    share: float
    count: int
    columns: int
    dataset_drift: bool
    rows: int

    def to_dict(self) -> dict:
        return asdict(self)


def features_frame(x: np.ndarray, feature_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Flat features as a DataFrame with stable column names (Evidently works on frames)."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D array (rows, features), got shape {x.shape}")
    names = list(feature_names) if feature_names else [f"f{i}" for i in range(x.shape[1])]
    if len(names) != x.shape[1]:
        raise ValueError(f"{len(names)} feature names for {x.shape[1]} features")
    return pd.DataFrame(x, columns=[str(n) for n in names])


def is_number(value: object) -> bool:
    """A number a drift test can compare (Python or NumPy; a boolean is not one)."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def table_frame(rows: Sequence[Mapping | Sequence], columns: Sequence[str] | None = None,
                numeric: Sequence[str] | None = None) -> pd.DataFrame:
    """Raw table rows (named records, or lists in ``columns`` order) as a frame drift can compare: the ``numeric``
    columns as floats (a value that is not a number is missing), every other column as categories (strings,
    missing kept missing). ``numeric`` None: the columns whose present values are all numbers."""
    frame = (pd.DataFrame.from_records(list(rows), columns=list(columns) if columns is not None else None)
             if len(rows) else pd.DataFrame(columns=list(columns or [])))
    frame.columns = [str(c) for c in frame.columns]
    if numeric is None:
        numeric = [c for c in frame.columns if all(is_number(v) for v in frame[c] if v is not None and v == v)]
    out = {}
    for column in frame.columns:
        values = frame[column]
        if column in numeric:
            out[column] = pd.to_numeric(values.map(lambda v: v if is_number(v) else None), errors="coerce")
        else:
            out[column] = values.map(lambda v: None if v is None or v != v else str(v)).astype(object)
    return pd.DataFrame(out, columns=frame.columns)


def numeric_columns(frame: pd.DataFrame) -> list[str]:
    """The columns drift compares as numbers (the others are categories)."""
    return [str(c) for c in frame.columns
            if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]


def _evidently_inputs(reference: pd.DataFrame, current: pd.DataFrame) -> tuple:
    """Float frames as they are (Evidently's inference, as always); a frame with category columns as Datasets
    that declare which column is which (inference could take a many-valued text column for free text)."""
    numeric = numeric_columns(reference)
    if len(numeric) == reference.shape[1]:
        return reference, current
    from evidently import DataDefinition, Dataset

    definition = DataDefinition(numerical_columns=numeric,
                                categorical_columns=[c for c in reference.columns if c not in numeric])
    return (Dataset.from_pandas(reference, data_definition=definition),
            Dataset.from_pandas(current, data_definition=definition))


@contextlib.contextmanager
def _quiet():
    # Constant features (e.g. blank image borders) make scipy warn about 0/0; Evidently still decides correctly.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def _validate(reference: pd.DataFrame, current: pd.DataFrame) -> None:
    if reference.empty or current.empty:
        raise ValueError(f"drift needs rows on both sides (reference {len(reference)}, current {len(current)})")
    if list(reference.columns) != list(current.columns):
        raise ValueError("reference and current data must have the same feature columns in the same order")


def data_drift_share(reference: pd.DataFrame, current: pd.DataFrame, *, threshold: float = 0.5) -> DataDrift:
    """Evidently ``DriftedColumnsCount``: which share of features drifted between ``reference`` and ``current``."""
    from evidently import Report
    from evidently.metrics import DriftedColumnsCount

    _validate(reference, current)
    ref, cur = _evidently_inputs(reference, current)
    with _quiet():
        snapshot = Report([DriftedColumnsCount(drift_share=threshold)]).run(reference_data=ref, current_data=cur)
    value = snapshot.dict()["metrics"][0]["value"]
    share = float(value["share"])
    return DataDrift(share=share, count=int(value["count"]), columns=reference.shape[1],
                     dataset_drift=share >= threshold, rows=len(current))


def most_shifted_columns(reference: pd.DataFrame, current: pd.DataFrame, k: int) -> list[str]:
    """The ``k`` columns with the largest two-sample Kolmogorov-Smirnov statistic (a category column: the total
    variation distance of its value shares, also in [0, 1]; a cheap ranking used to pick which features get a
    detailed panel in the HTML report)."""
    from scipy.stats import ks_2samp

    numeric = set(numeric_columns(reference))
    scores = []
    for column in reference.columns:
        if column not in numeric:
            shares = [frame[column].astype(str).value_counts(normalize=True) for frame in (reference, current)]
            scores.append(0.5 * float(shares[0].sub(shares[1], fill_value=0.0).abs().sum()))
            continue
        a, b = (frame[column].to_numpy(dtype=float) for frame in (reference, current))
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        same = not len(a) or not len(b) or (np.ptp(a) == 0 and np.ptp(b) == 0 and a[0] == b[0])
        scores.append(0.0 if same else float(ks_2samp(a, b).statistic))
    order = np.argsort(scores)[::-1][:k]
    return [str(reference.columns[i]) for i in sorted(order)]


def data_drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    html_path: str | Path,
    *,
    threshold: float = 0.5,
    detail_columns: int | None = 16,
) -> DataDrift:
    """Evidently drift report saved as HTML at ``html_path``: the drifted-feature share over *all* features plus a
    per-feature ``ValueDrift`` panel for the ``detail_columns`` most shifted ones (``None``: every feature, i.e.
    the full ``DataDriftPreset``; on 64+ features that costs several seconds per report)."""
    from evidently import Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift
    from evidently.presets import DataDriftPreset

    _validate(reference, current)
    if detail_columns is None or detail_columns >= reference.shape[1]:
        metrics: list = [DataDriftPreset(drift_share=threshold)]
    else:
        metrics = [DriftedColumnsCount(drift_share=threshold)] + [
            ValueDrift(column=c) for c in most_shifted_columns(reference, current, detail_columns)
        ]
    ref, cur = _evidently_inputs(reference, current)
    with _quiet():
        snapshot = Report(metrics).run(reference_data=ref, current_data=cur)
        html_path = Path(html_path)
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    summary = next(m for m in snapshot.dict()["metrics"] if m["metric_name"].startswith("DriftedColumnsCount"))
    share = float(summary["value"]["share"])
    return DataDrift(share=share, count=int(summary["value"]["count"]), columns=reference.shape[1],
                     dataset_drift=share >= threshold, rows=len(current))


def prediction_drift(reference_predictions: Sequence, current_predictions: Sequence) -> float:
    """Jensen-Shannon distance (Evidently ``ValueDrift``, categorical) between two sets of predicted labels.

    0 = identical class mix, 1 = disjoint. Used with the champion's predictions as reference and the challenger's
    as current; NaN when either side is empty. A regression's predictions (all floats) are compared as numbers
    instead: Evidently's normed Wasserstein distance (0 = the same distribution; its threshold is 0.1 too).
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    if len(reference_predictions) == 0 or len(current_predictions) == 0:
        return float("nan")
    numeric = all(isinstance(p, float) for p in [*reference_predictions, *current_predictions])
    if numeric:
        definition = DataDefinition(numerical_columns=["prediction"])
        cast, method = float, VALUE_METHOD
    else:
        definition = DataDefinition(categorical_columns=["prediction"])
        cast, method = str, PREDICTION_METHOD
    ref = Dataset.from_pandas(pd.DataFrame({"prediction": [cast(p) for p in reference_predictions]}),
                              data_definition=definition)
    cur = Dataset.from_pandas(pd.DataFrame({"prediction": [cast(p) for p in current_predictions]}),
                              data_definition=definition)
    with _quiet():
        snapshot = Report([ValueDrift(column="prediction", method=method)]).run(cur, ref)
    return float(snapshot.dict()["metrics"][0]["value"])
