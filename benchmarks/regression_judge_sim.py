"""Simulated regression canaries: how often the sequential RMSE guard rolls back or lets through, over many runs.

The packaged regression judge (``monitoring/default_judge_regression.yaml``) guards a regression challenger on its
online RMSE, non-inferiority with a 10 % relative margin. Under ``method: sequential`` that guard is the log ratio
of the two variants' RMSEs with an always-valid bound (``monitoring.sequential.log_rms_ratio_bounds``, the code
the judge runs), read after every interval at the cumulative labelled rows. This script draws the per-row errors
of thousands of canaries (no servers) and reports, per scenario, the share that the guard proved non-inferior
("promote"), proved inferior ("rollback") or left undecided after the last interval.

What the rates should be: equal RMSEs (``aa_*``) are never rolled back (at most beta = 5 %); a challenger whose RMSE
is exactly at the margin (``at_margin_*``, 10 % higher) is let through at most alpha = 5 % of the time; a clearly
worse one is rolled back. ``*_heavy`` draws Student-t errors with 5 degrees of freedom (heavier tails than normal:
the plug-in variance of the squared errors is the delta method's weak point).

    python benchmarks/regression_judge_sim.py [--runs 2000] [--intervals 10] [--labels 300] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitoring import sequential as seq
from monitoring.judge_config import regression_judge_config

# scenario -> (challenger RMSE / champion RMSE, error distribution)
SCENARIOS = {
    "aa_normal": (1.0, "normal"),
    "aa_heavy": (1.0, "heavy"),
    "better_20pct_normal": (0.8, "normal"),
    "at_margin_normal": (1.1, "normal"),
    "at_margin_heavy": (1.1, "heavy"),
    "worse_30pct_normal": (1.3, "normal"),
    "worse_2x_heavy": (2.0, "heavy"),
}
T_DF = 5


def draw(rng: np.random.Generator, kind: str, scale: float, shape: tuple[int, ...]) -> np.ndarray:
    """Absolute errors with RMSE ``scale`` (normal, or Student-t with :data:`T_DF` degrees of freedom)."""
    if kind == "normal":
        return np.abs(rng.normal(scale=scale, size=shape))
    t = rng.standard_t(T_DF, size=shape) / np.sqrt(T_DF / (T_DF - 2))  # unit variance
    return np.abs(scale * t)


def simulate(ratio: float, kind: str, *, runs: int, intervals: int, labels: int, alpha: float, beta: float,
             threshold: float, seed: int) -> dict[str, float]:
    """First decision of each canary over cumulative looks; rates over ``runs`` canaries."""
    rng = np.random.default_rng(seed)
    champion = draw(rng, kind, 10.0, (runs, intervals, labels)) ** 2
    challenger = draw(rng, kind, 10.0 * ratio, (runs, intervals, labels)) ** 2
    decided = np.full(runs, seq.UNDECIDED, dtype=np.int8)
    at = np.full(runs, intervals, dtype=int)
    stats = [np.zeros((runs,)) for _ in range(4)]
    for look in range(intervals):
        b, c = champion[:, look], challenger[:, look]
        stats[0] += b.sum(axis=1)
        stats[1] += (b**2).sum(axis=1)
        stats[2] += c.sum(axis=1)
        stats[3] += (c**2).sum(axis=1)
        n = np.full(runs, float((look + 1) * labels))
        g, lo, hi = seq.log_rms_ratio_bounds((n, stats[0], stats[1]), (n, stats[2], stats[3]), sign=-1.0,
                                             alpha=alpha, beta=beta, tau2=threshold**2)
        code = seq.decide(seq.NON_INFERIORITY, lo, hi, threshold, g)
        new = (decided == seq.UNDECIDED) & (code != seq.UNDECIDED)
        decided[new] = code[new]
        at[new] = look + 1
    done = decided != seq.UNDECIDED
    return {
        "rmse_ratio": ratio, "errors": kind,
        "promote_rate": float(np.mean(decided == seq.NON_INFERIOR)),
        "rollback_rate": float(np.mean(decided == seq.INFERIOR)),
        "undecided_rate": float(np.mean(~done)),
        "mean_intervals_to_decision": float(at[done].mean()) if done.any() else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000, help="simulated canaries per scenario")
    parser.add_argument("--intervals", type=int, default=10, help="looks per canary")
    parser.add_argument("--labels", type=int, default=300, help="labelled rows per variant per interval")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if min(args.runs, args.intervals, args.labels) < 1:
        print("error: --runs, --intervals and --labels must be at least 1", file=sys.stderr)
        return 2
    cfg = regression_judge_config()
    rmse = next(m for m in cfg.metrics if m.name == "online_rmse")
    out = {"runs": args.runs, "intervals": args.intervals, "labels_per_interval": args.labels,
           "alpha": cfg.alpha, "beta": cfg.beta, "margin": rmse.margin or rmse.tolerance, "scenarios": {}}
    for i, (name, (ratio, kind)) in enumerate(SCENARIOS.items()):
        out["scenarios"][name] = simulate(ratio, kind, runs=args.runs, intervals=args.intervals, labels=args.labels,
                                          alpha=cfg.alpha, beta=cfg.beta, threshold=rmse.threshold,
                                          seed=args.seed + i)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{args.runs} canaries per scenario, {args.intervals} looks of {args.labels} labelled rows per variant")
    print(f"{'scenario':22s} {'promote':>8s} {'rollback':>9s} {'undecided':>10s} {'looks':>6s}")
    for name, row in out["scenarios"].items():
        print(f"{name:22s} {row['promote_rate']:8.3f} {row['rollback_rate']:9.3f} {row['undecided_rate']:10.3f} "
              f"{row['mean_intervals_to_decision']:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
