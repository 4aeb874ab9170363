"""The rollout control plane reads every model fact from the registry, never from a training file, and imports no
PyTorch (in-process, on a real SQLite MLflow store and a real SQLite prediction log; versions are registered without
trained weights: the controller never loads a model).

Before: a rollout re-derived its model's task, class mix, target values and drift reference from the prepared
``.npz`` at ``data_path`` in every step, and fell back to "classification" without a word when the file was gone,
so a regression challenger was judged on accuracy with no drift reference; and importing the controller's entry
module imported PyTorch (through ``pipelines.registry -> nas.export``).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import numpy as np
import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient

from monitoring.prediction_log import predictions
from monitoring.rollout_store import RolloutStore
from nas.data import TaskData
from pipelines.canary.reference import register_drift_reference
from pipelines.control.config import load_canary_config
from pipelines.control.controller import reconcile, start_rollout

MODEL = "ctl-model"
CFG = {"steps": [1.0], "interval_s": 5.0, "label_wait_s": 0.0, "min_label_coverage": 0.5, "max_intervals": 1,
       "judge": {"method": "fixed_horizon"}}


@pytest.fixture
def tracking(nasops_home):
    """The embedded SQLite MLflow store of a fresh state dir, configured as a command would."""
    import mlflow

    from pipelines.tracking import configure_mlflow

    configure_mlflow()
    yield MlflowClient(mlflow.get_tracking_uri())
    mlflow.set_tracking_uri("")  # the next test configures its own


def _regression_data(rng: np.random.Generator) -> TaskData:
    x = rng.normal(size=(300, 2)).astype(np.float32)
    y = (3.0 + 2.0 * x[:, 0]).astype(np.float32)
    return TaskData(x_train=x, y_train=y, x_val=x[:20], y_val=y[:20], input_shape=(2,), num_classes=1,
                    meta={"task": "regression", "feature_names": ["f0", "f1"]})


def _register(client: MlflowClient, tags: dict[str, str], data: TaskData | None) -> str:
    """A version registered in its own training run, with the task tag (and the drift reference registration
    logs there, when ``data`` is given), as ``pipelines.retrain`` registers one."""
    import mlflow

    with mlflow.start_run() as run:
        mv = client.create_model_version(MODEL, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                         tags={f"nasops.{k}": v for k, v in tags.items()})
        if data is not None:
            register_drift_reference(data, MODEL, str(mv.version), client)
    return str(mv.version)


def _versions(client: MlflowClient, tags: dict[str, str], data: TaskData | None) -> None:
    client.create_registered_model(MODEL)
    champion, challenger = _register(client, tags, data), _register(client, tags, data)
    client.set_registered_model_alias(MODEL, "champion", champion)
    client.set_registered_model_alias(MODEL, "challenger", challenger)


def _log_regression(store: RolloutStore, t0: float, n: int, rng: np.random.Generator) -> None:
    """``n`` labelled regression rows per variant (a prediction and a numeric label, inputs of two features)."""
    rows = []
    for v, variant in enumerate(("champion", "challenger")):
        for i in range(n):
            x = rng.normal(size=2)
            label = 3.0 + 2.0 * x[0]
            rows.append({"request_id": f"{variant}-{i}", "row": 0, "ts": t0 + i * 0.01, "variant": variant,
                         "shadow": False, "model_version": str(v + 1), "inputs": json.dumps(x.tolist()),
                         "prediction": json.dumps(label + rng.normal(scale=0.3)), "probabilities": None,
                         "latency_ms": 2.0 + rng.random(), "compute_ms": 0.2 + rng.random() / 10, "status": "ok",
                         "label": json.dumps(label), "correct": False, "label_ts": t0 + 1})
    with store.engine.begin() as conn:
        conn.execute(sa.insert(predictions), rows)


@pytest.mark.slow  # the heaviest of the fast layer (keeps `make test-fast` under its 90 s)
def test_a_regression_rollout_without_its_training_file_is_judged_on_rmse_with_its_drift_reference(
        tracking, nasops_home):
    rng = np.random.default_rng(0)
    _versions(tracking, {"task": "regression", "input_form": "tensor"}, _regression_data(rng))
    store = RolloutStore(f"sqlite:///{nasops_home / 'predictions.db'}")
    gone = nasops_home / "data" / "cleaned-up.npz"  # another host, a cleaned state dir: the file is not there
    rollout = start_rollout(store, MODEL, load_canary_config(CFG), data_path=str(gone), client=tracking)
    stored = store.get(rollout.rollout_id).model_ref
    assert stored["challenger"]["task"] == "regression" and stored["reference_source"] == "artifact"
    assert len(stored["reference"]["target_values"]) == 300 and stored["reference"]["columns"] == ["f0", "f1"]

    _log_regression(store, rollout.created_at, 80, rng)
    report = reconcile(store, rollout.rollout_id, now=rollout.created_at + 6.0, client=tracking)
    assert report.action == "decided", report
    step = store.get(rollout.rollout_id).history[0]
    judged = {row["name"] for row in step["evidence"]}
    assert "online_rmse" in judged and "online_accuracy" not in judged, judged
    assert step["drift"]["challenger"] is not None  # input drift against the stored training rows
    result = report.result
    assert result.task == "regression" and result.drift.target_drift is not None
    assert not gone.exists()


def test_a_rollout_without_any_drift_reference_says_so_in_a_warning_and_in_the_evidence(
        tracking, nasops_home, caplog):
    _versions(tracking, {"task": "classification"}, None)  # registered before references were logged
    store = RolloutStore(f"sqlite:///{nasops_home / 'predictions.db'}")
    cfg = load_canary_config({**CFG, "max_intervals": None, "steps": [0.5, 1.0]})
    with caplog.at_level(logging.WARNING, logger="nasops.canary"):
        rollout = start_rollout(store, MODEL, cfg, client=tracking)
    assert any("without a drift reference" in r.getMessage() for r in caplog.records)
    stored = store.get(rollout.rollout_id).model_ref
    assert stored["reference"] is None and "no drift reference" in stored["note"]
    report = reconcile(store, rollout.rollout_id, now=rollout.created_at + 6.0, client=tracking)
    assert report.action == "judged"
    drift = store.get(rollout.rollout_id).history[0]["drift"]
    assert drift["challenger"] is None and "no drift reference" in drift["note"]


def test_a_controller_without_a_prefect_server_reconciles_in_its_own_process(tracking, nasops_home, monkeypatch):
    """Adversarial round 3, finding 5: without a Prefect server the controller never judged (silently, for minutes,
    with the challenger on its share) and killing it left a temporary Prefect server listening. Now it reconciles
    in its own process, says so, and returns once the rollout is decided and applied."""
    from pipelines.control.deployment import serve_controller

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    _versions(tracking, {"task": "classification"}, None)
    log_url = f"sqlite:///{nasops_home / 'predictions.db'}"
    store = RolloutStore(log_url)
    rollout = start_rollout(store, MODEL, load_canary_config({**CFG, "interval_s": 0.3}), client=tracking)
    said: list[str] = []
    started = time.monotonic()
    serve_controller(store, rollout.rollout_id, prediction_log_url=log_url, tracking_uri=tracking.tracking_uri,
                     poll_s=0.1, announce=said.append)
    final = store.get(rollout.rollout_id)
    assert final.terminal and final.applied and final.intervals == 1, final
    assert time.monotonic() - started < 60
    assert len(said) == 1 and "in this process" in said[0]


def test_a_controller_refuses_a_prefect_server_that_does_not_answer(tracking, nasops_home, monkeypatch):
    from pipelines.control.deployment import serve_controller
    from pipelines.errors import UserError

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # the discard port: nothing listens
    _versions(tracking, {"task": "classification"}, None)
    log_url = f"sqlite:///{nasops_home / 'predictions.db'}"
    store = RolloutStore(log_url)
    rollout = start_rollout(store, MODEL, load_canary_config(CFG), client=tracking)
    with pytest.raises(UserError, match="does not answer") as refused:
        serve_controller(store, rollout.rollout_id, prediction_log_url=log_url, tracking_uri=tracking.tracking_uri)
    assert "\n" not in str(refused.value) and store.get(rollout.rollout_id).intervals == 0


def test_a_controller_whose_clock_runs_ahead_neither_acts_nor_freezes_the_rollout(tracking, nasops_home, monkeypatch):
    """Adversarial round 3, finding 6: a controller an hour ahead wrote future timestamps, and a correct controller
    afterwards waited an hour. Timestamps now come from the database's clock; a host beyond the bound refuses."""
    import types

    from pipelines.control import controller
    from pipelines.errors import UserError

    _versions(tracking, {"task": "classification"}, None)
    store = RolloutStore(f"sqlite:///{nasops_home / 'predictions.db'}")
    rollout = start_rollout(store, MODEL, load_canary_config({**CFG, "max_intervals": None, "steps": [0.5, 1.0]}),
                            client=tracking)
    real = time.time

    def host_clock(offset: float) -> None:
        monkeypatch.setattr(controller, "time", types.SimpleNamespace(time=lambda: real() + offset))

    host_clock(3600.0)
    with pytest.raises(UserError, match="3600 s ahead of the rollout database") as refused:
        reconcile(store, rollout.rollout_id, client=tracking, force=True)
    assert "\n" not in str(refused.value)
    assert store.get(rollout.rollout_id).generation == rollout.generation  # nothing written
    host_clock(5.0)  # within the bound: acts, with the database's time
    reconcile(store, rollout.rollout_id, client=tracking, force=True)
    judged = store.get(rollout.rollout_id)
    assert judged.intervals == 1 and judged.last_judged_at < real() + 1.0
    host_clock(0.0)  # a correct controller is not frozen: its next interval is due within interval_s
    assert reconcile(store, rollout.rollout_id, client=tracking).next_due_s <= CFG["interval_s"]


