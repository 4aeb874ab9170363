"""The judge's sample sources against the real things: the prediction-log table (SQLite through SQLAlchemy) and a
real Prometheus server scraping the gateway's metric definitions."""

from __future__ import annotations

import time

import numpy as np
import pytest

from monitoring.judge import HIGH, PASS, Judge
from monitoring.judge_config import JudgeConfig, MetricConfig
from monitoring.prediction_log import apply_feedback, create_log_engine, prediction_rows, predictions
from monitoring.sources import (
    PROMETHEUS_QUERIES,
    PredictionLogSource,
    PrometheusError,
    PrometheusSource,
    collect_samples,
)


def log_metrics() -> list[MetricConfig]:
    return [MetricConfig(name=m, measure=m) for m in ("error", "latency_ms", "correct", "confidence")] + [
        MetricConfig(name="prediction_drift", measure="prediction_drift")
    ]


def insert(engine, rows: list[dict]) -> None:
    with engine.begin() as conn:
        conn.execute(predictions.insert(), rows)


def test_prediction_log_source_turns_rows_into_per_request_samples(tmp_path):
    engine = create_log_engine(f"sqlite:///{tmp_path / 'log.db'}")
    x = [[0.0] * 4]
    t = 1000.0
    # A 3-row champion batch (one request: one latency sample, three accuracy samples).
    insert(engine, prediction_rows(request_id="a", variant="champion", model_version="1", inputs=x * 3,
                                   predictions_=[0, 1, 1], probabilities=[[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]],
                                   latency_ms=5.0, status="ok", ts=t))
    # A challenger failure answered by the champion (fallback): an error for the challenger only.
    insert(engine, prediction_rows(request_id="b", variant="challenger", model_version="2", inputs=x,
                                   predictions_=None, probabilities=None, latency_ms=9.0, status="error", ts=t + 1))
    insert(engine, prediction_rows(request_id="b", variant="champion", model_version="1", inputs=x,
                                   predictions_=[0], probabilities=[[0.7, 0.3]], latency_ms=4.0, status="fallback",
                                   ts=t + 1))
    insert(engine, prediction_rows(request_id="c", variant="challenger", model_version="2", inputs=x,
                                   predictions_=[1], probabilities=[[0.3, 0.7]], latency_ms=7.0, status="ok",
                                   ts=t + 2))
    insert(engine, prediction_rows(request_id="late", variant="champion", model_version="1", inputs=x,
                                   predictions_=[1], probabilities=[[0.5, 0.5]], latency_ms=1.0, status="ok",
                                   ts=t + 100))
    apply_feedback(engine, "a", [0, 0, 1])
    apply_feedback(engine, "c", [0])

    source = PredictionLogSource(engine, reference_classes={0: 1, 1: 1}, chunk=2)
    samples = collect_samples(log_metrics(), {"prediction_log": source}, t, t + 10)
    champion = {k: v[0].tolist() for k, v in samples.items()}
    challenger = {k: v[1].tolist() for k, v in samples.items()}
    assert champion["error"] == [0.0, 0.0] and challenger["error"] == [1.0, 0.0]
    # one definition of latency (monitoring.online): per answered request, so the failed 9 ms request is not a sample
    assert champion["latency_ms"] == [5.0, 4.0] and challenger["latency_ms"] == [7.0]
    assert champion["correct"] == [1.0, 0.0, 1.0] and challenger["correct"] == [0.0]
    assert champion["confidence"] == pytest.approx([0.9, 0.8, 0.6, 0.7])
    # Chunks of 2 predictions: [0, 1] matches the 50/50 reference (distance 0), [1, 0] too.
    assert champion["prediction_drift"] == pytest.approx([0.0, 0.0])
    assert challenger["prediction_drift"] == []  # one prediction: not a full chunk
    with pytest.raises(ValueError, match="source"):
        collect_samples([MetricConfig(name="p", source="prometheus", query='up{job="{variant}",model="{model}"}')],
                        {"prediction_log": source}, t, t + 10)


