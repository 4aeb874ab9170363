"""The search loop: journal, resume after a real SIGKILL, determinism, parallel workers, budgets, fidelity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from nas.evaluators import Result, TabularEvaluator
from nas.fidelity import hyperband, rung_epochs, successive_halving
from nas.search import Journal, run_search
from nas.strategies import get_strategy
from nas.tabular import TableSpace, load_table

ROOT = Path(__file__).resolve().parents[1]


def write_toy_csv(path: Path) -> Path:
    rng = np.random.default_rng(0)
    ops = "abcd"
    rows = ["arch,val_accuracy,latency_ms,params,val_accuracy@1"]
    for i in ops:
        for j in ops:
            for k in ops:
                acc = 0.5 + 0.1 * ops.index(i) + 0.05 * ops.index(j) + 0.02 * ops.index(k) + rng.normal(0, 0.003)
                rows.append(f"{i}|{j}|{k},{acc:.5f},{rng.uniform(0.5, 3):.3f},{1000 + 100 * ops.index(j)},"
                            f"{acc - 0.1 * ops.index(k):.5f}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def toy(tmp_path):
    table = load_table(write_toy_csv(tmp_path / "toy.csv"), "arch", ["val_accuracy", "latency_ms", "params"])
    return table, TableSpace(table.archs)


def test_every_result_is_journaled_as_it_arrives(toy, tmp_path):
    table, space = toy
    journal = tmp_path / "j.jsonl"
    lines_when_told: list[int] = []

    def on_result(rec):
        lines_when_told.append(len(Journal(journal).read()[1]))

    result = run_search(get_strategy("random", space, seed=0), TabularEvaluator(table), budget=10, journal=journal,
                        on_result=on_result)
    assert lines_when_told == list(range(1, 11))  # on disk before anyone else hears of it
    header, entries = Journal(journal).read()
    assert header["strategy"] == "random" and header["seed"] == 0
    assert [e["arch"] for e in entries] == [r.arch for r in result.records]
    assert entries[3]["metrics"]["val_accuracy"] == pytest.approx(result.records[3].result.metrics["val_accuracy"])


def test_serial_search_is_deterministic_and_resume_continues_identically(toy, tmp_path):
    table, space = toy
    ev = TabularEvaluator(table)
    full = run_search(get_strategy("evolution", space, seed=3, population_size=5), ev, budget=20)
    again = run_search(get_strategy("evolution", space, seed=3, population_size=5), ev, budget=20)
    assert [r.arch for r in full.records] == [r.arch for r in again.records]

    journal = tmp_path / "j.jsonl"
    run_search(get_strategy("evolution", space, seed=3, population_size=5), ev, budget=8, journal=journal)
    with pytest.raises(ValueError, match="resume=True"):
        run_search(get_strategy("evolution", space, seed=3, population_size=5), ev, budget=20, journal=journal)
    with pytest.raises(ValueError, match="seed=3"):
        run_search(get_strategy("evolution", space, seed=4, population_size=5), ev, budget=20, journal=journal,
                   resume=True)
    resumed = run_search(get_strategy("evolution", space, seed=3, population_size=5), ev, budget=20,
                         journal=journal, resume=True)
    assert resumed.resumed == 8
    assert [r.arch for r in resumed.records] == [r.arch for r in full.records]


KILLED_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from nas.evaluators import TabularEvaluator
    from nas.search import run_search
    from nas.strategies import get_strategy
    from nas.tabular import TableSpace, load_table

    csv, journal, log, resume = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    table = load_table(csv, "arch", ["val_accuracy", "latency_ms", "params"])

    class SlowEvaluator(TabularEvaluator):
        def evaluate(self, arch, fidelity=None):
            with open(log, "a") as f:  # every evaluation that *starts* is logged
                f.write(arch.string + "\\n")
            time.sleep(0.15)
            return super().evaluate(arch, fidelity)

    strategy = get_strategy("predictor", TableSpace(table.archs), seed=5, n_init=3,
                            predictor="mlp", predictor_kwargs={"steps": 40})
    run_search(strategy, SlowEvaluator(table), budget=16, journal=journal, resume=resume)
    """
)


