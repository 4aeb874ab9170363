"""The search loop: ask, evaluate in parallel, tell, and journal every result the moment it arrives.

The journal is JSON lines: a header naming the search, then one ``result`` line per finished evaluation, flushed and
fsynced before the strategy hears of it. Resuming replays the journal through a fresh strategy with the same seed:
in a serial run each replayed ``ask`` proposes exactly the journaled architecture, so a resumed search continues
as if never interrupted; nothing finished is lost or evaluated again.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau

from nas.evaluators import Evaluator, Result
from nas.spaces.base import Architecture
from nas.strategies.base import Strategy


@dataclass
class Record:
    """One finished evaluation as journaled."""

    index: int
    arch: str
    result: Result
    score: float
    elapsed: float
    predicted: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"type": "result", "index": self.index, "arch": self.arch, **self.result.to_dict(),
                "score": self.score, "elapsed": self.elapsed, "predicted": self.predicted}


@dataclass
class SearchResult:
    records: list[Record]
    seconds: float
    stopped_by: str
    tau: list[dict[str, float]] = field(default_factory=list)
    resumed: int = 0

    @property
    def best(self) -> Record | None:
        feasible = [r for r in self.records if np.isfinite(r.score)]
        return max(feasible, key=lambda r: r.score) if feasible else None

    def trajectory(self) -> list[float]:
        """Best feasible score after each evaluation (``-inf`` until one is feasible)."""
        out, best = [], -np.inf
        for r in self.records:
            best = max(best, r.score)
            out.append(best)
        return out


class Journal:
    """Append-only JSON lines file; every write is flushed and fsynced (a SIGKILL loses at most a partial line)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        if not self.path.exists():
            return None, []
        header, results = None, []
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill: that evaluation is redone
            if entry.get("type") == "header":
                header = entry
            elif entry.get("type") == "result":
                results.append(entry)
        return header, results

    def append(self, entry: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(entry, allow_nan=True) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _check_header(old: Mapping[str, Any], new: Mapping[str, Any], path: Path) -> None:
    for key in ("strategy", "seed", "space", "metric"):
        if key in old and key in new and old[key] != new[key]:
            raise ValueError(
                f"journal {path} belongs to a search with {key}={old[key]!r}, not {new[key]!r}; "
                "resume with the same settings or start a new journal"
            )


def run_search(
    strategy: Strategy,
    evaluator: Evaluator,
    *,
    budget: int | None = None,
    time_budget_s: float | None = None,
    fidelity: Mapping[str, float] | None = None,
    workers: int = 1,
    executor: cf.Executor | None = None,
    journal: str | Path | None = None,
    resume: bool = False,
    header: Mapping[str, Any] | None = None,
    on_result: Callable[[Record], None] | None = None,
    pool_truth: Callable[[Architecture], float] | None = None,
    tau_pool: list[Architecture] | None = None,
    tau_every: int = 5,
) -> SearchResult:
    """Run a search until ``budget`` evaluations (in total, counting resumed ones) or ``time_budget_s`` seconds.

    ``workers > 1`` keeps that many evaluations in flight on ``executor`` (a thread pool by default); results are
    told in completion order. With ``journal`` every result is appended as it arrives; ``resume=True`` replays an
    existing journal first. ``pool_truth`` + ``tau_pool`` (tabular benchmarks) report the predictor's Kendall τ on
    the not-yet-evaluated pool every ``tau_every`` results; otherwise τ is computed prospectively: predictions made
    when an architecture was proposed against what it then measured.
    """
    if budget is None and time_budget_s is None:
        raise ValueError("give a budget (number of evaluations) and/or a time budget in seconds")
    if budget is not None and budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    start = time.perf_counter()
    records: list[Record] = []
    taus: list[dict[str, float]] = []
    book = Journal(journal) if journal is not None else None
    head = {"type": "header", "strategy": strategy.name, "seed": strategy.seed, "space": strategy.space.name,
            "metric": strategy.metric, "budget": budget, **(header or {})}
    pending_first: list[Architecture] = []
    resumed = 0
    if book is not None:
        old_head, old = book.read()
        if old and not resume:
            raise ValueError(f"journal {book.path} already holds {len(old)} results; pass resume=True to continue it")
        if old_head is not None:
            _check_header(old_head, head, book.path)
        else:
            book.append(head)
        if resume and old:
            pending_first = _replay(strategy, old, records)
            resumed = len(records)

    def finish(arch: Architecture, result: Result) -> Record:
        score_pred = getattr(strategy, "predicted", {}).get(arch.string)
        strategy.tell(arch, result)
        rec = Record(len(records), arch.string, result, strategy.history[-1].score,
                     time.perf_counter() - start, score_pred)
        if book is not None:
            book.append(rec.to_json())
        records.append(rec)
        if on_result is not None:
            on_result(rec)
        if len(records) % tau_every == 0:
            t = _tau(strategy, records, pool_truth, tau_pool)
            if t:
                taus.append(t)
        return rec

    def room() -> int:
        left = (budget - len(records)) if budget is not None else 1 << 30
        return left

    def out_of_time() -> bool:
        return time_budget_s is not None and time.perf_counter() - start >= time_budget_s

    stopped = "budget"
    if workers == 1 and executor is None:
        while room() > 0:
            if out_of_time():
                stopped = "time"
                break
            arch = pending_first.pop(0) if pending_first else (strategy.ask(1) or [None])[0]
            if arch is None:
                stopped = "exhausted"
                break
            finish(arch, evaluator.evaluate(arch, fidelity))
    else:
        own = executor is None
        pool = executor or cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nas-eval")
        inflight: dict[cf.Future, Architecture] = {}
        try:
            while True:
                while len(inflight) < workers and room() - len(inflight) > 0 and not out_of_time():
                    arch = pending_first.pop(0) if pending_first else (strategy.ask(1) or [None])[0]
                    if arch is None:
                        stopped = "exhausted"
                        break
                    inflight[pool.submit(evaluator.evaluate, arch, fidelity)] = arch
                if not inflight:
                    if out_of_time() and room() > 0:
                        stopped = "time"
                    break
                done, _ = cf.wait(list(inflight), return_when=cf.FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: inflight[f].string):
                    arch = inflight.pop(fut)
                    finish(arch, fut.result())
                if stopped == "exhausted" and not inflight:
                    break
        finally:
            for fut in inflight:
                fut.cancel()
            if own:
                pool.shutdown(wait=True, cancel_futures=True)
    return SearchResult(records, time.perf_counter() - start, stopped, taus, resumed)


def _replay(strategy: Strategy, old: list[dict[str, Any]], records: list[Record]) -> list[Architecture]:
    """Feed journaled results back; returns proposals made during replay that were never evaluated."""
    remaining = {e["arch"]: e for e in old}
    leftover: list[Architecture] = []

    def tell(entry: Mapping[str, Any]) -> None:
        arch = strategy.space.from_string(entry["arch"])
        result = Result.from_dict(entry)
        strategy.tell(arch, result)
        records.append(Record(len(records), arch.string, result, strategy.history[-1].score,
                              float(entry.get("elapsed", 0.0)), entry.get("predicted")))

    # serial replay: the same seed proposes the same architectures in the same order
    while remaining:
        asked = strategy.ask(1)
        if not asked:
            break
        if asked[0].string in remaining:
            tell(remaining.pop(asked[0].string))
            continue
        leftover.append(asked[0])  # proposed but never finished before the kill: evaluate it first
        break
    for entry in list(remaining.values()):  # a parallel run finishes out of order: tell whatever is left
        tell(entry)
    return leftover


def _tau(strategy: Strategy, records: list[Record], truth: Callable[[Architecture], float] | None,
         pool: list[Architecture] | None) -> dict[str, float] | None:
    predict = getattr(strategy, "predict", None)
    out: dict[str, float] = {}
    if predict is not None and truth is not None and pool:
        fresh = [a for a in pool if not strategy.is_seen(a)]
        if len(fresh) >= 10:
            pred = predict(fresh)
            if pred is not None:
                out["tau_pool"] = float(kendalltau(pred, [truth(a) for a in fresh]).statistic)
    pairs = [(r.predicted, r.score) for r in records if r.predicted is not None and np.isfinite(r.score)]
    if len(pairs) >= 5:
        p, s = zip(*pairs, strict=True)
        out["tau_prospective"] = float(kendalltau(p, s).statistic)
    if out:
        out["evaluations"] = float(len(records))
    return out or None
