"""Weight sharing and DARTS against stand-alone training, on the project's own NB201 ground truth (digits).

    .venv/bin/python benchmarks/weight_sharing.py --json          # default run: ~10 minutes on 2 shared cores

Measured side by side in one process, one torch thread:

- **ranking quality**: Kendall τ between the supernet's ranking (validation accuracy with inherited weights, BN
  recalibrated per sub-network) and the stand-alone ranking of the 400 cells of
  ``benchmarks/ground_truth/nb201_digits.csv`` (2-epoch training; its README gives the settings);
- **ranking cost**: wall time to rank 1,000 sub-networks (the 400 ground-truth cells + 600 fresh samples) against
  training 1,000 at the refresh's low fidelity (``TrainingEvaluator``, 3 epochs, as the NAS stage runs it), the
  latter measured on a sample and scaled (said in the output); reported without and with the supernet's training;
- **search outcome at one wall-clock budget**: supernet + regularized evolution, DARTS (first order, DARTS+ early
  stop, DARTS-PT selection), and random / predictor-guided search on real low-fidelity training given the
  supernet method's wall time; each method's best architecture is retrained (``--retrain-epochs``, ``--seeds``) and
  its test accuracy reported;
- **one training, several latency budgets** (Once-for-All on the mlp space): one elastic-MLP training, then for
  budgets at the 10th / 50th / 100th percentile of the candidates' measured latency, the sub-network picked and its
  test accuracy with inherited weights.

``--sections darts`` (not in the default run) compares DARTS variants — no guard, DARTS+ early stop, DARTS-PT,
second order — at ``--darts-epochs``, each found cell retrained like the others.

``--json`` prints ``{"kendall_tau", "rank_speedup", "methods": {name: {"test_accuracy", "seconds"}}, ...}`` on
stdout; progress goes to stderr.
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

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from nas.data import TaskData  # noqa: E402
from nas.datasets import bundled_task  # noqa: E402
from nas.evaluators import TrainingEvaluator  # noqa: E402
from nas.search import run_search  # noqa: E402
from nas.spaces import Architecture, get_space  # noqa: E402
from nas.strategies import get_strategy  # noqa: E402
from nas.supernet import (  # noqa: E402
    DartsConfig,
    ElasticConfig,
    SPOSConfig,
    SupernetEvaluator,
    darts_search,
    pick_for_latency,
)
from nas.trainer import TrainConfig, evaluate, measure_latency_ms, train  # noqa: E402

GROUND_TRUTH = ROOT / "ground_truth" / "nb201_digits.csv"
LOW_FIDELITY = {"epochs": 3, "data_fraction": 1.0}  # the NAS stage's default fidelity


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def read_ground_truth(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def retrain(arch: Architecture, data: TaskData, epochs: int, seeds: int) -> float:
    """Mean test accuracy of ``arch`` trained from scratch ``seeds`` times (the retraining stage's recipe)."""
    x_test, y_test = data.tensors("test")
    scores = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = arch.build(data.num_classes, data.input_shape)
        train(model, data, TrainConfig(epochs=epochs, seed=seed, patience=None))
        scores.append(evaluate(model, x_test, y_test)[0])
    return float(np.mean(scores))


def ranking(args, data, space, rows) -> tuple[SupernetEvaluator, dict]:
    log(f"supernet: {args.supernet_epochs} epochs, {args.sampling} sampling")
    ev = SupernetEvaluator(data, space, SPOSConfig(epochs=args.supernet_epochs, sampling=args.sampling,
                                                   device=args.device, seed=args.seed))
    ev.fit(on_epoch=lambda r: log(f"  epoch {r['epoch']:.0f} loss {r['train_loss']:.3f} ({r['seconds']:.0f} s)"))
    truth = [space.from_string(r["arch"]) for r in rows]
    seen = {space.canonicalize(a).string for a in truth}
    fresh = [a for a in space.sample_many(args.rank_count, np.random.default_rng(args.seed + 7))
             if space.canonicalize(a).string not in seen][: max(0, args.rank_count - len(truth))]
    start = time.perf_counter()
    results = [ev.evaluate(a) for a in truth + fresh]
    rank_seconds = time.perf_counter() - start
    n_ranked = len(results)
    acc = np.array([r.metrics["val_accuracy"] for r in results[: len(truth)]])
    nll = np.array([r.metrics["neg_val_loss"] for r in results[: len(truth)]])
    val = np.array([float(r["val_accuracy"]) for r in rows])
    test = np.array([float(r["test_accuracy"]) for r in rows])
    log(f"ranked {n_ranked} sub-networks in {rank_seconds:.1f} s")
    sample = space.sample_many(args.train_sample, np.random.default_rng(args.seed + 11))
    trainer = TrainingEvaluator(data, seed=args.seed)
    start = time.perf_counter()
    for a in sample:
        trainer.evaluate(a, LOW_FIDELITY)
    per_train = (time.perf_counter() - start) / len(sample)
    log(f"low-fidelity training: {per_train:.2f} s per architecture (mean of {len(sample)})")
    per_rank = rank_seconds / n_ranked
    stats = {
        "kendall_tau": float(kendalltau(acc, val)[0]),
        "kendall_tau_neg_val_loss": float(kendalltau(nll, val)[0]),
        "kendall_tau_vs_test_accuracy": float(kendalltau(acc, test)[0]),
        "spearman": float(spearmanr(acc, val)[0]),
        "ground_truth_noise_ceiling_tau_val_vs_test": float(kendalltau(val, test)[0]),
        "ground_truth_cells": len(truth),
        "rank_speedup": float(per_train / per_rank),
        "rank_speedup_including_supernet_training": float(1000 * per_train / (1000 * per_rank + ev.fit_seconds)),
        "rank_seconds_per_arch": float(per_rank),
        "rank_1000_seconds": float(1000 * per_rank),
        "train_1000_seconds_scaled_from_sample": float(1000 * per_train),
        "train_seconds_per_arch": float(per_train),
        "train_sample": len(sample),
        "supernet_fit_seconds": float(ev.fit_seconds),
    }
    return ev, stats


def methods(args, data, space, ev: SupernetEvaluator) -> dict:
    out: dict[str, dict] = {}
    start = time.perf_counter()
    strategy = get_strategy("evolution", space, seed=args.seed, population_size=20, tournament_size=5)
    found = run_search(strategy, ev, budget=args.evolution_budget)
    budget_s = ev.fit_seconds + (time.perf_counter() - start)
    out["supernet+evolution"] = {"arch": found.best.arch, "seconds": budget_s,
                                 "evaluations": len(found.records)}
    log(f"supernet+evolution: {found.best.arch} ({budget_s:.0f} s incl. supernet training)")
    cfg = DartsConfig(epochs=args.darts_epochs, device=args.device, seed=args.seed)
    result = darts_search(space, data, cfg)
    out["darts"] = {"arch": result.arch.string, "seconds": result.seconds, "argmax_arch": result.argmax_arch.string,
                    "stop_reason": result.stop_reason}
    log(f"darts: {result.arch} ({result.seconds:.0f} s; {result.stop_reason})")
    trainer = TrainingEvaluator(data, seed=args.seed, measure_latency=False)
    for name in ("random", "predictor"):
        strategy = get_strategy(name, space, seed=args.seed)
        found = run_search(strategy, trainer, time_budget_s=budget_s, fidelity=LOW_FIDELITY)
        out[name] = {"arch": found.best.arch, "seconds": found.seconds, "evaluations": len(found.records)}
        log(f"{name}: {found.best.arch} ({found.seconds:.0f} s, {len(found.records)} trainings)")
    for name, entry in out.items():
        entry["test_accuracy"] = retrain(space.from_string(entry["arch"]), data, args.retrain_epochs, args.seeds)
        log(f"retrained {name}: test accuracy {entry['test_accuracy']:.4f}")
    return out


DARTS_VARIANTS = {
    "first-order, argmax, no guard": {"order": "first", "selection": "argmax", "max_skip": None},
    "first-order, argmax, DARTS+ max_skip=2": {"order": "first", "selection": "argmax", "max_skip": 2},
    "first-order, DARTS-PT, no early stop": {"order": "first", "selection": "pt", "max_skip": None},
    "second-order, DARTS-PT, DARTS+ max_skip=2": {"order": "second", "selection": "pt", "max_skip": 2},
}


def darts_variants(args, data, space) -> dict:
    out = {}
    for name, options in DARTS_VARIANTS.items():
        result = darts_search(space, data, DartsConfig(epochs=args.darts_epochs, device=args.device,
                                                       seed=args.seed, **options))
        ops = space.to_ops(result.arch)
        out[name] = {"arch": result.arch.string, "skip_connections": sum(op == "skip_connect" for op in ops),
                     "parameter_free_ops": sum(op in ("skip_connect", "avg_pool_3x3") for op in ops),
                     "seconds": result.seconds, "epochs_run": len(result.history), "stop_reason": result.stop_reason,
                     "test_accuracy": retrain(result.arch, data, args.retrain_epochs, args.seeds)}
        log(f"darts {name}: {result.arch} ({result.seconds:.0f} s; {result.stop_reason}); "
            f"test {out[name]['test_accuracy']:.4f}")
    return out


def once_for_all(args, data) -> dict:
    space = get_space("mlp")
    ev = SupernetEvaluator(data, space, ElasticConfig(spos=SPOSConfig(sampling="uniform", seed=args.seed,
                                                                      device=args.device)))
    ev.fit()
    log(f"once-for-all: elastic mlp trained in {ev.fit_seconds:.0f} s")
    candidates = space.sample_many(args.ofa_candidates, np.random.default_rng(args.seed + 3))
    start = time.perf_counter()
    latency = {a.string: measure_latency_ms(ev.extract(a), data.input_shape, repeats=20) for a in candidates}
    cache = {"ranked": ev.rank(candidates), "latency": latency}
    select_seconds = time.perf_counter() - start
    x_test, y_test = data.tensors("test")
    budgets = []
    for q in (0.1, 0.5, 1.0):
        budget = float(np.quantile(list(latency.values()), q))
        pick = pick_for_latency(ev, budget, cache=cache)
        budgets.append({"quantile": q, "max_latency_ms": budget, "arch": pick.arch.string,
                        "latency_ms": pick.latency_ms, "val_accuracy": pick.val_accuracy,
                        "test_accuracy_inherited": float(evaluate(pick.module, x_test, y_test)[0])})
        log(f"  <= {budget:.3f} ms: {pick.arch} ({pick.latency_ms:.3f} ms, val {pick.val_accuracy:.3f})")
    return {"train_seconds": ev.fit_seconds, "candidates": len(candidates),
            "rank_and_time_seconds": select_seconds, "budgets": budgets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    parser.add_argument("--supernet-epochs", type=int, default=4)
    parser.add_argument("--sampling", choices=("fair", "uniform"), default="fair")
    parser.add_argument("--rank-count", type=int, default=1000, help="sub-networks ranked for the timing")
    parser.add_argument("--train-sample", type=int, default=8, help="low-fidelity trainings timed and scaled")
    parser.add_argument("--evolution-budget", type=int, default=300, help="supernet evaluations of the evolution")
    parser.add_argument("--darts-epochs", type=int, default=10)
    parser.add_argument("--retrain-epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=2, help="retraining seeds per found architecture")
    parser.add_argument("--ofa-candidates", type=int, default=300, help="mlp sub-networks ranked and timed")
    parser.add_argument("--sections", default="ranking,methods,ofa", help="comma-separated subset to run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    bad = [x for x in sections if x not in ("ranking", "methods", "ofa", "darts")]
    if bad or not sections:
        parser.exit(2, f"error: --sections takes ranking, methods, ofa, darts (comma-separated), "
                       f"got {args.sections!r}\n")
    for name in ("supernet_epochs", "rank_count", "train_sample", "evolution_budget", "darts_epochs",
                 "retrain_epochs", "seeds", "ofa_candidates"):
        if getattr(args, name) < 1:
            parser.exit(2, f"error: --{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}\n")
    if not GROUND_TRUTH.exists():
        parser.exit(2, f"error: ground truth {GROUND_TRUTH} is missing; make it with "
                       "benchmarks/ground_truth/make_ground_truth.py\n")
    torch.set_num_threads(1)
    start = time.perf_counter()
    data = bundled_task("digits", seed=0)
    space = get_space("nb201", C=8, N=1)
    rows = read_ground_truth(GROUND_TRUTH)
    result: dict = {}
    if "ranking" in sections or "methods" in sections:
        ev, stats = ranking(args, data, space, rows)
        result.update(stats)
        if "methods" in sections:
            result["methods"] = methods(args, data, space, ev)
    if "darts" in sections:
        result["darts_variants"] = darts_variants(args, data, space)
    if "ofa" in sections:
        result["once_for_all"] = once_for_all(args, data)
    result["settings"] = {k: v for k, v in vars(args).items() if k != "json"} | {
        "low_fidelity": LOW_FIDELITY, "space": space.config(), "dataset": "digits"}
    result["total_seconds"] = time.perf_counter() - start
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