def test_a_promotion_never_replaces_a_champion_the_rollout_did_not_judge_against(tracking, nasops_home):
    """Finding 2: a rollout's decision moves `champion` only while it still points at the version the rollout
    compared its challenger with; otherwise the decision is applied as a recorded refusal (never retried)."""
    from pipelines.control.commands import promote_now

    _versions(tracking, {"task": "classification"}, None)  # champion v1, challenger v2
    store = RolloutStore(f"sqlite:///{nasops_home / 'predictions.db'}")
    rollout = start_rollout(store, MODEL, load_canary_config(CFG), client=tracking)
    other = _register(tracking, {"task": "classification"}, None)  # another refresh promoted v3 meanwhile
    tracking.set_registered_model_alias(MODEL, "champion", other)
    ended = promote_now(store, MODEL, client=tracking)
    assert ended.applied and ended.rollout_id == rollout.rollout_id
    assert str(tracking.get_model_version_by_alias(MODEL, "champion").version) == other  # untouched
    applied = next(e for e in store.events(rollout.rollout_id) if e["kind"] == "applied")
    assert any("not v1 that the rollout compared v2 with" in w for w in applied["detail"]["warnings"])


COLOURS = ("red", "green", "blue")


def _table_data(rng: np.random.Generator) -> TaskData:
    """A raw-table classifier's prepared data as ``pipelines.data.prepare`` saves it: encoded arrays, and beside
    them a raw sample of the training rows (a text and a numeric column)."""
    raw = [[COLOURS[i % 3], float(rng.normal())] for i in range(400)]
    x = rng.normal(size=(400, 4)).astype(np.float32)  # the encoded features: never compared with served rows
    y = np.array([int(colour == "red") for colour, _ in raw])
    schema = [{"name": "colour", "type": "string", "optional": False},
              {"name": "size", "type": "double", "optional": False}]
    return TaskData(x_train=x, y_train=y, x_val=x[:20], y_val=y[:20], input_shape=(4,), num_classes=2,
                    meta={"classes": ["no", "yes"], "input_form": "table", "input_schema": schema,
                          "raw_reference": {"columns": ["colour", "size"], "rows": raw}})


