"""Search efficiency on real benchmark tables: mean regret vs evaluations over many seeds per strategy, and the
evaluations each strategy needs to come within 0.5 (and 1.0) accuracy points of the table's optimum, as ratios
against random search and regularized evolution, all measured side by side in one process.

    .venv/bin/python benchmarks/search.py                      # nas-bench-graph cora + computers, our NB201 table
    .venv/bin/python benchmarks/search.py --seeds 20 --budget 300 --json out.json
    .venv/bin/python benchmarks/search.py --graph "" --no-ground-truth --nb201 cifar100,imagenet \
        --zc meco,synflow --budget 100 --json                      # public NB201 table, JSON on stdout
    .venv/bin/python benchmarks/search.py --tune                   # choose the predictor's defaults on CIFAR-10
    ... --subsample 0.5      # each seed searches its own random half (the zero-cost warm start then differs)

Tables: the public NAS-Bench-201 12-epoch table ``benchmarks/tables/nb201_12epoch.csv.gz`` (``--nb201``: search on
a dataset's validation column, regret on its test column, zero-cost features by :func:`nas.zc_features.zc_features`
with the shipped scores as cache), ``benchmarks/tables/nas_bench_graph_*.csv`` (converted from the installed
nas-bench-graph package by ``benchmarks/tables/convert_nas_bench_graph.py``; re-created on the fly if missing) and the
project's own ground-truth NB201 table ``benchmarks/ground_truth/*.csv`` when present.
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

from nas.benchmarking import compare_on_subsamples, compare_strategies, summary  # noqa: E402
from nas.strategies import list_strategies  # noqa: E402
from nas.tabular import BenchmarkTable, load_table, percent_to_fraction  # noqa: E402
from nas.zc_features import SEARCH_FEATURES, zc_features  # noqa: E402

STRATEGIES = tuple(list_strategies())  # every registered strategy, the model-based ones included
NB201_TABLE = ROOT / "tables" / "nb201_12epoch.csv.gz"
NB201_SCORES = ROOT / "tables" / "nb201_proxy_scores.csv.gz"
NB201_DATASETS = ("cifar10", "cifar100", "imagenet")
TUNE_SEEDS = 100  # tuning runs on seeds 100.. ; reported runs on seeds 0.. (disjoint)
TUNE_GRID: dict[str, dict] = {  # predictor configurations tried on CIFAR-10 (``--tune``)
    "mlp+ucb": {"acquisition": "ucb"},
    "mlp+its": {"acquisition": "its"},
    "mlp+ei": {"acquisition": "ei"},
    "mlp+greedy": {"acquisition": "greedy"},
    "lgbm+ucb": {"predictor": "lgbm", "acquisition": "ucb"},
    "lgbm+ei": {"predictor": "lgbm", "acquisition": "ei"},
    "lgbm+greedy": {"predictor": "lgbm", "acquisition": "greedy"},
}
TUNE_FEATURES = {  # feature sets (also the warm-start / pool ranking) x the configurations tried with each
    "synflow,params": ("mlp+ucb", "mlp+its", "mlp+ei", "lgbm+ucb"),
    "synflow,params,flops,l2_norm": ("mlp+ucb",),
    "meco": ("mlp+ucb", "lgbm+ucb", "lgbm+ei", "lgbm+greedy"),
    "meco,synflow": ("mlp+ucb", "mlp+greedy", "lgbm+ucb", "lgbm+ei", "lgbm+greedy"),
    "meco,synflow,params": ("mlp+ucb", "mlp+greedy", "lgbm+ucb", "lgbm+ei", "lgbm+greedy"),
}


def nb201_table(dataset: str, zc: list[str]) -> BenchmarkTable:
    """The public NB201 table for one dataset (validation + test columns, fractions) with zero-cost features."""
    if dataset not in NB201_DATASETS:
        raise SystemExit(f"--nb201 {dataset!r}: choose from {', '.join(NB201_DATASETS)}")
    table = percent_to_fraction(load_table(NB201_TABLE, "ArchitectureString", [f"{dataset}-val", f"{dataset}-test"]))
    if zc:
        table.proxies, _ = zc_features(table.archs, zc, shipped=NB201_SCORES)
    return table


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


def tune(args) -> dict:
    """Every predictor configuration of :data:`TUNE_GRID` x :data:`TUNE_FEATURES` on CIFAR-10 (search on the
    validation column, regret on the test column), on seeds disjoint from the reported runs' seeds."""
    results = {}
    for features, configs in TUNE_FEATURES.items():
        if args.tune_features and features not in args.tune_features.split(";"):
            continue
        table = nb201_table("cifar10", features.split(","))
        optimum = table.optimum("cifar10-test")
        for name in configs:
            if args.tune_configs and name not in args.tune_configs.split(","):
                continue
            kwargs = TUNE_GRID[name]
            start = time.perf_counter()
            common = dict(budget=args.budget, seeds=args.seeds, batch=args.batch, report="cifar10-test",
                          strategy_kwargs={"predictor": kwargs}, first_seed=TUNE_SEEDS)
            if args.subsample:
                curves = compare_on_subsamples(table, "cifar10-val", ["predictor"], fraction=args.subsample, **common)
            else:
                curves = compare_strategies(table, "cifar10-val", ["predictor"], **common)
            e = summary(curves, optimum, checkpoints=[c for c in (10, 25, 50, 100) if c <= args.budget])
            e = e["strategies"]["predictor"]
            key = f"{name} [{features}]"
            results[key] = e
            r05 = e["evals_to_0.005"]
            print(f"| {key} | " + " | ".join(f"{v:.4f}" for v in e["regret_at"].values())
                  + f" | {r05['reached']}/{e['seeds']}, {r05['mean_censored']:.1f} | "
                  f"{time.perf_counter() - start:.0f} |", file=sys.stderr, flush=True)
    return results


