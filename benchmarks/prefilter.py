"""Wall time and peak memory of the zero-cost pre-filter cascade on 1,000 and 10,000 distinct architectures.

Each pool size runs in a fresh child process (so its peak RSS is its own): ``nas.prefilter.prefilter`` with the
cheap data-free proxies (``synflow``, ``params``, ``flops``) on every architecture and the ensemble's costly proxies
on the best ``--costly-fraction``, ``--workers`` worker processes, a JSON-lines journal. Then the finished journal
is run again to time a resume (nothing left to score). Side by side, in the same process, a random ``--baseline``
of the pool is scored serially with the cheap set and with every proxy of the cascade (no cascade), so the
cascade's saving is a measured ratio.

The default space is ``mlp`` on the bundled digits data: it holds 32,640 distinct networks, whereas NB201 has only
4,930 different functions (10,000 distinct NB201 networks do not exist).

    .venv/bin/python benchmarks/prefilter.py --sizes 1000 10000 --workers 2 --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from nas.datasets import bundled_task
from nas.ensemble import ENSEMBLES
from nas.pool import sample_pool
from nas.prefilter import CHEAP_DEFAULT, prefilter
from nas.proxies import compute_scores
from nas.proxies.context import fast_paths
from nas.spaces import get_space


def _space(args: argparse.Namespace):
    return get_space("nb201", C=args.C, N=args.N) if args.space == "nb201" else get_space(args.space)


def per_arch_seconds(archs, names, data, seed: int) -> float:
    """Mean serial seconds of one ``compute_scores`` call with ``names`` over ``archs``."""
    batch = data.batch(64, seed=seed)
    t0 = time.perf_counter()
    for arch in archs:
        compute_scores(lambda a=arch: a.build(data.num_classes, data.input_shape), names, batch=batch,
                       input_shape=data.input_shape, num_classes=data.num_classes, seed=seed)
    return (time.perf_counter() - t0) / len(archs)


def run_once(args: argparse.Namespace) -> dict[str, object]:
    """One cascade on a pool of ``args.pool`` (in this process), then its resume from the finished journal."""
    torch.set_num_threads(1)
    space = _space(args)
    data = bundled_task(args.dataset, seed=args.seed)
    pool = sample_pool(space, args.pool, seed=args.seed)
    journal = Path(args.journal)
    journal.unlink(missing_ok=True)
    marks: dict[str, float] = {}
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done >= 1 and "first" not in marks:  # the first score back: the workers have started
            marks["first"] = time.perf_counter() - start
        if done >= len(pool) and "cheap" not in marks:
            marks["cheap"] = time.perf_counter() - start

    kwargs = {"keep": args.keep, "costly_fraction": args.costly_fraction, "workers": args.workers,
              "ensemble": args.ensemble, "seed": args.seed, "journal": journal}
    kept = prefilter(space, pool, data, progress=progress, **kwargs)
    wall = time.perf_counter() - start
    t0 = time.perf_counter()
    again = prefilter(space, pool, data, **kwargs)
    resume = time.perf_counter() - t0
    journal.unlink(missing_ok=True)
    kib = 1024  # ru_maxrss is in KiB on Linux
    cheap_s = marks.get("cheap", wall)
    return {
        "space": space.name, "pool": len(pool), "workers": args.workers, "wall_s": round(wall, 1),
        "cheap_stage_s": round(cheap_s, 1), "costly_stage_s": round(wall - cheap_s, 1),
        "workers_start_s": round(marks.get("first", 0.0), 2),
        "cheap_stage_ms_per_arch_and_worker": round(1000 * cheap_s * args.workers / len(pool), 2),
        "archs_per_s": round(len(pool) / wall, 1), "kept": len(kept), "best": kept[0].arch.string,
        "resume_from_finished_journal_s": round(resume, 2), "resume_same_result": [k.arch for k in again] == [
            k.arch for k in kept],
        "peak_rss_main_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib, 1),
        "peak_rss_worker_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib, 1),
    }


def side_by_side(args: argparse.Namespace) -> dict[str, object]:
    """Serial seconds per architecture: the cheap set, the costly set, every proxy (no cascade)."""
    torch.set_num_threads(1)
    space = _space(args)
    data = bundled_task(args.dataset, seed=args.seed)
    pool = sample_pool(space, max(args.baseline, 1), seed=args.seed + 1)
    costly = [m for m in ENSEMBLES[args.ensemble] if m not in CHEAP_DEFAULT]
    everything = list(dict.fromkeys([*CHEAP_DEFAULT, *costly]))
    per_arch_seconds(pool[:3], everything, data, args.seed)  # warm-up: lazy imports (flop counter) settle
    with fast_paths(False):
        per_arch_seconds(pool[:3], list(CHEAP_DEFAULT), data, args.seed)
    # the cheap set with and without the scorer's exact shortcuts, interleaved so both see the same load
    slow, fast = [], []
    for _ in range(3):
        with fast_paths(False):
            slow.append(per_arch_seconds(pool, list(CHEAP_DEFAULT), data, args.seed))
        fast.append(per_arch_seconds(pool, list(CHEAP_DEFAULT), data, args.seed))
    t_cheap, t_slow = min(fast), min(slow)
    t_all = per_arch_seconds(pool, everything, data, args.seed)
    t_costly = per_arch_seconds(pool, costly, data, args.seed)
    target = max(args.sizes)
    n_costly = max(args.keep, math.ceil(args.costly_fraction * target))
    cascade = t_cheap * target + t_costly * n_costly
    return {"archs": len(pool), "cheap_ms": round(1000 * t_cheap, 2),
            "cheap_ms_without_fast_paths": round(1000 * t_slow, 2),
            "cheap_fast_path_speedup": round(t_slow / t_cheap, 2),
            "costly_ms": round(1000 * t_costly, 1),
            "every_proxy_ms": round(1000 * t_all, 1), "costly": costly,
            f"serial_cascade_vs_no_cascade_at_{target}": round(t_all * target / cascade, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000], help="pool sizes, one run each")
    parser.add_argument("--space", default="mlp", choices=["mlp", "nb201"])
    parser.add_argument("--C", type=int, default=8, help="nb201 only")
    parser.add_argument("--N", type=int, default=1, help="nb201 only")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--baseline", type=int, default=40, help="architectures timed serially side by side")
    parser.add_argument("--costly-fraction", type=float, default=0.1)
    parser.add_argument("--keep", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ensemble", default="ensemble", help="a name in nas.ensemble.ENSEMBLES")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--pool", type=int, default=None, help=argparse.SUPPRESS)  # child: one run
    parser.add_argument("--journal", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pool is not None:
        print(json.dumps(run_once(args)))
        return 0

    runs = []
    load_before = os.getloadavg()
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, __file__, "--pool", str(size), "--journal", os.path.join(tmp, "journal.jsonl"),
                   "--space", args.space, "--C", str(args.C), "--N", str(args.N), "--dataset", args.dataset,
                   "--costly-fraction", str(args.costly_fraction), "--keep", str(args.keep),
                   "--workers", str(args.workers), "--ensemble", args.ensemble, "--seed", str(args.seed)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return done.returncode
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            if not args.json:
                print(json.dumps(runs[-1]), flush=True)
    result = {"runs": runs, "side_by_side": side_by_side(args), "load_average_before": load_before,
              "load_average_after": os.getloadavg(),
              "cpus": os.cpu_count()}
    print(json.dumps(result, indent=2) if args.json else json.dumps(result["side_by_side"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
