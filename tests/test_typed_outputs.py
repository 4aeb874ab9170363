"""The typed stage outputs (pipelines.contracts) as the refresh builds and shows them: no servers, no training.

Each test guards a conversion where a defect hid before: a regression's summary showing accuracy rows, a skipped
tournament read with ``.get`` on a dict, a hand-over that was not a valid ``RefreshResult.canary``, offline
metrics tagged by sniffing the keys a training happened to log."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from monitoring.core.tasks import get_task
from pipelines.cli.output import print_json
from pipelines.contracts import (
    CanaryOutput,
    ChampionFacts,
    DriftSummary,
    HandoverOutput,
    OfflineMetrics,
    PreparedData,
    RefreshResult,
    RetrainOutput,
    SearchOutput,
    TournamentOutput,
    VariantOnline,
)
from pipelines.summary import refresh_details, refresh_table
from pipelines.tournament import analyse, summary_line


def _render(renderable) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


def _strict(result: RefreshResult) -> dict:
    """What ``nasops refresh --json`` prints, parsed by a strict JSON parser (no NaN)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_json(result.model_dump(mode="json"))
    return json.loads(out.getvalue(), parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))


def _result(task: str = "classification", **extra) -> RefreshResult:
    regression = task == "regression"
    data = PreparedData(path="/tmp/d.npz", fingerprint="f", source="s.csv", input_shape=[3], num_classes=1 if
                        regression else 2, classes=[] if regression else [0, 1], feature_names=["a", "b", "c"],
                        task=task)
    search = SearchOutput(search_run_id="r", space="mlp", space_config={}, input_shape=[3], num_classes=1,
                          pool_size=4, evaluations=4, seconds=1.0, prefilter_seconds=0.1, candidates=[], journal="j")
    offline = OfflineMetrics(task=task, **({"val_rmse": 31.5, "test_rmse": 33.25, "test_mae": 25.0} if regression
                                          else {"val_accuracy": 0.91, "test_accuracy": 0.9}))
    challenger = RetrainOutput(version="2", arch="mlp:64", space="mlp", run_id="r2", retrained=1, seed=0,
                               test_loss=0.1, best_epoch=3, train_seconds=1.0, latency_ms=0.2, params=100.0,
                               candidates=[], task=task, **offline.reported())
    champion = ChampionFacts(version="1", arch="base", val_rmse=40.5, test_rmse=41.75) if regression else \
        ChampionFacts(version="1", arch="base", val_accuracy=0.8, test_accuracy=0.79)
    return RefreshResult(model_name="m", refresh_id="x", refresh_run_id="run", tracking_uri="sqlite:///m.db",
                         data=data, search=search, challenger=challenger, champion_before=champion, seconds=2.0,
                         **extra)


def _canary(task: str) -> CanaryOutput:
    online = ({"rmse": 35.5, "mae": 27.0, "accuracy": None, "correct_rows": None} if task == "regression"
              else {"accuracy": 0.875})
    return CanaryOutput(task=task, decision="promoted", reason="better", verdict="pass", score=90.0, model_name="m",
                        champion_version="2", challenger_version="2", previous_champion_version="1",
                        online={"champion": VariantOnline(requests=10, **online),
                                "challenger": VariantOnline(requests=12, **online)},
                        drift=DriftSummary(share=0.1, note="few rows"))


def test_a_regression_summary_shows_rmse_offline_and_online_never_accuracy():
    text = _render(refresh_table(_result("regression", canary=_canary("regression"))))
    assert "val RMSE (offline)" in text and "test RMSE (offline)" in text
    assert "33.2500" in text and "41.7500" in text  # the challenger's and the champion's test RMSE
    assert "RMSE (online)" in text and "MAE (online)" in text and "35.5000" in text
    assert "accuracy" not in text


def test_a_classification_summary_shows_accuracy_offline_and_online():
    text = _render(refresh_table(_result(canary=_canary("classification"))))
    assert "test accuracy (offline)" in text and "0.9000" in text and "0.7900" in text
    assert "accuracy (online)" in text and "0.8750" in text and "RMSE" not in text


def test_a_skipped_tournament_renders_and_dumps_to_strict_json():
    kind = get_task("regression")
    result = _result("regression", tournament=TournamentOutput(skipped=kind.tournament_skip, model_name="m"))
    lines = "\n".join(refresh_details(result))
    assert f"tournament[/bold]          tournament skipped: {kind.tournament_skip}" in lines
    assert "canary skipped" in lines
    dumped = _strict(result)
    assert dumped["challenger"]["val_accuracy"] is None  # NaN is not JSON: --json writes null
    assert dumped["tournament"]["skipped"] == kind.tournament_skip and dumped["canary"] is None
    assert summary_line(None) == "tournament skipped"
    assert summary_line(TournamentOutput(error="RuntimeError: boom")) == "tournament failed: RuntimeError: boom"
    assert get_task("classification").tournament_skip is None


