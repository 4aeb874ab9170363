"""Issue 24, "a registry and reports a person reads": what `canary status`, the canary report and the refresh
summary say after the facts changed (a decision taken, a metric whose lower value is better, data that changed)."""

from __future__ import annotations

import re
import time

import pytest

from monitoring.core.enums import Decision, Phase
from monitoring.rollout_store import RolloutStore


def _canary_cli(args, url):
    import typer
    from typer.testing import CliRunner

    from pipelines.cli import rollout

    app = typer.Typer()
    rollout.register(app)
    return CliRunner().invoke(app, [*args, "--model-name", "m", "--prediction-log-url", url], terminal_width=200)


@pytest.mark.slow  # ~0.5 s: the CLI's imports and a SQLite store
def test_canary_status_after_a_decision_stops_counting_time_in_step(tmp_path, nasops_home):
    """A rollout decided 50 min ago, 10 min into step 1: status said '3600 s in step 1' and kept counting."""
    store = RolloutStore(f"sqlite:///{tmp_path / 'predictions.db'}")
    started = time.time() - 3600
    rollout = store.create(model_name="m", champion_version="1", challenger_version="2", mode="split", weight=0.1,
                           config={"steps": [0.1, 1.0]}, now=started)
    store.update(rollout, {"phase": Phase.ROLLED_BACK, "decision": Decision.ROLLED_BACK, "decided_by": "operator",
                           "reason": "aborted by the operator", "weight": 0.0}, kind="abort", actor="operator",
                 now=started + 600)
    decided = store.get(rollout.rollout_id)
    store.update(decided, {"applied": True}, kind="applied", actor="controller")  # the registry caught up, later
    shown = _canary_cli(["status"], str(store.engine.url))
    assert shown.exit_code == 0, shown.output
    line = " ".join(shown.output.split())  # the console may wrap (its width is the first importer's)
    assert "decided at" in line and "after 600 s in step 1" in line and "3600" not in line, line
    stamp = re.search(r"decided at (\S+)", line).group(1)
    from datetime import datetime

    assert abs(datetime.fromisoformat(stamp).timestamp() - (started + 600)) < 2, stamp


# -- the champion against the challenger on the same rows (issue 24) ---------------------------------------------

def _split_data(tmp_path, name: str, seed: int, fingerprint: str):
    """A two-class table whose label is ``x0 > threshold``; each split of the data has other rows."""
    import numpy as np

    from nas.data import TaskData

    rng = np.random.default_rng(seed)

    def part(n):
        x = rng.normal(size=(n, 2)).astype(np.float32)
        return x, (x[:, 0] > 0.3).astype(np.int64)

    (xt, yt), (xv, yv), (xs, ys) = part(40), part(60), part(80)
    data = TaskData(x_train=xt, y_train=yt, x_val=xv, y_val=yv, x_test=xs, y_test=ys, input_shape=(2,),
                    num_classes=2, meta={"fingerprint": fingerprint, "task": "classification", "classes": [0, 1]})
    return str(data.save(tmp_path / f"{name}.npz"))


def _stand_in_champion(model_name, version, data):
    """A champion that answers ``x0 > 0``: its scores depend on which rows it is given."""
    import numpy as np

    def probs(x):
        p = (x[:, 0] > 0).astype(np.float64)
        return np.stack([1 - p, p], axis=1)

    return {s: probs(getattr(data, f"x_{s}")) for s in ("val", "test")}


def test_the_champion_is_scored_again_on_the_new_split_when_the_data_changed(tmp_path):
    """The summary compared the champion's registered test accuracy (its own split) with the challenger's (the new
    one): 0.969 vs 0.979, while on the same rows they scored 0.980 vs 0.979."""
    import numpy as np

    from nas.data import TaskData
    from pipelines.contracts import ChampionFacts
    from pipelines.rescore import champion_on_split
    from pipelines.summary import split_cell

    new = _split_data(tmp_path, "new", seed=1, fingerprint="bbbbbbbbbbbbbbbb")
    registered = ChampionFacts(version="3", val_accuracy=0.5, test_accuracy=0.5)  # from its own split
    facts = champion_on_split(registered, new, "m", "aaaaaaaaaaaaaaaa", outputs=_stand_in_champion)
    data = TaskData.load(new)
    on_new_rows = float(np.mean((data.x_test[:, 0] > 0) == data.y_test))
    assert facts.test_accuracy == on_new_rows and facts.test_accuracy != 0.5
    assert facts.val_accuracy == float(np.mean((data.x_val[:, 0] > 0) == data.y_val))
    assert facts.rescored and facts.split == "bbbbbbbb" and facts.registered_split == "aaaaaaaa"
    assert split_cell(facts) == "bbbbbbbb (re-scored; registered on aaaaaaaa)"
    # the same data: the registered figures stand, and say their split
    same = champion_on_split(registered, new, "m", "bbbbbbbbbbbbbbbb", outputs=_stand_in_champion)
    assert same.test_accuracy == 0.5 and not same.rescored and split_cell(same) == "bbbbbbbb"


