"""Data drift of a raw-table model's traffic: the gateway logs named raw rows, which the canary could not compare
with the (encoded) training reference, so every table model's drift read "too few distinct inputs" whatever came
in. They are now encoded by the transformer fitted on the training split and compared column for column."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.canary.flow import reference_frame
from pipelines.canary.reference import table_encoder
from pipelines.control.config import CanaryConfig
from pipelines.control.drift import distinct_inputs, interval_drift
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


def test_table_rows_are_encoded_and_compared_with_the_training_rows(tmp_path):
    path = tmp_path / "shop.csv"
    _table(600, seed=0).to_csv(path, index=False)
    data = load_prepared(prepare(DataSpec(source=str(path), target="label"), tmp_path / "out").path)
    cfg = CanaryConfig()
    reference = reference_frame(data, cfg)
    encode = table_encoder(data)
    assert encode is not None and data.meta["input_form"] == "table"

    same = _log(_table(200, seed=1))
    assert distinct_inputs(same, "champion").shape == (0, 0)  # without the encoder: nothing comparable (the defect)
    served = distinct_inputs(same, "champion", encode=encode)
    assert served.shape == (200, reference.shape[1])  # the training reference's encoded columns
    calm = interval_drift(same, reference, cfg, encode)["champion"]

    moved = _log(_table(200, seed=2, shift=3.0, colours=("red", "red", "purple")))  # purple: an unseen category
    shifted = interval_drift(moved, reference, cfg, encode)["champion"]
    assert calm is not None and shifted is not None
    assert calm < 0.5 <= shifted, (calm, shifted)


def test_a_float_matrix_model_has_no_table_encoder(tmp_path):
    data = load_prepared(prepare(DataSpec(source="digits", max_rows=300), tmp_path / "out").path)
    assert table_encoder(data) is None