@pytest.mark.slow  # three search processes, one killed mid-way (~40 s)
def test_resume_after_sigkill_loses_and_repeats_nothing(tmp_path):
    csv = write_toy_csv(tmp_path / "toy.csv")
    script = tmp_path / "search_script.py"
    script.write_text(KILLED_SCRIPT)
    journal, log = tmp_path / "journal.jsonl", tmp_path / "evaluations.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(csv), str(journal), str(log), "0"], env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if journal.exists() and len(Journal(journal).read()[1]) >= 6:
            break
        assert proc.poll() is None, "the search ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    finished_before = [e["arch"] for e in Journal(journal).read()[1]]
    assert 6 <= len(finished_before) < 16

    subprocess.run([sys.executable, str(script), str(csv), str(journal), str(log), "1"], env=env, check=True,
                   timeout=180)
    entries = Journal(journal).read()[1]
    archs = [e["arch"] for e in entries]
    assert len(archs) == 16 and len(set(archs)) == 16  # nothing lost, nothing twice
    assert archs[: len(finished_before)] == finished_before
    started = log.read_text().split()
    assert all(started.count(a) == 1 for a in finished_before), "a journaled evaluation was run again"

    # and the resumed search is the one an uninterrupted run makes
    fresh_journal, fresh_log = tmp_path / "fresh.jsonl", tmp_path / "fresh.log"
    subprocess.run([sys.executable, str(script), str(csv), str(fresh_journal), str(fresh_log), "0"], env=env,
                   check=True, timeout=180)
    assert [e["arch"] for e in Journal(fresh_journal).read()[1]] == archs


def test_parallel_workers_and_budgets(toy):
    table, space = toy

    class Sleepy(TabularEvaluator):
        def evaluate(self, arch, fidelity=None):
            time.sleep(0.05)
            return super().evaluate(arch, fidelity)

    result = run_search(get_strategy("random", space, seed=0), Sleepy(table), budget=12, workers=3)
    assert len(result.records) == 12 and len({r.arch for r in result.records}) == 12
    assert result.stopped_by == "budget"
    timed = run_search(get_strategy("random", space, seed=0), Sleepy(table), time_budget_s=0.3)
    assert timed.stopped_by == "time" and 1 <= len(timed.records) < 64
    exhausted = run_search(get_strategy("random", space, seed=0), TabularEvaluator(table), budget=100)
    assert len(exhausted.records) == 64 and exhausted.stopped_by == "exhausted"
    with pytest.raises(ValueError, match="budget"):
        run_search(get_strategy("random", space), TabularEvaluator(table))


def test_predictor_tau_is_reported_on_the_unevaluated_pool(toy):
    table, space = toy
    ev = TabularEvaluator(table)
    pool = list(space.enumerate())
    strategy = get_strategy("predictor", space, seed=0, pool=pool, n_init=4, predictor="mlp",
                            predictor_kwargs={"steps": 60})
    result = run_search(strategy, ev, budget=20, pool_truth=ev.true_value, tau_pool=pool, tau_every=5)
    assert result.tau, "no Kendall tau reported"
    last = result.tau[-1]
    assert last["evaluations"] == 20 and -1 <= last["tau_pool"] <= 1
    assert last["tau_pool"] > 0.3  # the toy table is learnable


def test_successive_halving_and_hyperband(toy):
    table, space = toy
    table.fidelities["val_accuracy"] = {1: table.metrics["val_accuracy"] - 0.05, 9: table.metrics["val_accuracy"]}
    ev = TabularEvaluator(table)
    archs = [space.from_string(a) for a in table.archs[:27]]
    assert rung_epochs(1, 9, 3) == [1, 3, 9]
    sh = successive_halving(archs, ev, min_epochs=1, max_epochs=9, eta=3)
    assert [len(r.results) for r in sh.rungs] == [27, 9, 3]
    assert sh.epochs_spent == 27 * 1 + 9 * 3 + 3 * 9
    best_true = max(archs, key=ev.true_value)
    assert sh.best[0].string == best_true.string  # rank-preserving low fidelity keeps the winner
    strategy = get_strategy("random", space, seed=0)
    brackets = hyperband(strategy.ask, ev, min_epochs=1, max_epochs=9, eta=3, tell=strategy.tell)
    assert [len(b.rungs[0].results) for b in brackets] == [9, 5, 3]
    assert len(strategy.history) == sum(b.evaluations for b in brackets)
    with pytest.raises(ValueError, match="eta"):
        rung_epochs(1, 9, 1)


