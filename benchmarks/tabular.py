"""NAS against strong baselines on real tables: the default refresh's model selection (search + retraining + the
LightGBM and linear baselines; no canary, no tournament) on each shipped table, several seeds, side by side.

For each table and seed it runs ``nasops refresh --skip-canary --skip-tournament --json`` in a fresh state directory
(the real CLI, Prefect flow and MLflow store) and reads the refresh's ranking: the NAS winner's, LightGBM's and the
linear model's test score on the refresh-level metric (the default chosen from the target), the NAS winner's gap to
the best baseline with its paired bootstrap interval (``RetrainOutput.versus_baseline``), which kind of model the
refresh would canary (the best overall), and the wall time. The tables and their sources: benchmarks/tables/tabular.

    .venv/bin/python benchmarks/tabular.py --json                       # every table, seeds 0 1 2
    .venv/bin/python benchmarks/tabular.py --tables credit_data,Computers --seeds 0 --max-rows 3000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLES = ROOT / "benchmarks" / "tables" / "tabular"
TARGETS = {  # file stem -> target column (benchmarks/tables/tabular/README.md)
    "wa_churn": "churn", "credit_data": "Status", "lending_club": "Class", "mlc_churn": "churn",
    "HealthInsurance": "health", "Arrests": "released", "diamonds": "price", "Computers": "price",
    "CPS1988": "wage", "SaratogaHouses": "price",
}
REGRESSIONS = {"diamonds", "Computers", "CPS1988", "SaratogaHouses"}  # integer prices: say so (--task regression)


def refresh(table: str, seed: int, extra: list[str], timeout_s: float) -> dict:
    """One model selection of ``table`` with ``seed``: the refresh's JSON summary, plus wall and CPU seconds."""
    with tempfile.TemporaryDirectory(prefix=f"nasops-tabular-{table}-") as home:
        env = {**os.environ, "NASOPS_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
               "MLFLOW_DISABLE_TELEMETRY": "true"}
        for key in ("MLFLOW_TRACKING_URI", "NASOPS_PREDICTION_LOG_URL", "NASOPS_GATEWAY_URL"):
            env.pop(key, None)
        cmd = [sys.executable, "-m", "pipelines.cli.app", "refresh", "--data", str(TABLES / f"{table}.csv"),
               "--target", TARGETS[table], "--seed", str(seed), "--model-name", f"bench-{table.lower()}",
               "--task", "regression" if table in REGRESSIONS else "classification",
               "--skip-canary", "--skip-tournament", "--json", *extra]
        started, cpu = time.monotonic(), os.times()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
        after = os.times()
    wall = time.monotonic() - started
    cpu_s = (after.children_user - cpu.children_user) + (after.children_system - cpu.children_system)
    if proc.returncode != 0:
        return {"table": table, "seed": seed, "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300],
                "wall_s": round(wall, 1)}
    return {**summarise(json.loads(proc.stdout.strip().splitlines()[-1])), "table": table, "seed": seed,
            "wall_s": round(wall, 1), "cpu_s": round(cpu_s, 1)}


def _test_value(contender: dict, metric: str) -> float | None:
    metrics = contender.get("metrics") or {}
    for key in (f"test_{metric}", "test_accuracy" if metric == "accuracy" else "", "test_rmse" if metric == "rmse"
                else ""):
        if key and metrics.get(key) is not None:
            return float(metrics[key])
    return None


def summarise(result: dict) -> dict:
    """The figures of one refresh: per model kind its test score on the refresh's metric, the gap, the pick."""
    challenger = result["challenger"]
    metric = result["data"].get("metric") or ("rmse" if result["data"]["task"] == "regression" else "accuracy")
    best: dict[str, dict] = {}
    for contender in challenger.get("ranking") or []:
        best.setdefault(contender["model_kind"], contender)  # best first: the first of each kind is its best
    gap = challenger.get("versus_baseline") or {}
    return {
        "task": result["data"]["task"], "metric": metric, "rows": sum(result["data"]["rows"].values()),
        "nas": _test_value(best["nas"], metric) if "nas" in best else None,
        "lightgbm": _test_value(best["baseline-lightgbm"], metric) if "baseline-lightgbm" in best else None,
        "linear": _test_value(best["baseline-linear"], metric) if "baseline-linear" in best else None,
        "gap_metric": gap.get("metric"), "gap": gap.get("advantage"), "gap_low": gap.get("low"),
        "gap_high": gap.get("high"), "gap_vs": gap.get("baseline_kind"),
        "verdict": ("beats" if gap.get("low", 0) > 0 else "trails" if gap.get("high", 0) < 0 else "ties")
        if gap else None,
        "picked": challenger.get("model_kind"), "refresh_s": round(result.get("seconds", float("nan")), 1),
    }


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def print_table(rows: list[dict]) -> None:
    print("| table | seed | metric | NAS winner | LightGBM | linear | NAS − best baseline [95% CI] (vs) | verdict | "
          "refresh canaries | wall s | CPU s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['table']} | {r['seed']} | error: {r['error']} |  |  |  |  |  |  | {r['wall_s']} |  |")
            continue
        gap = (f"{_fmt(r['gap'])} [{_fmt(r['gap_low'])}, {_fmt(r['gap_high'])}] ({r['gap_vs']}, {r['gap_metric']})"
               if r["gap"] is not None else "-")
        print(f"| {r['table']} | {r['seed']} | {r['metric']} | {_fmt(r['nas'])} | {_fmt(r['lightgbm'])} | "
              f"{_fmt(r['linear'])} | {gap} | {r['verdict']} | {r['picked']} | {r['wall_s']} | {r['cpu_s']} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", default=",".join(TARGETS), help="comma-separated file stems")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-rows", type=int, default=None, help="stratified subsample (quick runs)")
    parser.add_argument("--space", default=None, help="search space (default: the refresh's, mlp for tables)")
    parser.add_argument("--timeout-s", type=float, default=3600.0)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = parser.parse_args(argv)
    extra = (["--max-rows", str(args.max_rows)] if args.max_rows else []) + (["--space", args.space] if args.space
                                                                              else [])
    rows = []
    for table in [t.strip() for t in args.tables.split(",") if t.strip()]:
        if table not in TARGETS:
            parser.error(f"unknown table {table!r}; choose from {', '.join(TARGETS)}")
        for seed in args.seeds:
            rows.append(refresh(table, seed, extra, args.timeout_s))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # progress: one line per refresh
    if args.json:
        print(json.dumps({"rows": rows, "space": args.space, "command": " ".join(sys.argv), "cpus": os.cpu_count(),
                          "loadavg": os.getloadavg()}))
    else:
        print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
