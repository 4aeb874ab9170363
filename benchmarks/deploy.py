"""fp32 eager vs int8 vs ONNX Runtime: latency and accuracy of the same trained winner, side by side in one process.

Trains two small winners on the bundled digits split (an NB201 cell at C=8 N=1, the refresh's skeleton, and an MLP),
or loads a registered model (``--model-uri models:/name@alias``, with ``MLFLOW_TRACKING_URI`` set; its data from
``--data task.npz`` or digits), builds the deployable flavours of each served model
(:class:`nas.export.FlatInputClassifier`):

- ``fp32``: the PyTorch module in eager mode;
- ``int8``: ``nas.deploy.quantize_int8`` (static FX for conv nets, dynamic for Linear nets; x86 backend);
- ``onnx``: ``nas.deploy.export_onnx`` run in onnxruntime (CPU execution provider);

and measures each at batch 1 and batch 64 in interleaved rounds (every flavour gets a slice of each round, so load
from other processes falls on all alike), one thread each (``torch.set_num_threads(1)``, onnxruntime
``intra_op_num_threads=1``). Accuracy is on the test split. Prints ``{"flavours": {"<model>/<flavour>": {...}}}``::

    .venv/bin/python benchmarks/deploy.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from nas.data import TaskData
from nas.datasets import bundled_task
from nas.deploy import OnnxClassifier, accuracy, check_onnx, export_onnx, latency_ms, quantize_int8
from nas.export import FlatInputClassifier
from nas.spaces import get_space
from nas.trainer import TrainConfig, train

NB201_WINNER = "|nor_conv_1x1~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|skip_connect~1|avg_pool_3x3~2|"
MLP_WINNER = "depth=2|widths=256-256|act=relu|norm=batch|dropout=0.1|residual=1"
GOAL_SPEEDUP, GOAL_MAX_DROP_POINTS = 1.5, 0.5


def train_winners(data: TaskData, seed: int) -> dict[str, FlatInputClassifier]:
    """The two quick winners: an NB201 cell (C=8, N=1) and an MLP, trained with the real trainer."""
    out = {}
    for name, space, arch, epochs in (("nb201", get_space("nb201", C=8, N=1), NB201_WINNER, 8),
                                      ("mlp", get_space("mlp"), MLP_WINNER, 15)):
        torch.manual_seed(seed)
        net = space.build(space.from_string(arch), data.num_classes, data.input_shape)
        train(net, data, TrainConfig(epochs=epochs, seed=seed, optimizer="sgd", lr=0.05))
        out[name] = FlatInputClassifier(net, data.input_shape, data.feature_mean, data.feature_std).eval()
    return out


def load_registered(uri: str) -> dict[str, FlatInputClassifier]:
    """A registered version as a :class:`FlatInputClassifier`.

    The registry stores a ``torch.export`` program (MLflow's ``pt2`` format), which neither re-exports to ONNX nor
    quantizes; the network is rebuilt from the version's tags (space, space config, architecture, input shape,
    classes; the hand-designed baseline for ``role=baseline``) and takes the program's weights (same state-dict
    keys).
    """
    import mlflow.pytorch
    from mlflow import MlflowClient

    from monitoring.vocabulary import ARCH, ROLE, SPACE, tag
    from nas.baselines import build_baseline

    loaded = mlflow.pytorch.load_model(uri, map_location="cpu")
    if isinstance(loaded, FlatInputClassifier):
        return {"registered": loaded.eval()}
    if not uri.startswith("models:/"):
        raise ValueError("give a registry URI models:/name@alias or models:/name/version")
    ref = uri[len("models:/"):]
    client = MlflowClient()
    if "@" in ref:
        name, alias = ref.split("@", 1)
        mv = client.get_model_version_by_alias(name, alias)
    else:
        name, version = ref.rsplit("/", 1)
        mv = client.get_model_version(name, version)
    tags = dict(mv.tags or {})
    try:
        shape = tuple(json.loads(tags[tag("input_shape")]))
        num_classes = len(json.loads(tags[tag("classes")]))
        if tags.get(tag(ROLE)) == "baseline":
            net = build_baseline(shape, num_classes)[0]
        else:
            space = get_space(tags[tag(SPACE)], **json.loads(tags.get(tag("space_config"), "{}")))
            net = space.build(space.from_string(tags[tag(ARCH)]), num_classes, shape)
    except KeyError as exc:
        raise ValueError(f"the version lacks the tag {exc.args[0]} (was it registered by a nasops refresh?)") from None
    width = int(np.prod(shape))
    model = FlatInputClassifier(net, shape, np.zeros(width), np.ones(width))
    model.load_state_dict(loaded.state_dict())
    probe = torch.randn(4, width)
    with torch.no_grad():
        if not torch.allclose(model.eval()(probe), loaded(probe), atol=1e-5):
            raise ValueError(f"the network rebuilt from {uri}'s tags does not reproduce the registered program")
    return {"registered": model}


def measure(flavours: dict, x: np.ndarray, *, rounds: int, per_round: int) -> dict[str, np.ndarray]:
    """Interleaved timing: each round gives every flavour ``per_round`` calls on ``x``."""
    inputs = {name: (x if kind == "onnx" else torch.from_numpy(x)) for name, (kind, _) in flavours.items()}
    times: dict[str, list[np.ndarray]] = {name: [] for name in flavours}
    for _ in range(rounds):
        for name, (_, fn) in flavours.items():
            times[name].append(latency_ms(fn, inputs[name], repeats=per_round, warmup=3))
    return {name: np.concatenate(t) for name, t in times.items()}


def bench_model(name: str, model: FlatInputClassifier, data: TaskData, workdir: Path, *, rounds: int,
                per_round: int) -> tuple[dict, dict]:
    x_test = np.ascontiguousarray(data.x_test if data.x_test is not None else data.x_val, dtype=np.float32)
    y_test = data.y_test if data.y_test is not None else data.y_val
    path = export_onnx(model, workdir / f"{name}.onnx")
    check = check_onnx(model, path, x_test)
    int8 = quantize_int8(model, data.x_train)
    session = OnnxClassifier(path, threads=1)
    flavours = {"fp32": ("torch", model), "int8": ("torch", int8), "onnx": ("onnx", session.logits)}
    acc = {"fp32": accuracy(model, x_test, y_test), "int8": accuracy(int8, x_test, y_test),
           "onnx": float((session.predict(x_test) == y_test).mean())}
    with torch.no_grad():
        int8_agree = float((int8(torch.from_numpy(x_test)).argmax(1) == model(torch.from_numpy(x_test)).argmax(1))
                           .float().mean())
    b1 = measure(flavours, x_test[:1], rounds=rounds, per_round=per_round)
    b64 = measure(flavours, x_test[:64], rounds=rounds, per_round=max(per_round // 4, 5))
    fp32_p50 = float(np.median(b1["fp32"]))
    rows = {}
    for flavour in flavours:
        p50 = float(np.median(b1[flavour]))
        rows[f"{name}/{flavour}"] = {
            "p50_ms": p50, "p99_ms": float(np.percentile(b1[flavour], 99)), "accuracy": acc[flavour],
            "p50_ms_batch64": float(np.median(b64[flavour])), "p99_ms_batch64": float(np.percentile(b64[flavour], 99)),
            "speedup_batch1_vs_fp32": fp32_p50 / p50,
            "speedup_batch64_vs_fp32": float(np.median(b64["fp32"]) / np.median(b64[flavour])),
            "accuracy_drop_points": 100.0 * (acc["fp32"] - acc[flavour]),
        }
    meets = [f for f in ("int8", "onnx") if rows[f"{name}/{f}"]["speedup_batch1_vs_fp32"] >= GOAL_SPEEDUP
             and rows[f"{name}/{f}"]["accuracy_drop_points"] <= GOAL_MAX_DROP_POINTS]
    checks = {"onnx": check.to_dict(), "int8_argmax_agreement": int8_agree, "goal_met_by": meets,
              "test_rows": len(x_test)}
    return rows, checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-uri", help="a registered FlatInputClassifier (models:/name@alias) instead of training")
    parser.add_argument("--data", type=Path, help="TaskData .npz for --model-uri (default: bundled digits)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.per_round < 4:
        print("--rounds must be >= 1 and --per-round >= 4", file=sys.stderr)
        return 2
    if args.data is not None and not args.data.is_file():
        print(f"--data {args.data} is not a file; give a TaskData .npz saved by nasops", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    try:
        data = TaskData.load(args.data) if args.data else bundled_task("digits", seed=args.seed)
    except (OSError, ValueError, KeyError) as exc:
        print(f"cannot read --data {args.data}: {exc}; give a TaskData .npz saved by nasops", file=sys.stderr)
        return 2
    if args.model_uri:
        try:
            models = load_registered(args.model_uri)
        except Exception as exc:  # any load failure is the user's URI or tracking set-up
            print(f"cannot load --model-uri {args.model_uri}: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 2
        if models["registered"].num_features != data.x_train.shape[1]:
            print(f"the model takes {models['registered'].num_features} features but the data has "
                  f"{data.x_train.shape[1]}; give its data with --data", file=sys.stderr)
            return 2
    else:
        models = train_winners(data, args.seed)
    result: dict = {"flavours": {}, "checks": {}, "threads": 1, "torch": torch.__version__,
                    "goal": {"speedup_batch1": GOAL_SPEEDUP, "max_accuracy_drop_points": GOAL_MAX_DROP_POINTS}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            rows, checks = bench_model(name, model, data, Path(tmp), rounds=args.rounds, per_round=args.per_round)
            result["flavours"].update(rows)
            result["checks"][name] = checks
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, row in result["flavours"].items():
            print(f"{name:14s} p50 {row['p50_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms  b64 p50 "
                  f"{row['p50_ms_batch64']:.3f} ms  acc {row['accuracy']:.4f}  x{row['speedup_batch1_vs_fp32']:.2f}")
        print(json.dumps(result["checks"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
