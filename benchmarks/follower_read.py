"""What a gateway worker's rollout poll costs: the full record (``RolloutStore.latest``, a ~1 MB drift reference
and a 50-interval history included) against the routing read the follower uses (``RolloutStore.latest_routing``).
Every worker of every replica polls once per ``rollout_poll_s`` (1 s), so this is per worker per second.

    .venv/bin/python benchmarks/follower_read.py [--reads 1000] [--reference-mb 1.0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this folder would shadow the packages (benchmarks/serving.py vs serving/): drop it, add the root.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

from monitoring.rollout_store import RolloutStore  # noqa: E402


def _record(store: RolloutStore, reference_mb: float, intervals: int) -> None:
    """A rollout as it is mid-way: a drift reference of ``reference_mb`` and ``intervals`` judged intervals."""
    rollout = store.create(model_name="m", champion_version="1", challenger_version="2", mode="split", weight=0.25,
                           config={"steps": [0.05, 0.25, 0.5, 1.0]}, actor="operator")
    width = 16
    rows = int(reference_mb * 1_000_000 / (width * 9))  # ~9 characters per value as JSON
    reference = {"reference": {"columns": [f"f{i}" for i in range(width)],
                               "rows": [[0.123456] * width for _ in range(rows)]}}
    step = {"evidence": [{"name": f"metric-{i}", "p_value": 0.5, "effect": 0.01} for i in range(8)],
            "drift": {"champion": 0.1, "challenger": 0.2, "prediction": 0.01}}
    history = [{"interval": i + 1, **step} for i in range(intervals)]
    store.update(rollout, {"model_ref": reference, "history": history, "intervals": intervals,
                           "last_verdict": {"verdict": "pass", "drift": step["drift"]}}, kind="interval",
                 actor="controller")


def _time(read, n: int) -> float:
    read()  # warm the connection pool and the page cache
    start = time.perf_counter()
    for _ in range(n):
        read()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=1000)
    parser.add_argument("--reference-mb", type=float, default=1.0)
    parser.add_argument("--intervals", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nasops-follower-read-") as tmp:
        path = Path(tmp) / "predictions.db"
        store = RolloutStore(f"sqlite:///{path}")
        _record(store, args.reference_mb, args.intervals)
        full_record = store.latest("m")
        size = len(str(full_record.model_ref)) + len(str(full_record.history))
        full = _time(lambda: store.latest("m"), args.reads)
        light = _time(lambda: store.latest_routing("m"), args.reads)
        store.engine.dispose()
    print(f"{args.reads} follower reads, {args.reference_mb:g} MB drift reference, {args.intervals} intervals "
          f"(heavy fields {size / 1e6:.2f} MB)")
    print(f"  full record (latest):          {full:8.3f} s  ({1000 * full / args.reads:.3f} ms per read)")
    print(f"  routing read (latest_routing): {light:8.3f} s  ({1000 * light / args.reads:.3f} ms per read)")
    print(f"  ratio full / routing: {full / light:.1f}x")


if __name__ == "__main__":
    main()
