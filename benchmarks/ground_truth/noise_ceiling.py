"""The noise ceiling of the digits ground truth: how well one training run of a cell predicts another run of the
same cell, and how reliable the mean over the repeats is.

A proxy cannot rank cells better than the table ranks itself: if two runs of the same cells from different
initialisations agree with Spearman ρ = r, a perfect proxy would reach about r against one run. The mean of k runs is
more reliable; its predicted reliability is the Spearman-Brown formula k·r / (1 + (k - 1)·r) (Spearman 1910; Brown
1910), checked here empirically by correlating one run with the mean of the others. The repeats are made by
``make_ground_truth.py --train-seed S`` (same cells, same split, other initialisation and batch order).

    .venv/bin/python benchmarks/ground_truth/noise_ceiling.py --json        # writes nb201_digits_seeds.csv too
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, spearmanr

HERE = Path(__file__).resolve().parent
BASE = HERE / "nb201_digits.csv"
REPEATS = sorted(HERE.glob("nb201_digits_train_seed*.csv"))
OUT = HERE / "nb201_digits_seeds.csv"
METRICS = ("val_accuracy", "test_accuracy")


def read(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        return {row["arch"]: row for row in csv.DictReader(f)}


def spearman_brown(r: float, k: int) -> float:
    """Predicted reliability of the mean of ``k`` parallel measurements whose pairwise correlation is ``r``."""
    return k * r / (1 + (k - 1) * r)


def ceiling(runs: list[dict[str, dict[str, str]]], metric: str) -> dict[str, object]:
    """Pairwise agreement of the runs on ``metric`` over the cells every run has, and the mean's reliability."""
    cells = sorted(set.intersection(*(set(r) for r in runs)))
    values = np.array([[float(run[c][metric]) for c in cells] for run in runs])  # (runs, cells)
    pairs = list(itertools.combinations(range(len(runs)), 2))
    rho = [float(spearmanr(values[a], values[b]).statistic) for a, b in pairs]
    tau = [float(kendalltau(values[a], values[b]).statistic) for a, b in pairs]
    k = len(runs)
    # One run against the mean of the others: the reliability of a (k-1)-run mean, measured rather than predicted.
    held_out = [float(spearmanr(values[i], np.delete(values, i, axis=0).mean(axis=0)).statistic) for i in range(k)]
    r = float(np.mean(rho))
    return {
        "cells": len(cells), "runs": k,
        "pairwise_spearman": [round(v, 4) for v in rho], "pairwise_kendall": [round(v, 4) for v in tau],
        "one_run_vs_another_spearman": round(r, 4),
        "one_run_vs_mean_of_others_spearman": [round(v, 4) for v in held_out],
        f"mean_of_{k}_reliability_spearman_brown": round(spearman_brown(r, k), 4),
        "seed_std_mean_points": round(float(values.std(axis=0, ddof=1).mean() * 100), 3),
        "spread_p5_p95_points": [round(float(np.percentile(values.mean(axis=0), q) * 100), 2) for q in (5, 95)],
    }


def write_mean_table(runs: list[dict[str, dict[str, str]]], out: Path) -> None:
    """The base table's rows (every column, for ``benchmarks/proxies.py``) plus each run's accuracies and their
    means (``--target val_accuracy_mean``), for the cells every run has."""
    base = runs[0]
    cells = [c for c in base if all(c in r for r in runs)]
    extra = [f"{m}_s{i}" for m in METRICS for i in range(len(runs))] + [f"{m}_mean" for m in METRICS]
    fields = list(next(iter(base.values())).keys()) + extra
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for c in cells:
            row = dict(base[c])
            for m in METRICS:
                vals = [float(r[c][m]) for r in runs]
                row.update({f"{m}_s{i}": v for i, v in enumerate(vals)})
                row[f"{m}_mean"] = float(np.mean(vals))
            writer.writerow(row)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=BASE)
    parser.add_argument("--repeats", type=Path, nargs="*", default=REPEATS)
    parser.add_argument("--out", type=Path, default=OUT, help="the table with every run and the means")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if not args.repeats:
        print("no repeats (nb201_digits_train_seed*.csv): make them with make_ground_truth.py --train-seed S",
              file=sys.stderr)
        return 2
    runs = [read(args.base), *(read(p) for p in args.repeats)]
    result = {"tables": [args.base.name, *(p.name for p in args.repeats)],
              **{m: ceiling(runs, m) for m in METRICS}}
    write_mean_table(runs, args.out)
    result["mean_table"] = args.out.name
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