def test_a_hand_over_is_a_refresh_canary_renders_its_reason_and_dumps_to_strict_json():
    handover = HandoverOutput(rollout_id="r1", gateway_url="http://gw", model_name="m", champion_version="1",
                              challenger_version="2", first_step={"mode": "split", "weight": 0.05},
                              reason="rollout r1 started on http://gw")
    result = _result(canary=handover)
    lines = refresh_details(result)
    assert any("rollout r1 started on http://gw" in line for line in lines)
    assert not any("decision[/bold]" in line for line in lines)
    assert "requests (online)" not in _render(refresh_table(result))
    dumped = _strict(result)
    assert dumped["canary"]["handed_over"] is True and dumped["canary"]["decision"] is None
    # read back (a journal, a cache) it is a hand-over again, never a half-filled canary
    assert isinstance(RefreshResult.model_validate(dumped).canary, HandoverOutput)


def test_a_decided_canary_reads_back_as_a_canary():
    result = _result(canary=_canary("classification"))
    again = RefreshResult.model_validate_json(result.model_dump_json())
    assert isinstance(again.canary, CanaryOutput) and again.canary.online["challenger"].requests == 12


def test_a_tournament_with_numpy_counts_is_typed_and_strict_json():
    rows = [{"request_id": f"r{i}", "row": 0, "variant": v, "status": "ok", "correct": bool(i % 2),
             "latency_ms": np.float64(1.5), "shadow": v != "champion"}
            for i in range(20) for v in ("champion", "candidate-1", "candidate-2")]
    report = analyse(pd.DataFrame(rows), [{"alias": "candidate-1", "version": "1", "val_accuracy": 0.9},
                                          {"alias": "candidate-2", "version": "2", "val_accuracy": 0.8}],
                     {"alias": "champion", "version": "9"})
    assert report.ran and report.champion.role == "champion" and report.champion.requests == 20
    assert report.accuracy_correlation.note == "all tied online"  # equal online accuracy: no ranking
    json.dumps(report.model_dump(mode="json"), allow_nan=False)


@pytest.mark.parametrize("task, metrics, tags", [
    ("classification", {"val_accuracy": 0.9, "test_accuracy": 0.8, "test_loss": 0.3, "best_epoch": 4.0},
     {"val_accuracy": 0.9, "test_accuracy": 0.8}),
    ("regression", {"val_neg_rmse": -2.0, "val_rmse": 2.0, "val_mae": 1.5, "test_rmse": 2.5, "test_mae": 1.75,
                    "test_loss": 0.3}, {"val_rmse": 2.0, "val_mae": 1.5, "test_rmse": 2.5, "test_mae": 1.75}),
])
def test_offline_metrics_tag_the_task_kinds_keys(task, metrics, tags):
    offline = OfflineMetrics.from_metrics(task, metrics)
    assert offline.tags() == tags
    reported = offline.reported()
    if task == "regression":
        assert math.isnan(reported["val_accuracy"]) and reported["test_rmse"] == 2.5
        assert offline.headline() == 2.5
    else:
        assert reported["test_accuracy"] == 0.8 and reported["test_rmse"] is None
        assert offline.headline() == 0.8
    assert get_task(task).score(metrics) == metrics[get_task(task).score_key]


def test_the_champion_facts_read_its_tags_through_offline_metrics():
    offline = OfflineMetrics.from_tags({"task": "regression", "val_rmse": "2.5", "test_rmse": "3", "test_mae": "x",
                                        "latency_ms": "0.4", "arch": "mlp"})
    assert (offline.task, offline.val_rmse, offline.test_rmse, offline.test_mae) == ("regression", 2.5, 3.0, None)
    facts = ChampionFacts(version="1", latency_ms=offline.latency_ms, **offline.reported())
    assert facts.test_rmse == 3.0 and math.isnan(facts.test_mae) and math.isnan(facts.val_accuracy)
    assert OfflineMetrics.from_tags({"val_accuracy": "0.9"}).headline("val") == 0.9  # untagged: a classifier


def test_the_canarys_drift_summary_is_a_drift_summary(tmp_path):
    """``features`` is the number of features compared (monitoring.drift.DataDrift.columns), not a list of names:
    the contract said a list, and the first canary with enough distinct rows would have failed to build its
    result."""
    from pipelines.control.config import CanaryConfig
    from pipelines.control.evidence import drift_summary

    rng = np.random.default_rng(0)
    reference = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    rows = [{"variant": v, "shadow": False, "inputs": list(rng.normal(size=3)), "prediction": int(i % 2)}
            for i in range(40) for v in ("champion", "challenger")]
    history = [{"drift": {"champion": 0.0, "challenger": 0.25}}]
    info = drift_summary(pd.DataFrame(rows), reference, CanaryConfig(), history, tmp_path / "drift.html")
    drift = DriftSummary(**info)
    assert drift.features == 3 and drift.distinct_rows == 80 and drift.challenger_share == 0.25
    assert 0.0 <= drift.share <= 1.0 and drift.prediction_drift is not None
