"""Regression targets end to end: a continuous target is detected (or declared with ``--task``), trained with MSE on
a standardised target, registered with the scaling inverted inside the model, served as numbers, labelled with
numbers through ``/feedback`` and judged on online RMSE."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.data import DataSpec, prepare


def continuous_table(rows: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=rows), rng.normal(size=rows)
    return pd.DataFrame({"a": a, "b": b, "y": 3.0 * a - 2.0 * b + rng.normal(scale=0.1, size=rows) + 100.0})


def test_a_continuous_target_is_prepared_as_regression(tmp_path):
    """Was refused: "the target 'y' holds non-integer numbers (...); nasops searches classifiers"."""
    path = tmp_path / "cont.csv"
    continuous_table().to_csv(path, index=False)
    prepared = prepare(DataSpec(source=str(path), target="y"), tmp_path / "out")
    assert prepared.task == "regression"
