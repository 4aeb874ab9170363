"""Drift with Evidently (0.7 API): production inputs against the training reference, and the challenger's
predictions against the champion's.

Two costs, two functions: :func:`data_drift_share` runs only Evidently's ``DriftedColumnsCount`` (about half a
second for 64 features: cheap enough for every canary interval), :func:`data_drift_report` runs the full
drifted share plus per-feature ``ValueDrift`` panels (the most shifted features, or all of them with the full
``DataDriftPreset``) and writes Evidently's HTML report (seconds: once per canary).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
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
    with _quiet():
        snapshot = Report([DriftedColumnsCount(drift_share=threshold)]).run(
            reference_data=reference, current_data=current
        )
    value = snapshot.dict()["metrics"][0]["value"]
    share = float(value["share"])
    return DataDrift(share=share, count=int(value["count"]), columns=reference.shape[1],
                     dataset_drift=share >= threshold, rows=len(current))


def most_shifted_columns(reference: pd.DataFrame, current: pd.DataFrame, k: int) -> list[str]:
    """The ``k`` columns with the largest two-sample Kolmogorov-Smirnov statistic (a cheap ranking used to pick
    which features get a detailed panel in the HTML report)."""
    from scipy.stats import ks_2samp

    scores = []
    for column in reference.columns:
        a, b = reference[column].to_numpy(dtype=float), current[column].to_numpy(dtype=float)
        scores.append(0.0 if np.ptp(a) == 0 and np.ptp(b) == 0 and a[0] == b[0] else float(ks_2samp(a, b).statistic))
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
    with _quiet():
        snapshot = Report(metrics).run(reference_data=reference, current_data=current)
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