def test_prediction_drift_samples_grow_with_a_skewed_class_mix(tmp_path):
    engine = create_log_engine(f"sqlite:///{tmp_path / 'log.db'}")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(200):
        balanced, skewed = int(rng.integers(0, 10)), 3 if rng.random() < 0.6 else int(rng.integers(0, 10))
        for variant, label in (("champion", balanced), ("challenger", skewed)):
            rows += prediction_rows(request_id=f"{variant}-{i}", variant=variant, model_version="1", inputs=[[0.0]],
                                    predictions_=[label], probabilities=[[1.0]], latency_ms=1.0, status="ok",
                                    ts=float(i))
    insert(engine, rows)
    source = PredictionLogSource(engine, reference_classes={c: 0.1 for c in range(10)})
    champion, challenger = source.collect([MetricConfig(name="d", measure="prediction_drift")], 0, 1000)["d"]
    assert len(champion) == len(challenger) == 20
    assert challenger.mean() > champion.mean() + 0.15


@pytest.mark.prometheus
@pytest.mark.slow  # starts Prometheus
def test_prometheus_source_reads_one_sample_per_interval_from_a_real_server():
    from prometheus_client import start_http_server
    from servers import free_port, start_prometheus

    from monitoring.metrics import GatewayMetrics

    metrics = GatewayMetrics.create()
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    try:
        with start_prometheus([f"127.0.0.1:{port}"], scrape_interval="1s") as prom:
            prom.wait_for('up{job="nasops-gateway"}', lambda v: v == 1)  # scraping before the traffic starts
            start = time.time()
            # 8 s of traffic: champion never fails, the challenger fails 1 request in 4 and is 40 ms slower.
            for tick in range(32):
                for i in range(5):
                    metrics.requests.labels("m", "champion", "1", "ok").inc()
                    metrics.duration.labels("m", "champion").observe(0.004)
                    status = "error" if (tick * 5 + i) % 4 == 0 else "ok"
                    metrics.requests.labels("m", "challenger", "2", status).inc()
                    metrics.duration.labels("m", "challenger").observe(0.045)
                    metrics.feedback.labels("m", "champion", "true").inc()
                    metrics.feedback.labels("m", "challenger", "true" if i else "false").inc()
                time.sleep(0.25)
            end = time.time()
            prom.wait_for('sum(nasops_requests_total{variant="challenger"})', lambda v: v >= 160)
            source = PrometheusSource(prom.url, step_s=1.0, window_s=3.0, model_name="m")
            metric_names = ("error_rate", "latency_p99_ms", "online_accuracy")
            config = JudgeConfig(min_samples=3, metrics=[
                MetricConfig(name="error_rate", source="prometheus", query=PROMETHEUS_QUERIES["error_rate"],
                             critical=True, effect="absolute", tolerance=0.01),
                MetricConfig(name="latency_p99_ms", source="prometheus", query=PROMETHEUS_QUERIES["latency_p99_ms"],
                             effect="absolute", tolerance=20.0),
                MetricConfig(name="online_accuracy", source="prometheus", query=PROMETHEUS_QUERIES["online_accuracy"],
                             direction="decrease", effect="absolute", tolerance=0.02),
            ])
            samples = collect_samples(config.metrics, {"prometheus": source}, start + 3, end)
            assert set(samples) == set(metric_names)
            champion_errors, challenger_errors = samples["error_rate"]
            assert len(champion_errors) >= 3  # one point per 1 s step over the window
            assert np.allclose(champion_errors, 0.0)
            assert 0.1 < challenger_errors.mean() < 0.4
            assert samples["latency_p99_ms"][1].min() > samples["latency_p99_ms"][0].max()
            verdict = Judge(config).judge(samples)
            classes = {row["name"]: row["classification"] for row in verdict.table()}
            assert classes["error_rate"] == HIGH and classes["latency_p99_ms"] == HIGH
            assert verdict.verdict == "fail"
            assert classes["online_accuracy"] in (PASS, "Low")
            with pytest.raises(PrometheusError, match="rejected"):
                source.query_range("sum(rate(", start, end)
    finally:
        server.shutdown()
        thread.join(timeout=5)