def _log_table(store: RolloutStore, t0: float, n: int, rng: np.random.Generator, shift: float = 0.0) -> None:
    """``n`` labelled rows per variant as the gateway logs a table model's: one named raw row per input."""
    rows = []
    for v, variant in enumerate(("champion", "challenger")):
        for i in range(n):
            inputs = {"colour": COLOURS[i % 3], "size": float(rng.normal(loc=shift))}  # the same colour mix
            label = "yes" if inputs["colour"] == "red" else "no"
            rows.append({"request_id": f"{variant}-{t0}-{i}", "row": 0, "ts": t0 + i * 0.01, "variant": variant,
                         "shadow": False, "model_version": str(v + 1), "inputs": json.dumps(inputs),
                         "prediction": json.dumps(label), "probabilities": None, "latency_ms": 2.0 + rng.random(),
                         "compute_ms": 0.2 + rng.random() / 10, "status": "ok", "label": json.dumps(label),
                         "correct": True, "label_ts": t0 + 1})
    with store.engine.begin() as conn:
        conn.execute(sa.insert(predictions), rows)


@pytest.mark.slow  # among the heaviest of the fast layer (`make test-fast` stays under 90 s)
def test_a_table_models_raw_inputs_get_an_input_drift_share_each_interval_and_a_shift_is_drift(
        tracking, nasops_home):
    """Before: a table model's reference held no rows (its training rows were kept only encoded, and the control
    plane reads no file nor transformer), so every interval's input drift said "not available"."""
    rng = np.random.default_rng(0)
    _versions(tracking, {"task": "classification", "input_form": "table"}, _table_data(rng))
    store = RolloutStore(f"sqlite:///{nasops_home / 'predictions.db'}")
    cfg = load_canary_config({**CFG, "max_intervals": None, "steps": [0.5, 1.0]})
    rollout = start_rollout(store, MODEL, cfg, client=tracking)  # no --data: the registered artifact
    stored = store.get(rollout.rollout_id).model_ref
    assert stored["reference_source"] == "artifact" and stored["reference"]["input_form"] == "table"
    assert stored["reference"]["columns"] == ["colour", "size"] and len(stored["reference"]["rows"]) == 400

    t0 = rollout.created_at
    _log_table(store, t0, 80, rng)  # the first interval: traffic like the training rows
    assert reconcile(store, rollout.rollout_id, now=t0 + 6.0, client=tracking).action == "judged"
    _log_table(store, t0 + 6.5, 80, rng, shift=3.0)  # the second: the numeric column moved
    final = reconcile(store, rollout.rollout_id, now=t0 + 12.0, client=tracking)
    calm, shifted = (step["drift"] for step in store.get(rollout.rollout_id).history)
    assert calm["challenger"] == 0.0 and calm["champion"] == 0.0 and "note" not in calm, calm
    assert shifted["challenger"] == 0.5 and shifted["champion"] == 0.5, shifted  # size drifted, colour did not
    assert final.action == "decided"  # and the end-of-canary report compares the raw columns too
    assert (final.result.drift.features, final.result.drift.drifted_features) == (2, 1)


