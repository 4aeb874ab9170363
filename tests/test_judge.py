"""The canary judge: per-metric Mann-Whitney classification, scoring, thresholds, and its YAML configuration."""

from __future__ import annotations

import numpy as np
import pytest

from monitoring.judge import (
    HIGH,
    LOW,
    NODATA,
    PASS,
    Judge,
    classify_metric,
    effect_size,
    hodges_lehmann_shift,
    mann_whitney,
)
from monitoring.judge_config import JudgeConfig, MetricConfig, default_judge_config
from pipelines.control.config import CanaryConfig, load_canary_config

RNG = np.random.default_rng(42)


def metric(**kw) -> MetricConfig:
    base = {"name": "m", "source": "prediction_log", "measure": "latency_ms", "direction": "increase",
            "effect": "relative", "tolerance": 0.1}
    return MetricConfig(**{**base, **kw})


def test_u_statistic_counts_pairs_as_defined():
    champion = np.array([1.0, 2.0, 3.0, 4.0])
    challenger = np.array([2.0, 5.0, 6.0])
    u, p = mann_whitney(champion, challenger)
    # U of the challenger: pairs (challenger > champion) plus half the ties.
    expected = sum((c > b) + 0.5 * (c == b) for c in challenger for b in champion)
    assert u == pytest.approx(expected)
    assert 0 < p < 1


def test_identical_constant_samples_are_no_evidence():
    u, p = mann_whitney(np.zeros(50), np.zeros(30))
    assert p == 1.0 and u == pytest.approx(750)


def test_same_distribution_passes():
    m = metric()
    r = classify_metric(m, RNG.normal(10, 1, 300), RNG.normal(10, 1, 300), alpha=0.05, min_samples=20)
    assert r.classification == PASS and not r.failed
    assert r.n_champion == 300 and r.n_challenger == 300


def test_slower_challenger_is_high_and_fails():
    m = metric()
    r = classify_metric(m, RNG.normal(10, 1, 200), RNG.normal(15, 1, 200), alpha=0.05, min_samples=20)
    assert r.classification == HIGH and r.failed
    assert r.p_value < 1e-6
    assert r.effect == pytest.approx(0.5, abs=0.05)
    assert r.shift == pytest.approx(5.0, abs=0.3)


def test_significant_but_tiny_shift_is_within_tolerance():
    m = metric(tolerance=0.1)
    r = classify_metric(m, RNG.normal(100, 1, 2000), RNG.normal(101, 1, 2000), alpha=0.05, min_samples=20)
    assert r.p_value < 0.05  # the test sees it ...
    assert r.classification == PASS  # ... but 1% is inside the 10% tolerance


def test_direction_decides_what_fails():
    worse = RNG.binomial(1, 0.7, 400).astype(float)
    better = RNG.binomial(1, 0.95, 400).astype(float)
    acc = metric(measure="correct", direction="decrease", effect="absolute", tolerance=0.02)
    low = classify_metric(acc, better, worse, alpha=0.05, min_samples=20)
    assert low.classification == LOW and low.failed
    high = classify_metric(acc, worse, better, alpha=0.05, min_samples=20)
    assert high.classification == HIGH and not high.failed  # more accurate: reported, not a failure
    either = classify_metric(metric(direction="either", effect="absolute", tolerance=0.02), worse, better,
                             alpha=0.05, min_samples=20)
    assert either.failed


def test_too_few_samples_is_nodata():
    r = classify_metric(metric(), RNG.normal(size=100), RNG.normal(size=5), alpha=0.05, min_samples=20)
    assert r.classification == NODATA and not r.failed
    assert "not enough samples" in r.reason
    must = classify_metric(metric(must_have_data=True), RNG.normal(size=100), RNG.normal(size=5), alpha=0.05,
                           min_samples=20)
    assert must.failed


