"""A rollout's decision is applied whatever its prediction log holds; one controller serves a rollout; read-only
commands create no state (in-process, on a real SQLite MLflow store and a real SQLite prediction log; versions are
registered without trained weights: the controller never loads a model).

Before: with the gateway's documented privacy mode ``log_inputs=hash`` (or rows of another width, inputs the
retention nulled, a model fault's raw rows among hashed ones) the end-of-canary drift summary raised on the first
row that was not a float row, so the record said ``promoted`` with ``applied: false``, the aliases never moved, and
the controller retried the failing apply every interval forever; a second ``nasops canary controller`` of the same
rollout died with a traceback; ``nasops status`` / ``canary status`` / ``db status`` created ``$NASOPS_HOME`` and its
SQLite stores.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient
from support_cli import nasops

from monitoring.prediction_log import predictions
from monitoring.rollout_store import RolloutStore
from nas.data import TaskData
from pipelines.canary.reference import register_drift_reference
from pipelines.control.config import load_canary_config
from pipelines.control.controller import reconcile, start_rollout

MODEL = "applied-model"
ONE_STEP = {"steps": [1.0], "interval_s": 5.0, "label_wait_s": 0.0, "min_label_coverage": 0.5, "max_intervals": 1,
            "judge": {"method": "fixed_horizon"}}
TWO_STEPS = {**ONE_STEP, "steps": [0.5, 1.0], "max_intervals": None}


@pytest.fixture
def tracking(nasops_home):
    """The embedded SQLite MLflow store of a fresh state dir, configured as a command would."""
    import mlflow

    from pipelines.tracking import configure_mlflow

    configure_mlflow()
    yield MlflowClient(mlflow.get_tracking_uri())
    mlflow.set_tracking_uri("")  # the next test configures its own


def _versions(client: MlflowClient) -> tuple[str, str]:
    """A champion and a challenger of a two-feature classifier, each with the drift reference registration logs."""
    import mlflow

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    data = TaskData(x_train=x, y_train=y, x_val=x[:20], y_val=y[:20], input_shape=(2,), num_classes=2,
                    meta={"classes": ["no", "yes"], "feature_names": ["f0", "f1"]})
    client.create_registered_model(MODEL)
    versions = []
    for _ in range(2):
        with mlflow.start_run() as run:
            mv = client.create_model_version(MODEL, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                             tags={"nasops.task": "classification"})
            register_drift_reference(data, MODEL, str(mv.version), client)
        versions.append(str(mv.version))
    client.set_registered_model_alias(MODEL, "champion", versions[0])
    client.set_registered_model_alias(MODEL, "challenger", versions[1])
    return versions[0], versions[1]


def _hashed(i: int) -> str:
    return f"sha256:{hashlib.sha256(str(i).encode()).hexdigest()}"


def _log(store: RolloutStore, t0: float, inputs: list) -> None:
    """One labelled, correct row per input for each variant, as the gateway logs them (``inputs`` as logged)."""
    rng = np.random.default_rng(1)
    rows = []
    for v, variant in enumerate(("champion", "challenger")):
        for i, x in enumerate(inputs):
            label = "yes" if i % 2 else "no"
            rows.append({"request_id": f"{variant}-{t0}-{i}", "row": 0, "ts": t0 + i * 0.01, "variant": variant,
                         "shadow": False, "model_version": str(v + 1), "inputs": json.dumps(x),
                         "prediction": json.dumps(label), "probabilities": None, "latency_ms": 2.0 + rng.random(),
                         "status": "ok", "label": json.dumps(label), "correct": True, "label_ts": t0 + 1})
    with store.engine.begin() as conn:
        conn.execute(sa.insert(predictions), rows)


def _floats(n: int, seed: int = 2) -> list[list[float]]:
    return np.random.default_rng(seed).normal(size=(n, 2)).round(4).tolist()


def _applied(store: RolloutStore, client: MlflowClient, rollout_id: str, challenger: str) -> dict:
    """The rollout is applied and its decision is in the registry; returns the ``applied`` event's detail."""
    rollout = store.get(rollout_id)
    assert rollout.terminal and rollout.applied, (rollout.phase, rollout.applied)
    mv = client.get_model_version(MODEL, challenger)
    assert mv.tags.get("nasops.decision") == rollout.decision
    if rollout.decision == "promoted":
        assert str(client.get_registered_model(MODEL).aliases["champion"]) == challenger
    else:
        assert "rejected" in mv.tags
    return [e for e in store.events(rollout_id) if e["kind"] == "applied"][-1]["detail"]


