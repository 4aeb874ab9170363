"""Wall time of the zero-cost pre-filter cascade, against scoring every architecture with every proxy.

Both are measured in this process on the same machine: the cascade on a pool of ``--pool`` unique NB201 cells
(cheap data-free proxies on all, the ensemble's costly proxies on the best ``--costly-fraction``), and the no-cascade
baseline (every proxy on every architecture) on a random ``--baseline`` of the same pool, scaled to the pool size.
The script then extrapolates both to a 10,000-architecture pool from the measured per-architecture costs.

    .venv/bin/python benchmarks/prefilter.py --pool 2000 --workers 2
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from nas.datasets import bundled_task
from nas.ensemble import ENSEMBLES
from nas.pool import sample_pool
from nas.prefilter import CHEAP_DEFAULT, prefilter
from nas.proxies import compute_scores
from nas.spaces import get_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--baseline", type=int, default=60, help="architectures scored by every proxy (baseline)")
    parser.add_argument("--costly-fraction", type=float, default=0.1)
    parser.add_argument("--keep", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--C", type=int, default=8)
    parser.add_argument("--N", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=int, default=10_000, help="pool size to extrapolate to")
    args = parser.parse_args()
    torch.set_num_threads(1)

    space = get_space("nb201", C=args.C, N=args.N)
    data = bundled_task(args.dataset, seed=args.seed)
    pool = sample_pool(space, args.pool, seed=args.seed)
    costly = [m for m in ENSEMBLES["ensemble"] if m not in CHEAP_DEFAULT]
    everything = list(dict.fromkeys([*CHEAP_DEFAULT, *costly]))
    n_costly = max(args.keep, math.ceil(args.costly_fraction * len(pool)))
    print(f"space nb201 C={args.C} N={args.N} on {args.dataset} {data.input_shape}; pool {len(pool)} unique cells; "
          f"cheap {list(CHEAP_DEFAULT)} on all, costly {costly} on the best {n_costly}; workers {args.workers}")

    marks: dict[str, float] = {}
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done == len(pool) and "cheap" not in marks:
            marks["cheap"] = time.perf_counter() - start

    kept = prefilter(space, pool, data, keep=args.keep, costly_fraction=args.costly_fraction, workers=args.workers,
                     seed=args.seed, progress=progress)
    cascade = time.perf_counter() - start
    cheap = marks.get("cheap", cascade)
    print(f"cascade: {cascade:.1f} s wall ({cheap:.1f} s cheap stage, {cascade - cheap:.1f} s costly stage); "
          f"kept {len(kept)}; best {kept[0].arch}")

    rng = np.random.default_rng(args.seed)
    subset = [pool[i] for i in rng.choice(len(pool), size=min(args.baseline, len(pool)), replace=False)]
    batch = data.batch(64, seed=args.seed)
    t0 = time.perf_counter()
    for arch in subset:
        compute_scores(lambda a=arch: a.build(data.num_classes, data.input_shape), everything, batch=batch,
                       input_shape=data.input_shape, num_classes=data.num_classes, seed=args.seed)
    per_arch_all = (time.perf_counter() - t0) / len(subset)
    baseline = per_arch_all * len(pool) / args.workers  # the same worker count, assuming perfect scaling
    print(f"no cascade (every proxy on every cell): {per_arch_all:.3f} s per cell serial -> {baseline:.1f} s for the "
          f"pool at {args.workers} workers (ideal scaling); cascade speed-up x{baseline / cascade:.2f}")

    per_cheap = cheap / len(pool)
    per_costly = (cascade - cheap) / max(n_costly, 1)
    target_costly = max(args.keep, math.ceil(args.costly_fraction * args.target))
    projected = per_cheap * args.target + per_costly * target_costly
    print(f"extrapolated to {args.target:,} architectures at {args.workers} workers: {projected / 60:.1f} min "
          f"(cascade) vs {per_arch_all * args.target / args.workers / 60:.1f} min (no cascade), from the measured "
          f"{per_cheap * 1000:.0f} ms (cheap) and {per_costly * 1000:.0f} ms (costly) per architecture")


if __name__ == "__main__":
    main()
