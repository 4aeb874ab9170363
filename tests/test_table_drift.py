"""Data drift of a raw-table model's traffic: the gateway logs named raw rows. Data preparation saves a bounded raw
sample of the training split beside the encoded arrays, the model's drift reference carries it, and served rows are
compared with it column for column (numbers as numbers, text as categories): no transformer, no training file."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.canary.reference import drift_reference
from pipelines.control.config import CanaryConfig
from pipelines.control.drift import distinct_inputs, interval_drift
from pipelines.control.reference import MAX_ROWS, RAW_REFERENCE, reference_frame
from pipelines.data import DataSpec, prepare
from pipelines.prepared import load_prepared


def _table(rows: int, seed: int, shift: float = 0.0, colours=("red", "green", "blue")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    colour = rng.choice(list(colours), size=rows)
    size = rng.normal(loc=shift, size=rows)
    frame = pd.DataFrame({"colour": colour, "size": size, "weight": rng.normal(loc=shift, size=rows),
                          "label": np.where((colour == "red") | (size > 0.8), "yes", "no")})
    frame.loc[[3, 10], "size"] = np.nan
    return frame


def _log(frame: pd.DataFrame, variant: str = "champion") -> pd.DataFrame:
    """Prediction-log rows as the gateway writes them for a table model: one named raw row per input."""
    records = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
               for row in frame.drop(columns="label").to_dict("records")]
    return pd.DataFrame({"variant": variant, "shadow": False, "inputs": records, "prediction": "yes"})


def test_prepare_saves_raw_training_rows_and_served_rows_are_compared_with_them(tmp_path):
    path = tmp_path / "shop.csv"
    _table(4000, seed=0).to_csv(path, index=False)
    data = load_prepared(prepare(DataSpec(source=str(path), target="label"), tmp_path / "out").path)
    raw = data.meta[RAW_REFERENCE]
    assert data.meta["input_form"] == "table" and raw["columns"] == ["colour", "size", "weight"]
    assert len(raw["rows"]) == MAX_ROWS < len(data.x_train)  # bounded: the record is read on every poll
    assert {type(v) for row in raw["rows"] for v in row} <= {str, float, type(None)}  # JSON types, as sent

    reference = reference_frame(drift_reference(data))
    assert list(reference.columns) == ["colour", "size", "weight"] and reference["colour"].dtype == object
    cfg = CanaryConfig()
    same = _log(_table(200, seed=1))
    assert distinct_inputs(same, reference, "champion").shape == (200, 3)
    calm = interval_drift(same, reference, cfg)["champion"]
    moved = _log(_table(200, seed=2, shift=3.0, colours=("red", "red", "purple")))  # purple: an unseen category
    shifted = interval_drift(moved, reference, cfg)["champion"]
    assert calm is not None and shifted is not None
    assert calm < 0.5 <= shifted, (calm, shifted)


def test_a_float_matrix_model_saves_no_raw_rows(tmp_path):
    data = load_prepared(prepare(DataSpec(source="digits", max_rows=300), tmp_path / "out").path)
    assert RAW_REFERENCE not in data.meta and drift_reference(data).input_form == "tensor"
