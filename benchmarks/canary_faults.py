"""Canaries against injected faults: does the judge promote what is better and roll back what is broken, fast, and
without a single failed user request?

Each scenario registers a real challenger next to the same real champion (a linear digits classifier) in a fresh
MLflow SQLite registry, runs the full canary through the rollout controller (a real gateway with 2 workers in its own
process, a separate traffic process whose labels arrive 5 s late, the real prediction log, the default judge and
rollout unless overridden) and records the decision, the intervals it took and the user requests that failed.

    .venv/bin/python benchmarks/canary_faults.py --json
    .venv/bin/python benchmarks/canary_faults.py --scenarios healthy_better,errors_20pct
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this folder would shadow the packages (benchmarks/serving.py vs serving/): drop it, add the root
# and tests/ (the fault wrappers live in tests/support_models.py and must be importable by that name to unpickle).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

for _key, _value in {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                     "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                     "GIT_PYTHON_REFRESH": "quiet"}.items():
    os.environ.setdefault(_key, _value)

# fault -> (expected decision, what the challenger is, canary overrides)
SCENARIOS = {
    "healthy_better": ("promoted", "an MLP that is more accurate than the linear champion", {}),
    "errors_20pct": ("rolled_back", "the MLP raising on every 5th call (gateway falls back to the champion)", {}),
    "latency_50ms": ("rolled_back", "the MLP sleeping 50 ms per call", {}),
    "lower_accuracy": ("rolled_back", "a barely trained linear model", {}),
    "drifted_predictions": ("rolled_back", "the MLP with its class-3 logit pushed up (skewed predictions)", {}),
    "slightly_better_small_traffic": ("promoted", "a linear model trained longer than the champion, at 2-10% traffic",
                                      {"steps": [0.02, 0.05, 0.1]}),
}


PRODUCTION_LIKE = {"gateway_workers": 2, "label_delay_s": 5.0, "label_wait_s": 6.0, "max_intervals": 14}


def build_models(x_tr, y_tr):
    import support_models as sm
    import torch

    torch.set_num_threads(1)
    mlp = sm.train_small(sm.mlp_classifier(), x_tr, y_tr, steps=60)
    skewed = copy.deepcopy(mlp)
    with torch.no_grad():
        skewed[-1].bias[3] += 12.0  # about a third of all rows predicted as '3'
    return {
        "healthy_better": mlp,
        "errors_20pct": sm.FlakyModel(copy.deepcopy(mlp), period=5),
        "latency_50ms": sm.SlowModel(copy.deepcopy(mlp), delay_s=0.05),
        "lower_accuracy": sm.train_small(sm.linear_classifier(seed=3), x_tr, y_tr, steps=3),
        "drifted_predictions": skewed,
        "slightly_better_small_traffic": sm.train_small(sm.linear_classifier(), x_tr, y_tr, steps=80),
    }


def offline_accuracy(module, x, y) -> float:
    import torch

    with torch.no_grad():
        return float((module(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def digits_registry(home: Path) -> tuple:
    """A fresh MLflow SQLite registry under ``home`` holding the linear digits champion, and the prepared digits
    data whose second half of the test rows is the ``prod`` split the traffic plays: ``(registry, data path,
    (x_train, y_train, x_test, y_test))``."""
    import logging

    import support_models as sm
    from fixtures_registry import build_registry

    from nas.data import TaskData

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    reg = build_registry(home, challenger=None)
    x_tr, y_tr, x_te, y_te = sm.digits_data()
    half = len(x_te) // 2
    data = TaskData(x_tr, y_tr, x_te[:half], y_te[:half], (64,), 10, x_te[:half], y_te[:half], x_te[half:],
                    y_te[half:], meta={"classes": list(range(10)), "feature_names": [f"pixel_{i}" for i in range(64)]})
    return reg, str(data.save(home / "data.npz")), (x_tr, y_tr, x_te, y_te)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON only")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset to run")
    parser.add_argument("--canary", default="{}", help="JSON overrides of the canary config for every scenario")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    # production in miniature: the controller against a 2-worker gateway in its own process, traffic from a
    # separate process, labels 5 s late (the accuracy of a request counts once it is 6 s old)
    overrides = {**PRODUCTION_LIKE, **json.loads(args.canary)}

    home = Path(tempfile.mkdtemp(prefix="nasops-canary-bench-"))
    os.environ["NASOPS_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    import mlflow.pytorch
    from mlflow.tracking import MlflowClient

    from pipelines.canary import run_canary

    reg, data_path, (x_tr, y_tr, x_te, y_te) = digits_registry(home)
    half = len(x_te) // 2
    models = build_models(x_tr, y_tr)
    client = MlflowClient(tracking_uri=reg.tracking_uri, registry_uri=reg.tracking_uri)
    champion_module = None
    champion_accuracy = None
    scenarios = []
    for fault in chosen:
        expected, what, extra = SCENARIOS[fault]
        version = reg.register(models[fault])
        if champion_module is None:
            champion_module = mlflow.pytorch.load_model(f"models:/{reg.model_name}/{reg.champion_version}")
            champion_accuracy = offline_accuracy(champion_module, x_te[half:], y_te[half:])
        client.set_registered_model_alias(reg.model_name, "champion", reg.champion_version)
        client.set_registered_model_alias(reg.model_name, "challenger", version)
        started = time.perf_counter()
        result = run_canary(reg.model_name, data_path, {**extra, **overrides}).model_dump(mode="json")
        inner = getattr(models[fault], "inner", models[fault])
        scenarios.append({
            "fault": fault,
            "challenger": what,
            "expected": expected,
            "decision": result["decision"],
            "ok": result["decision"] == expected,
            "intervals_to_decision": result["intervals"],
            "failed_user_requests": result["replay"]["failed"],
            "requests": result["replay"]["sent"],
            "verdict": result["verdict"],
            "score": result["score"],
            "reason": result["reason"],
            "offline_accuracy": {"champion": round(champion_accuracy, 4),
                                 "challenger": round(offline_accuracy(inner, x_te[half:], y_te[half:]), 4)},
            "online": result["online"],
            "seconds": round(time.perf_counter() - started, 1),
        })
        if not args.json:
            s = scenarios[-1]
            print(f"{fault:32s} {s['decision']:12s} expected {expected:12s} intervals {s['intervals_to_decision']} "
                  f"failed requests {s['failed_user_requests']} ({s['seconds']} s) {s['reason'][:100]}", flush=True)
    out = {"scenarios": scenarios, "all_ok": all(s["ok"] for s in scenarios),
           "machine": {"cpus": os.cpu_count()}, "home": str(home)}
    if args.json:
        print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
