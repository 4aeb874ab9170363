"""How well do zero-cost proxies rank architectures, and how much does fusing their passes save?

Reads a ground-truth table made by ``benchmarks/ground_truth/make_ground_truth.py`` (NB201 cells really trained on
a bundled dataset), rebuilds every cell with the same reduced skeleton (C, N), dataset and seed the table records,
scores it with every proxy (fused) on one seeded training batch, and prints:

- Spearman ρ and Kendall τ of every proxy, of the named training-free ensembles and of calibrated ensembles
  (weights fitted on a few architectures, evaluated on the others, repeated) against the trained accuracy;
- throughput, measured side by side in this run on the same architectures: all proxies in one fused call vs one
  call per proxy (architectures per second, and the ratio).

    .venv/bin/python benchmarks/proxies.py --csv benchmarks/ground_truth/nb201_mnist5k.csv --json out.json

With ``--table`` it instead measures the data-free proxies on a public table: the NAS-Bench-201 12-epoch table
(``benchmarks/tables/nb201_12epoch.csv.gz``) against the cached scores of every cell
(``benchmarks/tables/nb201_proxy_scores.csv.gz``, made by ``benchmarks/tables/score_nb201.py``), per dataset, with
the named ensembles, an equal-weight ensemble tuned on CIFAR-10 only and weights calibrated on CIFAR-10 only
(both reported on CIFAR-100 and ImageNet16-120; a proxy scored on a sample of cells gets both on its cells):

    .venv/bin/python benchmarks/proxies.py --table benchmarks/tables/nb201_12epoch.csv.gz --json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr

from nas.datasets import bundled_task
from nas.ensemble import ENSEMBLES, CalibratedEnsemble, ensemble_score, rank_aggregate
from nas.proxies import WORST_SCORE, compute_scores, list_proxies
from nas.spaces import get_space

DEFAULT_CSV = Path(__file__).resolve().parent / "ground_truth" / "nb201_mnist5k.csv"
DEFAULT_SCORES = Path(__file__).resolve().parent / "tables" / "nb201_proxy_scores.csv.gz"
TABLE_TARGETS = {"cifar10": "cifar10-test", "cifar100": "cifar100-test", "imagenet16-120": "imagenet-test"}
REFERENCE_12EPOCH = {  # a reference implementation on this same table (Spearman), the calibration to reach
    "synflow": {"cifar10": 0.55, "cifar100": 0.52, "imagenet16-120": 0.53},
    "params": {"cifar10": 0.57, "cifar100": 0.52, "imagenet16-120": 0.45},
}
PUBLISHED_200EPOCH = {  # Abdelfattah et al. 2021, Table 2 (NAS-Bench-201, all cells, 200-epoch accuracy)
    "synflow": {"cifar10": 0.74, "cifar100": 0.76, "imagenet16-120": 0.75},
}


def read_table(path: Path, target: str) -> tuple[list[dict[str, str]], dict[str, object]]:
    """Rows of the ground-truth CSV and the settings (dataset, C, N, seed) every row shares."""
    if not path.exists():
        raise SystemExit(f"no ground-truth table at {path}; make one with benchmarks/ground_truth/make_ground_truth.py")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{path} has no rows")
    needed = {"arch", target, "dataset", "C", "N", "seed"}
    missing = needed - set(rows[0])
    if missing:
        raise SystemExit(f"{path} lacks columns {sorted(missing)}; expected those written by make_ground_truth.py")
    settings = {"dataset": rows[0]["dataset"], "C": int(rows[0]["C"]), "N": int(rows[0]["N"]),
                "seed": int(rows[0]["seed"])}
    for row in rows:
        if (row["dataset"], int(row["C"]), int(row["N"]), int(row["seed"])) != tuple(settings.values()):
            raise SystemExit(f"{path} mixes settings: {row['arch']} differs from {settings}")
    return rows, settings


def correlations(values: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    rho, tau = spearmanr(values, truth).statistic, kendalltau(values, truth).statistic
    return {"spearman": float(rho), "kendall": float(tau)}


def calibrated_cv(
    scores: dict[str, np.ndarray], truth: np.ndarray, size: int, repeats: int, seed: int
) -> dict[str, float]:
    """Fit on ``size`` random architectures, measure ρ on all the others; mean and std over ``repeats`` draws."""
    rng = np.random.default_rng(seed)
    rhos, taus = [], []
    weights_sum: dict[str, float] = dict.fromkeys(scores, 0.0)
    for _ in range(repeats):
        idx = rng.permutation(len(truth))
        fit, held = idx[:size], idx[size:]
        model = CalibratedEnsemble.fit({k: v[fit] for k, v in scores.items()}, truth[fit])
        agg = model.score({k: v[held] for k, v in scores.items()})
        c = correlations(agg, truth[held])
        rhos.append(c["spearman"])
        taus.append(c["kendall"])
        for k, w in model.weights.items():
            weights_sum[k] += w / repeats
    return {"spearman": float(np.mean(rhos)), "spearman_std": float(np.std(rhos)), "kendall": float(np.mean(taus)),
            "fit_size": size, "repeats": repeats,
            "mean_weights": {k: round(v, 3) for k, v in weights_sum.items() if abs(v) > 0.005}}


def throughput(factories: list, names: list[str], batch, input_shape, seed: int) -> dict[str, float]:
    """Seconds for all proxies fused vs one call per proxy, alternating per architecture so load hits both alike."""
    fused_s, single_s = 0.0, 0.0
    per_proxy = dict.fromkeys(names, 0.0)
    deviation = dict.fromkeys(names, 0.0)  # fused vs alone: float rounding only (see docs/proxies.md)
    for factory in factories:
        t0 = time.perf_counter()
        fused = compute_scores(factory, names, batch=batch, input_shape=input_shape, seed=seed)
        fused_s += time.perf_counter() - t0
        for name in names:
            t0 = time.perf_counter()
            alone = compute_scores(factory, [name], batch=batch, input_shape=input_shape, seed=seed)[name]
            dt = time.perf_counter() - t0
            single_s += dt
            per_proxy[name] += dt
            rel = abs(alone - fused[name]) / max(abs(alone), abs(fused[name]), 1e-300)
            deviation[name] = max(deviation[name], rel)
    n = len(factories)
    return {"archs": n, "fused_archs_per_s": n / fused_s, "one_at_a_time_archs_per_s": n / single_s,
            "speedup": single_s / fused_s,
            "ms_per_arch_alone": {k: round(1000 * v / n, 1) for k, v in per_proxy.items()},
            "max_relative_deviation_fused_vs_alone": {k: float(f"{v:.1e}") for k, v in deviation.items()}}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(result["correlations"].items(), key=lambda kv: kv[1]["spearman"])
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(rows) + 1.2))
    names = [k for k, _ in rows]
    rho = [v["spearman"] for _, v in rows]
    colors = ["tab:orange" if k in ENSEMBLES or k.startswith("calibrated") or k == "all_proxies" else "tab:blue"
              for k in names]
    ax.barh(names, rho, color=colors)
    ax.axvline(result["correlations"]["params"]["spearman"], color="grey", ls="--", lw=1, label="params")
    ax.set_xlabel(f"Spearman ρ vs {result['target']} ({result['archs']} NB201 cells, {result['settings']['dataset']})")
    ax.set_xlim(min(0.0, min(rho)), 1.0)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _read_csv(path: Path) -> list[dict[str, str]]:
    import gzip

    if not path.exists():
        raise SystemExit(f"no table at {path}; see benchmarks/tables/README.md (scores: score_nb201.py there)")
    with gzip.open(path, "rt", newline="") if path.suffix == ".gz" else path.open(newline="") as f:
        return list(csv.DictReader(f))


def tuned_ensemble(scores: dict[str, np.ndarray], truth: np.ndarray) -> dict[str, object]:
    """The equal-weight subset and aggregation of the data-free proxies with the best Spearman on ``truth``."""
    from itertools import combinations

    best: dict[str, object] = {"spearman": -2.0}
    tried = 0
    for k in range(1, len(scores) + 1):
        for members in combinations(sorted(scores), k):
            for method in ("log", "mean"):
                tried += 1
                rho = spearmanr(rank_aggregate({m: scores[m] for m in members}, method=method), truth).statistic
                if rho > best["spearman"]:
                    best = {"members": list(members), "method": method, "spearman": float(rho)}
    best["candidates_tried"] = tried
    return best


def calibrated_on(
    scores: dict[str, np.ndarray], fit_truth: np.ndarray, truth: dict[str, np.ndarray]
) -> dict[str, object]:
    """Weights fitted by :func:`nas.ensemble.calibrate` on ``fit_truth`` (CIFAR-10) for each aggregation and ridge
    (0.3, the default, and 0); the fit with the best Spearman on ``fit_truth`` is kept and reported on ``truth``."""
    best: dict[str, object] = {"fit_spearman": -2.0}
    for method in ("log", "mean"):
        for ridge in (0.3, 0.0):
            model = CalibratedEnsemble.fit(scores, fit_truth, method=method, ridge=ridge)
            rho = float(spearmanr(model.score(scores), fit_truth).statistic)
            if rho > best["fit_spearman"]:
                best = {"fit_spearman": rho, "model": model}
    model = best.pop("model")
    agg = model.score(scores)
    return {"weights": {k: round(v, 3) for k, v in model.weights.items()}, "method": model.method,
            "ridge": model.meta["ridge"], "cells": len(fit_truth),
            "tuned_on": "cifar10 test accuracy only (weights and the choice of method/ridge)", "candidates_tried": 4,
            **{d: correlations(agg, t) for d, t in truth.items()}}


def subset_spread(
    values: dict[str, np.ndarray], scored: dict[str, np.ndarray], truth: dict[str, np.ndarray], *, size: int,
    draws: int, seed: int,
) -> dict[str, object]:
    """Spearman of params and synflow on ``draws`` random subsets of ``size`` scored cells (5th/50th/95th
    percentile): how far a figure measured on a few hundred cells may sit from the whole table's."""
    rng = np.random.default_rng(seed)
    out: dict[str, object] = {"subset_size": size, "draws": draws}
    for name in ("params", "synflow"):
        if name not in values:
            continue
        idx_all = np.flatnonzero(scored[name])
        if len(idx_all) <= size:
            continue
        per: dict[str, list[float]] = {d: [] for d in truth}
        for _ in range(draws):
            idx = rng.choice(idx_all, size=size, replace=False)
            for d, t in truth.items():
                per[d].append(float(spearmanr(values[name][idx], t[idx]).statistic))
        out[name] = {d: [round(float(np.percentile(v, q)), 3) for q in (5, 50, 95)] for d, v in per.items()}
    return out