def test_result_round_trip():
    r = Result({"val_accuracy": 0.5}, cost=1.5, fidelity={"epochs": 3})
    assert Result.from_dict(json.loads(json.dumps(r.to_dict()))) == r


@pytest.mark.slow
def test_nasops_search_cli_runs_and_resumes(tmp_path):
    from support_cli import nasops  # in-process: the console script's own run(argv) and exit-code mapping

    home = tmp_path / "home"
    common = ["search", "--dataset", "digits", "--strategy", "evolution", "--epochs", "1", "--data-fraction", "0.3",
              "--pool-size", "8", "--prefilter-keep", "3", "--json"]
    first = nasops(*common, "--budget", "2", home=home)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout.strip().splitlines()[-1])
    assert out["evaluations"] == 2 and out["space"] == "nb201" and len(out["top"]) == 2
    again = nasops(*common, "--budget", "3", "--resume", out["run"], home=home)
    assert again.returncode == 0, again.stderr
    resumed = json.loads(again.stdout.strip().splitlines()[-1])
    assert resumed["evaluations"] == 3 and resumed["resumed"] == 2
    wrong = nasops(*common, "--budget", "3", "--seed", "1", "--resume", out["run"], home=home)
    assert wrong.returncode == 2 and "repeat the same options" in wrong.stderr


# -- failed trials, batching, schedulers on the loop ---------------------------------------------------------------
class Flaky(TabularEvaluator):
    """Raises for the architectures in ``bad`` (a crash of the evaluator, not a bad result)."""

    def __init__(self, table, bad, log=None):
        super().__init__(table)
        self.bad, self.log = set(bad), log if log is not None else []

    def evaluate(self, arch, fidelity=None):
        self.log.append(arch.string)
        if arch.string in self.bad:
            raise RuntimeError(f"out of memory on {arch.string}")
        return super().evaluate(arch, fidelity)


def test_an_evaluator_exception_is_a_failed_trial_and_the_search_goes_on(toy, tmp_path):
    table, space = toy
    order = [r.arch for r in run_search(get_strategy("random", space, seed=2), TabularEvaluator(table),
                                        budget=12).records]
    bad = {order[1], order[4]}
    journal = tmp_path / "j.jsonl"
    strategy = get_strategy("evolution", space, seed=2, population_size=5)
    result = run_search(strategy, Flaky(table, bad), budget=12, journal=journal)
    assert len(result.records) == 12 and result.stopped_by == "budget"
    failed = result.failed
    assert {r.arch for r in failed} == bad  # evolution's first 5 are random: the same draws as random search
    assert all(r.state == "fail" and "out of memory" in r.error and r.score == -np.inf for r in failed)
    assert {f.arch.string for f in strategy.failed} == bad
    assert not any(o.arch.string in bad for o in strategy.history)  # no model learns from a made-up score
    assert result.best is not None and result.best.arch not in bad
    entries = Journal(journal).read()[1]
    assert [e["state"] for e in entries].count("fail") == 2
    assert next(e for e in entries if e["state"] == "fail")["error"].startswith("RuntimeError: out of memory")

    # resume replays failed trials as failed (not retried) and continues as an uninterrupted run would
    log: list[str] = []
    more = run_search(get_strategy("evolution", space, seed=2, population_size=5), Flaky(table, bad, log),
                      budget=20, journal=journal, resume=True)
    assert more.resumed == 12 and len(more.records) == 20 and not set(log) & bad
    fresh = run_search(get_strategy("evolution", space, seed=2, population_size=5), Flaky(table, bad), budget=20)
    assert [r.arch for r in more.records] == [r.arch for r in fresh.records]


def test_every_trial_failing_ends_the_budget_with_no_best(toy):
    table, space = toy
    result = run_search(get_strategy("random", space, seed=0), Flaky(table, table.archs), budget=5, workers=2)
    assert len(result.failed) == 5 and result.best is None


class AskLog:
    """Wraps a strategy's ask_trials to record how many trials the loop asked for each time."""

    def __init__(self, strategy):
        self.sizes: list[int] = []
        inner = strategy.ask_trials

        def ask_trials(n=1):
            self.sizes.append(n)
            return inner(n)

        strategy.ask_trials = ask_trials