def test_a_rollout_whose_log_holds_hashed_inputs_is_decided_and_applied_with_a_drift_note(tracking, nasops_home):
    from pipelines.control.commands import promote_now

    champion, challenger = _versions(tracking)
    store = RolloutStore(f"sqlite:///{nasops_home / 'predictions.db'}")
    rollout = start_rollout(store, MODEL, load_canary_config(TWO_STEPS), client=tracking)
    _log(store, rollout.created_at, [_hashed(i) for i in range(80)])  # log_inputs=hash
    assert reconcile(store, rollout.rollout_id, now=rollout.created_at + 6.0, client=tracking).action == "judged"
    drift = store.get(rollout.rollout_id).history[0]["drift"]
    assert drift["challenger"] is None and "inputs logged as hashes" in drift["note"], drift

    promote_now(store, MODEL, client=tracking)  # applied in the command, as the controller would
    _applied(store, tracking, rollout.rollout_id, challenger)
    assert str(tracking.get_registered_model(MODEL).aliases["previous-champion"]) == champion
    result = json.loads(Path(tracking.download_artifacts(rollout.run_id, "canary/result.json")).read_text())
    assert "inputs logged as hashes" in result["drift"]["note"] and result["drift"]["share"] is None
    assert result["warnings"] == [], result["warnings"]


@pytest.mark.parametrize("named", [0, 5], ids=["lists", "with-named-rows"])
def test_mixed_rows_are_left_out_and_counted_and_the_decision_is_applied(tracking, nasops_home, named):
    _, challenger = _versions(tracking)
    store = RolloutStore(f"sqlite:///{nasops_home / 'predictions.db'}")
    rollout = start_rollout(store, MODEL, load_canary_config(ONE_STEP), client=tracking)
    mixed = (_floats(40) + [None] * 10 + [[1.0, 2.0, 3.0]] * 10 + [_hashed(i) for i in range(10)]
             + [{"colour": "red"}] * named)  # retention-nulled, another width, hashed, another model's named rows
    _log(store, rollout.created_at, mixed)
    report = reconcile(store, rollout.rollout_id, now=rollout.created_at + 6.0, client=tracking)
    assert report.action == "decided", report
    detail = _applied(store, tracking, rollout.rollout_id, challenger)
    assert "warnings" not in detail, detail
    drift = report.result.drift
    assert drift.share is not None and drift.distinct_rows == 40, drift  # the float rows were compared
    assert "20 input row(s) logged as hashes" in drift.note, drift.note  # both variants
    left_out = 2 * (20 + named)
    assert f"{left_out} logged input row(s) not of the model's shape were left out" in drift.note, drift.note
    step = store.get(rollout.rollout_id).history[0]["drift"]
    assert step["challenger"] is not None and "left out" in step["note"], step


