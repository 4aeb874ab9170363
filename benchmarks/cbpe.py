"""How far is the label-free accuracy estimate (CBPE, ``monitoring/cbpe.py``) from the accuracy the labels show?

For each seed: the bundled digits split as a refresh splits it (``pipelines.data.split_indices``: train / val / test /
prod), a network trained as registration trains it (the refresh's retraining settings, ``nas.trainer.train``, the
served module's softmax), its calibration map fitted on the validation split as registration fits it
(``pipelines.calibration``), then the prod split replayed as the traffic process replays it
(``pipelines.replay.apply_drift``: undrifted, and with Gaussian input noise or a shift), ``--repeats`` times with fresh
noise. Per condition it prints the realised accuracy (labels), the estimate (mean calibrated top-class probability)
and the raw mean confidence (what an uncalibrated estimate would say), with the absolute errors over seeds:

    .venv/bin/python benchmarks/cbpe.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONDITIONS = ("none", "noise=0.3", "noise=0.6", "shift=0.5")
MODELS = ("cnn", "mlp")


def split_digits(seed: int, flat: bool):
    """The digits TaskData (train / val / test) and the prod split, split as data preparation splits them."""
    from nas.data import TaskData
    from nas.datasets import load_bundled
    from pipelines.data import split_indices

    x, y, shape = load_bundled("digits")
    x = x.reshape(len(x), -1)
    parts = split_indices(y, seed)
    xt = x[parts["train"]]
    data = TaskData(xt, y[parts["train"]], x[parts["val"]], y[parts["val"]], (x.shape[1],) if flat else shape,
                    int(y.max()) + 1, x_test=x[parts["test"]], y_test=y[parts["test"]],
                    feature_mean=xt.mean(axis=0), feature_std=xt.std(axis=0))
    return data, x[parts["prod"]], y[parts["prod"]]


def trained_model(data, seed: int):
    """The served module of the hand-designed baseline, trained with the refresh's retraining settings."""
    import torch

    from nas.baselines import build_baseline
    from nas.export import served_module
    from nas.trainer import train
    from pipelines.config import RetrainConfig
    from pipelines.retrain import train_config

    torch.manual_seed(seed)
    net = build_baseline(data.input_shape, data.num_classes)[0]
    train(net, data, train_config(RetrainConfig(seed=seed)))
    return served_module(net, data).eval()


def one_seed(seed: int, model_kind: str, conditions: list[str], repeats: int, fit_split: str = "val") -> list[dict]:
    from monitoring.cbpe import apply_calibration
    from pipelines.calibration import fit_calibration, top_and_correct
    from pipelines.replay import apply_drift

    data, x_prod, y_prod = split_digits(seed, flat=model_kind == "mlp")
    model = trained_model(data, seed)
    val_top, val_right = top_and_correct(model, getattr(data, f"x_{fit_split}"), getattr(data, f"y_{fit_split}"))
    calibration = fit_calibration(val_top, val_right, split=fit_split)
    rows = []
    for condition in conditions:
        tops, rights = [], []
        for r in range(repeats if condition != "none" else 1):
            x = x_prod if condition == "none" else apply_drift(x_prod, condition, seed=1000 * seed + r)
            top, right = top_and_correct(model, x, y_prod)
            tops.append(top)
            rights.append(right)
        top, right = np.concatenate(tops), np.concatenate(rights)
        realised, estimated = float(right.mean()), float(apply_calibration(top, calibration).mean())
        rows.append({"model": model_kind, "seed": seed, "condition": condition, "rows": len(top),
                     "knots": len(calibration.x), "fit_split": fit_split,
                     "fit_rows": calibration.n, "fit_accuracy": float(val_right.mean()), "realised": realised,
                     "estimated": estimated, "raw_confidence": float(top.mean()),
                     "error": estimated - realised, "raw_error": float(top.mean()) - realised})
    return rows


def summary(rows: list[dict]) -> list[dict]:
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for condition in dict.fromkeys(r["condition"] for r in rows):
            sel = [r for r in rows if r["model"] == model and r["condition"] == condition]
            err = np.array([r["error"] for r in sel])
            raw = np.array([r["raw_error"] for r in sel])
            out.append({"model": model, "condition": condition, "seeds": len(sel),
                        "realised": float(np.mean([r["realised"] for r in sel])),
                        "estimated": float(np.mean([r["estimated"] for r in sel])),
                        "raw_confidence": float(np.mean([r["raw_confidence"] for r in sel])),
                        "mean_abs_error": float(np.abs(err).mean()), "max_abs_error": float(np.abs(err).max()),
                        "mean_error": float(err.mean()), "raw_mean_abs_error": float(np.abs(raw).mean()),
                        "within_2pt": int((np.abs(err) <= 0.02).sum())})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument("--conditions", default=",".join(CONDITIONS), help="none and drift specs (pipelines.replay)")
    parser.add_argument("--repeats", type=int, default=4, help="replays of the prod split per drifted condition")
    parser.add_argument("--fit-split", choices=("val", "test"), default="val",
                        help="split the map is fitted on (registration: val; test only to measure the bias early "
                             "stopping on val gives it)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    start = time.time()
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    rows = [row for model in args.models.split(",") for seed in range(args.seeds)
            for row in one_seed(seed, model.strip(), conditions, args.repeats, args.fit_split)]
    result = {"command": "python benchmarks/cbpe.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "seconds": round(time.time() - start, 1), "summary": summary(rows), "runs": rows}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{'model':5} {'condition':10} {'realised':>8} {'estimate':>8} {'raw conf':>8} {'|err| mean':>10} "
          f"{'|err| max':>9} {'raw |err|':>9} {'<=2pt':>6}")
    for s in result["summary"]:
        print(f"{s['model']:5} {s['condition']:10} {s['realised']:8.4f} {s['estimated']:8.4f} "
              f"{s['raw_confidence']:8.4f} {s['mean_abs_error']:10.4f} {s['max_abs_error']:9.4f} "
              f"{s['raw_mean_abs_error']:9.4f} {s['within_2pt']:>3}/{s['seeds']}")
    print(f"({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
