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


def per_arch_seconds(archs, names, data, seed: int) -> float:
    """Mean serial seconds of one ``compute_scores`` call with ``names`` over ``archs``."""
    batch = data.batch(64, seed=seed)
    t0 = time.perf_counter()
    for arch in archs:
        compute_scores(lambda a=arch: a.build(data.num_classes, data.input_shape), names, batch=batch,
                       input_shape=data.input_shape, num_classes=data.num_classes, seed=seed)
    return (time.perf_counter() - t0) / len(archs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--baseline", type=int, default=40, help="architectures timed serially per proxy set")
    parser.add_argument("--costly-fraction", type=float, default=0.1)
    parser.add_argument("--keep", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ensemble", default="ensemble", help="a name in nas.ensemble.ENSEMBLES")
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
    costly = [m for m in ENSEMBLES[args.ensemble] if m not in CHEAP_DEFAULT]
    everything = list(dict.fromkeys([*CHEAP_DEFAULT, *costly]))
    n_costly = max(args.keep, math.ceil(args.costly_fraction * len(pool)))
    print(f"space nb201 C={args.C} N={args.N} on {args.dataset} {data.input_shape}; pool {len(pool)} unique cells; "
          f"cheap {list(CHEAP_DEFAULT)} on all, costly {costly} ({args.ensemble!r}) on the best {n_costly}")

    # side by side, serial, on the same random subset: the cascade's two proxy sets and the no-cascade set
    rng = np.random.default_rng(args.seed)
    subset = [pool[i] for i in rng.choice(len(pool), size=min(args.baseline, len(pool)), replace=False)]
    t_cheap = per_arch_seconds(subset, list(CHEAP_DEFAULT), data, args.seed)
    t_costly = per_arch_seconds(subset, costly, data, args.seed)
    t_all = per_arch_seconds(subset, everything, data, args.seed)
    cascade_serial = t_cheap * len(pool) + t_costly * n_costly
    print(f"serial per cell on {len(subset)} cells: cheap set {t_cheap * 1000:.0f} ms, costly set "
          f"{t_costly * 1000:.0f} ms, every proxy {t_all * 1000:.0f} ms -> cascade {cascade_serial:.0f} s vs no "
          f"cascade {t_all * len(pool):.0f} s for the pool: x{t_all * len(pool) / cascade_serial:.2f}")

    marks: dict[str, float] = {}
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done == len(pool) and "cheap" not in marks:
            marks["cheap"] = time.perf_counter() - start

    kept = prefilter(space, pool, data, keep=args.keep, costly_fraction=args.costly_fraction, workers=args.workers,
                     ensemble=args.ensemble, seed=args.seed, progress=progress)
    wall = time.perf_counter() - start
    cheap = marks.get("cheap", wall)
    print(f"measured cascade, {args.workers} worker(s): {wall:.1f} s wall ({cheap:.1f} s cheap stage, "
          f"{wall - cheap:.1f} s costly stage); kept {len(kept)}; best {kept[0].arch}")

    target_costly = max(args.keep, math.ceil(args.costly_fraction * args.target))
    projected = cheap / len(pool) * args.target + (wall - cheap) / max(n_costly, 1) * target_costly
    print(f"extrapolated to {args.target:,} architectures at {args.workers} worker(s): {projected / 60:.1f} min "
          f"(from the measured wall time per architecture of each stage)")


if __name__ == "__main__":
    main()