def tune_refresh(args) -> dict:
    """The refresh's search at its own scale on CIFAR-10 (the tuning table): each seed samples 1,000 cells (the
    refresh's ``pool_size``), the predictor's pool is their zero-cost top 32 (``prefilter_keep``), budget 8 in
    batches of 4, ``n_init`` as the refresh sets it; warm-start depth x predictor. Seeds disjoint from reports."""
    table = nb201_table("cifar10", [z for z in args.zc.split(",") if z])
    results = {}
    for warm in (2, 4, 8):
        for predictor in ("mlp", "lgbm"):
            start = time.perf_counter()
            kwargs = {"predictor": predictor, "acquisition": "ucb", "n_init": max(2, min(warm or 4, 8 // 2))}
            curves = compare_on_subsamples(
                table, "cifar10-val", ["predictor"], fraction=1000 / len(table), budget=8, seeds=args.seeds,
                batch=4, report="cifar10-test", strategy_kwargs={"predictor": kwargs}, first_seed=TUNE_SEEDS,
                warm_start=warm, pool_size=32)
            e = summary(curves, table.optimum("cifar10-test"), checkpoints=[4, 8])["strategies"]["predictor"]
            key = f"warm_start={warm} {predictor}+ucb [{args.zc}]"
            results[key] = e
            print(f"| {key} | " + " | ".join(f"{v:.4f}" for v in e["regret_at"].values())
                  + f" | {time.perf_counter() - start:.0f} |", file=sys.stderr, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--batch", type=int, default=5, help="architectures asked per predictor refit")
    parser.add_argument("--graph", default="cora,computers", help="nas-bench-graph datasets (comma list)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--nb201", default="", help="public NB201 table datasets: cifar10,cifar100,imagenet")
    parser.add_argument("--zc", default=",".join(SEARCH_FEATURES["nb201"]),
                        help="zero-cost features of the NB201 table's rows [default: the tuned nb201 set]")
    parser.add_argument("--predictor-kwargs", default="{}", help="JSON keyword arguments of the predictor strategy")
    parser.add_argument("--warm-start", type=int, default=10, help="zero-cost top rows the predictor evaluates first")
    parser.add_argument("--pool-size", type=int, default=1000, help="zero-cost top rows the predictor draws from")
    parser.add_argument("--subsample", type=float, default=None,
                        help="each seed searches its own random fraction of the rows (warm starts then differ)")
    parser.add_argument("--no-ground-truth", action="store_true", help="skip benchmarks/ground_truth/*.csv")
    parser.add_argument("--tune", action="store_true", help="the CIFAR-10 predictor grid (--seeds, --budget)")
    parser.add_argument("--tune-refresh", action="store_true",
                        help="the refresh's scale on CIFAR-10: 1,000-cell samples, pool 32, budget 8 (--seeds, --zc)")
    parser.add_argument("--tune-features", default="",
                        help="only these feature sets of the grid, ';'-separated (e.g. 'meco;meco,synflow')")
    parser.add_argument("--tune-configs", default="", help="only these configurations of the grid (e.g. lgbm+ucb)")
    parser.add_argument("--json", nargs="?", const="-", default=None,
                        help="write every figure as JSON to this file (no file: print it on stdout, tables go to "
                             "stderr)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.tune or args.tune_refresh:
        results = tune_refresh(args) if args.tune_refresh else tune(args)
        if args.json:
            _write_json(args.json, results)
        return
    out = sys.stderr if args.json == "-" else sys.stdout
    strategies = [s for s in args.strategies.split(",") if s]
    kwargs = {"predictor": json.loads(args.predictor_kwargs)}
    jobs = [(f"nas-bench-graph {d} (26,206 GNN architectures; proxy column: params)",
             load_table(graph_table(d), "arch", "val_accuracy", proxy_columns=["params"]))
            for d in args.graph.split(",") if d]
    nb201 = [d for d in args.nb201.split(",") if d]
    zc = [z for z in args.zc.split(",") if z]
    for d in nb201:
        jobs.append((f"public NB201 12-epoch table, {d} (15,625 cells; search on {d}-val, regret on {d}-test; "
                     f"zero-cost features: {', '.join(zc) or 'none'})", nb201_table(d, zc)))
    for path in [] if args.no_ground_truth else ground_truth_tables():
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
        metric = next(iter(table.metrics))
        shown = next((m for m in table.metrics if m.endswith("-test")), None) if title.startswith("public") else None
        common = dict(budget=budget, batch=args.batch, strategy_kwargs=kwargs, report=shown,
                      warm_start=args.warm_start, pool_size=args.pool_size)
        if args.subsample:
            title += f" [each seed on its own random {args.subsample:g} of the rows]"
            curves = compare_on_subsamples(table, metric, strategies, fraction=args.subsample, seeds=args.seeds,
                                           **common)
        else:
            curves = compare_strategies(table, metric, strategies, seeds=args.seeds, **common)
        s = summary(curves, table.optimum(shown or metric),
                    checkpoints=[c for c in (10, 25, 50, 100, 200, 300, 500) if c <= budget])
        print(report(title, s, budget), file=out)
        print(f"({time.perf_counter() - start:.0f} s)\n", file=out, flush=True)
        results[title] = s
    if args.json:
        _write_json(args.json, results)


def _write_json(where: str, results: dict) -> None:
    text = json.dumps(results, default=lambda o: float(o) if isinstance(o, np.floating) else o)
    if where == "-":
        print(text)
    else:
        Path(where).write_text(text)


if __name__ == "__main__":
    main()
