"""Traffic replay: drift specs, and a real replay through the gateway with labels fed back."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from monitoring.prediction_log import create_log_engine, read_predictions
from pipelines.errors import UserError
from pipelines.replay import DriftSpecError, apply_drift, parse_drift, replay
from serving.server import start_gateway

pytestmark = pytest.mark.slow  # starts gateways and trains models

FEEDBACK_TOKEN = "replay-feedback-token-0123456789-abcdefghij"


def test_parse_drift_accepts_combinations_in_order():
    assert parse_drift("noise=0.3, shift=0.5,scale=1.5") == [("noise", 0.3), ("shift", 0.5), ("scale", 1.5)]
    assert parse_drift(None) == [] and parse_drift("  ") == []


@pytest.mark.parametrize("spec", ["noise", "jitter=1", "noise=abc", "noise=-1", "shift=nan"])
def test_bad_drift_spec_is_a_user_error_naming_the_fix(spec):
    with pytest.raises(DriftSpecError) as info:
        parse_drift(spec)
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)
    assert "bad drift spec" in str(info.value)


def test_apply_drift_moves_the_distribution_by_the_spec():
    rng = np.random.default_rng(0)
    x = rng.normal(loc=2.0, scale=3.0, size=(4000, 5)).astype(np.float32)
    std = x.std(axis=0)
    shifted = apply_drift(x, "shift=0.5")
    np.testing.assert_allclose(shifted.mean(axis=0) - x.mean(axis=0), 0.5 * std, rtol=1e-4)
    noisy = apply_drift(x, "noise=1.0", seed=1)
    np.testing.assert_allclose(noisy.std(axis=0), np.sqrt(2) * std, rtol=0.05)
    np.testing.assert_allclose(apply_drift(x, "scale=1.5"), 1.5 * x, rtol=1e-6)
    assert apply_drift(x, None) is not x and np.array_equal(apply_drift(x, None), x)


def test_drift_moves_the_number_columns_of_raw_rows_and_leaves_the_rest():
    """A table model's raw rows (text, booleans, missing cells) take drift in their number columns (before: every
    --drift was refused for raw rows); integer columns stay integers, so the gateway's schema still takes them."""
    rng = np.random.default_rng(0)
    n = 2000
    rows = np.empty((n, 4), dtype=object)
    rows[:, 0] = rng.choice(["red", "green"], size=n)
    rows[:, 1] = rng.normal(5.0, 2.0, size=n)
    rows[:, 2] = rng.integers(0, 100, size=n)
    rows[:, 3] = rng.choice([True, False], size=n)
    rows[::10, 1] = None  # missing numbers stay missing
    shifted = apply_drift(rows, "shift=0.5")
    assert shifted.dtype == object and shifted is not rows and rows[1, 1] != shifted[1, 1]
    assert list(shifted[:, 0]) == list(rows[:, 0]) and list(shifted[:, 3]) == list(rows[:, 3])
    assert all(v is None for v in shifted[::10, 1])
    num = np.array([v for v in rows[:, 1] if v is not None], dtype=float)
    moved = np.array([v for v in shifted[:, 1] if v is not None], dtype=float)
    assert moved.mean() - num.mean() == pytest.approx(0.5 * num.std(), rel=1e-3)
    assert all(isinstance(v, int) for v in shifted[:, 2])
    assert np.mean(shifted[:, 2].astype(float)) - np.mean(rows[:, 2].astype(float)) == pytest.approx(
        0.5 * rows[:, 2].astype(float).std(), abs=0.6)
    text_only = np.array([["a", True], ["b", False]], dtype=object)
    with pytest.raises(DriftSpecError, match="no number column"):
        apply_drift(text_only, "noise=0.3")
    assert np.array_equal(apply_drift(text_only, None), text_only)


