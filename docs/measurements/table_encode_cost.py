"""Per-row encode cost at /predict: a table with a date column or a declared integer category (scikit-learn path)
vs the same table without them (the compiled RowEncoder). Run: nice -n 10 .venv/bin/python THIS_FILE."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from nas.table_model import TableClassifier
from pipelines.preprocessing import fit_preprocessor, plan_columns

N = 500


def cost(frame: pd.DataFrame, categorical: tuple[str, ...] = ()) -> tuple[float, bool]:
    plan = plan_columns(frame, categorical)
    pre = fit_preprocessor(plan, frame)
    model = TableClassifier(pre, torch.nn.Linear(len(pre.get_feature_names_out()), 2), ["a", "b"], plan.schema)
    names = [c["name"] for c in plan.schema]
    records = [{c["name"]: None if pd.isna(v) else (float(v) if c["type"] == "double" else str(v))
                for c, v in zip(plan.schema, row, strict=True)} for row in frame[names].itertuples(index=False)]
    model.encode_records(records[:1])
    t0 = time.perf_counter()
    for record in records[:200]:
        model.encode_records([record])
    return (time.perf_counter() - t0) / 200 * 1e3, model._rows is not None


def main() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "placed": pd.date_range("2024-01-01 06:00", periods=N, freq="7h").strftime("%Y-%m-%d %H:%M"),
        "store": rng.integers(1, 5, N), "amount": rng.gamma(2, 20, N), "colour": rng.choice(list("abc"), N)})
    frame.loc[3, "amount"] = np.nan
    for label, columns, declared in (("amount, colour", ["amount", "colour"], ()),
                                     ("amount, colour, store as category", ["amount", "colour", "store"],
                                      ("store",)),
                                     ("amount, colour, placed (a date)", ["amount", "colour", "placed"], ())):
        ms, compiled = cost(frame[columns], declared)
        print(f"{label}: {ms:.2f} ms per one-row encode ({'RowEncoder' if compiled else 'scikit-learn'})")


if __name__ == "__main__":
    main()
