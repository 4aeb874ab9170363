"""The label-free accuracy estimate (confidence-based performance estimation): the calibration map fitted at
registration, read back through ModelRef, applied by the prediction-log measure ``expected_correct``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from monitoring.cbpe import apply_calibration, beside_realised, estimate, expected_confusion
from monitoring.core.model_ref import Calibration, ModelRef
from monitoring.judge_config import MetricConfig
from monitoring.prediction_log import create_log_engine, prediction_rows, predictions
from monitoring.report import canary_report_html
from monitoring.sources import PredictionLogSource, collect_samples
from pipelines.calibration import MAX_KNOTS, fit_calibration
from pipelines.control.reference import RolloutModels


def calibrated_traffic(n: int, classes: int = 4, sharpness: float = 0.6, seed: int = 0):
    """Probability rows and labels drawn from them: a perfectly calibrated model's traffic."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(classes, sharpness), size=n)
    labels = np.array([rng.choice(classes, p=p) for p in probs])
    return probs, labels


def sharpen(probs: np.ndarray, power: float) -> np.ndarray:
    """An overconfident model: the same ranking, probabilities pushed towards 0 and 1 (temperature 1/power)."""
    sharp = probs**power
    return sharp / sharp.sum(axis=1, keepdims=True)


def top_correct(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return probs.max(axis=1), (probs.argmax(axis=1) == labels).astype(float)


def test_a_calibrated_models_estimate_is_its_realised_accuracy():
    probs, labels = calibrated_traffic(20_000)
    fit, served = slice(0, 5_000), slice(5_000, None)
    calibration = fit_calibration(*top_correct(probs[fit], labels[fit]))
    top, correct = top_correct(probs[served], labels[served])
    realised = correct.mean()
    assert apply_calibration(top, calibration).mean() == pytest.approx(realised, abs=0.015)
    assert top.mean() == pytest.approx(realised, abs=0.015)  # calibrated already: raw confidence agrees


def test_an_overconfident_models_raw_confidence_overestimates_and_the_calibrated_estimate_does_not():
    truth, labels = calibrated_traffic(20_000, seed=1)
    probs = sharpen(truth, 3.0)  # same predictions, inflated confidence
    fit, served = slice(0, 5_000), slice(5_000, None)
    calibration = fit_calibration(*top_correct(probs[fit], labels[fit]))
    top, correct = top_correct(probs[served], labels[served])
    realised = correct.mean()
    assert top.mean() > realised + 0.08  # what an uncalibrated "mean confidence" would report
    assert apply_calibration(top, calibration).mean() == pytest.approx(realised, abs=0.015)


def test_the_map_is_a_few_monotone_knots_and_a_tiny_split_fits_none():
    probs, labels = calibrated_traffic(5_000, seed=2)
    calibration = fit_calibration(*top_correct(probs, labels))
    assert calibration is not None and calibration.n == 5_000 and calibration.split == "val"
    assert 2 <= len(calibration.x) <= MAX_KNOTS and np.all(np.diff(calibration.x) > 0)
    assert np.all(np.diff(calibration.y) >= 0) and 0 <= min(calibration.y) <= max(calibration.y) <= 1
    assert len(json.dumps(calibration.model_dump(mode="json"))) < 3_000  # fits a registry tag
    # isotonic regression keeps the mean: over its own rows the map's mean is their accuracy
    top, correct = top_correct(probs, labels)
    assert apply_calibration(top, calibration).mean() == pytest.approx(correct.mean(), abs=0.01)
    assert fit_calibration(top[:10], correct[:10]) is None


def test_model_ref_reads_the_map_from_the_version_tag_and_the_rollout_record_keeps_it():
    knots = {"x": [0.3, 0.9, 1.0], "y": [0.2, 0.8, 0.97], "n": 270}
    ref = ModelRef.from_tags("m", 3, {"nasops.task": "classification", "nasops.calibration": json.dumps(knots)})
    assert ref.calibration == Calibration(x=[0.3, 0.9, 1.0], y=[0.2, 0.8, 0.97], n=270)
    assert ModelRef.from_tags("m", 1, {}).calibration is None  # registered before maps were fitted
    assert ModelRef.from_tags("m", 1, {"nasops.calibration": "{not json"}).calibration is None
    assert ModelRef.from_tags("m", 1, {"nasops.calibration": json.dumps({"x": [1, 0], "y": [0, 1]})}
                              ).calibration is None  # unreadable knots: no map, not a failed rollout
    regression = {"nasops.task": "regression", "nasops.calibration": json.dumps(knots)}
    assert ModelRef.from_tags("m", 1, regression).calibration is None
    stored = RolloutModels(champion=ModelRef.from_tags("m", 1, {}), challenger=ref).model_dump(mode="json")
    assert RolloutModels.model_validate(json.loads(json.dumps(stored))).challenger.calibration == ref.calibration
    old_record = {"champion": {"name": "m", "version": "1"}, "challenger": {"name": "m", "version": "2"}}
    assert RolloutModels.model_validate(old_record).challenger.calibration is None


def test_expected_correct_measure_comes_from_rows_with_probabilities_only(tmp_path):
    engine = create_log_engine(f"sqlite:///{tmp_path / 'log.db'}")
    x, t = [[0.0, 1.0]], 1000.0
    rows = prediction_rows(request_id="a", variant="champion", model_version="1", inputs=x * 2,
                           predictions_=[0, 1], probabilities=[[0.9, 0.1], [0.4, 0.6]], latency_ms=2.0, status="ok",
                           ts=t)
    rows += prediction_rows(request_id="b", variant="challenger", model_version="2", inputs=x, predictions_=None,
                            probabilities=None, latency_ms=9.0, status="error", ts=t + 1)
    rows += prediction_rows(request_id="c", variant="challenger", model_version="2", inputs=x, predictions_=[1],
                            probabilities=[[0.2, 0.8]], latency_ms=3.0, status="ok", ts=t + 2)
    with engine.begin() as conn:
        conn.execute(predictions.insert(), rows)
    identity_below_one = Calibration(x=[0.5, 1.0], y=[0.5, 0.9])
    metric = [MetricConfig(name="estimated_accuracy", measure="expected_correct", direction="decrease")]
    source = PredictionLogSource(engine, calibrations={"champion": identity_below_one,
                                                       "challenger": identity_below_one})
    champion, challenger = collect_samples(metric, {"prediction_log": source}, t, t + 10)["estimated_accuracy"]
    assert champion.tolist() == pytest.approx([0.82, 0.58])  # no labels needed: every served row counts
    assert challenger.tolist() == pytest.approx([0.74])  # the failed row has no probabilities: no sample
    no_map = PredictionLogSource(engine, calibrations={"champion": identity_below_one})
    champion, challenger = no_map.collect(metric, t, t + 10)["estimated_accuracy"]
    assert len(champion) == 2 and len(challenger) == 0  # a version without a map is NoData, never raw confidence


def test_expected_confusion_estimates_the_other_confusion_matrix_metrics():
    probs, labels = calibrated_traffic(20_000, classes=3, seed=3)
    predicted = probs.argmax(axis=1)
    calibration = fit_calibration(*top_correct(probs[:5_000], labels[:5_000]))
    served, truth, guess = probs[5_000:], labels[5_000:], predicted[5_000:]
    realised = np.zeros((3, 3))
    np.add.at(realised, (truth, guess), 1)
    for m in (expected_confusion(served, None), expected_confusion(served, calibration)):
        assert m.sum() == pytest.approx(len(served)) and np.allclose(m / len(served), realised / len(served), atol=0.01)
    recall = np.diag(realised) / realised.sum(axis=1)
    assert estimate("balanced_accuracy", served, calibration) == pytest.approx(recall.mean(), abs=0.015)
    tp, fp, fn = realised[1, 1], realised[:, 1].sum() - realised[1, 1], realised[1, :].sum() - realised[1, 1]
    assert estimate("f1", served, calibration, positive=1) == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=0.015)
    assert estimate("accuracy", served, calibration) == pytest.approx((truth == guess).mean(), abs=0.015)
    with pytest.raises(ValueError, match="calibrated probabilities of every class"):
        estimate("log_loss", served, calibration)


