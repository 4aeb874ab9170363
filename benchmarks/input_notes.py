"""Per-request cost of the gateway's input notes on a one-row table request (docs/benchmarks.md, "Input notes").

Run from the repository root: ``PYTHONPATH=$PWD python -m benchmarks.input_notes``. The table and the row are the
ones of ``tests/test_serving_columns.py``.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

import torch

from nas.table_model import TableClassifier
from pipelines.preprocessing import fit_preprocessor, plan_columns
from serving.schemas import PredictRequest
from serving.validation import ignored_columns, to_table_rows


def main(calls: int = 20000) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import test_serving_columns as case

    frame = case.training_table()
    plan = plan_columns(frame)
    preprocessor = fit_preprocessor(plan, frame)
    table = TableClassifier(preprocessor, torch.nn.Linear(len(preprocessor.get_feature_names_out()), 2),
                            ["no", "yes"], plan.schema)
    req = PredictRequest(records=[case.ROW])
    ignore = ignored_columns(req, table.columns, plan.dropped)
    rows = to_table_rows(req, table.schema, 8, ignore=ignore)
    steps = {"ignored_columns": lambda: ignored_columns(req, table.columns, plan.dropped),
             "to_table_rows": lambda: to_table_rows(req, table.schema, 8, ignore=ignore),
             "input_flags": lambda: table.input_flags(rows),
             "encode_records (for scale)": lambda: table.encode_records(rows)}
    for label, step in steps.items():
        step()
        best = min(timeit.repeat(step, number=calls, repeat=5)) / calls * 1e6
        print(f"{label}: {best:.1f} us per one-row request")


if __name__ == "__main__":
    main()