def table_benchmark(args: argparse.Namespace) -> dict[str, object]:
    """Spearman and Kendall of every cached data-free proxy and ensemble against each dataset's test accuracy."""
    table = {row["ArchitectureString"]: row for row in _read_csv(args.table)}
    cached = _read_csv(args.scores)
    names = [c for c in cached[0] if c not in ("arch", "ArchitectureString", "canonical")]
    missing = [row["ArchitectureString"] for row in cached if row["ArchitectureString"] not in table]
    if missing or len(cached) != len(table):
        raise SystemExit(f"{args.scores} does not score the cells of {args.table} one to one ({len(cached)} vs "
                         f"{len(table)} rows); remake it with benchmarks/tables/score_nb201.py --write")
    truth = {d: np.array([float(table[r["ArchitectureString"]][col]) for r in cached])
             for d, col in TABLE_TARGETS.items()}
    values = {n: np.array([float(r[n]) if r[n] != "" else np.nan for r in cached]) for n in names}
    scored = {n: ~np.isnan(v) for n, v in values.items()}
    common = np.logical_and.reduce([m for m in scored.values()])
    result: dict[str, object] = {
        "table": str(args.table), "scores": str(args.scores), "cells": len(cached),
        "cells_scored": {n: int(m.sum()) for n, m in scored.items()}, "cells_all_proxies": int(common.sum()),
        "network": "NB201 C=16 N=5, 3x32x32 inputs, seed 0 (scores in the cache)",
        "reference_12epoch_spearman": REFERENCE_12EPOCH, "published_200epoch_spearman": PUBLISHED_200EPOCH,
    }
    proxies = {}
    for name in names:
        mask = scored[name]
        if mask.sum() < 3:
            continue
        proxies[name] = {"cells": int(mask.sum()), **{d: correlations(values[name][mask], t[mask])
                                                     for d, t in truth.items()}}
    result["proxies"] = proxies
    full = [n for n in names if scored[n].all()]
    # tune over the proxies scored on most cells (one still being scored on a small sample is reported alone)
    most = max(int(m.sum()) for m in scored.values())
    names_common = [n for n in names if scored[n].sum() >= most // 2]
    common = np.logical_and.reduce([scored[n] for n in names_common])
    result["tuning_cells"] = int(common.sum())
    result["tuning_proxies"] = names_common
    on_common = {n: values[n][common] for n in names_common}
    ensembles: dict[str, object] = {}
    for ens, members in ENSEMBLES.items():
        mask = np.logical_and.reduce([scored[m] for m in members]) if all(m in names for m in members) else None
        if mask is not None and mask.sum() >= 3:
            agg = rank_aggregate({m: values[m][mask] for m in members})
            ensembles[ens] = {"members": members, "cells": int(mask.sum()),
                              **{d: correlations(agg, t[mask]) for d, t in truth.items()}}
    tuned = tuned_ensemble(on_common, truth["cifar10"][common])
    agg = rank_aggregate({m: on_common[m] for m in tuned["members"]}, method=str(tuned["method"]))
    ensembles["tuned_on_cifar10"] = {
        "members": tuned["members"], "method": tuned["method"], "cells": int(common.sum()),
        "tuned_on": "cifar10 test accuracy only; cifar100 and imagenet16-120 are held out",
        "candidates_tried": tuned["candidates_tried"],
        **{d: correlations(agg, t[common]) for d, t in truth.items()},
    }
    # flops ranks NB201 cells exactly as params: a fit could weigh the pair +w/-w, whose sum is a constant plus
    # float rounding, so flops is left out of every calibration fit
    fit_common = {m: v for m, v in on_common.items() if not (m == "flops" and "params" in on_common)}
    ensembles["calibrated_on_cifar10"] = calibrated_on(fit_common, truth["cifar10"][common],
                                                       {d: t[common] for d, t in truth.items()})
    if set(tuned["members"]) <= set(full) and int(common.sum()) < len(cached):
        agg_all = rank_aggregate({m: values[m] for m in tuned["members"]}, method=str(tuned["method"]))
        ensembles["tuned_on_cifar10"]["all_cells"] = {d: correlations(agg_all, t) for d, t in truth.items()}
    for name in names:  # a proxy scored on a sample only: the main proxies on the very same cells, to compare
        if name in proxies and name not in names_common:
            mask = scored[name] & common
            proxies[name]["main_proxies_on_the_same_cells"] = {
                other: {d: round(correlations(values[other][mask], t[mask])["spearman"], 3) for d, t in truth.items()}
                for other in names_common
            }
            pairs = {f"{name}+{other}": [name, other] for other in ("synflow", "params", "meco")
                     if other in names_common}
            for label, members in pairs.items():
                agg = rank_aggregate({m: values[m][mask] for m in members})
                proxies[name]["main_proxies_on_the_same_cells"][label] = {
                    d: round(correlations(agg, t[mask])["spearman"], 3) for d, t in truth.items()}
            # the choice on CIFAR-10 only, redone on this proxy's cells with it among the candidates
            on_sample = {m: values[m][mask] for m in [*names_common, name]}
            pick = tuned_ensemble(on_sample, truth["cifar10"][mask])
            agg = rank_aggregate({m: on_sample[m] for m in pick["members"]}, method=str(pick["method"]))
            ensembles[f"tuned_on_cifar10_with_{name}"] = {
                "members": pick["members"], "method": pick["method"], "cells": int(mask.sum()),
                "tuned_on": f"cifar10 test accuracy of the {int(mask.sum())} cells {name} scored, only",
                "candidates_tried": pick["candidates_tried"],
                **{d: correlations(agg, t[mask]) for d, t in truth.items()},
            }
            fit = {m: v for m, v in on_sample.items() if not (m == "flops" and "params" in on_sample)}
            ensembles[f"calibrated_on_cifar10_with_{name}"] = calibrated_on(fit, truth["cifar10"][mask], {
                d: t[mask] for d, t in truth.items()})
    result["ensembles"] = ensembles
    result["spread_over_subsets"] = subset_spread(values, scored, truth, size=725, draws=200, seed=0)
    result["single_proxies_on_ensemble_cells"] = {
        n: {d: correlations(on_common[n], t[common])["spearman"] for d, t in truth.items()} for n in names_common
    }
    return result


def print_table_result(result: dict) -> None:
    datasets = list(TABLE_TARGETS)
    print(f"{result['cells']} NB201 cells; Spearman / Kendall against test accuracy after 12 epochs")
    print(f"{'proxy':<18}{'cells':>7}" + "".join(f"{d:>22}" for d in datasets))
    rows = list(result["proxies"].items()) + list(result["ensembles"].items())
    for name, row in rows:
        cells = "".join(f"{row[d]['spearman']:>13.3f} / {row[d]['kendall']:.3f}" for d in datasets)
        print(f"{name:<18}{row['cells']:>7}{cells}")
    for name, spread in result["spread_over_subsets"].items():
        if isinstance(spread, dict):
            print(f"{name} on {result['spread_over_subsets']['subset_size']}-cell random subsets (5/50/95 %): "
                  + ", ".join(f"{d} {v}" for d, v in spread.items()))
    tuned = result["ensembles"]["tuned_on_cifar10"]
    print(f"tuned on CIFAR-10 only: {tuned['method']} rank aggregate of {tuned['members']} "
          f"({tuned['candidates_tried']} candidates)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="ground-truth table (make_ground_truth.py)")
    parser.add_argument("--target", default="val_accuracy", help="accuracy column to rank against")
    parser.add_argument("--batch-size", type=int, default=64, help="labelled batch for data-dependent proxies")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N rows")
    parser.add_argument("--throughput-archs", type=int, default=30,
                        help="architectures timed fused vs one-at-a-time (0: skip the timing)")
    parser.add_argument("--calib-size", type=int, nargs="+", default=[10, 20, 40],
                        help="trained architectures a calibration may use (one evaluation per size)")
    parser.add_argument("--calib-repeats", type=int, default=30)
    parser.add_argument("--json", type=Path, nargs="?", const=Path("-"), default=None,
                        help="also write every figure to this JSON file (no file, or '-': print the JSON only)")
    parser.add_argument("--table", type=Path, default=None,
                        help="measure the cached data-free proxy scores against this public table instead "
                             "(benchmarks/tables/nb201_12epoch.csv.gz)")
    parser.add_argument("--scores", type=Path, default=DEFAULT_SCORES,
                        help="with --table: the cached proxy scores (benchmarks/tables/score_nb201.py)")
    parser.add_argument("--plot", type=Path, default=None, help="bar chart of Spearman ρ per proxy (PNG)")
    parser.add_argument("--scores-out", type=Path, default=None, help="write every architecture's scores (CSV)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.table is not None:
        result = table_benchmark(args)
        if args.json is not None and str(args.json) == "-":
            print(json.dumps(result, indent=2))
        else:
            print_table_result(result)
            if args.json is not None:
                args.json.write_text(json.dumps(result, indent=2) + "\n")
        return 0

    rows, settings = read_table(args.csv, args.target)
    rows = rows[: args.limit] if args.limit else rows
    space = get_space("nb201", C=settings["C"], N=settings["N"])
    task = bundled_task(str(settings["dataset"]), seed=int(settings["seed"]))
    batch = task.batch(args.batch_size, seed=int(settings["seed"]))
    shape, seed = task.input_shape, int(settings["seed"])
    names = list_proxies()
    truth = np.array([float(r[args.target]) for r in rows])
    archs = [space.from_string(r["arch"]) for r in rows]
    factories = [(lambda a=a: a.build(task.num_classes, shape)) for a in archs]

    table: dict[str, list[float]] = {n: [] for n in names}
    t0 = time.perf_counter()
    for i, factory in enumerate(factories, start=1):
        for name, value in compute_scores(factory, names, batch=batch, input_shape=shape, seed=seed).items():
            table[name].append(value)
        if i % 50 == 0:
            print(f"scored {i}/{len(factories)} ({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
    score_seconds = time.perf_counter() - t0
    scores = {n: np.array(v) for n, v in table.items()}
    if args.scores_out:
        with args.scores_out.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["arch", args.target, *names])
            for i, row in enumerate(rows):
                writer.writerow([row["arch"], row[args.target], *(repr(float(scores[n][i])) for n in names)])

    corr = {n: correlations(scores[n], truth) for n in names}
    # the other split of the same runs: val_accuracy <-> test_accuracy, val_accuracy_mean <-> test_accuracy_mean
    if "val_accuracy" in args.target:
        other = args.target.replace("val_accuracy", "test_accuracy")
    elif "test_accuracy" in args.target:
        other = args.target.replace("test_accuracy", "val_accuracy")
    else:
        other = "test_accuracy"
    if other in rows[0] and other != args.target:
        other_truth = np.array([float(r[other]) for r in rows])
        corr_other = {n: correlations(scores[n], other_truth) for n in names}
        for ens in ENSEMBLES:
            corr_other[ens] = correlations(ensemble_score(ens, scores), other_truth)
        corr_other["all_proxies"] = correlations(
            rank_aggregate({n: v for n, v in scores.items() if n != "flops"}), other_truth)
        corr_other["target_vs_" + other] = correlations(truth, other_truth)
    else:
        corr_other = {}
    for ens in ENSEMBLES:
        corr[ens] = correlations(ensemble_score(ens, scores), truth)
    corr["all_proxies"] = correlations(rank_aggregate({n: v for n, v in scores.items() if n != "flops"}), truth)
    calibrated = {}
    quality = {n: scores[n] for n in names if n != "flops"}
    members = {n: scores[n] for n in ENSEMBLES["ensemble"]}
    for size in args.calib_size:
        if len(truth) > size + 10:
            calibrated[f"calibrated_all@{size}"] = calibrated_cv(quality, truth, size, args.calib_repeats, seed)
            calibrated[f"calibrated_ensemble@{size}"] = calibrated_cv(members, truth, size, args.calib_repeats, seed)
    for key, value in calibrated.items():
        corr[key] = {"spearman": value["spearman"], "kendall": value["kendall"]}

    speed = (throughput(factories[: args.throughput_archs], names, batch, shape, seed)
             if args.throughput_archs > 0 else None)
    result = {
        "csv": str(args.csv), "target": args.target, "archs": len(truth), "settings": settings,
        "batch_size": args.batch_size, "degenerate_cells": int(sum(v <= WORST_SCORE for v in scores["synflow"])),
        "correlations": corr, "calibrated": calibrated, "correlations_" + other: corr_other, "throughput": speed,
        "scoring_seconds_all_rows": round(score_seconds, 1), "torch_threads": torch.get_num_threads(),
    }

    print(f"{len(truth)} NB201 cells (C={settings['C']}, N={settings['N']}) trained on {settings['dataset']}; "
          f"target {args.target}; batch {args.batch_size}; {result['degenerate_cells']} degenerate cells")
    print(f"{'proxy':<22}{'spearman':>10}{'kendall':>10}")
    for name, c in sorted(corr.items(), key=lambda kv: -kv[1]["spearman"]):
        print(f"{name:<22}{c['spearman']:>10.3f}{c['kendall']:>10.3f}")
    if corr_other:
        print(f"{args.target} vs {other} of the same trained nets: "
              f"ρ={corr_other['target_vs_' + other]['spearman']:.3f}; vs {other}: ensemble "
              f"ρ={corr_other['ensemble']['spearman']:.3f}, params ρ={corr_other['params']['spearman']:.3f}")
    for key, value in calibrated.items():
        print(f"{key}: fit on {value['fit_size']} archs, ρ on the rest = {value['spearman']:.3f} ± "
              f"{value['spearman_std']:.3f} over {value['repeats']} draws; mean weights {value['mean_weights']}")
    if speed is not None:
        print(f"throughput on {speed['archs']} archs, all {len(names)} proxies: fused "
              f"{speed['fused_archs_per_s']:.2f} archs/s vs one at a time {speed['one_at_a_time_archs_per_s']:.2f} "
              f"archs/s -> {speed['speedup']:.2f}x")
        print(f"ms per arch, each proxy alone: {speed['ms_per_arch_alone']}")
        print(f"max relative deviation fused vs alone: {speed['max_relative_deviation_fused_vs_alone']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
