"""The rollout record and one reconcile step, on a real SQLite prediction-log database (no server, no registry).

A controller killed and restarted must neither repeat nor skip a step: each judged interval is one committed
compare-and-set; a write from a stale read is refused; two rollouts of one model cannot be active at once.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import sqlalchemy as sa

from monitoring.core.enums import Mode
from monitoring.prediction_log import predictions
from monitoring.rollout_store import RolloutConflict, RolloutStore, StaleRollout
from monitoring.sources import PredictionLogSource
from pipelines.control.commands import abort, pause, promote_now, resume
from pipelines.control.config import load_canary_config
from pipelines.control.controller import reconcile
from pipelines.errors import UserError

CFG = {"steps": [0.5, 1.0], "interval_s": 5.0, "label_wait_s": 2.0, "min_label_coverage": 0.5,
       "judge": {"method": "fixed_horizon"}}


@pytest.fixture
def store(tmp_path):
    return RolloutStore(f"sqlite:///{tmp_path / 'predictions.db'}")


@pytest.fixture(scope="module")
def postgres():
    from servers import start_postgres

    with start_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def db_url(request, tmp_path) -> str:
    """An empty prediction-log database: a SQLite file, or a fresh database on a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'predictions.db'}"
    return request.getfixturevalue("postgres").create_database(request.node.name.lower()[5:40].replace("[", "_")
                                                               .replace("]", "").replace("-", "_"))


def _create(store, now=1000.0):
    cfg = load_canary_config(CFG)
    return store.create(model_name="m", champion_version="1", challenger_version="2", mode="split", weight=0.5,
                        config=cfg.model_dump(mode="json"), now=now)


def _log(store, t0, n, *, labelled=True, accuracy=(0.9, 0.9), seed=0):
    """``n`` answered rows per variant from ``t0`` on (one per 10 ms), labelled with the given accuracy."""
    rng = np.random.default_rng(seed)
    rows = []
    for v, variant in enumerate(("champion", "challenger")):
        for i in range(n):
            correct = bool(rng.random() < accuracy[v]) if labelled else None
            rows.append({"request_id": f"{variant}-{i}", "row": 0, "ts": t0 + i * 0.01, "variant": variant,
                         "shadow": False, "model_version": str(v + 1), "inputs": "[0]", "prediction": "1",
                         "probabilities": "[0.1,0.9]", "latency_ms": 2.0 + rng.random(), "status": "ok",
                         "label": "1" if labelled else None, "correct": correct,
                         "label_ts": t0 + 1 if labelled else None})
    with store.engine.begin() as conn:
        conn.execute(sa.insert(predictions), rows)


def test_a_second_active_rollout_of_the_same_model_is_refused(store):
    _create(store)
    with pytest.raises(RolloutConflict, match="still split"):
        _create(store)


def _race(n: int, work) -> tuple[list, list[BaseException]]:
    """``work(i)`` on ``n`` threads released together by a barrier: (results, errors)."""
    results, errors, barrier = [], [], threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results.append(work(i))
        except BaseException as exc:  # reported to the test below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results, errors


def test_concurrent_starts_of_one_model_create_exactly_one_rollout(db_url):
    """Four controllers (each its own engine, as separate processes would be) start a rollout of one model at the
    same moment: the database lets exactly one in, the others get RolloutConflict (the check-then-insert alone let
    2-4 in)."""
    stores = [RolloutStore(db_url) for _ in range(4)]
    for trial in range(5):
        name = f"m{trial}"
        created, errors = _race(4, lambda i, name=name: stores[i].create(
            model_name=name, champion_version="1", challenger_version=str(i + 2), mode="split", weight=0.05,
            config={}))
        assert len(created) == 1 and len(errors) == 3, (created, errors)
        assert all(isinstance(e, RolloutConflict) for e in errors), errors
        assert [r.rollout_id for r in stores[0].recent(name)] == [created[0].rollout_id]
    for s in stores:
        s.engine.dispose()