def test_a_fault_in_the_report_and_plots_is_a_warning_and_the_decision_is_still_applied(
        tracking, nasops_home, monkeypatch):
    from pipelines.control import evidence

    def broken(*_args, **_kwargs):
        raise RuntimeError("evidently broke")

    monkeypatch.setattr(evidence, "data_drift_report", broken)
    monkeypatch.setattr(evidence, "score_plot_png", broken)
    _, challenger = _versions(tracking)
    store = RolloutStore(f"sqlite:///{nasops_home / 'predictions.db'}")
    rollout = start_rollout(store, MODEL, load_canary_config(ONE_STEP), client=tracking)
    _log(store, rollout.created_at, _floats(60))
    report = reconcile(store, rollout.rollout_id, now=rollout.created_at + 6.0, client=tracking)
    assert report.action == "decided", report
    detail = _applied(store, tracking, rollout.rollout_id, challenger)
    warnings = report.result.warnings
    assert any("data drift report failed: RuntimeError: evidently broke" in w for w in warnings), warnings
    assert any("the score plot failed: RuntimeError: evidently broke" in w for w in warnings), warnings
    assert len(warnings) == 2, warnings  # the judge table, the page and the metrics were logged
    assert detail["warnings"] == warnings
    assert "evidently broke" in report.result.drift.note and report.result.drift.prediction_drift is not None
    assert reconcile(store, rollout.rollout_id, client=tracking).action == "done"  # no retry loop


def test_served_inputs_count_what_they_leave_out():
    from pipelines.control.drift import HASHED_NOTE, served_inputs

    reference = pd.DataFrame(_floats(50), columns=["f0", "f1"])
    rows = [*_floats(12), None, [1.0], ["a", "b"], _hashed(1), _hashed(2), True]
    frame = pd.DataFrame({"variant": "challenger", "shadow": False, "inputs": rows})
    served = served_inputs(frame, reference, "challenger")
    assert served.frame.shape == (12, 2) and (served.hashed, served.left_out) == (2, 4)
    assert "2 input row(s) logged as hashes" in served.note() and "4 logged input row(s)" in served.note()
    only_hashed = pd.DataFrame({"variant": "challenger", "shadow": False, "inputs": [_hashed(1), _hashed(2)]})
    assert served_inputs(only_hashed, reference).note() == HASHED_NOTE
    assert served_inputs(frame, None, "challenger").frame.shape == (12, 2)  # the common width, without a reference


def test_a_second_controller_of_a_rollout_is_refused_in_one_line_naming_the_first(tracking, nasops_home):
    import os

    from pipelines.control.deployment import controller_lock

    store = RolloutStore(f"sqlite:///{nasops_home / 'predictions.db'}")
    rollout = store.create(model_name=MODEL, champion_version="1", challenger_version="2", mode="split", weight=0.1,
                           config=load_canary_config(ONE_STEP).model_dump(mode="json"))
    with controller_lock(rollout, nasops_home.resolve()):  # the first controller, serving
        second = nasops("canary", "controller", "--model-name", MODEL, home=nasops_home)
    assert second.returncode == 2, (second.stdout, second.stderr)
    line = second.stderr.strip()
    assert second.stdout.strip() == "", second.stdout  # refused before anything is served or printed
    assert "\n" not in line and "Traceback" not in second.stderr
    assert f"a controller of rollout {rollout.rollout_id}" in line and f"pid {os.getpid()}" in line, line
    with controller_lock(rollout, nasops_home.resolve()):  # released when the first stops: the next one may serve
        pass


@pytest.mark.parametrize("argv", [("status",), ("status", "--json"), ("canary", "status"), ("db", "status")])
def test_read_only_commands_create_no_state(tmp_path, argv):
    home = tmp_path / "not-yet"
    proc = nasops(*argv, home=home)
    assert not home.exists() and list(tmp_path.iterdir()) == [], list(tmp_path.rglob("*"))
    assert "Traceback" not in proc.stderr
    out = (proc.stdout + proc.stderr).strip()
    if argv == ("status", "--json"):
        assert proc.returncode == 0 and json.loads(out)["versions"] == []
    elif argv == ("canary", "status"):
        assert proc.returncode == 2 and "here yet" in out and "\n" not in out, out
    else:
        assert proc.returncode == 0 and "nothing here yet" in out and "\n" not in out, out
