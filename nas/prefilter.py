"""The zero-cost pre-filter: score a large pool without training, keep the top-k for the search to train.

A two-stage cascade keeps it affordable on a CPU (the idea of Abdelfattah et al., ICLR 2021, "warm-up" with cheap
proxies): stage 1 scores the whole pool with cheap data-free proxies (``params``, ``flops``, ``synflow``) and ranks
it by their rank aggregate; stage 2 runs the costly data-dependent proxies (a forward/backward pass on a real batch)
on the best ``costly_fraction`` only, and the final order is the named ensemble's rank aggregate over that
fraction. Scores go to a JSON-lines journal as they arrive, so an interrupted pre-filter resumes without
recomputing; workers are separate processes with one torch thread each.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.data import TaskData
from nas.ensemble import ENSEMBLES, rank_aggregate
from nas.pool import dedupe_canonical
from nas.proxies import compute_scores, list_proxies, needs_data
from nas.spaces.base import Architecture, SearchSpace

CHEAP_DEFAULT: tuple[str, ...] = ("synflow", "params", "flops")
JOURNAL_VERSION = 1


@dataclass(frozen=True)
class ScoredArchitecture:
    """One survivor of the pre-filter: the architecture, every proxy score it got, its final aggregate score."""

    arch: Architecture
    scores: dict[str, float] = field(hash=False)
    rank_score: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch.string, "scores": dict(self.scores), "rank_score": self.rank_score}


# -- the work one process does ----------------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(space: SearchSpace, batch, input_shape, num_classes, seed) -> None:
    torch.set_num_threads(1)
    _WORKER.update(space=space, batch=batch, input_shape=input_shape, num_classes=num_classes, seed=seed)


def _score_chunk(arch_strings: list[str], names: list[str], needs_batch: bool) -> list[tuple[str, dict[str, float]]]:
    return score_chunk(arch_strings, names, needs_batch, ScoringSetup(
        _WORKER["space"], _WORKER["batch"], _WORKER["input_shape"], _WORKER["num_classes"], _WORKER["seed"]))


@dataclass(frozen=True)
class ScoringSetup:
    """What scoring a chunk needs besides the architectures: the space, the labelled batch (``None`` without
    data), input shape, classes and seed. Picklable, so a chunk can be scored in any process (a cluster worker)."""

    space: SearchSpace
    batch: Any
    input_shape: tuple[int, ...]
    num_classes: int
    seed: int


def score_chunk(arch_strings: Sequence[str], names: Sequence[str], needs_batch: bool,
                setup: ScoringSetup) -> list[tuple[str, dict[str, float]]]:
    """Score architectures (by string) with ``names``: the same scores in whatever process runs it (each network
    is built under the seed, and torch's generator is global: one chunk at a time per process)."""
    shape, classes = setup.input_shape, setup.num_classes
    out = []
    for text in arch_strings:
        arch = setup.space.from_string(text)
        scores = compute_scores(
            lambda a=arch: a.build(classes, shape), list(names), batch=setup.batch if needs_batch else None,
            input_shape=shape, num_classes=classes, seed=setup.seed,
        )
        out.append((text, scores))
    return out


ChunkMap = Callable[[list[list[str]], list[str], bool, ScoringSetup], list[list[tuple[str, dict[str, float]]]]]
"""A caller's way to score chunks elsewhere (a cluster): ``(chunks, names, needs_batch, setup)`` -> each chunk's
:func:`score_chunk` result, in the chunks' order."""


# -- the journal ------------------------------------------------------------------------------------------------------
class _Journal:
    """JSON lines: a header naming the settings, then ``{"arch", "scores"}`` per scored architecture."""

    def __init__(self, path: Path | None, header: dict[str, Any]) -> None:
        self.path = path
        self.scores: dict[str, dict[str, float]] = {}
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > 0:
            self._load(path, header)
        else:
            path.write_text(json.dumps({"header": header}) + "\n")

    def _load(self, path: Path, header: dict[str, Any]) -> None:
        with path.open() as f:
            lines = f.read().splitlines()
        try:
            found = json.loads(lines[0]).get("header")
        except (json.JSONDecodeError, AttributeError):
            found = None
        if found != header:
            raise ValueError(
                f"journal {path} was written by a pre-filter with other settings ({found}); resume with the same "
                f"space, data, seed and batch size ({header}) or pass a new journal path"
            )
        for line in lines[1:]:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by the interruption: score that architecture again
                continue
            self.scores.setdefault(row["arch"], {}).update(row["scores"])
        if lines and not lines[-1].endswith("}"):
            with path.open("a") as f:
                f.write("\n")

    def missing(self, archs: Sequence[str], names: Sequence[str]) -> list[str]:
        return [a for a in archs if any(n not in self.scores.get(a, {}) for n in names)]

    def record(self, arch: str, scores: dict[str, float]) -> None:
        self.scores.setdefault(arch, {}).update(scores)
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps({"arch": arch, "scores": scores}) + "\n")


