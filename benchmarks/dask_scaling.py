"""The search and retraining stages on a Dask LocalCluster of 1 and 2 workers, side by side (issue 25, finding 10).

Same process, same seed, same configuration for each worker count: the search stage (``search_architectures`` with
``runner: dask``: the zero-cost scoring of the pool in chunks, then the predictor-guided low-fidelity trainings,
as many in flight as the cluster has workers) and the retraining stage (``retrain_and_register`` with ``runner:
dask``: the finalists' full trainings as tasks, then logging and registration in this process). Each row is one
stage's wall time, with the cluster's start-up inside it; the speedup is 1 worker's time over 2 workers'. The load
average is printed before and after: the figures are only comparable on a quiet machine.

    python benchmarks/dask_scaling.py --workers 1,2 [--pool 64] [--budget 8] [--top-k 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and benchmarks/serving.py would shadow the `serving` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def _stages(workers: int, args: argparse.Namespace, data_path: str) -> dict[str, float]:
    import mlflow

    from pipelines.config import RetrainConfig
    from pipelines.contracts import Lineage, PreparedData, RetrainInput, SearchInput
    from pipelines.nas_stage import search_architectures
    from pipelines.retrain import retrain_and_register

    data = PreparedData(path=data_path, fingerprint="digits-bench", source="digits", input_shape=[1, 8, 8],
                        num_classes=10, classes=list(range(10)), feature_names=[])
    search_cfg = {"runner": "dask", "workers": workers, "pool_size": args.pool, "prefilter_keep": args.pool // 4,
                  "budget": args.budget, "warm_start": 2, "top_k": args.top_k, "seed": args.seed,
                  "fidelity": {"epochs": args.epochs, "data_fraction": 1.0}}
    with mlflow.start_run(run_name=f"bench-{workers}-workers") as parent:
        start = time.perf_counter()
        search = search_architectures(SearchInput(data=data), search_cfg)
        search_s = time.perf_counter() - start
        config = RetrainConfig(epochs=args.retrain_epochs, patience=args.retrain_epochs, top_k=args.top_k,
                               seed=args.seed, runner="dask", workers=workers)
        lineage = Lineage(dataset_fingerprint="digits-bench", data_source="digits",
                          refresh_run_id=parent.info.run_id, seed=args.seed)
        start = time.perf_counter()
        out = retrain_and_register(RetrainInput(data=data, search=search, model_name=f"bench-{workers}",
                                                lineage=lineage), config)
        retrain_s = time.perf_counter() - start
    return {"workers": workers, "search_seconds": round(search_s, 1),
            "prefilter_seconds": round(search.prefilter_seconds, 1), "retrain_seconds": round(retrain_s, 1),
            "evaluations": search.evaluations, "retrained": out.retrained,
            "best_arch": search.candidates[0].arch, "challenger_test_accuracy": round(out.test_accuracy, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--pool", type=int, default=64, help="architectures zero-cost scored")
    parser.add_argument("--budget", type=int, default=8, help="low-fidelity trainings")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of a low-fidelity training")
    parser.add_argument("--top-k", type=int, default=4, help="finalists retrained fully")
    parser.add_argument("--retrain-epochs", type=int, default=8, help="epochs of a full retraining")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="nasops-bench-dask-")
    os.environ["NASOPS_HOME"] = home
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from pipelines.settings import apply_offline_defaults

    apply_offline_defaults()
    from nas.datasets import bundled_task
    from pipelines.tracking import configure_mlflow

    configure_mlflow()
    data_path = str(Path(home) / "digits.npz")
    bundled_task("digits", seed=args.seed).save(data_path)
    load_before = os.getloadavg()
    rows = [_stages(int(w), args, data_path) for w in args.workers.split(",")]
    load_after = os.getloadavg()
    base = rows[0]
    for row in rows:
        row["search_speedup"] = round(base["search_seconds"] / row["search_seconds"], 2)
        row["retrain_speedup"] = round(base["retrain_seconds"] / row["retrain_seconds"], 2)
    report = {"cpus": os.cpu_count(), "load_average_before": [round(x, 1) for x in load_before],
              "load_average_after": [round(x, 1) for x in load_after], "config": vars(args), "rows": rows}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"cpus {report['cpus']}, load average before {report['load_average_before']}, after "
          f"{report['load_average_after']}")
    print(f"{'workers':>7} {'search s':>9} {'(prefilter s)':>13} {'speedup':>8} {'retrain s':>10} {'speedup':>8}  "
          "same winner")
    for row in rows:
        print(f"{row['workers']:>7} {row['search_seconds']:>9} {row['prefilter_seconds']:>13} "
              f"{row['search_speedup']:>8} {row['retrain_seconds']:>10} {row['retrain_speedup']:>8}  "
              f"{row['best_arch'] == base['best_arch']}")


if __name__ == "__main__":
    main()
