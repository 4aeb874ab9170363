"""Evidently drift: feature drift of production inputs against training data, and prediction drift."""

from __future__ import annotations

import numpy as np
import pytest

from monitoring.drift import (
    data_drift_report,
    data_drift_share,
    features_frame,
    most_shifted_columns,
    prediction_drift,
)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x = load_digits().data.astype(float)
    rng = np.random.default_rng(0)
    x = x[rng.permutation(len(x))]
    return x[:900], x[900:1300]


def test_same_distribution_has_little_drift_and_noise_has_a_lot(digits):
    reference, production = (features_frame(a) for a in digits)
    calm = data_drift_share(reference, production, threshold=0.5)
    assert calm.share < 0.25 and not calm.dataset_drift
    assert calm.columns == 64 and calm.rows == 400
    std = digits[0].std(axis=0)
    noisy = digits[1] + np.random.default_rng(1).normal(size=digits[1].shape) * (0.8 * std)
    drifted = data_drift_share(reference, features_frame(noisy), threshold=0.5)
    assert drifted.share > 0.5 and drifted.dataset_drift
    assert drifted.count == round(drifted.share * 64)


def test_report_writes_evidently_html_with_panels_for_the_most_shifted_features(digits, tmp_path):
    reference = features_frame(digits[0])
    shifted = digits[1].copy()
    shifted[:, [10, 20]] += 8.0  # two features move far
    current = features_frame(shifted)
    assert {"f10", "f20"} <= set(most_shifted_columns(reference, current, 4))
    drift = data_drift_report(reference, current, tmp_path / "drift.html", detail_columns=4)
    html = (tmp_path / "drift.html").read_text()
    assert "root_metric_" in html and "f10" in html  # Evidently's rendered widgets
    assert drift.count >= 2 and not drift.dataset_drift


def test_prediction_drift_is_a_distance_between_class_mixes():
    rng = np.random.default_rng(0)
    champion = rng.integers(0, 10, 400).tolist()
    same = rng.integers(0, 10, 400).tolist()
    skewed = [3 if rng.random() < 0.7 else int(rng.integers(0, 10)) for _ in range(400)]
    assert prediction_drift(champion, same) < 0.1
    assert prediction_drift(champion, skewed) > 0.3
    assert np.isnan(prediction_drift([], skewed))


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="2-D"):
        features_frame(np.zeros(5))
    with pytest.raises(ValueError, match="feature names"):
        features_frame(np.zeros((2, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="rows on both sides"):
        data_drift_share(features_frame(np.zeros((3, 2))), features_frame(np.zeros((0, 2))))
    with pytest.raises(ValueError, match="same feature columns"):
        data_drift_share(features_frame(np.zeros((3, 2))), features_frame(np.zeros((3, 2)), ["x", "y"]))


def test_drift_on_the_champions_traffic_triggers_only_when_enabled(nasops_home, digits):
    from monitoring.prediction_log import create_log_engine, prediction_rows, predictions
    from nas.data import TaskData
    from pipelines.drift_trigger import DriftTriggerConfig, champion_drift, should_refresh
    from pipelines.settings import Settings

    train, production = digits
    data = TaskData(train, np.zeros(len(train)), train[:10], np.zeros(10), (64,), 10)
    path = str(data.save(nasops_home / "data.npz"))
    engine = create_log_engine(Settings().prediction_log_url)
    noisy = production + np.random.default_rng(2).normal(size=production.shape) * (0.8 * train.std(axis=0))
    now = 1_000_000.0
    rows = []
    for i, x in enumerate(noisy):
        rows += prediction_rows(request_id=f"r{i}", variant="champion", model_version="1", inputs=[x],
                                predictions_=[0], probabilities=[[1.0]], latency_ms=1.0, status="ok", ts=now - 10)
    with engine.begin() as conn:
        conn.execute(predictions.insert(), rows)
    off = DriftTriggerConfig()
    drift = champion_drift("m", off, data_path=path, now=now, settings=Settings())
    assert drift is not None and drift.share > 0.5 and drift.rows == len(production)
    assert not should_refresh(drift, off)  # measuring never retrains unless asked to
    assert should_refresh(drift, DriftTriggerConfig(trigger_refresh=True))
    assert not should_refresh(drift, DriftTriggerConfig(trigger_refresh=True, threshold=1.0))
    old = champion_drift("m", DriftTriggerConfig(window_s=5), data_path=path, now=now, settings=Settings())
    assert old is None  # rows too old
