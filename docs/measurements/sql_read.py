"""Reading a 20k-row table: a SQLite query through pipelines.sql_source vs pandas.read_csv / read_parquet, and
prepare() from the query and from Parquet (same fingerprint). Run: nice -n 10 .venv/bin/python THIS_FILE."""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from pipelines.data import DataSpec, prepare
from pipelines.sql_source import read_query

ROWS = 20000


def best(fn: Callable[[], object], n: int = 5) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "colour": rng.choice(["red", "green", "blue"], ROWS), "size": rng.normal(size=ROWS),
        "store": rng.integers(1, 5, ROWS),
        "joined": pd.date_range("2023-01-01", periods=ROWS, freq="37min").strftime("%Y-%m-%d %H:%M"),
        "label": rng.choice(["yes", "no"], ROWS)})
    d = Path(tempfile.mkdtemp())
    with sqlite3.connect(d / "t.db") as conn:
        frame.to_sql("t", conn, index=False)
    frame.to_csv(d / "t.csv", index=False)
    frame.to_parquet(d / "t.parquet", index=False)
    url = f"sqlite:///{d}/t.db"
    print(f"read {ROWS} rows: sql_source.read_query {best(lambda: read_query(url, 'SELECT * FROM t')) * 1e3:.1f} "
          f"ms, pandas.read_csv {best(lambda: pd.read_csv(d / 't.csv')) * 1e3:.1f} ms, pandas.read_parquet "
          f"{best(lambda: pd.read_parquet(d / 't.parquet')) * 1e3:.1f} ms (best of 5)")
    for name, spec in (
            ("sqlite query", DataSpec(source=url, query="SELECT * FROM t", target="label", categorical=["store"])),
            ("parquet", DataSpec(source=str(d / "t.parquet"), target="label", categorical=["store"]))):
        seconds = best(lambda spec=spec: prepare(spec, d / "out"), n=3)
        prepared = prepare(spec, d / "out")
        print(f"prepare() {name}: {seconds:.2f} s, fingerprint {prepared.fingerprint}, "
              f"{len(prepared.feature_names)} encoded features")


if __name__ == "__main__":
    main()
