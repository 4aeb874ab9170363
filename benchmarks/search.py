"""Search efficiency on real benchmark tables: mean regret vs evaluations over many seeds per strategy, and the
evaluations each strategy needs to come within 0.5 (and 1.0) accuracy points of the table's optimum, as ratios
against random search and regularized evolution, all measured side by side in one process.

    .venv/bin/python benchmarks/search.py                      # nas-bench-graph cora + computers, our NB201 table
    .venv/bin/python benchmarks/search.py --seeds 20 --budget 300 --json out.json

Tables: ``benchmarks/tables/nas_bench_graph_*.csv`` (converted from the installed nas-bench-graph package by
``benchmarks/tables/convert_nas_bench_graph.py``; re-created on the fly if missing) and the project's own
ground-truth NB201 table ``benchmarks/ground_truth/*.csv`` when present.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from nas.benchmarking import compare_strategies, summary  # noqa: E402
from nas.strategies import list_strategies  # noqa: E402
from nas.tabular import load_table  # noqa: E402

STRATEGIES = tuple(list_strategies())  # every registered strategy, the model-based ones included


def graph_table(dataset: str) -> Path:
    path = ROOT / "tables" / f"nas_bench_graph_{dataset}.csv"
    if not path.exists():
        sys.path.insert(0, str(ROOT / "tables"))
        from convert_nas_bench_graph import convert

        convert(dataset, path.parent)
    return path


def ground_truth_tables() -> list[Path]:
    return sorted((ROOT / "ground_truth").glob("*.csv"))


def reach_ratio(s: dict, name: str, base: str, tol: str) -> str:
    a = s["strategies"][name][f"evals_to_{tol}"]
    b = s["strategies"][base][f"evals_to_{tol}"]
    return f"{b['mean_censored'] / a['mean_censored']:.2f}x"


def report(title: str, s: dict, budget: int) -> str:
    lines = [f"### {title}", "", f"optimum {s['optimum']:.4f}; budget {budget}; regret = optimum - best found "
             "(accuracy points / 100); 'reach' = evaluations until best >= optimum - tol, seeds that never reach "
             f"count as {budget + 1} (censored: the true ratio is then at least the one shown)", ""]
    checkpoints = [c for c in (10, 25, 50, 100, 200, 300, 500) if c <= budget]
    head = "| strategy | " + " | ".join(f"regret@{c}" for c in checkpoints) + \
        " | reach 0.5pt (hit/seeds, mean) | reach 1pt (hit/seeds, mean) | seconds |"
    lines += [head, "|" + "---|" * (len(checkpoints) + 4)]
    for name, e in s["strategies"].items():
        r05, r1 = e["evals_to_0.005"], e["evals_to_0.01"]
        lines.append(
            f"| {name} | " + " | ".join(f"{e['regret_at'][str(c)]:.4f}" for c in checkpoints)
            + f" | {r05['reached']}/{e['seeds']}, {r05['mean_censored']:.0f} | {r1['reached']}/{e['seeds']}, "
            f"{r1['mean_censored']:.0f} | {e['seconds']:.1f} |"
        )
    lines.append("")
    for name in (n for n in s["strategies"] if n not in ("random", "evolution")):
        for base in ("random", "evolution"):
            if base in s["strategies"]:
                lines.append(f"- {name} vs {base}: {reach_ratio(s, name, base, '0.005')} fewer evaluations "
                             f"to reach 0.5pt, {reach_ratio(s, name, base, '0.01')} to reach 1pt")
    if "predictor" in s["strategies"]:
        tau = s["strategies"]["predictor"].get("predictor_tau_mean")
        if tau is not None:
            lines.append(f"- predictor Kendall τ on 500 not-yet-evaluated rows (mean over the search): {tau:.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--batch", type=int, default=5, help="architectures asked per predictor refit")
    parser.add_argument("--graph", default="cora,computers", help="nas-bench-graph datasets (comma list)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    strategies = [s for s in args.strategies.split(",") if s]
    jobs = [(f"nas-bench-graph {d} (26,206 GNN architectures; proxy column: params)",
             load_table(graph_table(d), "arch", "val_accuracy", proxy_columns=["params"]))
            for d in args.graph.split(",") if d]
    for path in ground_truth_tables():
        import pandas as pd

        cols = pd.read_csv(path, nrows=1).columns
        metric = "val_accuracy" if "val_accuracy" in cols else cols[1]
        proxies = [c for c in cols if c.startswith("proxy_") or c in ("synflow", "params", "flops", "nwot", "ensemble")]
        jobs.append((f"nasops NB201 ground truth {path.name} (proxy columns: {', '.join(proxies) or 'none'})",
                     load_table(path, "arch", metric, proxy_columns=proxies)))
    results = {}
    for title, table in jobs:
        budget = min(args.budget, len(table))
        start = time.perf_counter()
        curves = compare_strategies(table, next(iter(table.metrics)), strategies, budget=budget, seeds=args.seeds,
                                    batch=args.batch)
        s = summary(curves, table.optimum(next(iter(table.metrics))),
                    checkpoints=[c for c in (10, 25, 50, 100, 200, 300, 500) if c <= budget])
        print(report(title, s, budget))
        print(f"({time.perf_counter() - start:.0f} s)\n", flush=True)
        results[title] = s
    if args.json:
        args.json.write_text(json.dumps(results, default=lambda o: float(o) if isinstance(o, np.floating) else o))


if __name__ == "__main__":
    main()