def test_a_champion_that_cannot_answer_the_new_rows_keeps_its_figures_labelled_with_their_split(tmp_path):
    from pipelines.contracts import ChampionFacts
    from pipelines.rescore import champion_on_split

    def refuses(*_):
        raise ValueError("other columns")

    new = _split_data(tmp_path, "new", seed=1, fingerprint="bbbbbbbbbbbbbbbb")
    facts = champion_on_split(ChampionFacts(version="3", test_accuracy=0.5), new, "m", "aaaaaaaaaaaaaaaa",
                              outputs=refuses)
    assert facts.test_accuracy == 0.5 and not facts.rescored and facts.split == "aaaaaaaa"


# -- the refresh run and the registered model say what happened (issue 24) ---------------------------------------

def _refresh_result(canary=None):
    from pipelines.contracts import (
        BaselinesOutput,
        CanaryOutput,
        ChampionFacts,
        Contender,
        OfflineMetrics,
        PreparedData,
        RefreshResult,
        RegisteredCandidate,
        RetrainOutput,
        SearchOutput,
    )

    def contender(version, kind, score, test_ll, val_ll):
        offline = OfflineMetrics(val_accuracy=0.9, test_accuracy=0.88)
        return Contender(version=version, model_kind=kind, arch=kind, run_id=f"r{version}", score=-val_ll,
                         offline=offline, metrics={"val_log_loss": val_ll, "test_log_loss": test_ll,
                                                   "val_accuracy": 0.9, "test_accuracy": 0.88})

    nas, lgbm, linear = contender("4", "nas", -0.2, 0.21, 0.2), contender("2", "baseline-lightgbm", -0.3, 0.31, 0.3), \
        contender("3", "baseline-linear", -0.5, 0.52, 0.5)
    data = PreparedData(path="/tmp/d.npz", fingerprint="0123456789abcdef", source="credit.csv", target="default",
                        input_shape=[3], num_classes=2, classes=[0, 1], feature_names=["a", "b", "c"],
                        metric="log_loss")
    search = SearchOutput(search_run_id="r", space="mlp", space_config={}, input_shape=[3], num_classes=2,
                          pool_size=4, evaluations=4, seconds=1.0, prefilter_seconds=0.1, candidates=[], journal="j")
    challenger = RetrainOutput(version="4", arch="nas", space="mlp", run_id="r4", retrained=1, seed=0, val_accuracy=0.9,
                               test_accuracy=0.88, test_loss=0.2, best_epoch=3, train_seconds=1.0, latency_ms=0.2,
                               params=100.0, candidates=[RegisteredCandidate(
                                   version="4", arch="nas", alias="candidate-1", run_id="r4", val_accuracy=0.9,
                                   test_accuracy=0.88, latency_ms=0.2)],
                               ranking=[nas, lgbm, linear])
    champion = ChampionFacts(version="2", model_kind="baseline-lightgbm", split="01234567")
    if canary:
        canary = CanaryOutput(decision="rolled_back", reason="log_loss worse", verdict="fail", score=10.0,
                              model_name="m", champion_version="2", challenger_version="4",
                              previous_champion_version="", report_uri="runs:/c1/canary_report.html")
    return RefreshResult(model_name="m", refresh_id="x1", refresh_run_id="run", tracking_uri="sqlite:///m.db",
                         data=data, search=search, challenger=challenger, champion_before=champion, seconds=2.0,
                         baselines=BaselinesOutput(models=[lgbm, linear]), canary=canary)


def test_the_refresh_run_carries_the_quality_figures_and_the_registered_versions():
    """The refresh run showed no quality metric and no registered model."""
    from pipelines.refresh_facts import run_facts

    metrics, tags = run_facts(_refresh_result(canary=True))
    assert metrics["test_log_loss"] == 0.21 and metrics["val_log_loss"] == 0.2 and metrics["test_accuracy"] == 0.88
    assert metrics["champion.test_log_loss"] == 0.31  # the champion on the same split (it was ranked here)
    assert tags["nasops.registered_versions"] == "2,3,4" and tags["nasops.challenger_version"] == "4"
    assert tags["nasops.champion_version"] == "2" and tags["nasops.split_fingerprint"] == "01234567"
    assert tags["nasops.champion_split"] == "01234567"


def test_the_registered_model_is_described_by_the_refresh():
    """Models had no description: what it is, its champion against the best baseline, the last decision, report."""
    from pipelines.refresh_facts import model_description

    text = model_description(_refresh_result(canary=True))
    assert "classification of default from credit.csv" in text and "refresh x1" in text
    assert "Champion: v2 (baseline-lightgbm), test log_loss 0.31 (split 01234567)." in text  # it is the best baseline
    assert "Last decision: rolled_back v4 — log_loss worse. Report: runs:/c1/canary_report.html" in text
    assert len(text.splitlines()) == 3
    skipped = model_description(_refresh_result())
    assert "canary skipped" in skipped


