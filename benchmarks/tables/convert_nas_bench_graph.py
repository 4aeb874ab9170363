"""Convert a nas-bench-graph dataset (installed package, 26,206 GNN architectures) to the nasops table format.

Columns: ``arch`` (``LINKS|op0|op1|op2|op3``, e.g. ``0-1-2-3|gcn|gat|skip|fc``), ``val_accuracy`` (the package's
``valid_perf``), ``test_accuracy`` (``perf``), ``latency_ms`` (``latency`` seconds x 1000), ``params`` (``para``,
millions). ``params`` is the table's zero-cost proxy column (a network's size needs no training).

    .venv/bin/python benchmarks/tables/convert_nas_bench_graph.py cora computers
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent


def nas_bench_graph_frame(dataset: str) -> pd.DataFrame:
    """The benchmark as a DataFrame, one row per (non-isomorphic) architecture."""
    from nas_bench_graph import all_archs, light_read

    bench = light_read(dataset)
    with contextlib.redirect_stdout(io.StringIO()):  # all_archs() prints its count
        archs = all_archs()
    rows = []
    for arch in archs:
        key = arch.hash_arch()
        if key not in bench:
            continue
        entry = bench[key]
        rows.append({
            "arch": "-".join(map(str, arch.link)) + "|" + "|".join(arch.ops),
            "val_accuracy": float(entry["valid_perf"]),
            "test_accuracy": float(entry["perf"]),
            "latency_ms": float(entry["latency"]) * 1000.0,
            "params": float(entry["para"]),
        })
    return pd.DataFrame(rows)


def convert(dataset: str, out_dir: Path = HERE) -> Path:
    path = out_dir / f"nas_bench_graph_{dataset}.csv"
    nas_bench_graph_frame(dataset).to_csv(path, index=False, float_format="%.6g")
    return path


if __name__ == "__main__":
    for name in sys.argv[1:] or ["cora"]:
        print(convert(name))
