"""Where a stage's tasks run: the task runner a config names (threads, a temporary Dask LocalCluster, or an existing
Dask scheduler), how many tasks it runs at once (its workers, not a fixed number), and an ordered fan-out of one task
over many inputs, so the zero-cost scoring, the search's evaluations and the full retrainings all go to the same
workers and come back in the order a serial run would give.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

SERIAL = "serial"
"""No runner: each task's function is called in this process, one after another (the reference results)."""

RNG_LOCK = threading.Lock()
"""Held by a task for as long as it builds and trains networks under a seed: torch's default generator is global
to a process, so two such tasks on threads of one process would interleave their draws (a thread runner then runs
them one at a time; a Dask worker process with one thread never waits on it)."""


def make_task_runner(runner: str, workers: int, dask_address: str | None = None) -> Any:
    """A Prefect task runner (``None`` for :data:`SERIAL`): a thread pool of ``workers``, a temporary LocalCluster
    of ``workers`` single-threaded processes, or the Dask scheduler at ``dask_address``."""
    if runner == SERIAL:
        return None
    if runner == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers)
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": ":0"})


@contextlib.contextmanager
def started(runner: Any) -> Iterator[Any]:
    """The runner entered (a LocalCluster started, a scheduler connected) for the block; ``None`` passes through."""
    if runner is None:
        yield None
        return
    with runner:
        yield runner


def slots(runner: Any, wait_s: float = 60.0) -> int:
    """How many tasks a started runner runs at once: the Dask cluster's threads over all its workers (waiting up to
    ``wait_s`` for a first worker to join an empty scheduler), a thread pool's size, 1 for serial."""
    if runner is None:
        return 1
    client = getattr(runner, "client", None) if type(runner).__name__ == "DaskTaskRunner" else None
    if client is None:
        return max(1, int(getattr(runner, "_max_workers", 1)))
    threads = sum(client.nthreads().values())
    if threads == 0:
        client.wait_for_workers(1, timeout=wait_s)
        threads = sum(client.nthreads().values())
    return max(1, int(threads))


def map_ordered(runner: Any, task: Any, params: Sequence[dict[str, Any]]) -> list[Any]:
    """Run ``task`` once per parameter dict on the runner (all submitted at once, the runner spreads them over its
    workers) and return the results in ``params``' order; serial (``runner`` None) calls the function in turn."""
    if runner is None:
        return [task.fn(**p) for p in params]
    futures = [runner.submit(task, parameters=dict(p)) for p in params]
    return [f.result() for f in futures]


def pin_worker_threads() -> None:
    """On a Dask worker, one torch thread (the cluster's size is the parallelism, as for the search's evaluations);
    in the refresh's own process (serial, thread runner) the process-wide setting is left alone."""
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return
    import torch

    torch.set_num_threads(1)