def test_each_model_has_its_own_experiment_unless_one_is_named(monkeypatch, tmp_path):
    from pipelines.settings import Settings
    from pipelines.tracking import experiment_name

    monkeypatch.setenv("NASOPS_HOME", str(tmp_path))
    monkeypatch.delenv("NASOPS_EXPERIMENT", raising=False)
    assert experiment_name(Settings(), "credit") == "nasops/credit"
    assert experiment_name(Settings()) == "nasops-refresh"  # no model: the shared one, as before
    monkeypatch.setenv("NASOPS_EXPERIMENT", "team-x")
    assert experiment_name(Settings(), "credit") == "team-x"


# -- the canary report and sentence read each metric in its own direction (issue 24) -----------------------------

def test_the_regression_report_paints_a_lower_rmse_green_in_its_own_column():
    """The regression canary report painted the challenger's lower RMSE red and had no RMSE column."""
    from monitoring.report import canary_report_html

    row = {"name": "online_rmse", "classification": "Low", "direction": "increase", "failed": False,
           "statistic": "rms", "champion_value": 40.0, "challenger_value": 30.0, "effect_kind": "relative"}
    unjudged = {**row, "name": "online_mae", "direction": "either", "classification": "Low"}  # the registry's way
    online = {"champion": {"requests": 10, "rmse": 40.0, "mae": 30.0}, "challenger": {"requests": 9, "rmse": 30.0,
                                                                                      "mae": 33.0}}
    page = canary_report_html({"decision": "promoted", "online": online}, [row, unjudged], [], why="promoted")
    assert '<tr class="better"><td>online_rmse' in page and '<tr class="better"><td>online_mae' in page
    assert "<th>online_rmse</th>" in page and "<th>online_mae</th>" in page and "<th>accuracy</th>" not in page
    assert '<td class="better">30</td>' in page and '<td class="worse">33</td>' in page  # the challenger's cells
    failed = canary_report_html({"decision": "rolled_back"}, [{**row, "classification": "High", "failed": True}], [])
    assert '<tr class="worse"><td>online_rmse' in failed


def test_a_latency_within_tolerance_states_the_rule_where_it_is_applied():
    """`latency_ms: shift within tolerance` for a 12x median: the log offset and the ratio were not said."""
    import numpy as np

    from monitoring.decision_reason import decision_sentence
    from monitoring.judge import classify_metric
    from monitoring.judge_config import MetricConfig

    metric = MetricConfig(name="latency_ms", measure="latency_ms", statistic="median", effect="relative",
                          tolerance=1.0, log_offset=20.0, critical=True)
    rng = np.random.default_rng(0)
    result = classify_metric(metric, rng.normal(1.0, 0.05, 200), rng.normal(12.0, 0.5, 200), alpha=0.05,
                             min_samples=10)
    assert not result.failed and result.log_offset == 20.0
    assert "compared on ms + 20: ratio ×1.52, log ratio +0.42" in result.reason, result.reason
    assert "median 11.9 ms vs 1 ms on the champion (×11.9 raw)" in result.reason
    assert "against tolerance 1" in result.reason
    sentence = decision_sentence("promoted", [result.to_dict()])
    assert "latency_ms not worse (median 11.9 ms vs 1 ms on the champion (×11.9 raw); compared on ms + 20: ratio " \
        "×1.52, log ratio +0.42, relative effect +0.52 against tolerance 1)" in sentence, sentence


@pytest.mark.slow  # a SQLite MLflow registry (~2 s to create)
def test_the_tournament_leaves_out_a_champions_offline_figures_from_other_rows(nasops_home, tmp_path):
    """The tournament's champion row showed its validation accuracy on its own (old) split beside the candidates'
    on the new one."""
    from pipelines.settings import Settings
    from pipelines.tournament import _tournament_inputs, parse_config
    from pipelines.tracking import Tracking

    client = Tracking.open(Settings()).client
    client.create_registered_model("m")
    (tmp_path / "model").mkdir()
    for fingerprint in ("old", "new", "new"):  # versions 1, 2, 3
        client.create_model_version("m", source=str(tmp_path / "model"),
                                    tags={"nasops.dataset_fingerprint": fingerprint, "nasops.val_accuracy": "0.9"})
    for alias, version in (("champion", 1), ("candidate-1", 2), ("candidate-2", 3)):
        client.set_registered_model_alias("m", alias, str(version))
    _, candidates, champion = _tournament_inputs(client, "m", parse_config(None), "accuracy", "new")
    assert champion.val_accuracy is None and all(c.val_accuracy == 0.9 for c in candidates)
    _, _, same = _tournament_inputs(client, "m", parse_config(None), "accuracy", "old")
    assert same.val_accuracy == 0.9


def test_a_promoted_rollout_is_shown_in_its_last_step_not_past_it():
    """After a promotion the record's step index is one past the last step: status said 'in step 5' of 4."""
    from types import SimpleNamespace

    from pipelines.cli.rollout import step_clock

    promoted = SimpleNamespace(config={"steps": [0.05, 0.25, 0.5, 1.0]}, step_index=4, step_started_at=100.0)
    assert step_clock(promoted, 104.0, 200.0).endswith("after 4 s in step 4")
    assert step_clock(SimpleNamespace(config={}, step_index=0, step_started_at=100.0), None, 110.0) == \
        "10 s in step 1"
