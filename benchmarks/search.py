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
DIGITS_SEEDS = ROOT / "ground_truth" / "nb201_digits_seeds.csv"  # 400 cells x 9 runs
DIGITS_SCORES = ROOT / "ground_truth" / "nb201_digits_proxy_scores.csv"
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
    batches of 4, ``n_init`` as the refresh sets it; warm-start depth x predictor. Seeds disjoint from reports.
    With ``--refresh-csv``: the same shape on our multi-seed digits ground truth (:func:`tune_refresh_csv`)."""
    if args.refresh_csv:
        return tune_refresh_csv(args)
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


def refresh_csv_table(path: Path, scores: Path, ensemble: str) -> tuple[BenchmarkTable, list[str]]:
    """The multi-seed ground truth (``val_accuracy_s{k}`` per run, ``*_mean``) joined with its per-cell proxy
    scores; proxy columns = the ensemble's members. Returns the table and its one-run validation columns."""
    import pandas as pd

    from nas.ensemble import ENSEMBLES

    runs = pd.read_csv(path)
    members = list(ENSEMBLES[ensemble])
    df = runs.merge(pd.read_csv(scores)[["arch", *members]], on="arch", how="inner", validate="one_to_one")
    if len(df) != len(runs):
        raise SystemExit(f"{scores}: proxy scores for {len(df)} of the {len(runs)} cells of {path}")
    one_run = sorted((c for c in df.columns if c.startswith("val_accuracy_s") and c[14:].isdigit()),
                     key=lambda c: int(c[14:]))
    metrics = [*one_run, "val_accuracy_mean", "test_accuracy_mean"]
    table = BenchmarkTable(list(df["arch"]), {m: df[m].to_numpy(float) for m in metrics},
                           {p: df[p].to_numpy(float) for p in members}, source=str(path))
    return table, one_run


