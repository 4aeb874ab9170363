"""Train a seeded sample of NAS-Bench-201 cells for real and write the ground-truth table (CSV) beside this script.

The table is what proxy rankings and search strategies are scored against on this machine. Every row is one
unique cell (canonical form, see ``NB201Space.canonicalize``) trained from the same initial seed with the same
recipe, so differences between rows come from the architecture. Rows are appended as they finish; re-running the
same command resumes where an interrupted run stopped.

    .venv/bin/python benchmarks/ground_truth/make_ground_truth.py --dataset digits --count 400 --epochs 2

Repeats for the noise ceiling: the same cells and the same split, another initialisation and batch order
(``--train-seed``), each in its own CSV; ``noise_ceiling.py`` compares them.

    .venv/bin/python benchmarks/ground_truth/make_ground_truth.py --dataset digits --count 400 --epochs 2 \
        --train-seed 1 --out benchmarks/ground_truth/nb201_digits_train_seed1.csv
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

from nas.datasets import BUNDLED_DATASETS, bundled_task
from nas.spaces import get_space
from nas.trainer import TrainConfig, evaluate, train

HERE = Path(__file__).resolve().parent
COLUMNS = [
    "arch", "val_accuracy", "test_accuracy", "val_accuracy@1", "val_accuracy@2", "val_loss", "params", "flops",
    "train_seconds", "seed", "dataset", "C", "N", "epochs", "batch_size", "lr", "optimizer", "data_fraction",
]


def sample_archs(space, count: int, seed: int) -> list[str]:
    """``count`` unique canonical cells drawn uniformly over strings with ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < count:
        canonical = space.canonicalize(space.sample(rng)).string
        if canonical not in seen:
            seen.add(canonical)
            out.append(canonical)
    return out


def done_archs(path: Path) -> set[str]:
    if not path.exists():
        return set()
    with path.open(newline="") as f:
        return {row["arch"] for row in csv.DictReader(f)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=BUNDLED_DATASETS, default="digits")
    parser.add_argument("--count", type=int, default=320)
    parser.add_argument("--C", type=int, default=8)
    parser.add_argument("--N", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--data-fraction", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="the cell sample, the data split and (by default) training")
    parser.add_argument("--train-seed", type=int, default=None,
                        help="initialisation and batch order only (default: --seed): a repeat of the same cells")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    train_seed = args.seed if args.train_seed is None else args.train_seed

    out = args.out or HERE / f"nb201_{args.dataset}.csv"
    space = get_space("nb201", C=args.C, N=args.N)
    task = bundled_task(args.dataset, seed=args.seed)
    x_test, y_test = task.tensors("test")
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=train_seed, data_fraction=args.data_fraction
    )
    archs = sample_archs(space, args.count, args.seed)
    done = done_archs(out)
    todo = [a for a in archs if a not in done]
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    (out.with_suffix(".settings.json")).write_text(json.dumps({**settings, "out": str(out.name)}, indent=2) + "\n")
    print(f"{len(done)} rows already in {out.name}; training {len(todo)} more", flush=True)

    new_file = not out.exists()
    # A table written before a column was added keeps its own header (rows are appended in its columns).
    fieldnames = COLUMNS if new_file else next(csv.reader(out.open()))
    with out.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames, extrasaction="ignore")
        if new_file:
            writer.writeheader()
        for i, arch_string in enumerate(todo, start=1):
            arch = space.from_string(arch_string)
            torch.manual_seed(train_seed)
            model = arch.build(task.num_classes, task.input_shape)
            t0 = time.perf_counter()
            result = train(model, task, config)
            seconds = time.perf_counter() - t0
            test_acc, _ = evaluate(model, x_test, y_test)
            curve = {f"val_accuracy@{h['epoch']}": h["val_accuracy"] for h in result.history}
            writer.writerow({
                "arch": arch_string, "val_accuracy": result.val_accuracy, "test_accuracy": test_acc,
                "val_accuracy@1": curve.get("val_accuracy@1", ""), "val_accuracy@2": curve.get("val_accuracy@2", ""),
                "val_loss": result.val_loss,
                "params": space.count_params(arch, task.num_classes, task.input_shape),
                "flops": space.count_flops(arch, task.num_classes, task.input_shape),
                "train_seconds": round(seconds, 3), "seed": args.seed, "dataset": args.dataset, "C": args.C,
                "N": args.N, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                "optimizer": config.optimizer, "data_fraction": args.data_fraction, "train_seed": train_seed,
            })
            f.flush()
            print(f"[{len(done) + i}/{len(archs)}] {seconds:5.1f}s val={result.val_accuracy:.3f} {arch_string}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