def test_a_judged_rollout_is_refused_while_a_manual_split_is_active(tracking, nasops_home):
    from monitoring.rollout_store import MANUAL_CONFIG
    from pipelines.errors import UserError

    _versions(tracking, {"task": "classification"}, None)
    store = RolloutStore(f"sqlite:///{nasops_home / 'predictions.db'}")
    store.create(model_name=MODEL, champion_version="1", challenger_version="2", mode="split", weight=0.3,
                 config=dict(MANUAL_CONFIG))  # what the gateway writes for POST /admin/weight
    with pytest.raises(UserError, match="manual split") as refused:
        start_rollout(store, MODEL, load_canary_config(CFG), client=tracking)
    assert "`/admin/weight 0` or `nasops canary abort`" in str(refused.value)


CONTROL_MODULES = ["pipelines.control.deployment", "pipelines.control.commands", "pipelines.control.handover",
                   "pipelines.control.controller", "pipelines.cli.rollout"]


def test_the_control_plane_imports_neither_torch_nor_nas():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in CONTROL_MODULES)
            + "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'nas', 'sklearn'}))\n"
            + "print(sorted(m for m in sys.modules if m.startswith('pipelines.canary')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    heavy, canary = proc.stdout.strip().splitlines()
    assert heavy == "[]", f"the control plane imported {heavy}"
    assert canary == "[]", f"the control plane imported the training side: {canary}"


