"""The always-valid sequential test (monitoring.sequential) and the judge's promotion rule built on it.

The type-I error is pinned on seeded A/A simulations with a look after every batch (the situation of the canary
judge); a fixed-horizon z-test read at the same looks is shown to exceed its nominal level on the same data.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from monitoring import sequential as seq
from monitoring.judge import Judge
from monitoring.judge_config import JudgeConfig, MetricConfig, default_judge_config

RUNS, LOOKS, BATCH = 2000, 20, 50
ALPHA = 0.05


def cumulative_normal(rng, mean_b, mean_c, sd=1.0):
    """Sufficient statistics after each look: arrays (RUNS, LOOKS)."""
    b = rng.normal(mean_b, sd, (RUNS, LOOKS, BATCH))
    c = rng.normal(mean_c, sd, (RUNS, LOOKS, BATCH))
    n = BATCH * np.arange(1, LOOKS + 1)
    return ((n, b.sum(2).cumsum(1), (b**2).sum(2).cumsum(1)), (n, c.sum(2).cumsum(1), (c**2).sum(2).cumsum(1)))


def test_radius_is_where_the_msprt_likelihood_ratio_reaches_one_over_alpha():
    v, tau2, alpha = 0.004, 0.01, 0.05
    r = float(seq.mixture_radius(v, alpha, tau2))
    # Johari et al.: Lambda = sqrt(v / (v + tau2)) exp(tau2 d^2 / (2 v (v + tau2)))
    lam = np.sqrt(v / (v + tau2)) * np.exp(tau2 * r**2 / (2 * v * (v + tau2)))
    assert lam == pytest.approx(1 / alpha, rel=1e-9)
    assert float(seq.mixture_radius(v / 4, alpha, tau2)) < r  # more data, narrower


def test_aa_type_one_error_with_a_look_after_every_batch_stays_below_alpha():
    rng = np.random.default_rng(7)
    champ, chal = cumulative_normal(rng, 0.0, 0.0)
    g, lo, hi = seq.difference_bounds(champ, chal, sign=1.0, alpha=ALPHA, beta=ALPHA, tau2=0.2**2, binary=False)
    ever_superior = (lo > 0).any(axis=1).mean()
    ever_outside = ((lo > 0) | (hi < 0)).any(axis=1).mean()
    assert ever_superior <= ALPHA / 2 + 0.01  # one side of a two-sided boundary
    assert ever_outside <= ALPHA + 0.01
    # The fixed-horizon z-test read at the same 20 looks is far above its nominal 5 %.
    n = champ[0]
    se = np.sqrt(2.0 / n)
    z = g / se
    fixed_any = (np.abs(z) > stats.norm.ppf(1 - ALPHA / 2)).any(axis=1).mean()
    assert fixed_any > 2 * ALPHA


def test_aa_binary_false_promotion_and_false_non_inferiority_rejection():
    rng = np.random.default_rng(11)
    p = 0.85
    kb = rng.binomial(BATCH * 4, p, (RUNS, LOOKS)).cumsum(1)
    kc = rng.binomial(BATCH * 4, p, (RUNS, LOOKS)).cumsum(1)
    n = BATCH * 4 * np.arange(1, LOOKS + 1)
    _, lo, hi = seq.difference_bounds((n, kb, kb), (n, kc, kc), sign=1.0, alpha=ALPHA, beta=0.01,
                                      tau2=0.02**2, binary=True)
    sup = seq.decide(seq.SUPERIORITY, lo, hi, 0.02)
    assert (sup == seq.SUPERIOR).any(axis=1).mean() <= ALPHA + 0.01  # false promotion
    ni = seq.decide(seq.NON_INFERIORITY, lo, hi, 0.02, (lo + hi) / 2)
    assert (ni == seq.INFERIOR).any(axis=1).mean() <= 0.01  # false rollback of an identical model


def test_power_on_a_clear_effect():
    rng = np.random.default_rng(3)
    champ, chal = cumulative_normal(rng, 0.0, 0.25)
    _, lo, hi = seq.difference_bounds(champ, chal, sign=1.0, alpha=ALPHA, beta=ALPHA, tau2=0.2**2, binary=False)
    sup = seq.decide(seq.SUPERIORITY, lo, hi, 0.2)
    proven = (sup == seq.SUPERIOR).any(axis=1)
    assert proven.mean() >= 0.95
    first = np.argmax(sup == seq.SUPERIOR, axis=1)[proven]
    assert np.median(first) < LOOKS / 2  # stops early, not at the horizon
    # Lower is better (errors): the same data read with sign -1 is "not superior", never superior.
    _, lo2, hi2 = seq.difference_bounds(champ, chal, sign=-1.0, alpha=ALPHA, beta=ALPHA, tau2=0.2**2, binary=False)
    assert not (seq.decide(seq.SUPERIORITY, lo2, hi2, 0.2) == seq.SUPERIOR).any()


def test_combine_is_the_promotion_rule():
    rules = [seq.NON_INFERIORITY, seq.SUPERIORITY, "report"]
    crit = [True, True, False]
    codes = [np.array([seq.NON_INFERIOR, seq.NON_INFERIOR, seq.INFERIOR, seq.UNDECIDED, seq.NON_INFERIOR]),
             np.array([seq.SUPERIOR, seq.UNDECIDED, seq.SUPERIOR, seq.UNDECIDED, seq.NOT_SUPERIOR]),
             np.array([seq.NODATA] * 5)]
    assert seq.combine(rules, crit, codes).tolist() == [seq.PROMOTE, seq.RAMP, seq.REJECT, seq.HOLD, seq.REJECT]


def two_metric_judge(**kw) -> Judge:
    metrics = [
        MetricConfig(name="errors", measure="error", critical=True, effect="absolute", tolerance=0.01,
                     rule="non_inferiority"),
        MetricConfig(name="accuracy", measure="correct", direction="decrease", critical=True, effect="absolute",
                     tolerance=0.02, rule=kw.pop("accuracy_rule", "superiority"), min_effect=0.02),
    ]
    return Judge(JudgeConfig(metrics=metrics, method="sequential", **kw))


def bernoulli(p: float, n: int) -> np.ndarray:
    """Exactly round(p n) ones: hand-made samples with a known mean."""
    k = round(p * n)
    return np.r_[np.ones(k), np.zeros(n - k)]


def test_superiority_rule_promotes_only_a_proven_better_challenger():
    judge = two_metric_judge()
    n = 4000
    errors = (bernoulli(0.01, n), bernoulli(0.01, n))
    better = judge.judge({"errors": errors, "accuracy": (bernoulli(0.85, n), bernoulli(0.90, n))})
    assert better.verdict == "pass" and "superiority on accuracy" in better.decided_by
    big = (bernoulli(0.01, 10_000), bernoulli(0.01, 10_000))
    same = judge.judge({"errors": big, "accuracy": (bernoulli(0.85, 10_000), bernoulli(0.85, 10_000))})
    assert same.verdict == "fail" and "not_superior" in same.decided_by  # proven not 2 points better
    early = judge.judge({"errors": errors, "accuracy": (bernoulli(0.85, 300), bernoulli(0.86, 300))})
    assert early.verdict == "marginal" and "safe to ramp" in early.decided_by  # guards fine, accuracy open
    # The same "same accuracy" samples under non-inferiority pass: the rule, not the data, decides.
    ni = two_metric_judge(accuracy_rule="non_inferiority")
    same_ni = ni.judge({"errors": big, "accuracy": (bernoulli(0.85, 10_000), bernoulli(0.85, 10_000))})
    assert same_ni.verdict == "pass" and same_ni.decided_by == "non-inferiority on errors, accuracy"


def test_non_inferiority_margin_decides_errors():
    judge = two_metric_judge(accuracy_rule="non_inferiority")
    n = 20_000
    acc = (bernoulli(0.85, n), bernoulli(0.85, n))
    within = judge.judge({"errors": (bernoulli(0.01, n), bernoulli(0.015, n)), "accuracy": acc})
    assert within.verdict == "pass"  # half a point more errors is inside the 1-point margin
    beyond = judge.judge({"errors": (bernoulli(0.01, n), bernoulli(0.04, n)), "accuracy": acc})
    assert beyond.verdict == "fail" and beyond.failed_metrics == ["errors"]
    assert "inferior" in beyond.reasons[0]
    row = beyond.table()[0]
    assert row["outcome"] == "inferior" and row["upper"] < 0 and row["estimate"] < -0.01


def test_unlabelled_accuracy_is_nodata_hold_not_fail():
    cfg = default_judge_config().model_copy(update={"method": "sequential"})
    rng = np.random.default_rng(0)
    n = 2000
    lat = rng.lognormal(3.9, 0.3, n), rng.lognormal(3.9, 0.3, n)
    samples = {"error_rate": (np.zeros(n), np.zeros(n)), "model_latency_ms": lat, "model_latency_p99_ms": lat,
               "online_accuracy": (bernoulli(0.9, 20), bernoulli(0.9, 20)),  # too few labels (min 50)
               "prediction_drift": (rng.normal(0.1, 0.03, 40), rng.normal(0.1, 0.03, 40))}
    verdict = Judge(cfg).judge(samples)
    assert verdict.verdict == "marginal" and verdict.critical_nodata == ["online_accuracy"]
    assert not verdict.failed_metrics


def test_latency_is_judged_relative_and_robust_to_stalls():
    cfg = default_judge_config()
    rng = np.random.default_rng(1)
    n = 3000
    champion = rng.lognormal(3.9, 0.3, n)
    noisy = rng.lognormal(3.9, 0.3, n)
    noisy[:90] *= 200.0  # 3 % of the challenger's requests stalled 200x (scheduler noise)
    metric = next(m for m in cfg.metrics if m.name == "model_latency_ms")
    one = JudgeConfig(metrics=[metric], method="sequential")
    healthy = Judge(one).judge({"model_latency_ms": (champion, noisy)})
    assert healthy.verdict != "fail" and healthy.table()[0]["outcome"] == "non_inferior"
    slow = Judge(one).judge({"model_latency_ms": (champion, 2.0 * rng.lognormal(3.9, 0.3, n))})
    assert slow.verdict == "fail" and slow.table()[0]["outcome"] == "inferior"


def test_sequential_config_is_validated():
    with pytest.raises(ValueError, match="rule non_inferiority compares means"):
        MetricConfig(name="p99", measure="latency_ms", statistic="p99", rule="non_inferiority")
    with pytest.raises(ValueError, match="needs a direction"):
        MetricConfig(name="d", measure="confidence", direction="either", rule="superiority")
    with pytest.raises(ValueError, match="at least one metric"):
        JudgeConfig(metrics=[MetricConfig(name="p99", measure="latency_ms", statistic="p99")], method="sequential")
    assert MetricConfig(name="l", measure="latency_ms", effect="relative", tolerance=0.5).threshold == \
        pytest.approx(np.log(1.5))


def _canary_sim():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "canary_sim.py"
    spec = importlib.util.spec_from_file_location("canary_sim", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_canary_simulation_runs_the_rollout_and_rejects_bad_arguments(capsys):
    sim = _canary_sim()
    assert sim.main(["--runs", "30", "--scenarios", "latency_x2,errors_2pct", "--json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    for policy in sim.POLICIES:
        for scenario in ("latency_x2", "errors_2pct"):
            row = out["policies"][policy][scenario]
            assert row["rollback_rate"] == 1.0 and row["promote_rate"] == 0.0
            assert row["mean_intervals_to_decision"] >= 1
    assert sim.main(["--scenarios", "nope"]) == 2
    assert "unknown scenarios ['nope']" in capsys.readouterr().err


def test_a_judge_section_without_metrics_keeps_the_default_metrics():
    from pipelines.control.config import load_canary_config

    cfg = load_canary_config({"judge": {"method": "fixed_horizon", "alpha": 0.01}})
    assert cfg.judge.method == "fixed_horizon" and cfg.judge.alpha == 0.01
    assert [m.name for m in cfg.judge.metrics] == [m.name for m in default_judge_config().metrics]
    with pytest.raises(ValueError, match=r"judge\.methd: unknown key"):
        load_canary_config({"judge": {"methd": "sequential"}})
