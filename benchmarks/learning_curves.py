"""Does learning-curve extrapolation save training epochs without losing the ranking of architectures?

The NAS-Bench-201 ground truth (``benchmarks/ground_truth/nb201_digits.csv``) holds two-epoch curves only, too short
to extrapolate. ``--make-curves`` therefore trains a seeded sample of its cells with the real trainer
(``nas.trainer.train``, the ground truth's recipe and skeleton C=8 N=1 on digits, but ``--epochs`` epochs on a
``--data-fraction`` of the training split so curves are long and spread out) and writes every per-epoch validation
accuracy to ``benchmarks/ground_truth/nb201_digits_curves.csv`` (resumable; one torch thread, run it ``nice``'d):

    nice -n 10 .venv/bin/python benchmarks/learning_curves.py --make-curves

Then, without training, it replays those curves through :class:`nas.learning_curves.LearningCurveStopper` as a
search would meet them (cells in a random order, the best final accuracy so far as the bar, the stopper asked after
every epoch) and prints, averaged over ``--orders`` orders: the fraction of epochs saved, Spearman ρ / Kendall τ of
the scores the search ends up with (final accuracy of completed cells, predicted final accuracy of stopped ones)
against the true final accuracy, whether the true best cell was trained to the end, and the regret (true best minus
the best final accuracy among completed cells):

    .venv/bin/python benchmarks/learning_curves.py --json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, spearmanr

HERE = Path(__file__).resolve().parent
GROUND_TRUTH = HERE / "ground_truth" / "nb201_digits.csv"
CURVES = HERE / "ground_truth" / "nb201_digits_curves.csv"


def make_curves(out: Path, *, count: int, epochs: int, data_fraction: float, seed: int) -> None:
    """Train ``count`` cells of the ground truth (seeded sample) for ``epochs`` epochs each; append to ``out``."""
    import torch

    from nas.datasets import bundled_task
    from nas.spaces import get_space
    from nas.trainer import TrainConfig, train

    torch.set_num_threads(1)
    with GROUND_TRUTH.open() as fh:
        archs = [row["arch"] for row in csv.DictReader(fh)]
    rng = np.random.default_rng(seed)
    sample = [archs[i] for i in rng.choice(len(archs), size=min(count, len(archs)), replace=False)]
    done: set[str] = set()
    if out.exists():
        with out.open() as fh:
            done = {row["arch"] for row in csv.DictReader(fh)}
    data = bundled_task("digits", seed=seed)
    space = get_space("nb201", C=8, N=1)
    config = TrainConfig(epochs=epochs, batch_size=64, lr=0.05, data_fraction=data_fraction, seed=seed)
    fields = ["arch", *[f"val_accuracy@{e}" for e in range(1, epochs + 1)], "train_seconds", "epochs",
              "data_fraction", "seed"]
    new_file = not out.exists()
    with out.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        if new_file:
            writer.writeheader()
        for i, arch_str in enumerate(sample):
            if arch_str in done:
                continue
            torch.manual_seed(seed)
            net = space.build(space.from_string(arch_str), data.num_classes, data.input_shape)
            result = train(net, data, config)
            row = {"arch": arch_str, "train_seconds": round(result.train_seconds, 3), "epochs": epochs,
                   "data_fraction": data_fraction, "seed": seed}
            row.update({f"val_accuracy@{h['epoch']}": h["val_accuracy"] for h in result.history})
            writer.writerow(row)
            fh.flush()
            print(f"[{i + 1}/{len(sample)}] {result.val_accuracy:.3f} {result.train_seconds:.1f}s {arch_str}",
                  file=sys.stderr)


def load_curves(path: Path) -> tuple[list[str], np.ndarray]:
    """``(archs, curves (n, epochs))`` from a curves CSV."""
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path} holds no curves; make them with --make-curves")
    epochs = int(rows[0]["epochs"])
    curves = np.array([[float(r[f"val_accuracy@{e}"]) for e in range(1, epochs + 1)] for r in rows])
    return [r["arch"] for r in rows], curves


def replay(curves: np.ndarray, order: np.ndarray, **stopper_kwargs) -> dict[str, float]:
    """One simulated search over ``curves`` in ``order`` with the stopper; its savings and ranking figures."""
    from nas.learning_curves import LearningCurveStopper

    n, total = curves.shape
    scores = np.zeros(n)
    completed = np.zeros(n, dtype=bool)
    epochs_used = 0
    best = None
    for i in order:
        stopper = LearningCurveStopper(best, total_epochs=total, **stopper_kwargs)
        history: list[dict[str, float]] = []
        for epoch in range(1, total + 1):
            history.append({"epoch": epoch, "val_accuracy": float(curves[i, epoch - 1])})
            epochs_used += 1
            if epoch < total and stopper(history):
                break
        if len(history) == total:
            completed[i] = True
            scores[i] = curves[i, -1]
            best = scores[i] if best is None else max(best, scores[i])
        else:
            scores[i] = stopper.last_prediction.mean if stopper.last_prediction else curves[i, len(history) - 1]
    final = curves[:, -1]
    true_best = int(np.argmax(final))
    return {
        "epochs_saved_fraction": 1.0 - epochs_used / (n * total),
        "spearman": float(spearmanr(scores, final).statistic),
        "kendall": float(kendalltau(scores, final).statistic),
        "best_completed": float(bool(completed[true_best]) or bool(final[completed].max() >= final[true_best])),
        "regret": float(final[true_best] - final[completed].max()),
        "top5_completed": float(completed[np.argsort(-final)[:5]].mean()),
        "completed_fraction": float(completed.mean()),
    }


def evaluate(path: Path, *, orders: int, thresholds: list[float], min_epochs: int) -> dict:
    _, curves = load_curves(path)
    n, total = curves.shape
    rng = np.random.default_rng(0)
    perms = [rng.permutation(n) for _ in range(orders)]
    out: dict = {"curves": str(path), "cells": n, "epochs": total, "orders": orders, "min_epochs": min_epochs,
                 "final_accuracy": {"min": float(curves[:, -1].min()), "median": float(np.median(curves[:, -1])),
                                    "max": float(curves[:, -1].max())},
                 "rank_after_epoch": {}, "stopper": {}}
    for epoch in sorted({min_epochs, total // 2, total - 1}):  # the naive alternative: stop everyone at epoch e
        out["rank_after_epoch"][str(epoch)] = {
            "epochs_saved_fraction": 1.0 - epoch / total,
            "spearman": float(spearmanr(curves[:, epoch - 1], curves[:, -1]).statistic),
        }
    for threshold in thresholds:
        t0 = time.perf_counter()
        runs = [replay(curves, p, threshold=threshold, min_epochs=min_epochs) for p in perms]
        summary = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        summary["seconds_per_search"] = (time.perf_counter() - t0) / orders
        out["stopper"][f"{threshold:g}"] = summary
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--make-curves", action="store_true", help="train the sample of cells and write the CSV")
    parser.add_argument("--curves", type=Path, default=CURVES)
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--data-fraction", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--orders", type=int, default=20)
    parser.add_argument("--min-epochs", type=int, default=3)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.01, 0.05, 0.1])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.count < 2 or args.epochs < 3 or not 0 < args.data_fraction <= 1 or args.orders < 1:
        print("--count >= 2, --epochs >= 3, --data-fraction in (0, 1] and --orders >= 1 please", file=sys.stderr)
        return 2
    if not 1 <= args.min_epochs < args.epochs:
        print(f"--min-epochs must lie in [1, {args.epochs - 1}], got {args.min_epochs}", file=sys.stderr)
        return 2
    if args.make_curves:
        make_curves(args.curves, count=args.count, epochs=args.epochs, data_fraction=args.data_fraction,
                    seed=args.seed)
    if not args.curves.exists():
        print(f"no curves at {args.curves}; make them with --make-curves", file=sys.stderr)
        return 2
    result = evaluate(args.curves, orders=args.orders, thresholds=args.thresholds, min_epochs=args.min_epochs)
    print(json.dumps(result, indent=2) if args.json else result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