# -- the cascade ------------------------------------------------------------------------------------------------------
def _validate_names(names: Sequence[str], what: str) -> list[str]:
    valid = set(list_proxies())
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise KeyError(f"unknown {what} proxy {unknown[0]!r}; valid proxies: {', '.join(sorted(valid))}")
    return list(dict.fromkeys(names))


def _ensemble_members(ensemble: str | Sequence[str]) -> list[str]:
    if isinstance(ensemble, str):
        if ensemble not in ENSEMBLES:
            raise KeyError(f"unknown ensemble {ensemble!r}; choose one of: {', '.join(sorted(ENSEMBLES))}")
        return list(ENSEMBLES[ensemble])
    return _validate_names(list(ensemble), "ensemble")


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _run_stage(
    todo: list[str],
    names: list[str],
    journal: _Journal,
    executor: ProcessPoolExecutor | None,
    workers: int,
    on_done: Callable[[], None],
    remote: tuple[ChunkMap, ScoringSetup] | None = None,
) -> None:
    if not todo:
        return
    wants_batch = any(needs_data(n) for n in names)
    if remote is not None:  # the caller's workers: results come back in the chunks' order, as serial
        mapper, setup = remote
        parts = list(_chunks(todo, max(1, math.ceil(len(todo) / (workers * 4)))))
        for part in mapper(parts, list(names), wants_batch, setup):
            for arch, scores in part:
                journal.record(arch, scores)
                on_done()
        return
    if executor is None:
        for text in todo:
            for arch, scores in _score_chunk([text], names, wants_batch):
                journal.record(arch, scores)
                on_done()
        return
    chunk = max(1, min(16, math.ceil(len(todo) / (workers * 8))))
    pending: set[Future] = set()
    chunks = _chunks(todo, chunk)
    for part in chunks:  # keep a bounded number of chunks in flight
        pending.add(executor.submit(_score_chunk, part, names, wants_batch))
        if len(pending) >= workers * 2:
            break
    while pending:
        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
        for future in finished:
            for arch, scores in future.result():
                journal.record(arch, scores)
                on_done()
            part = next(chunks, None)
            if part is not None:
                pending.add(executor.submit(_score_chunk, part, names, wants_batch))


@contextmanager
def _executor(workers: int, init_args: tuple, local: bool = True) -> Iterator[ProcessPoolExecutor | None]:
    """``None`` (score in this process) for one worker, else a pool of spawned processes shared by both stages;
    nothing at all when the chunks are scored elsewhere (``local`` False)."""
    if not local:
        yield None
        return
    if workers <= 1:
        _init_worker(*init_args)
        yield None
        return
    context = multiprocessing.get_context("spawn")  # fork after torch has started threads can deadlock
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=init_args) as pool:
        yield pool


