"""Cost and verdicts of the leakage check (``pipelines/leakage.py``) on the shared real tables and on planted leaks.

Per table: rows, the check's wall time (best of ``--repeat``; the column plan is made once outside the timing, as
stage 1 makes it anyway), the columns it flags, and the strongest honest score of each kind (how far from its
threshold the real tables are). Then the planted leaks the check must refuse: CPS1988 with ``logwage = log(wage)``,
a ``total`` with the two parts that add up to it, and a churn table with a relabelled copy of the class; last, a
50,000 x 100 table of noise per task (the cost of a wide table).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/leakage.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.leakage import EVIDENCE, find_leaks, scores
from pipelines.preprocessing import plan_columns

CLASSIFICATION, REGRESSION = "classification", "regression"
TABLES = {"wa_churn.csv": ("churn", CLASSIFICATION), "credit_data.csv": ("Status", CLASSIFICATION),
          "lending_club.csv": ("Class", CLASSIFICATION), "mlc_churn.csv": ("churn", CLASSIFICATION),
          "HealthInsurance.csv": ("health", CLASSIFICATION), "Arrests.csv": ("released", CLASSIFICATION),
          "diamonds.csv": ("price", REGRESSION), "Computers.csv": ("price", REGRESSION),
          "CPS1988.csv": ("wage", REGRESSION), "SaratogaHouses.csv": ("price", REGRESSION)}
"""Each shared table's target and task (benchmarks/tables/tabular/README.md): an integer price is a regression."""


def measure(name: str, x: pd.DataFrame, y: pd.Series, task: str, repeat: int) -> dict:
    """The check on one table: seconds (best of ``repeat``), flagged columns, the strongest score of each kind."""
    plan = plan_columns(x)
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        leaks = find_leaks(x, y, task, plan)
        seconds.append(time.perf_counter() - started)
    strongest: dict[str, tuple[float, str]] = {}
    for columns, found in scores(x, y, task, plan).items():
        for kind, score in found.items():
            if score > strongest.get(kind, (-1.0, ""))[0]:
                strongest[kind] = (score, "+".join(columns))
    return {"table": name, "rows": len(y), "task": task, "seconds": min(seconds),
            "flagged": "; ".join("+".join(leak.columns) for leak in leaks) or "-",
            "strongest": ", ".join(f"{kind} {score:.3f} ({cols}; leak at {EVIDENCE[kind][0]})"
                                   for kind, (score, cols) in strongest.items())}


def planted(tables: Path) -> list[tuple[str, pd.DataFrame, pd.Series, str]]:
    """The three leaks the check must refuse, made from real tables."""
    cps = pd.read_csv(tables / "CPS1988.csv")
    cps["logwage"] = np.log(cps["wage"])
    rng = np.random.default_rng(0)
    diamonds = pd.read_csv(tables / "diamonds.csv")
    parts = diamonds.drop(columns=["price"])
    parts["part_a"] = np.round(rng.uniform(0.2, 0.8, len(parts)) * diamonds["price"], 2)
    parts["part_b"] = np.round(diamonds["price"] - parts["part_a"], 2)
    total = (parts["part_a"] + parts["part_b"]).rename("total")
    churn = pd.read_csv(tables / "mlc_churn.csv")
    churn["churned_flag"] = churn["churn"].map({"yes": "Y", "no": "N"})
    return [("CPS1988 + logwage", cps.drop(columns=["wage"]), cps["wage"], REGRESSION),
            ("diamonds + part_a, part_b (sum = total)", parts, total, REGRESSION),
            ("mlc_churn + churned_flag", churn.drop(columns=["churn"]), churn["churn"], CLASSIFICATION)]


def wide(rows: int = 50_000, columns: int = 100) -> list[tuple[str, pd.DataFrame, pd.Series, str]]:
    """A wide table of noise, once per task: the check's cost per column (nothing to flag)."""
    rng = np.random.default_rng(1)
    x = pd.DataFrame(rng.normal(size=(rows, columns)), columns=[f"c{i}" for i in range(columns)])
    return [(f"noise {rows} x {columns}", x, pd.Series(rng.choice(["a", "b"], rows), name="y"), CLASSIFICATION),
            (f"noise {rows} x {columns}", x, pd.Series(rng.normal(size=rows), name="y"), REGRESSION)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=Path, default=Path(__file__).resolve().parent / "tables" / "tabular")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for file, (target, task) in TABLES.items():
        frame = pd.read_csv(args.tables / file)
        rows.append(measure(file, frame.drop(columns=[target]), frame[target], task, args.repeat))
    rows.extend(measure(name, x, y, task, args.repeat) for name, x, y, task in planted(args.tables))
    rows.extend(measure(name, x, y, task, args.repeat) for name, x, y, task in wide())
    print("| table | rows | task | seconds | flagged | strongest score of each kind |")
    print("| --- | ---: | --- | ---: | --- | --- |")
    for r in rows:
        print(f"| {r['table']} | {r['rows']} | {r['task']} | {r['seconds']:.3f} | {r['flagged']} | "
              f"{r['strongest']} |")


if __name__ == "__main__":
    main()
