"""The fixed-horizon judge's error guard on thin evidence: an erroring challenger is never passed for lack of proof.

The defect (benchmarks/canary_real.py under CPU load): a challenger failing 2 % of its requests, judged on a few
hundred requests, showed ``mean 0.0138 vs 0`` -- beyond the 0.01 tolerance but not significant -- and the old rule
read "no significant shift" as Pass: promoted with ``failed_metrics: []`` in 4 of 23 rollouts.
"""

from __future__ import annotations

import numpy as np

from monitoring.judge import HIGH, NODATA, PASS, Judge, fixed_class
from monitoring.judge_config import default_judge_config
from monitoring.samples import MetricSamples


def _errors(n: int, k: int) -> np.ndarray:
    out = np.zeros(n)
    out[:k] = 1.0
    return out


def _evidence(champion_errors: tuple[int, int], challenger_errors: tuple[int, int]) -> dict:
    """Error rows of both variants and identical prediction drift (so only the error guard can decide)."""
    drift = np.linspace(0.1, 0.2, 5)
    return {"error_rate": (_errors(*champion_errors), _errors(*challenger_errors)),
            "prediction_drift": (drift, drift.copy())}


def test_errors_beyond_tolerance_without_proof_hold_instead_of_passing():
    # As the promoted real-path rollouts (0.0138 vs 0): 2 errors in 120 challenger requests against none in 60.
    verdict = Judge(default_judge_config()).judge(_evidence((60, 0), (120, 2)))
    row = next(m for m in verdict.metrics if m.name == "error_rate")
    assert row.p_value >= 0.05 and row.effect > row.tolerance
    assert row.classification == NODATA and row.outcome == "undecided" and not row.failed
    assert verdict.verdict == "nodata"  # the step holds: more requests come before anything is decided
    assert "error_rate" in verdict.critical_nodata  # and a promotion can never rest on it
    assert "not significant" in verdict.reasons[0]


def test_proven_errors_still_fail_and_error_free_challengers_still_pass():
    judge = Judge(default_judge_config())
    failed = judge.judge(_evidence((60, 0), (120, 20)))
    assert failed.verdict == "fail" and failed.failed_metrics == ["error_rate"]
    clean = judge.judge(_evidence((60, 0), (120, 0)))  # A/A on the real path: no errors on either side
    assert clean.verdict == "pass"


def test_fixed_class_is_vectorised_and_only_holds_critical_count_guards():
    cfg = default_judge_config()
    errors = next(m for m in cfg.metrics if m.name == "error_rate")
    latency = next(m for m in cfg.metrics if m.name == "model_latency_ms")
    p = np.array([0.5, 0.01, 0.5])
    effect = np.array([0.02, 0.02, 0.005])
    assert list(fixed_class(errors, p, effect, 0.05)) == [NODATA, HIGH, PASS]
    # latency keeps the plain rule (noisy small samples would hold A/A canaries; measured in docs/benchmarks.md)
    assert list(fixed_class(latency, p, np.array([0.8, 0.8, 0.1]), 0.05)) == [PASS, HIGH, PASS]
    assert fixed_class(errors, 0.5, 0.02, 0.05, worse=True) == HIGH  # the count test's proof of "worse"


def test_time_matched_error_samples_are_judged_the_same_way():
    b, c = _errors(60, 0), _errors(120, 2)
    samples = MetricSamples(b, c, np.full(60, 2.0), np.ones(120), np.zeros(60, int), np.zeros(120, int))
    drift = np.linspace(0.1, 0.2, 5)
    verdict = Judge(default_judge_config()).judge({"error_rate": samples, "prediction_drift": (drift, drift)})
    assert verdict.verdict == "nodata"


def test_a_rollout_decided_on_no_data_says_nodata_not_fail():
    """Issue 24: `--json` said ``verdict: fail`` while its reason said every step had no data. The result and the
    decision tags now carry the deciding look's own word."""
    from pipelines.control.evidence import decision_verdict

    held = Judge(default_judge_config()).judge(_evidence((60, 0), (120, 2)))
    assert held.verdict == "nodata" and decision_verdict(held) == "nodata"
    failed = Judge(default_judge_config()).judge(_evidence((60, 0), (120, 20)))
    assert decision_verdict(failed) == "fail"