def test_status_and_report_put_the_estimate_beside_the_realised_accuracy():
    evidence = [
        {"name": "online_accuracy", "measure": "correct", "n_champion": 80, "n_challenger": 0,
         "champion_value": 0.95, "challenger_value": None},
        {"name": "estimated_accuracy", "measure": "expected_correct", "n_champion": 400, "n_challenger": 120,
         "champion_value": 0.962, "challenger_value": 0.948},
    ]
    lines = beside_realised(evidence)
    assert lines["champion"] == "accuracy estimated 0.962 over 400 rows (label-free) · realised 0.950 from 80 labels"
    assert lines["challenger"].endswith("realised – (no labels yet)")
    assert beside_realised(evidence[:1]) == {}
    page = canary_report_html({"online": {"champion": {"accuracy": 0.95, "estimated_accuracy": 0.962}}}, [], [])
    assert "<th>estimated_accuracy</th>" in page and "<td>0.962</td>" in page


def test_registration_tags_the_version_with_its_map_and_the_rollout_reads_it(nasops_home):
    """A real SQLite MLflow store: the map registration fits on the validation split is the one ModelRef reads
    (what a rollout stores with its record), and its JSON is in the training run."""
    import mlflow
    import torch
    from mlflow import MlflowClient
    from torch import nn

    from nas.datasets import bundled_task
    from nas.export import FlatInputClassifier
    from pipelines.calibration import CALIBRATION_ARTIFACT, register_calibration, top_and_correct
    from pipelines.tracking import configure_mlflow

    configure_mlflow()
    try:
        client = MlflowClient(mlflow.get_tracking_uri())
        data = bundled_task("digits", seed=0)
        torch.manual_seed(0)
        model = FlatInputClassifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), data.input_shape,
                                    data.feature_mean, data.feature_std)
        client.create_registered_model("cbpe-model")
        with mlflow.start_run() as run:
            mv = client.create_model_version("cbpe-model", source=f"{run.info.artifact_uri}/model",
                                             run_id=run.info.run_id, tags={"nasops.task": "classification"})
            fitted = register_calibration(model, data, "cbpe-model", str(mv.version), client)
        ref = ModelRef.from_version(client.get_model_version("cbpe-model", mv.version))
        assert fitted is not None and ref.calibration == fitted and fitted.n == len(data.y_val)
        top, correct = top_and_correct(model, data.x_val, data.y_val)
        assert apply_calibration(top, ref.calibration).mean() == pytest.approx(correct.mean(), abs=0.01)
        logged = json.loads(Path(client.download_artifacts(run.info.run_id, CALIBRATION_ARTIFACT,
                                                           str(nasops_home))).read_text())
        assert Calibration.model_validate(logged) == fitted
    finally:
        mlflow.set_tracking_uri("")


