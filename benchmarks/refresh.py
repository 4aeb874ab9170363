"""How long the default refresh takes on this machine, and where the time goes.

Runs ``model_refresh`` with the default configuration (what ``make demo`` runs) in a fresh state directory, twice
by default: the first run also trains the baseline champion, the second is a steady-state weekly refresh. Prints
the wall time of each stage and the orchestration overhead (total minus the stages: Prefect's ephemeral server,
flow/task bookkeeping, MLflow run set-up), as a share of the total.

    python benchmarks/refresh.py [--runs 2] [--json]
    python benchmarks/refresh.py --data benchmarks/customers.csv --target label   # the default tabular refresh

``benchmarks/customers.csv`` is a raw 300-row export as teams have it (an ID column, string and boolean
categoricals, missing numbers and categories, a constant column): ``tests/test_raw_tables.py``'s ``raw_table()``
written to CSV.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2, help="refreshes in a row in one state dir")
    parser.add_argument("--data", default="digits", help="bundled name, or a CSV/Parquet path (with --target)")
    parser.add_argument("--target", default=None, help="label column of a CSV/Parquet --data")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="nasops-bench-refresh-")
    os.environ["NASOPS_HOME"] = home
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from pipelines.settings import apply_offline_defaults

    apply_offline_defaults()
    from pipelines.refresh import RefreshConfig, model_refresh

    runs = []
    for i in range(args.runs):
        start = time.perf_counter()
        result = model_refresh(RefreshConfig(data=args.data, target=args.target, seed=i))
        wall = time.perf_counter() - start
        stages = result.timings
        runs.append({
            "run": i + 1,
            "wall_seconds": round(wall, 1),
            "stages": {k: round(v, 1) for k, v in stages.items()},
            "orchestration_overhead_share": round(max(wall - sum(stages.values()), 0.0) / wall, 3),
            "decision": result.canary.decision if result.canary else None,
            "challenger_test_accuracy": round(result.challenger.test_accuracy, 4),
            "champion_test_accuracy": round(result.champion_before.test_accuracy, 4) if result.champion_before
            else None,
        })
    out = {"data": args.data, "cpu_count": os.cpu_count(), "runs": runs, "state_dir": home}
    if args.json:
        print(json.dumps(out))
        return
    for run in runs:
        print(f"refresh {run['run']}: {run['wall_seconds']} s wall "
              f"(orchestration overhead {100 * run['orchestration_overhead_share']:.1f}%), "
              f"decision {run['decision']}")
        for stage, seconds in run["stages"].items():
            print(f"  {stage:28s} {seconds:7.1f} s")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