def test_the_loop_asks_for_as_many_trials_as_it_has_free_slots(toy):
    table, space = toy

    class Sleepy(TabularEvaluator):
        def evaluate(self, arch, fidelity=None):
            time.sleep(0.02)
            return super().evaluate(arch, fidelity)

    strategy = get_strategy("random", space, seed=0)
    log = AskLog(strategy)
    result = run_search(strategy, Sleepy(table), budget=10, workers=4)
    assert len(result.records) == 10
    assert log.sizes[0] == 4  # every slot free at the start
    assert all(1 <= n <= 4 for n in log.sizes) and sum(log.sizes) >= 10

    serial = get_strategy("random", space, seed=0)
    log = AskLog(serial)
    run_search(serial, TabularEvaluator(table), budget=10, batch=4)
    assert log.sizes == [4, 4, 2]  # serial batches, the last one cut to the budget


def test_batched_serial_search_resumes_identically(toy, tmp_path):
    table, space = toy
    kw = {"n_init": 4, "predictor": "mlp", "predictor_kwargs": {"steps": 40}}
    full = run_search(get_strategy("predictor", space, seed=1, **kw), TabularEvaluator(table), budget=14, batch=3)
    journal = tmp_path / "j.jsonl"
    run_search(get_strategy("predictor", space, seed=1, **kw), TabularEvaluator(table), budget=7, batch=3,
               journal=journal)  # stops inside the third batch
    with pytest.raises(ValueError, match="batch=3"):
        run_search(get_strategy("predictor", space, seed=1, **kw), TabularEvaluator(table), budget=14, batch=2,
                   journal=journal, resume=True)
    resumed = run_search(get_strategy("predictor", space, seed=1, **kw), TabularEvaluator(table), budget=14, batch=3,
                         journal=journal, resume=True)
    assert resumed.resumed == 7
    assert [r.arch for r in resumed.records] == [r.arch for r in full.records]


def test_hyperband_runs_on_the_loop_with_journal_failures_and_resume(toy, tmp_path):
    table, space = toy
    table.fidelities["val_accuracy"] = {1: table.metrics["val_accuracy"] - 0.05, 3: table.metrics["val_accuracy"]
                                        - 0.02, 9: table.metrics["val_accuracy"]}

    def make():
        return get_strategy("hyperband", space, seed=4, min_epochs=1, max_epochs=9, eta=3)

    full = run_search(make(), TabularEvaluator(table), budget=40)
    requested = [r.requested["epochs"] for r in full.records]
    assert requested[:9] == [1] * 9 and requested[9:12] == [3] * 3 and requested[12] == 9  # bracket s=2
    assert requested[13:18] == [3] * 5  # bracket s=1 starts 5 at 3 epochs
    assert [r.result.fidelity["epochs"] for r in full.records[:13]] == requested[:13]
    first = [r for r in full.records[:9]]
    promoted = {r.arch for r in full.records[9:12]}
    assert promoted == {r.arch for r in sorted(first, key=lambda r: -r.score)[:3]}  # the top third goes on

    journal = tmp_path / "hb.jsonl"
    run_search(make(), TabularEvaluator(table), budget=11, journal=journal)  # killed mid-rung
    resumed = run_search(make(), TabularEvaluator(table), budget=40, journal=journal, resume=True)
    assert [(r.arch, r.requested) for r in resumed.records] == [(r.arch, r.requested) for r in full.records]

    # a failed trial scores -inf in its rung and is not promoted
    bad = {full.records[int(np.argmax([r.score for r in first]))].arch}
    failing = run_search(make(), Flaky(table, bad), budget=13)
    assert failing.records[next(i for i, r in enumerate(failing.records) if r.arch in bad)].state == "fail"
    assert not bad & {r.arch for r in failing.records[9:12]}


def test_successive_halving_in_parallel_waits_for_each_rung(toy):
    table, space = toy
    table.fidelities["val_accuracy"] = {1: table.metrics["val_accuracy"] - 0.05, 9: table.metrics["val_accuracy"]}
    from nas.fidelity import SuccessiveHalving

    sched = SuccessiveHalving(space, n=9, seed=0, min_epochs=1, max_epochs=9, eta=3)
    result = run_search(sched, TabularEvaluator(table), budget=100, workers=4)
    assert result.stopped_by == "exhausted"
    assert [r.requested["epochs"] for r in result.records] == [1] * 9 + [3] * 3 + [9]
    rungs = sched.summaries()[0].rungs
    assert [len(r.results) for r in rungs] == [9, 3, 1]
