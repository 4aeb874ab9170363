"""The ``tabular`` space against the plain ``mlp`` space on real tables, at the same training budget.

Each table is prepared as a refresh prepares it (``pipelines.data.prepare``: the column plan, the fitted
``ColumnTransformer``, the stratified 60/15/10/15 split of ``--seed``). Every architecture below is trained with the
same epoch budget and early stopping on the validation score (best weights restored), then scored on the test
split: accuracy and, for a binary target, ROC AUC; RMSE for a regression. The plain architectures are trained with
the trainer's image-path defaults (SGD, lr 0.05, batch 64, as the refresh trains today) *and* with the tabular
defaults (:func:`nas.trainer.tabular_config`), so the table separates what the training defaults give from what the
architecture choices give. This is a quick look, not the NAS-vs-baselines benchmark (``benchmarks/tabular.py``).

    .venv/bin/python benchmarks/tabular_space.py --tables credit_data.csv:Status Computers.csv:price:regression \\
        Arrests.csv:released --epochs 30 --patience 8 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nas.data import TaskData
from nas.spaces import get_space
from nas.trainer import TrainConfig, tabular_config, train
from pipelines.config import DataSpec
from pipelines.data import prepare

_ROOT = Path(__file__).resolve().parents[1]
TABLES = next((p / "shared" / "data" / "tabular" for p in (_ROOT.parent, _ROOT.parent.parent)
               if (p / "shared" / "data" / "tabular").is_dir()), _ROOT.parent / "shared" / "data" / "tabular")
"""``../shared/data/tabular`` beside the checkout (or beside the folder of a worktree)."""
BACKBONES = (
    "depth=2|widths=128-128|act=relu|norm=batch|dropout=0.1|residual=1",
    "depth=3|widths=256-256-256|act=relu|norm=none|dropout=0.1|residual=1",
)
TABULAR_OPTIONS = ("", "|prep=robust", "|embed=ple", "|embed=plr", "|ensemble=8",
                   "|prep=robust|embed=ple|ensemble=8", "|prep=robust|embed=plr|ensemble=8")


def _test_scores(model: torch.nn.Module, data: TaskData) -> dict[str, float]:
    x = torch.from_numpy(((data.x_test - data.feature_mean) / data.feature_std).astype(np.float32))
    x = x.reshape(len(x), *data.input_shape)
    with torch.no_grad():
        out = model.eval()(x)
    if data.is_regression:
        mean, std = data.target_scale
        pred = out.reshape(-1).double().numpy() * std + mean
        return {"rmse": float(np.sqrt(np.mean((pred - data.y_test) ** 2)))}
    probs = torch.softmax(out.float(), dim=1).numpy()
    scores = {"accuracy": float((probs.argmax(1) == data.y_test).mean())}
    if probs.shape[1] == 2:
        from sklearn.metrics import roc_auc_score

        scores["auc"] = float(roc_auc_score(data.y_test, probs[:, 1]))
    return scores


def run_table(source: Path, target: str, task: str, args: argparse.Namespace, work: Path) -> list[dict]:
    rows = []
    for seed in args.seeds:
        prepared = prepare(DataSpec(source=str(source), target=target, seed=seed, task=task), work)
        data = TaskData.load(prepared.path)
        plain_cfg = TrainConfig(epochs=args.epochs, patience=args.patience, seed=seed)
        tab_cfg = tabular_config(regression=data.is_regression, epochs=args.epochs, patience=args.patience, seed=seed)
        space = get_space("tabular")
        runs = [(b, "sgd (old)", plain_cfg) for b in BACKBONES]
        runs += [(b + opt, "tabular", tab_cfg) for b in BACKBONES for opt in TABULAR_OPTIONS]
        for arch_string, training, config in runs:
            torch.manual_seed(seed)
            arch = space.from_string(arch_string)
            model = arch.build(data.num_classes, data.input_shape)
            t0 = time.perf_counter()
            result = train(model, data, config)
            row = {"table": source.name, "seed": seed, "arch": arch.string, "training": training,
                   "params": sum(p.numel() for p in model.parameters()), "epochs": result.epochs_run,
                   "seconds": round(time.perf_counter() - t0, 1), **_test_scores(model, data)}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def summarise(rows: list[dict]) -> None:
    """Mean over seeds per table, architecture and training."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["table"], row["arch"], row["training"]), []).append(row)
    print(f"{'table':<18} {'training':<10} {'metric':>14} {'s':>6}  architecture")
    for (table, arch, training), items in groups.items():
        keys = [k for k in ("auc", "accuracy", "rmse") if k in items[0]]
        metric = " ".join(f"{k}={np.mean([r[k] for r in items]):.4f}" for k in keys[:2])
        secs = np.mean([r["seconds"] for r in items])
        short = arch.split("|", 2)[1] + "|" + "|".join(p for p in arch.split("|")[6:])
        print(f"{table:<18} {training:<10} {metric:>14} {secs:6.1f}  {short}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", default=["credit_data.csv:Status", "Computers.csv:price:regression",
                                                         "Arrests.csv:released"],
                        help="FILE:TARGET[:TASK] under --dir (TASK: classification, regression; default auto)")
    parser.add_argument("--dir", type=Path, default=TABLES)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write every row here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for item in args.tables:
            name, target, task = [*item.split(":"), "auto"][:3]
            rows += run_table(args.dir / name, target, task, args, Path(work))
    summarise(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