def test_effect_size_kinds():
    assert effect_size(10.0, 15.0, "relative") == pytest.approx(0.5)
    assert effect_size(10.0, 15.0, "absolute") == pytest.approx(5.0)
    assert effect_size(0.0, 0.0, "relative") == 0.0
    assert effect_size(0.0, 0.2, "relative") == float("inf")
    assert hodges_lehmann_shift(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == pytest.approx(2.0)


def judge_config(**kw) -> JudgeConfig:
    metrics = [
        MetricConfig(name="errors", measure="error", direction="increase", critical=True, group="errors",
                     effect="absolute", tolerance=0.01),
        MetricConfig(name="latency", measure="latency_ms", direction="increase", group="latency",
                     effect="relative", tolerance=0.2),
        MetricConfig(name="drift", measure="prediction_drift", direction="increase", group="drift",
                     effect="absolute", tolerance=0.05),
    ]
    return JudgeConfig(metrics=metrics, groups={"errors": 2, "latency": 1, "drift": 1}, **kw)


def healthy(n=300):
    return {
        "errors": (np.zeros(n), np.zeros(n)),
        "latency": (RNG.normal(5, 1, n), RNG.normal(5, 1, n)),
        "drift": (RNG.normal(0.3, 0.05, n), RNG.normal(0.3, 0.05, n)),
    }


def test_all_pass_scores_100():
    verdict = Judge(judge_config()).judge(healthy())
    assert verdict.verdict == "pass" and verdict.score == 100
    assert [row["classification"] for row in verdict.table()] == [PASS, PASS, PASS]
    assert set(verdict.table()[0]) >= {"n_champion", "n_challenger", "u_statistic", "p_value", "effect",
                                       "classification"}


def test_failing_critical_metric_fails_whatever_the_score():
    samples = healthy()
    samples["errors"] = (np.zeros(300), (RNG.random(300) < 0.2).astype(float))
    verdict = Judge(judge_config(pass_threshold=40, marginal_threshold=10)).judge(samples)
    assert verdict.score == pytest.approx(50.0)  # errors group 0 x2, others 100: (0*2+100+100)/4
    assert verdict.verdict == "fail"
    assert "critical metric failed" in verdict.reasons[0]


def test_noncritical_failure_scores_marginal_then_fail_by_thresholds():
    samples = healthy()
    samples["latency"] = (RNG.normal(5, 1, 300), RNG.normal(9, 1, 300))
    verdict = Judge(judge_config(pass_threshold=95, marginal_threshold=70)).judge(samples)
    assert verdict.score == pytest.approx(75.0)
    assert verdict.verdict == "marginal" and verdict.failed_metrics == ["latency"]
    strict = Judge(judge_config(pass_threshold=95, marginal_threshold=80)).judge(samples)
    assert strict.verdict == "fail"


def test_nodata_metrics_are_left_out_of_the_score_and_all_nodata_is_nodata():
    samples = healthy()
    samples["drift"] = (np.array([0.3]), np.array([]))
    verdict = Judge(judge_config()).judge(samples)
    assert verdict.verdict == "pass" and verdict.score == 100
    assert verdict.table()[2]["classification"] == NODATA
    none = Judge(judge_config()).judge({})
    assert none.verdict == "nodata"
    assert none.critical_nodata == ["errors"]


def test_default_yaml_has_the_four_default_metrics():
    cfg = default_judge_config()
    assert [m.name for m in cfg.metrics] == ["error_rate", "model_latency_ms", "model_latency_p99_ms",
                                             "e2e_latency_ms", "e2e_latency_p99_ms", "online_accuracy",
                                             "estimated_accuracy", "prediction_drift"]
    assert {m.name for m in cfg.metrics if m.critical} == {"error_rate", "model_latency_ms", "online_accuracy"}
    assert cfg.method == "fixed_horizon"  # the packaged default: the embedded canary has too few labels to prove a gain
    assert {m.name: m.effective_rule for m in cfg.metrics} == {
        "error_rate": "non_inferiority", "model_latency_ms": "non_inferiority", "model_latency_p99_ms": "report",
        "e2e_latency_ms": "report", "e2e_latency_p99_ms": "report", "online_accuracy": "superiority",
        "estimated_accuracy": "report", "prediction_drift": "non_inferiority"}
    # the model's compute time decides; the end-to-end time is shown (group weight 0), never scored
    assert {m.name: m.measure for m in cfg.metrics if "latency" in m.name} == {
        "model_latency_ms": "compute_ms", "model_latency_p99_ms": "compute_ms", "e2e_latency_ms": "latency_ms",
        "e2e_latency_p99_ms": "latency_ms"}
    assert cfg.group_weight("e2e") == 0


def test_canary_config_rejects_unknown_keys_and_bad_values(tmp_path):
    with pytest.raises(ValueError, match=r"stepz: unknown key"):
        load_canary_config({"stepz": [0.1]})
    with pytest.raises(ValueError, match=r"steps"):
        load_canary_config({"steps": [0.5, 0.2]})
    with pytest.raises(ValueError, match=r"prometheus_url"):
        load_canary_config({"judge": {"metrics": [{"name": "e", "source": "prometheus",
                                                  "query": 'sum(rate(x{model="{model}",variant="{variant}"}[1m]))'}]}})
    with pytest.raises(ValueError, match=r"measure"):
        load_canary_config({"judge": {"metrics": [{"name": "e", "measure": "nope"}]}})
    with pytest.raises(ValueError, match=r"does not exist"):
        load_canary_config(tmp_path / "missing.yaml")
    path = tmp_path / "canary.yaml"
    path.write_text("steps: [0.1, 1.0]\ninterval_s: 2\n")
    cfg = load_canary_config(path)
    assert isinstance(cfg, CanaryConfig) and cfg.steps == [0.1, 1.0] and cfg.interval_s == 2
    assert len(cfg.judge.metrics) == 8  # judge defaults kept


def test_small_tied_samples_get_an_honest_permutation_p_value():
    # One error among 10 requests against none among 190: the normal approximation would call this p ~ 1e-5;
    # the probability of the one error landing in the challenger's 10 by chance is 10/200 = 0.05.
    _, p = mann_whitney(np.zeros(190), np.r_[1.0, np.zeros(9)])
    assert 0.03 < p < 0.2
    _, p2 = mann_whitney(np.zeros(190), np.r_[1.0, 1.0, 1.0, np.zeros(7)])
    assert p2 < 0.01


def test_shadow_phases_leave_out_latency():
    shadow = default_judge_config().for_shadow()
    assert Judge(shadow).judge({}).verdict == "nodata"
    assert [m.name for m in shadow.metrics] == ["error_rate", "online_accuracy", "estimated_accuracy",
                                                "prediction_drift"]