def test_replay_drives_traffic_and_feeds_labels_back(shared_registry):
    x, y = shared_registry.x_test[:120], shared_registry.y_test[:120]
    calls = []
    settings = shared_registry.gateway_settings(challenger_weight=0.5, feedback_token=FEEDBACK_TOKEN)
    with start_gateway(settings) as gw:
        summary = replay(gw.url, x, y, rate=200, batch_size=2, feedback=True, seed=3, feedback_token=FEEDBACK_TOKEN,
                         request_key_fn=lambda i: f"user-{i % 7}", progress=lambda d, t: calls.append((d, t)))
    assert summary.sent == 60 and summary.ok == 60 and summary.errors == {}
    assert summary.rows == 120 and summary.feedback_sent == 60 and summary.feedback_errors == 0
    assert set(summary.variants) == {"champion", "challenger"} and sum(summary.variants.values()) == 60
    assert summary.latency_ms["p50"] > 0 and summary.latency_ms["p99"] >= summary.latency_ms["p50"]
    assert summary.throughput_rps > 0
    assert calls[-1] == (60, 60) and len(calls) == 60
    frame = read_predictions(create_log_engine(shared_registry.prediction_log_url), include_shadow=False)
    labelled = frame[frame.label.notna()]
    assert len(labelled) >= 120
    accuracy = labelled.correct.astype(bool).mean()
    assert accuracy > 0.8  # real models, real labels


def test_replay_for_a_duration_cycles_rows_at_the_rate(shared_registry):
    x, y = shared_registry.x_test[:5], shared_registry.y_test[:5]
    with start_gateway(shared_registry.gateway_settings(challenger_weight=0.0)) as gw:
        summary = replay(gw.url, x, y, rate=40, duration=1.0, drift="noise=0.2", feedback=False)
    assert summary.sent == 40 and summary.ok == 40
    assert summary.variants == {"champion": 40} and summary.feedback_sent == 0
    assert 0.9 <= summary.duration_s < 5


def test_replay_rejects_bad_arguments():
    x = np.zeros((3, 4), dtype=np.float32)
    with pytest.raises(UserError, match="rate"):
        replay("http://127.0.0.1:9", x, rate=0)
    with pytest.raises(UserError, match="labels"):
        replay("http://127.0.0.1:9", x, np.zeros(2), rate=1)
    with pytest.raises(DriftSpecError):
        replay("http://127.0.0.1:9", x, rate=1, drift="warp=2")


def test_replay_cli_prints_a_summary_and_fails_cleanly(shared_registry, tmp_path):
    from nas.data import TaskData

    x, y = shared_registry.x_test, shared_registry.y_test
    data = TaskData(x[:40], y[:40], x[40:60], y[40:60], (64,), 10, x_prod=x[60:90], y_prod=y[60:90],
                    meta={"classes": list(range(10))})
    path = data.save(tmp_path / "task.npz")
    token_file = tmp_path / "feedback.token"
    token_file.write_text(FEEDBACK_TOKEN + "\n")
    with start_gateway(shared_registry.gateway_settings(feedback_token=FEEDBACK_TOKEN)) as gw:
        out = subprocess.run(
            [sys.executable, "-m", "pipelines.cli.app", "replay", "--url", gw.url, "--data", str(path),
             "--rate", "100", "--json", "--feedback-token-file", str(token_file)], capture_output=True, text=True,
            timeout=120,
        )
        unauthenticated = replay(gw.url, x[:4], y[:4], rate=100, feedback=True)  # labels need the token
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["sent"] == 30 and summary["ok"] == 30 and summary["feedback_sent"] == 30
    assert summary["feedback_errors"] == 0
    assert unauthenticated.ok == 4 and unauthenticated.feedback_errors == 4
    bad = subprocess.run(
        [sys.executable, "-m", "pipelines.cli.app", "replay", "--url", "http://127.0.0.1:9", "--data",
         str(path), "--drift", "noise=lots"], capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 2 and "bad drift spec" in bad.stderr and "Traceback" not in bad.stderr