def test_only_the_active_phases_are_unique_per_model(db_url):
    """Ending a rollout frees the model; a decided rollout cannot be put back in an active phase beside another."""
    store = RolloutStore(db_url)
    first = store.create(model_name="m", champion_version="1", challenger_version="2", mode="split", weight=0.5,
                         config={}, now=1000.0)
    ended = store.update(first, {"phase": "rolled_back", "decision": "rolled_back", "weight": 0.0}, kind="abort",
                         actor="operator")
    second = store.create(model_name="m", champion_version="1", challenger_version="3", mode="shadow", weight=0.0,
                          config={}, now=1001.0)
    second = store.update(second, {"phase": "paused", "paused_phase": "shadow"}, kind="pause", actor="operator")
    with pytest.raises(RolloutConflict, match="m"):
        store.update(ended, {"phase": "split"}, kind="revive", actor="operator")
    assert store.get(first.rollout_id).phase == "rolled_back"
    assert [e["kind"] for e in store.events(first.rollout_id)] == ["start", "abort"]  # nothing of the refused write
    store.update(second, {"phase": "promoted", "decision": "promoted"}, kind="promote", actor="operator")
    assert store.active("m") is None
    store.engine.dispose()


def test_a_write_from_a_stale_read_is_refused(store):
    rollout = _create(store)
    store.update(rollout, {"weight": 1.0}, kind="test", actor="a")
    with pytest.raises(StaleRollout):
        store.update(rollout, {"weight": 0.0}, kind="test", actor="b")  # read before the first write
    assert store.get(rollout.rollout_id).weight == 1.0
    assert [e["kind"] for e in store.events(rollout.rollout_id)] == ["start", "test"]


def test_an_interval_is_judged_once_however_often_the_controller_runs(store):
    rollout = _create(store, now=1000.0)
    _log(store, 1000.0, 80)
    assert reconcile(store, rollout.rollout_id, now=1003.0).action == "waiting"  # the interval is not over
    first = reconcile(store, rollout.rollout_id, now=1005.5)
    assert first.action == "judged" and first.intervals == 1
    # a restarted controller (or an overlapping run) at the same moment: nothing to judge, nothing repeated
    again = reconcile(store, rollout.rollout_id, now=1006.0)
    assert again.action == "waiting" and again.intervals == 1
    record = store.get(rollout.rollout_id)
    assert [s["interval"] for s in record.history] == [1]
    assert [e["kind"] for e in store.events(rollout.rollout_id)] == ["start", "interval"]
    # the interval's drift rides with its verdict, where a gateway's routing read (no history) finds it
    assert store.latest_routing("m").last_verdict["drift"] == record.history[-1]["drift"]


def test_labels_count_only_for_requests_old_enough_and_low_coverage_is_nodata(store):
    now = time.time()
    _log(store, now - 1.0, 60, labelled=False)  # young and unlabelled: not yet "missing"
    _log(store, now - 10.0, 60, labelled=True, seed=1)
    source = PredictionLogSource(store.engine, label_wait_s=2.0, min_label_coverage=0.5)
    cfg = load_canary_config(CFG).judge
    accuracy = [m for m in cfg.metrics if m.measure == "correct"]
    samples = source.collect(accuracy, now - 20, now)
    assert len(samples["online_accuracy"][0]) == 60  # only the labelled rows old enough
    assert source.coverage["champion"]["eligible"] == 60 and source.coverage["champion"]["coverage"] == 1.0
    strict = PredictionLogSource(store.engine, label_wait_s=0.0, min_label_coverage=0.6)
    assert len(strict.collect(accuracy, now - 20, now)["online_accuracy"][0]) == 0  # 50% < 60% -> no sample


def test_pause_holds_the_step_and_resume_restarts_its_interval(store):
    rollout = _create(store, now=1000.0)
    _log(store, 1000.0, 80)
    paused = pause(store, "m")
    assert paused.phase == "paused" and paused.weight == 0.5  # the split stays as it was
    assert reconcile(store, rollout.rollout_id, now=1100.0).action == "paused"
    resumed = resume(store, "m")
    assert resumed.phase == "split" and resumed.last_judged_at > 1000.0
    kinds = [e["kind"] for e in store.events(rollout.rollout_id)]
    assert kinds == ["start", "pause", "resume"]