def prefilter(
    space: SearchSpace,
    pool: Sequence[Architecture],
    data: TaskData | None,
    *,
    keep: int,
    cheap: Sequence[str] = CHEAP_DEFAULT,
    costly: Sequence[str] | None = None,
    costly_fraction: float = 0.1,
    ensemble: str | Sequence[str] = "ensemble",
    batch_size: int = 64,
    seed: int = 0,
    workers: int = 1,
    journal: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    map_chunks: ChunkMap | None = None,
) -> list[ScoredArchitecture]:
    """The ``keep`` most promising architectures of ``pool``, best first.

    ``pool`` is deduplicated by canonical form first. Stage 1 scores every architecture with ``cheap``; the best
    ``max(keep, ceil(costly_fraction * n))`` by the rank aggregate of ``cheap`` go to stage 2, which adds ``costly``
    (default: the ensemble's members not already in ``cheap``). The returned ``rank_score`` is the rank aggregate of
    the ``ensemble`` (a name in :data:`nas.ensemble.ENSEMBLES` or a list of proxies) over the stage-2 set.

    Without ``data`` (then ``input_shape`` and ``num_classes`` are required) data-dependent proxies are left out of
    the default ``costly`` and of the ensemble; naming one explicitly raises ``ValueError``. ``progress(done,
    total)`` is called after each scored architecture (``total`` counts both stages). ``map_chunks`` scores the
    chunks on the caller's workers (a cluster; ``workers`` is then its size) instead of local processes.
    """
    archs = dedupe_canonical(pool)
    if not archs:
        raise ValueError("the pool is empty; sample some architectures first (nas.pool.sample_pool)")
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    if keep > len(archs):
        raise ValueError(f"keep={keep} exceeds the {len(archs)} unique architectures of the pool; lower keep")
    if not 0 < costly_fraction <= 1:
        raise ValueError(f"costly_fraction must be in (0, 1], got {costly_fraction}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2, got {batch_size}")

    cheap_names = _validate_names(cheap, "cheap")
    if not cheap_names:
        raise ValueError("cheap needs at least one proxy (e.g. synflow, params, flops)")
    members = _ensemble_members(ensemble)
    explicit_costly = costly is not None
    costly_names = _validate_names(costly, "costly") if costly is not None else [
        m for m in members if m not in cheap_names
    ]
    if data is None:
        hungry = [n for n in cheap_names + (costly_names if explicit_costly else []) if needs_data(n)]
        if hungry:
            raise ValueError(f"proxy {hungry[0]!r} needs data: pass a TaskData or drop it from the cascade")
        costly_names = [n for n in costly_names if not needs_data(n)]
        members = [m for m in members if not needs_data(m)] or cheap_names
        if input_shape is None or num_classes is None:
            raise ValueError("without data, pass input_shape and num_classes so the networks can be built")
        shape, classes, batch = tuple(int(d) for d in input_shape), int(num_classes), None
    else:
        shape, classes = tuple(data.input_shape), int(data.num_classes)
        batch = data.batch(batch_size, seed=seed)
    problem = space.supports_input(shape)
    if problem is not None:
        raise ValueError(problem)

    n_costly = min(len(archs), max(keep, math.ceil(costly_fraction * len(archs))))
    header = {
        "version": JOURNAL_VERSION, "space": space.name, "space_config": space.config(), "input_shape": list(shape),
        "num_classes": classes, "seed": seed, "batch_size": batch_size if data is not None else None,
        "data": None if data is None else _data_fingerprint(batch),
    }
    book = _Journal(journal, header)
    by_string = {a.string: a for a in archs}
    strings = list(by_string)
    total = len(strings) + (n_costly if costly_names else 0)
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    todo = book.missing(strings, cheap_names)
    done[0] = len(strings) - len(todo)
    if progress is not None:
        progress(done[0], total)

    def best_of_stage1() -> list[str]:
        stage1 = rank_aggregate({n: [book.scores[a][n] for a in strings] for n in cheap_names})
        return [strings[i] for i in np.argsort(-stage1, kind="stable")[:n_costly]]

    # one worker pool for both stages, started only if something is left to score (a finished journal needs none)
    needed = workers if todo or (costly_names and book.missing(best_of_stage1(), costly_names)) else 1
    remote = (map_chunks, ScoringSetup(space, batch, shape, classes, seed)) if map_chunks is not None else None
    with _executor(needed, (space, batch, shape, classes, seed), remote is None) as executor:
        _run_stage(todo, cheap_names, book, executor, workers, tick, remote)
        finalists = best_of_stage1()
        if costly_names:
            todo = book.missing(finalists, costly_names)
            done[0] += n_costly - len(todo)
            if progress is not None:
                progress(done[0], total)
            _run_stage(todo, costly_names, book, executor, workers, tick, remote)

    available = set(cheap_names) | set(costly_names)
    weights = {m: 1.0 for m in members if m in available}
    if not weights:
        raise ValueError(f"none of the ensemble's proxies ({', '.join(members)}) were computed by the cascade")
    final = rank_aggregate({m: [book.scores[a][m] for a in finalists] for m in weights}, weights)
    ranked = np.argsort(-final, kind="stable")[:keep]
    return [
        ScoredArchitecture(by_string[finalists[i]], dict(book.scores[finalists[i]]), float(final[i])) for i in ranked
    ]


def _data_fingerprint(batch) -> str:
    import hashlib

    x, y = batch
    digest = hashlib.sha256(x.numpy().tobytes())
    digest.update(y.numpy().tobytes())
    return digest.hexdigest()[:16]


__all__ = ["CHEAP_DEFAULT", "ChunkMap", "ScoredArchitecture", "ScoringSetup", "prefilter", "score_chunk"]