def tune_refresh_csv(args) -> dict:
    """The refresh's search shape on ``--refresh-csv`` (default: the 400-cell digits ground truth, 9 runs per
    cell): the whole table is the pool (there are not 1,000), the predictor's pool its top 32 by the refresh's
    ``--refresh-ensemble`` ranking (``prefilter_keep``), budget 8 in batches of ``--refresh-batch``, ``n_init``
    as the refresh sets it, features = the ensemble's proxies. Seed ``s`` searches on one run's validation
    accuracy (``val_accuracy_s{k}``, k cycling over the runs: the refresh sees one noisy low-fidelity training per
    cell) or on ``--refresh-search`` when that names a column, and its regret is on ``test_accuracy_mean`` (the
    9-run mean, what the search never sees). Baselines: random 8 of the table, random 8 of the top 32, the top 8.
    Regrets in accuracy points; paired differences against the refresh default (warm start 4, mlp) per seed."""
    from nas.benchmarking import subset, table_search
    from nas.ensemble import ensemble_score
    from nas.tabular import TableSpace, proxy_lookup

    table, one_run = refresh_csv_table(Path(args.refresh_csv), Path(args.refresh_scores), args.refresh_ensemble)
    report, budget, keep, batch = "test_accuracy_mean", 8, 32, args.refresh_batch
    configs = {f"warm_start={w} {p}+ucb": (w, p) for w in (2, 4, 8) for p in ("mlp", "lgbm")}
    names = ["random 8 of all", "random 8 of top 32", "top 8 (ranking only)", *configs]
    regret: dict[str, dict[int, list[float]]] = {n: {4: [], 8: []} for n in names}
    seen_cols, seconds = [], dict.fromkeys(names, 0.0)
    for k, seed in enumerate(range(TUNE_SEEDS, TUNE_SEEDS + args.seeds)):
        metric = one_run[k % len(one_run)] if args.refresh_search == "one-run" else args.refresh_search
        seen_cols.append(metric)
        rows = np.arange(len(table)) if args.refresh_subsample >= 1 else np.random.default_rng(20_000 + seed).choice(
            len(table), round(args.refresh_subsample * len(table)), replace=False)
        sub = subset(table, rows)
        order = np.argsort(-ensemble_score(args.refresh_ensemble, sub.proxies), kind="stable")
        seen, shown, optimum = sub.metrics[metric], sub.metrics[report], sub.optimum(report)
        rng = np.random.default_rng(30_000 + seed)
        fixed = {"random 8 of all": rng.choice(len(sub), budget, replace=False),
                 "random 8 of top 32": order[:keep][rng.choice(keep, budget, replace=False)],
                 "top 8 (ranking only)": order[:budget]}
        for name, idx in fixed.items():  # regret of the cell best by the seen column among the first c
            for c in (4, 8):
                regret[name][c].append(100 * (optimum - shown[idx[:c][np.argmax(seen[idx[:c]])]]))
        space, proxies = TableSpace(sub.archs), proxy_lookup(sub)
        for name, (warm, predictor) in configs.items():
            start = time.perf_counter()
            kwargs = {"predictor": predictor, "acquisition": "ucb", "n_init": max(2, min(warm or 4, budget // 2))}
            trace, _ = table_search(sub, metric, "predictor", seed=seed, budget=budget, batch=batch, pool_size=keep,
                                    warm_start=warm, proxies=proxies, space=space, strategy_kwargs=kwargs,
                                    report=report, warm_order=order)
            for c in (4, 8):
                regret[name][c].append(100 * (optimum - trace[c - 1]))
            seconds[name] += time.perf_counter() - start
        print(f"seed {seed} ({metric}) regret@8: " + ", ".join(f"{w}/{p}={regret[n][8][-1]:.2f}"
                                                               for n, (w, p) in configs.items()),
              file=sys.stderr, flush=True)
    base = "warm_start=4 mlp+ucb"  # the refresh's defaults (pipelines/config.py)
    boot = np.random.default_rng(7).integers(0, args.seeds, (10_000, args.seeds))
    # seeds that see the same run share its noise (and, on the whole table, the same top 32): the honest unit of
    # resampling is the run seen, so the second interval resamples runs (none when the search sees one column)
    runs = sorted(set(seen_cols), key=seen_cols.index)
    member = np.array([[c == r for c in seen_cols] for r in runs], dtype=float)  # runs x seeds
    run_boot = np.random.default_rng(8).integers(0, len(runs), (10_000, len(runs)))
    out: dict = {"table": args.refresh_csv, "ensemble": args.refresh_ensemble, "searched_on": seen_cols,
                 "report": report, "budget": budget, "prefilter_keep": keep, "batch": batch,
                 "subsample": args.refresh_subsample, "seeds": list(range(TUNE_SEEDS, TUNE_SEEDS + args.seeds)),
                 "optimum_points": 100 * table.optimum(report), "strategies": {}}
    lines = [f"| strategy | regret @4 | regret @8 (mean ± s.e.) | @8 minus {base} | 95% CI, seeds resampled | "
             "95% CI, runs resampled | better / tie / worse |", "|---|---|---|---|---|---|---|"]
    for name in names:
        r4, r8 = np.array(regret[name][4]), np.array(regret[name][8])
        d = r8 - np.array(regret[base][8])
        ci = np.percentile(d[boot].mean(axis=1), [2.5, 97.5])
        counts = member[run_boot].sum(axis=1)  # (boot, seeds): how often each seed's run was drawn
        run_ci = np.percentile(counts @ d / counts.sum(axis=1), [2.5, 97.5]) if len(runs) > 1 else [np.nan] * 2
        wins = [int((d < -1e-9).sum()), int((np.abs(d) <= 1e-9).sum()), int((d > 1e-9).sum())]
        out["strategies"][name] = {"regret_at_4": r4.tolist(), "regret_at_8": r8.tolist(),
                                   "mean_regret_at_4": float(r4.mean()), "mean_regret_at_8": float(r8.mean()),
                                   "se_regret_at_8": float(r8.std(ddof=1) / np.sqrt(len(r8))),
                                   "diff_vs_default_at_8": float(d.mean()), "diff_ci95": [float(x) for x in ci],
                                   "diff_ci95_runs_resampled": [float(x) for x in run_ci] if len(runs) > 1 else None,
                                   "better_tie_worse": wins, "seconds": seconds[name]}
        lines.append(f"| {name} | {r4.mean():.2f} | {r8.mean():.2f} ± {r8.std(ddof=1) / np.sqrt(len(r8)):.2f} | "
                     f"{d.mean():+.2f} | [{ci[0]:+.2f}, {ci[1]:+.2f}] | "
                     + (f"[{run_ci[0]:+.2f}, {run_ci[1]:+.2f}]" if len(runs) > 1 else "n/a (one column)") + " | "
                     f"{wins[0]} / {wins[1]} / {wins[2]} |")
    print("\n".join(lines), file=sys.stderr, flush=True)
    return out


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
    parser.add_argument("--refresh-csv", nargs="?", const=str(DIGITS_SEEDS), default="",
                        help="--tune-refresh on this multi-seed ground truth instead of NB201 CIFAR-10 [no value: "
                             "benchmarks/ground_truth/nb201_digits_seeds.csv]")
    parser.add_argument("--refresh-scores", default=str(DIGITS_SCORES), help="its per-cell proxy scores (CSV)")
    parser.add_argument("--refresh-ensemble", default="ensemble", help="ranking and features (nas/ensemble.py)")
    parser.add_argument("--refresh-search", default="one-run",
                        help="what the search sees: one-run (seed k: val_accuracy_s{k mod runs}) or a column name")
    parser.add_argument("--refresh-batch", type=int, default=4, help="evaluations per predictor refit")
    parser.add_argument("--refresh-subsample", type=float, default=1.0,
                        help="each seed's pool is its own random fraction of the rows [1: the whole table]")
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
