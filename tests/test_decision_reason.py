"""The one sentence saying why a rollout was decided: the metric, its evidence, which latency (model time or end to
end), which samples, at what share and interval — the same sentence in ``nasops canary status`` and the HTML
report. Real judge verdicts on synthetic samples, a rollout record in SQLite, the CLI in-process: no server."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support_cli import nasops

from monitoring.decision_reason import decision_sentence, measure_label, rollout_sentence
from monitoring.judge import Judge
from monitoring.judge_config import default_judge_config
from monitoring.report import canary_report_html
from monitoring.rollout_store import RolloutStore


def _verdict(method: str, *, slower_ms: float = 0.0, error_rate: float = 0.0, n: int = 400):
    """The packaged judge (``method``) on one look: identical variants except the challenger's compute time and
    error rate."""
    rng = np.random.default_rng(0)

    def pair(median: float, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        return rng.lognormal(np.log(median), 0.2, n), rng.lognormal(np.log(median), 0.2, n) + shift

    correct = (rng.random(n) < 0.9).astype(float)  # the same accuracy on both sides
    samples = {"error_rate": (np.zeros(n), (rng.random(n) < error_rate).astype(float)),
               "model_latency_ms": pair(2.0, slower_ms), "model_latency_p99_ms": pair(2.0, slower_ms),
               "e2e_latency_ms": pair(3.0, slower_ms), "e2e_latency_p99_ms": pair(3.0, slower_ms),
               "online_accuracy": (correct, correct.copy())}
    return Judge(default_judge_config().model_copy(update={"method": method})).judge(samples)


def test_a_sequential_latency_rollback_names_the_metric_bounds_model_time_and_the_samples():
    verdict = _verdict("sequential", slower_ms=40.0)
    sentence = decision_sentence("rolled_back", verdict.table(), reason="judge failed 2 interval(s)", mode="split",
                                 weight=0.25, interval=4, window="interval")
    assert sentence.startswith("rolled back: model_latency_ms worse (always-valid bounds [+"), sentence
    assert "on log ms, margin 0.41)" in sentence
    assert "model compute time on the same worker path" in sentence
    assert "time-matched samples" in sentence and "at 25% traffic, interval 4" in sentence
    assert "\n" not in sentence and sentence.count(" — ") == 1


def test_the_sentence_says_when_the_samples_were_not_time_matched():
    verdict = _verdict("sequential", slower_ms=40.0)
    sentence = decision_sentence("rolled_back", verdict.table(), reason="x", mode="split", weight=0.05, interval=2,
                                 window="cumulative")
    assert "not time-matched" in sentence and "at 5% traffic, interval 2" in sentence


def test_a_fixed_horizon_error_rollback_gives_the_rates_effect_and_test():
    verdict = _verdict("fixed_horizon", error_rate=0.2)
    sentence = decision_sentence("rolled_back", verdict.table(), reason="judge failed 2 interval(s)", mode="split",
                                 weight=0.05, interval=3, window="cumulative")
    assert sentence.startswith("rolled back: error_rate worse (mean 0."), sentence
    assert "on the champion, effect +0." in sentence and "Mann-Whitney p=" in sentence
    assert "compute time" not in sentence  # no latency row decided it


def test_an_end_to_end_latency_row_says_it_is_end_to_end():
    verdict = _verdict("fixed_horizon", slower_ms=40.0)
    rows = [{**row, "critical": row["name"] == "e2e_latency_ms", "failed": row["name"] == "e2e_latency_ms"}
            for row in verdict.table()]
    sentence = decision_sentence("rolled_back", rows, reason="x", mode="split", weight=0.5, interval=5)
    assert "e2e_latency_ms worse" in sentence and "end-to-end time in the gateway" in sentence
    assert measure_label("compute_ms") == "model time (compute_ms)"
    assert measure_label("latency_ms") == "end to end (latency_ms)"


def test_a_promotion_names_the_critical_metrics_and_an_operator_decision_names_the_operator():
    verdict = _verdict("fixed_horizon")
    promoted = decision_sentence("promoted", verdict.table(), reason="passed every step", mode="split", weight=1.0,
                                 interval=4, window="cumulative")
    assert promoted.startswith("promoted: no critical metric worse at any step: error_rate not worse"), promoted
    assert "online_accuracy not worse" in promoted and "at 100% traffic" in promoted
    manual = decision_sentence("promoted", verdict.table(), reason="promoted manually, skipping the remaining steps",
                               decided_by="operator", mode="split", weight=0.25, interval=2)
    assert manual == "promoted by the operator: promoted manually, skipping the remaining steps"


def test_a_spent_budget_names_what_stayed_open():
    verdict = _verdict("sequential")
    sentence = decision_sentence("rolled_back", verdict.table(), reason="no passing decision within 14 intervals",
                                 mode="split", weight=1.0, interval=14, window="cumulative")
    assert sentence.startswith("rolled back: no passing verdict before the interval budget ran out: "), sentence
    assert "online_accuracy" in sentence


def _decided_record(store: RolloutStore, verdict, *, weight: float = 0.25, interval: int = 4):
    rollout = store.create(model_name="m", champion_version="1", challenger_version="2", mode="split", weight=weight,
                           config={"window": "cumulative", "steps": [0.05, 0.25, 0.5, 1.0]}, actor="controller")
    step = {"interval": interval, "mode": "split", "weight": weight, "verdict": "fail", "outcome": "fail",
            "score": 40.0, "failed_metrics": verdict.failed_metrics}
    return store.update(rollout, {
        "phase": "rolled_back", "decision": "rolled_back", "decided_by": "controller", "mode": "split",
        "weight": 0.0, "intervals": interval, "history": [step],
        "reason": "judge failed 2 interval(s) (limit 1) at 25% traffic: " + "; ".join(verdict.reasons),
        "last_verdict": {**verdict.to_dict(), "evidence": verdict.table(), "coverage": {}, "interval": interval},
    }, kind="interval", actor="controller")


@pytest.mark.parametrize("method", ["sequential", "fixed_horizon"])
def test_canary_status_says_in_one_sentence_why_the_rollout_was_decided(tmp_path, method):
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    store = RolloutStore(url)
    rollout = _decided_record(store, _verdict(method, slower_ms=40.0))
    store.engine.dispose()
    sentence = rollout_sentence(rollout)
    assert sentence.startswith("rolled back: model_latency_ms worse (")
    assert sentence.endswith("not time-matched), at 25% traffic, interval 4"), sentence

    shown = nasops("canary", "status", "--model-name", "m", "--prediction-log-url", url, home=tmp_path / "h")
    assert shown.returncode == 0, shown.stderr
    flat = " ".join(shown.stdout.split())  # rich wraps long lines at the terminal width
    assert " ".join(sentence.split()) in flat, flat
    assert "model_latency_ms" in flat and "e2e_latency_ms" in flat  # the evidence table below it

    from rich.console import Console

    from pipelines.cli.canary import evidence_table

    wide = Console(width=400, record=True)
    wide.print(evidence_table({"verdict": "fail", "score": 40.0, "evidence": rollout.last_verdict["evidence"]}))
    table = wide.export_text()
    assert "model time (compute_ms)" in table and "end to end (latency_ms)" in table  # which latency each row is

    as_json = nasops("canary", "status", "--json", "--model-name", "m", "--prediction-log-url", url,
                     home=tmp_path / "h")
    assert json.loads(as_json.stdout)["why"] == sentence


def test_the_html_report_carries_the_same_sentence_and_labels_the_latency_rows():
    verdict = _verdict("sequential", slower_ms=40.0)
    steps = [{"interval": 4, "mode": "split", "weight": 0.25, "verdict": "fail", "outcome": "fail", "score": 40.0,
              "failed_metrics": verdict.failed_metrics}]
    result = {"decision": "rolled_back", "reason": "judge failed 2 interval(s)", "intervals": 4,
              "model_name": "m", "challenger_version": "2", "champion_version": "1", "decided_by": "controller"}
    sentence = decision_sentence("rolled_back", verdict.table(), reason=result["reason"], mode="split", weight=0.25,
                                 interval=4, window="interval")
    page = canary_report_html(result, verdict.table(), steps, why=sentence)
    assert "<b>Why:</b> rolled back: model_latency_ms worse (always-valid bounds [+" in page
    assert "time-matched samples (the same interval for both variants), at 25% traffic, interval 4" in page
    assert "model time (compute_ms)" in page and "end to end (latency_ms)" in page
    # without a sentence given, the page builds it from the result itself (its window unknown: not claimed)
    default = canary_report_html(result, verdict.table(), steps)
    assert "<b>Why:</b> rolled back: model_latency_ms worse" in default and "time-matched" not in default


def test_the_controller_evidence_builds_the_report_sentence_from_the_deciding_step_and_the_window():
    from pipelines.control.config import load_canary_config
    from pipelines.control.evidence import decision_why
    from pipelines.control.rollout import RolloutState, schedule

    cfg = load_canary_config({"window": "interval", "judge": {"method": "sequential"}})
    verdict = _verdict("sequential", slower_ms=40.0)
    state = RolloutState(schedule(cfg), cfg)
    state.advance(verdict)
    state.advance(verdict)  # the second failed interval rolls back (failure limit 1)
    state.history = [{"interval": 2, "mode": "split", "weight": 0.05}]
    sentence = decision_why(state, verdict, cfg, "controller")
    assert state.decision == "rolled_back" and sentence.startswith("rolled back: model_latency_ms worse ("), sentence
    assert sentence.endswith("time-matched samples (the same interval for both variants), at 5% traffic, interval 2")


def test_a_fixed_horizon_metric_significantly_better_is_called_better():
    rows = [{"name": "online_accuracy", "critical": True, "failed": False, "classification": "High",
             "direction": "decrease", "statistic": "mean", "champion_value": 0.942, "challenger_value": 0.994,
             "measure": "correct"}]
    sentence = decision_sentence("promoted", rows, reason="passed every step", mode="split", weight=1.0, interval=4)
    assert sentence == ("promoted: no critical metric worse at any step: online_accuracy better (mean 0.994 vs 0.942 "
                        "on the champion) — at 100% traffic, interval 4")


def test_the_default_matched_window_is_named_time_matched():
    from monitoring.decision_reason import comparison

    assert comparison("matched").startswith("time-matched samples")