def test_a_stored_reference_is_bounded_in_rows_and_in_values():
    from monitoring.core.model_ref import DriftReference
    from pipelines.control.reference import MAX_CELLS, bounded

    wide = DriftReference(rows=np.zeros((3000, 784)).tolist(), columns=[f"f{i}" for i in range(784)],
                          target_values=list(range(300)))
    small = bounded(wide, rows=1000)
    assert len(small.rows) * 784 <= MAX_CELLS and len(small.rows) >= 50
    assert small.target_values == list(range(300))
    assert len(bounded(DriftReference(target_values=list(range(5000)))).target_values) == 2000


def test_a_classifiers_reference_is_its_training_class_mix_and_rows():
    from pipelines.canary.reference import drift_reference

    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.array([0] * 15 + [1] * 5)
    data = TaskData(x_train=x, y_train=y, x_val=x[:2], y_val=y[:2], input_shape=(2,), num_classes=2,
                    meta={"classes": ["cat", "dog"], "feature_names": ["a", "b"]})
    ref = drift_reference(data)
    assert ref.class_mix == {"cat": 15.0, "dog": 5.0} and ref.target_values is None
    assert ref.columns == ["a", "b"] and ref.rows[1] == [2.0, 3.0] and len(ref.rows) == 20


@pytest.mark.slow
def test_a_work_pool_controller_runs_one_reconcile_at_a_time_and_pauses_itself_once_decided(
        tracking, nasops_home, prefect_server):
    """Issue 25, finding 4: the work-pool deployment had no concurrency limit (3-4 reconcile processes at once,
    compare-and-set conflicts) and kept its schedule after the decision (a new process every interval until paused
    by hand). Now it allows one run at a time (a colliding one is cancelled) and the run that finds the rollout
    decided and applied pauses the deployment, which deletes its scheduled runs. Real Prefect server; the flow runs
    created from the deployment run in this process (what a worker would start)."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy
    from prefect.flow_engine import run_flow

    from pipelines.control.deployment import canary_reconcile
    from pipelines.control.handover import deploy_to_pool

    _versions(tracking, {"task": "classification"}, None)
    log_url = f"sqlite:///{nasops_home / 'predictions.db'}"
    store = RolloutStore(log_url)
    rollout = start_rollout(store, MODEL, load_canary_config({**CFG, "interval_s": 300.0}), client=tracking)
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="ctl-pool", type="process"), overwrite=True)
        deployment_id = deploy_to_pool(rollout.rollout_id, MODEL, 300.0, "ctl-pool", prediction_log_url=log_url,
                                       tracking_uri=tracking.tracking_uri)
        deployment = client.read_deployment(deployment_id)
        assert deployment.global_concurrency_limit.limit == 1 and not deployment.paused
        assert deployment.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW

        def one_run() -> dict:
            run = client.create_flow_run_from_deployment(deployment_id)
            return run_flow(canary_reconcile, flow_run=run, parameters=run.parameters)

        assert one_run()["action"] == "waiting"  # undecided: the schedule stays
        assert not client.read_deployment(deployment_id).paused
        reconcile(store, rollout.rollout_id, force=True, client=tracking)  # judged and decided (one interval)
        if not store.get(rollout.rollout_id).applied:
            reconcile(store, rollout.rollout_id, client=tracking)
        assert one_run()["action"] == "done"
        assert client.read_deployment(deployment_id).paused  # the decided rollout's runs stop themselves
