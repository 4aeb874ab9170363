"""The search loop: ask, evaluate (serially or in parallel), tell, and journal every trial the moment it ends.

There is one loop for everything that evaluates architectures: the refresh's search stage, ``nasops search``, the
table benchmarks (:mod:`nas.benchmarking`) and the multi-fidelity schedulers (successive halving, Hyperband, BOHB
in :mod:`nas.fidelity`), which are strategies that choose a fidelity per trial.

- **Batches.** Serially, the loop asks ``batch`` trials at a time, evaluates them in order and tells each result (a
  predictor refits once a batch, as BANANAS does). With ``workers > 1`` it keeps that many evaluations in flight and
  asks ``ask_trials(n)`` with ``n`` = the free slots whenever some are free; results are told in completion order.
  A strategy that returns fewer trials than asked while others are in flight is waiting (a rung of successive
  halving must finish before it promotes); with nothing in flight, it is exhausted.
- **Failed trials.** An evaluator exception does not stop the search: the trial is journaled with
  ``state="fail"`` and its error, the strategy is told (``fail_trial``) and never proposes it again, and the loop
  goes on — the Optuna ``TrialState.FAIL`` behaviour. A failed trial counts against the budget.
- **Journal.** JSON lines: a header naming the search, then one ``result`` line per finished trial (complete or
  failed), flushed and fsynced before the strategy hears of it. Resuming replays the journal through a fresh
  strategy with the same seed and batch size: in a serial run each replayed ask proposes exactly the journaled
  trials, so a resumed search continues as if never interrupted; nothing finished is lost or evaluated again.
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
from nas.strategies.base import Strategy, Trial, trial_key

COMPLETE, FAIL = "complete", "fail"


@dataclass
class Record:
    """One finished trial as journaled: ``state`` is ``complete`` or ``fail`` (then ``error`` says why and the
    score is ``-inf``); ``requested`` is the fidelity the strategy asked for (``None``: the loop's)."""

    index: int
    arch: str
    result: Result
    score: float
    elapsed: float
    predicted: float | None = None
    state: str = COMPLETE
    error: str | None = None
    requested: dict[str, float] | None = None

    @property
    def ok(self) -> bool:
        return self.state == COMPLETE

    def to_json(self) -> dict[str, Any]:
        return {"type": "result", "index": self.index, "arch": self.arch, "state": self.state, "error": self.error,
                "requested": self.requested, **self.result.to_dict(), "score": self.score, "elapsed": self.elapsed,
                "predicted": self.predicted}


@dataclass
class SearchResult:
    records: list[Record]
    seconds: float
    stopped_by: str
    tau: list[dict[str, float]] = field(default_factory=list)
    resumed: int = 0

    @property
    def best(self) -> Record | None:
        feasible = [r for r in self.records if r.ok and np.isfinite(r.score)]
        return max(feasible, key=lambda r: r.score) if feasible else None

    @property
    def failed(self) -> list[Record]:
        return [r for r in self.records if not r.ok]

    def trajectory(self) -> list[float]:
        """Best feasible score after each trial (``-inf`` until one is feasible)."""
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
    for key in ("strategy", "seed", "space", "metric", "batch"):
        if key in old and key in new and old[key] != new[key]:
            raise ValueError(
                f"journal {path} belongs to a search with {key}={old[key]!r}, not {new[key]!r}; "
                "resume with the same settings or start a new journal"
            )


def _evaluate(evaluator: Evaluator, trial: Trial, fidelity: Mapping[str, float] | None,
              catch: tuple[type[BaseException], ...]) -> tuple[Result | None, str | None, float]:
    """Run one trial; an exception of ``catch`` becomes its error message (the trial failed)."""
    fid = {**(fidelity or {}), **(trial.fidelity or {})} or None
    start = time.perf_counter()
    try:
        return evaluator.evaluate(trial.arch, fid), None, time.perf_counter() - start
    except catch as exc:
        return None, f"{type(exc).__name__}: {exc}", time.perf_counter() - start


def run_search(
    strategy: Strategy,
    evaluator: Evaluator,
    *,
    budget: int | None = None,
    time_budget_s: float | None = None,
    fidelity: Mapping[str, float] | None = None,
    workers: int = 1,
    batch: int = 1,
    executor: cf.Executor | None = None,
    journal: str | Path | None = None,
    resume: bool = False,
    header: Mapping[str, Any] | None = None,
    on_result: Callable[[Record], None] | None = None,
    pool_truth: Callable[[Architecture], float] | None = None,
    tau_pool: list[Architecture] | None = None,
    tau_every: int = 5,
    catch: tuple[type[BaseException], ...] = (Exception,),
) -> SearchResult:
    """Run a search until ``budget`` trials (in total, counting resumed and failed ones) or ``time_budget_s``
    seconds, or until the strategy is exhausted.

    ``workers > 1`` keeps that many evaluations in flight on ``executor`` (a thread pool by default); ``batch`` is
    the ask size of a serial search. ``fidelity`` is the default fidelity; a trial's own (a scheduler's rung)
    overrides its keys. With ``journal`` every trial is appended as it ends; ``resume=True`` replays an existing
    journal first. ``catch`` are the evaluator exceptions that fail a trial instead of the search. ``pool_truth`` +
    ``tau_pool`` (tabular benchmarks) report the predictor's Kendall τ on the not-yet-evaluated pool every
    ``tau_every`` trials; otherwise τ is computed prospectively: predictions made when an architecture was
    proposed against what it then measured.
    """
    if budget is None and time_budget_s is None:
        raise ValueError("give a budget (number of evaluations) and/or a time budget in seconds")
    if budget is not None and budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    start = time.perf_counter()
    records: list[Record] = []
    taus: list[dict[str, float]] = []
    book = Journal(journal) if journal is not None else None
    head = {"type": "header", "strategy": strategy.name, "seed": strategy.seed, "space": strategy.space.name,
            "metric": strategy.metric, "budget": budget, "batch": batch, **(header or {})}
    pending_first: list[Trial] = []
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
            pending_first = _replay(strategy, old, records, batch if workers == 1 else 1)
            resumed = len(records)

    def finish(trial: Trial, result: Result | None, error: str | None, cost: float) -> None:
        arch = trial.arch
        predicted = getattr(strategy, "predicted", {}).get(arch.string)
        score = -np.inf
        if result is not None:
            try:
                score = strategy.score(result)
            except KeyError as exc:  # the evaluator did not report the searched metric: the trial failed
                error, result = f"KeyError: {exc}", None
        if result is None:
            result = Result({}, cost=cost, fidelity=dict(trial.fidelity or {}))
            strategy.fail_trial(trial, error or "unknown error")
            state = FAIL
        else:
            strategy.tell_trial(trial, result)
            state = COMPLETE
        rec = Record(len(records), arch.string, result, float(score), time.perf_counter() - start, predicted,
                     state, error, dict(trial.fidelity) if trial.fidelity else None)
        if book is not None:
            book.append(rec.to_json())
        records.append(rec)
        if on_result is not None:
            on_result(rec)
        if len(records) % tau_every == 0:
            t = _tau(strategy, records, pool_truth, tau_pool)
            if t:
                taus.append(t)

    def room() -> int:
        return (budget - len(records)) if budget is not None else 1 << 30

    def out_of_time() -> bool:
        return time_budget_s is not None and time.perf_counter() - start >= time_budget_s

    def next_trials(n: int) -> list[Trial]:
        if pending_first:  # the rest of an interrupted batch is a batch of its own, as it was before the kill
            out = pending_first[:n]
            del pending_first[:n]
            return out
        return strategy.ask_trials(n)

    stopped = "budget"
    if workers == 1 and executor is None:
        while room() > 0:
            if out_of_time():
                stopped = "time"
                break
            trials = next_trials(min(batch, room()))
            if not trials:
                stopped = "exhausted"
                break
            for i, trial in enumerate(trials):
                if out_of_time():  # the rest of the batch stays unevaluated (a resume evaluates it first)
                    pending_first[:0] = trials[i:]
                    break
                finish(trial, *_evaluate(evaluator, trial, fidelity, catch))
    else:
        own = executor is None
        pool = executor or cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nas-eval")
        inflight: dict[cf.Future, Trial] = {}
        try:
            while True:
                free = min(workers - len(inflight), room() - len(inflight))
                if free > 0 and not out_of_time():
                    for trial in next_trials(free):
                        inflight[pool.submit(_evaluate, evaluator, trial, fidelity, catch)] = trial
                if not inflight:
                    if room() <= 0:
                        stopped = "budget"
                    elif out_of_time():
                        stopped = "time"
                    else:
                        stopped = "exhausted"
                    break
                done, _ = cf.wait(list(inflight), return_when=cf.FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: inflight[f].key):
                    finish(inflight.pop(fut), *fut.result())
        finally:
            for fut in inflight:
                fut.cancel()
            if own:
                pool.shutdown(wait=True, cancel_futures=True)
    return SearchResult(records, time.perf_counter() - start, stopped, taus, resumed)


def _replay(strategy: Strategy, old: list[dict[str, Any]], records: list[Record], batch: int) -> list[Trial]:
    """Feed journaled trials back; returns trials proposed during replay that were never finished."""
    remaining: dict[str, dict[str, Any]] = {}
    for e in old:
        remaining.setdefault(trial_key(e["arch"], e.get("requested")), e)
    leftover: list[Trial] = []

    def tell(trial: Trial, entry: Mapping[str, Any]) -> None:
        result = Result.from_dict(entry)
        state = entry.get("state", COMPLETE)
        if state == COMPLETE:
            strategy.tell_trial(trial, result)
            score = strategy.score(result)
        else:
            strategy.fail_trial(trial, str(entry.get("error")))
            score = -np.inf
        records.append(Record(len(records), trial.arch.string, result, float(score),
                              float(entry.get("elapsed", 0.0)), entry.get("predicted"), state, entry.get("error"),
                              entry.get("requested")))

    # serial replay: the same seed and batch size propose the same trials in the same order
    while remaining:
        asked = strategy.ask_trials(batch)
        if not asked:
            break
        for trial in asked:
            if trial.key in remaining:
                tell(trial, remaining.pop(trial.key))
            else:
                leftover.append(trial)  # proposed but never finished before the kill: evaluate it first
        if leftover:
            break
    for entry in list(remaining.values()):  # a parallel run finishes out of order: tell whatever is left
        req = entry.get("requested")
        tell(Trial(strategy.space.from_string(entry["arch"]), dict(req) if req else None), entry)
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