@pytest.mark.slow  # the heaviest of the fast layer (keeps `make test-fast` under its 90 s)
def test_the_first_interval_before_any_label_has_an_estimate_in_the_evidence_and_in_canary_status(nasops_home):
    """Versions tagged with their maps, a rollout started from the registry, one interval of served rows without a
    label: the controller's evidence has each variant's estimated accuracy (online accuracy is NoData), the
    canary result's online table has it beside the accuracy, and ``nasops canary status`` prints it beside the
    realised value."""
    import mlflow
    import sqlalchemy as sa
    import typer
    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from monitoring.rollout_store import RolloutStore
    from pipelines.cli import rollout as rollout_cli
    from pipelines.control.config import load_canary_config
    from pipelines.control.controller import reconcile, start_rollout
    from pipelines.tracking import configure_mlflow

    configure_mlflow()
    try:
        client = MlflowClient(mlflow.get_tracking_uri())
        client.create_registered_model("m")
        maps = {"1": {"x": [0.5, 1.0], "y": [0.5, 0.9]}, "2": {"x": [0.5, 1.0], "y": [0.4, 0.7]}}
        for version, alias in (("1", "champion"), ("2", "challenger")):
            with mlflow.start_run() as run:
                mv = client.create_model_version(
                    "m", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                    tags={"nasops.task": "classification", "nasops.calibration": json.dumps(maps[version])})
            assert str(mv.version) == version
            client.set_registered_model_alias("m", alias, version)
        store = RolloutStore(f"sqlite:///{nasops_home / 'predictions.db'}")
        cfg = load_canary_config({"steps": [1.0], "interval_s": 5.0, "label_wait_s": 0.0, "max_intervals": 1,
                                  "min_label_coverage": 0.5, "judge": {"method": "fixed_horizon"}})
        started = start_rollout(store, "m", cfg, client=client)
        assert store.get(started.rollout_id).model_ref["challenger"]["calibration"]["y"] == [0.4, 0.7]
        rows = [{"request_id": f"{variant}-{i}", "row": 0, "ts": started.created_at + i * 0.01, "variant": variant,
                 "shadow": False, "model_version": version, "inputs": "[[0.0]]", "prediction": "0",
                 "probabilities": json.dumps([1.0, 0.0]), "latency_ms": 2.0, "compute_ms": 0.2, "status": "ok",
                 "label": None, "correct": None, "label_ts": None}
                for version, variant in (("1", "champion"), ("2", "challenger")) for i in range(60)]
        with store.engine.begin() as conn:
            conn.execute(sa.insert(predictions), rows)
        report = reconcile(store, started.rollout_id, now=started.created_at + 6.0, client=client)
        assert report.action == "decided", report  # one interval allowed: decided, so the report is built too
        online = report.result.online
        assert (online["champion"].estimated_accuracy, online["challenger"].estimated_accuracy) == pytest.approx(
            (0.9, 0.7)) and online["challenger"].accuracy is None
        evidence = {r["name"]: r for r in store.get(started.rollout_id).history[0]["evidence"]}
        estimate_row = evidence["estimated_accuracy"]
        assert (estimate_row["champion_value"], estimate_row["challenger_value"]) == pytest.approx((0.9, 0.7))
        assert estimate_row["n_challenger"] == 60 and evidence["online_accuracy"]["classification"] == "NoData"
        app = typer.Typer()
        rollout_cli.register(app)
        shown = CliRunner().invoke(app, ["status", "--model-name", "m", "--prediction-log-url",
                                         str(store.engine.url)])
        assert shown.exit_code == 0, shown.output
        text = " ".join(shown.output.split())  # rich wraps long lines at the runner's 80 columns
        assert "challenger: 60 rows" in text
        assert "accuracy estimated 0.700 over 60 rows (label-free) · realised – (no labels yet)" in text
    finally:
        mlflow.set_tracking_uri("")