@pytest.mark.parametrize("command", [["status"], ["abort"], ["pause"], ["controller"]])
def test_operator_commands_with_a_malformed_rollout_store_say_so_in_one_line(command, tmp_path):
    from support_cli import nasops

    proc = nasops("canary", *command, "--prediction-log-url", "notaurl", home=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr and len(lines) == 1 and "notaurl" in lines[0], proc.stderr


# -- a gateway follower's read ------------------------------------------------------------------------------------

def test_a_gateway_followers_read_carries_neither_the_drift_reference_nor_the_history(store):
    """Before: every worker re-read the whole record every second, a ~1 MB drift reference and the growing history
    included (``benchmarks/follower_read.py`` measures the difference)."""
    from serving.rollout_follower import RolloutFollower

    rollout = _create(store)
    drift = {"champion": 0.1, "challenger": 0.4, "prediction": 0.02}
    store.update(rollout, {"model_ref": {"blob": "x" * 1_000_000}, "history": [{"interval": 1, "drift": drift}],
                           "intervals": 1, "last_verdict": {"verdict": "pass", "drift": drift}},
                 kind="interval", actor="controller")
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda conn, cursor, sql, *_: statements.append(sql))
    seen = []
    RolloutFollower(store, "m", 1.0, lambda previous, current: seen.append(current)).poll_once()
    assert statements and not any("model_ref" in sql or "history" in sql for sql in statements), statements
    followed = seen[-1]
    assert (followed.model_ref, followed.history) == (None, [])
    assert (followed.generation, followed.mode, followed.weight, followed.config) == (2, "split", 0.5, rollout.config)
    assert followed.last_verdict["drift"] == drift  # what the gateway publishes as nasops_drift_share
    assert len(store.latest("m").model_ref["blob"]) == 1_000_000  # the full read still has everything


# -- manual rollouts (an operator's split from the gateway's admin API) ---------------------------------------------

def _manual(store, weight=0.25):
    """A manual rollout exactly as the gateway writes one for ``POST /admin/weight``."""
    from serving.manual_rollout import steer
    from serving.routing import NEUTRAL, Split

    return steer(store, "m", lambda split: Split(Mode.SPLIT, weight), NEUTRAL, ("1", "2"))


def test_the_controller_never_judges_a_manual_rollout_and_promote_is_refused(store):
    """Before: ``reconcile`` failed validating ``{"manual": true}`` as a canary config, and so did promote."""
    from serving.manual_rollout import is_manual

    manual = _manual(store)
    assert manual.manual and is_manual(manual)
    _log(store, manual.created_at, 80)
    report = reconcile(store, manual.rollout_id, now=manual.created_at + 100.0, force=True)
    assert report.action == "manual" and report.intervals == 0
    assert store.get(manual.rollout_id).generation == manual.generation  # nothing written
    with pytest.raises(UserError, match="/admin/weight") as refused:
        promote_now(store, "m")
    assert "\n" not in str(refused.value) and "nasops canary start" in str(refused.value)
    assert store.get(manual.rollout_id).phase == "split"


def test_abort_ends_a_manual_rollout_as_the_gateway_does_at_weight_zero(store, tmp_path):
    _manual(store)
    ended = abort(store, "m")
    by_gateway = RolloutStore(f"sqlite:///{tmp_path / 'other.db'}")
    _manual(by_gateway)
    gateway_end = _manual(by_gateway, 0.0)
    keys = ("phase", "decision", "decided_by", "mode", "weight", "applied")
    assert [getattr(ended, k) for k in keys] == [getattr(gateway_end, k) for k in keys]
    assert (ended.phase, ended.decided_by, ended.weight, ended.applied) == ("rolled_back", "operator", 0.0, True)
    assert store.active("m") is None
    assert [e["kind"] for e in store.events(ended.rollout_id)] == ["start", "abort"]
    assert reconcile(store, ended.rollout_id).action == "manual"


def _canary_cli(args, url):
    import typer
    from typer.testing import CliRunner

    from pipelines.cli import rollout

    app = typer.Typer()
    rollout.register(app)
    return CliRunner().invoke(app, [*args, "--model-name", "m", "--prediction-log-url", url])


def test_canary_controller_refuses_a_manual_rollout_and_status_shows_it_manual(store, nasops_home):
    url = str(store.engine.url)
    manual = _manual(store)
    served = _canary_cli(["controller"], url)
    assert isinstance(served.exception, UserError), served.output
    assert "manual split" in str(served.exception) and "\n" not in str(served.exception)
    shown = _canary_cli(["status"], url)
    assert shown.exit_code == 0 and "manual" in shown.output and manual.rollout_id in shown.output, shown.output
    as_json = _canary_cli(["status", "--json"], url)
    assert '"manual": true' in as_json.output


def test_the_store_clock_is_the_databases_and_stamps_what_is_written(db_url):
    """Rollout timestamps come from the database (finding 6 of adversarial round 3: a host clock ahead froze the
    rollout for everyone else)."""
    import time

    store = RolloutStore(db_url)
    assert abs(store.clock() - time.time()) < 5.0  # the same host here: the two clocks agree
    before = store.clock()
    rollout = store.create(model_name="m", champion_version="1", challenger_version="2", mode="split", weight=0.5,
                           config=load_canary_config(CFG).model_dump(mode="json"))
    assert before <= rollout.created_at <= store.clock()
