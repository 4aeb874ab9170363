"""The refresh-level metric (monitoring.core.metrics): the registry, the defaults chosen from the target, each offline
scorer against a hand-computed value, the per-row online measures, the judge a version's metric gives, and the
option's validation (config and CLI). All cheap: no server, no training."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from monitoring.core.metrics import (
    default_metric,
    get_metric,
    metric_names,
    online_problem,
    rank_auc,
    resolve_params,
    scorer,
)
from monitoring.judge_config import default_judge_config, for_task
from monitoring.metric_judge import for_metric, primary_label_metric
from monitoring.online import label_measure


# -- registry and defaults -------------------------------------------------------------------------------------------
def test_the_registry_names_every_metric_the_issue_lists():
    assert set(metric_names()) >= {"accuracy", "balanced_accuracy", "log_loss", "roc_auc", "f1", "cost", "rmse", "mae"}
    assert metric_names("regression") == ["mae", "rmse"]
    with pytest.raises(ValueError, match=r"unknown metric 'auc'.*accuracy"):
        get_metric("auc")


def test_a_3_percent_positive_target_defaults_to_a_metric_always_majority_does_not_win():
    """"Always the majority class" scores 0.97 accuracy on a 3 %-positive target; the default metric must rank a
    model with signal above it, which log loss does (and accuracy does not)."""
    rng = np.random.default_rng(0)
    y = (rng.random(4000) < 0.03).astype(int)
    name, reason = default_metric("classification", np.bincount(y).tolist())
    assert name != "accuracy" and "rarer class is 3." in reason
    majority = np.column_stack([np.full(len(y), 0.97), np.full(len(y), 0.03)])  # the base rate, every row
    hard_majority = np.column_stack([np.ones(len(y)), np.zeros(len(y))])
    signal = np.where(y == 1, 0.4, 0.01)  # a model with signal that never crosses 0.5: it predicts "no" everywhere
    model = np.column_stack([1 - signal, signal])
    score = scorer(name, [0, 1])
    assert score(y, model) > score(y, majority) > score(y, hard_majority)
    accuracy = scorer("accuracy", [0, 1])
    assert accuracy(y, hard_majority) == accuracy(y, model)  # accuracy cannot tell them apart: not the default


def test_a_balanced_target_defaults_to_accuracy_and_a_number_to_rmse():
    assert default_metric("classification", [50, 50])[0] == "accuracy"
    assert default_metric("classification", [30, 30, 5])[0] == "accuracy"  # multi-class: no binary imbalance rule
    assert default_metric("regression")[0] == "rmse"


# -- offline scorers against hand-computed values -----------------------------------------------------------------
Y = np.array([0, 0, 1, 1])
P = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.8, 0.2]])  # predicted: 0, 1, 1, 0


@pytest.mark.parametrize("name, expected", [
    ("accuracy", 0.5),
    ("balanced_accuracy", 0.5),
    ("log_loss", -(math.log(0.9) + math.log(0.4) + math.log(0.7) + math.log(0.2)) / 4),
    ("roc_auc", 0.75),  # positives' p1 (0.7, 0.2) vs negatives' (0.1, 0.6): 3 of 4 pairs ordered
    ("f1", 0.5),  # tp 1, fp 1, fn 1
])
def test_each_classification_scorer_matches_its_hand_computed_value(name, expected):
    assert get_metric(name).score(Y, P, [0, 1]) == pytest.approx(expected)


def test_balanced_accuracy_is_the_mean_of_per_class_recalls():
    y = np.array([0, 0, 0, 1])
    p = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
    assert get_metric("balanced_accuracy").score(y, p) == pytest.approx((2 / 3 + 1) / 2)


def test_cost_is_the_mean_cost_of_true_and_predicted_class():
    matrix = [[0, 1], [10, 0]]  # a missed positive costs 10, a false alarm 1
    assert get_metric("cost").score(Y, P, [0, 1], cost_matrix=matrix) == pytest.approx((0 + 1 + 0 + 10) / 4)


def test_auc_counts_ties_as_one_half_and_f1_uses_the_named_positive_class():
    assert rank_auc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5
    f1_of_zero = get_metric("f1").score(Y, P, ["no", "yes"], positive_class="no")
    assert f1_of_zero == pytest.approx(0.5)


@pytest.mark.parametrize("name, expected", [("rmse", math.sqrt((1 + 4 + 0) / 3)), ("mae", (1 + 2 + 0) / 3)])
def test_the_regression_scorers_match_their_hand_computed_values(name, expected):
    assert get_metric(name).score([1.0, 2.0, 3.0], [2.0, 0.0, 3.0]) == pytest.approx(expected)


def test_the_ranking_scorer_is_higher_is_better_for_every_metric():
    assert scorer("log_loss", [0, 1])(Y, P) == pytest.approx(-get_metric("log_loss").score(Y, P))
    assert scorer("accuracy", [0, 1])(Y, P) == pytest.approx(0.5)


def test_params_are_checked_against_the_metric_and_the_classes():
    assert resolve_params("f1", ["no", "yes"], {"positive_class": "yes"}) == {"positive_class": "yes"}
    with pytest.raises(ValueError, match="not one of the model's classes"):
        resolve_params("f1", ["no", "yes"], {"positive_class": "maybe"})
    with pytest.raises(ValueError, match="must be 2x2"):
        resolve_params("cost", ["no", "yes"], {"cost_matrix": [[0, 1, 2]]})
    with pytest.raises(ValueError, match="takes no metric_params"):
        resolve_params("accuracy", ["no", "yes"], {"positive_class": "yes"})


# -- per-row online measures --------------------------------------------------------------------------------------
def _log(rows):
    return pd.DataFrame(rows, columns=["label", "prediction", "probabilities", "correct"])


def test_the_online_measures_are_the_per_row_terms_of_the_offline_metrics():
    rows = _log([("no", "no", [0.9, 0.1], True), ("no", "yes", [0.4, 0.6], False),
                 ("yes", "yes", [0.3, 0.7], True), ("yes", "no", [0.8, 0.2], False),
                 (None, "no", [0.5, 0.5], None)])  # an unlabelled row gives no term
    classes = ["no", "yes"]
    loss = label_measure("log_loss", rows, classes=classes)
    assert loss.mean() == pytest.approx(get_metric("log_loss").score(Y, P))
    cost = label_measure("cost", rows, classes=classes, params={"cost_matrix": [[0, 1], [10, 0]]})
    assert cost.tolist() == [0, 1, 0, 10]
    balanced = label_measure("balanced_correct", rows, classes=classes, reference={"no": 0.9, "yes": 0.1})
    assert balanced.tolist() == pytest.approx([1 / (2 * 0.9), 0, 1 / (2 * 0.1), 0])


def test_balanced_correct_averages_to_balanced_accuracy_on_traffic_in_the_training_mix():
    y = np.array([0] * 90 + [1] * 10)
    predicted = np.array([0] * 90 + [1] * 5 + [0] * 5)
    rows = _log([(int(t), int(p), None, bool(t == p)) for t, p in zip(y, predicted, strict=True)])
    values = label_measure("balanced_correct", rows, classes=[0, 1], reference={"0": 0.9, "1": 0.1})
    offline = get_metric("balanced_accuracy").score(y, np.eye(2)[predicted])
    assert values.mean() == pytest.approx(offline)


# -- the judge of a version's metric ------------------------------------------------------------------------------
def test_the_judge_compares_the_versions_metric_in_place_of_online_accuracy():
    judge = for_metric(default_judge_config(), "log_loss")
    primary = primary_label_metric(judge)
    assert primary.name == "online_log_loss" and primary.measure == "log_loss" and primary.critical
    assert primary.direction == "increase" and primary.rule == "superiority"
    assert "online_accuracy" not in {m.name for m in judge.metrics}
    assert for_metric(default_judge_config(), "accuracy") == default_judge_config()
    assert for_metric(default_judge_config(), None) == default_judge_config()


def test_a_regression_judged_on_mae_makes_mae_the_critical_metric():
    judge = for_metric(for_task(default_judge_config(), "regression"), "mae")
    primary = primary_label_metric(judge)
    assert (primary.name, primary.statistic, primary.critical) == ("online_mae", "mean", True)
    assert [m.name for m in judge.metrics].count("online_mae") == 1
    assert "online_rmse" not in {m.name for m in judge.metrics}


def test_an_offline_only_metric_is_refused_online_in_one_line():
    assert online_problem("log_loss") is None
    for name in ("roc_auc", "f1"):
        assert "offline only" in online_problem(name) and "--skip-canary" in online_problem(name)
        with pytest.raises(ValueError, match="offline only"):
            for_metric(default_judge_config(), name)


# -- configuration and the CLI ------------------------------------------------------------------------------------
def test_the_refresh_config_validates_the_metric_once():
    from pipelines.config import RefreshConfig
    from pipelines.errors import UserError, parse_model

    assert parse_model(RefreshConfig, {"metric": "log_loss"}, "refresh configuration").metric == "log_loss"
    assert parse_model(RefreshConfig, {"metric": "roc_auc", "skip_canary": True}, "x").metric == "roc_auc"
    for raw, needle in (({"metric": "auc"}, "unknown metric 'auc'"), ({"metric": "roc_auc"}, "offline only"),
                        ({"metric": "accuracy", "metric_params": {"cost_matrix": [[0]]}}, "takes no metric_params"),
                        ({"metric_params": {"positive_class": 1}}, "without a metric")):
        with pytest.raises(UserError, match=needle):
            parse_model(RefreshConfig, raw, "refresh configuration")


def test_an_unknown_metric_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    from support_cli import nasops

    proc = nasops("refresh", "--metric", "auc", home=tmp_path / "h")
    assert proc.returncode == 2
    assert "unknown metric 'auc'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_metric_that_does_not_fit_the_target_is_refused_by_data_prep(tmp_path):
    from pipelines.config import DataSpec
    from pipelines.data import DataValidationError, load_table, plan_rows

    path = tmp_path / "t.csv"
    rng = np.random.default_rng(0)
    pd.DataFrame({"a": rng.normal(size=200), "y": (rng.random(200) < 0.1).astype(int)}).to_csv(path, index=False)
    spec = DataSpec(source=str(path), target="y", metric="rmse")
    with pytest.raises(DataValidationError, match="metric rmse does not apply to a classification target"):
        plan_rows(spec, *load_table(spec)[:2])
    plan = plan_rows(DataSpec(source=str(path), target="y"), *load_table(spec)[:2])
    assert plan.metric == "log_loss" and "rarer class" in plan.metric_reason
    for part in plan.parts.values():  # stratified: the rare class is in every split
        assert 0.05 < plan.codes[part].mean() < 0.16


# -- the tournament ranks by the metric ---------------------------------------------------------------------------
def test_the_tournament_ranks_candidates_by_the_refresh_metric():
    """Two candidates equally accurate on a 5 %-positive target (both always answer "no"); one is calibrated, the
    other is sure of every answer. On log loss the calibrated one wins online; the offline winner (the other, by its
    val_log_loss tag) falls behind, tested on the paired per-row terms."""
    from pipelines.tournament import MetricRanking, analyse

    rng = np.random.default_rng(1)
    y = np.where(rng.random(400) < 0.05, "yes", "no")
    y[:3] = "yes"
    p_yes = {"champion": 0.05, "candidate-1": 1e-4, "candidate-2": np.where(y == "yes", 0.3, 0.03)}
    rows = []
    for variant, p in p_yes.items():
        p = np.broadcast_to(p, y.shape)
        for i, label in enumerate(y):
            rows.append({"request_id": f"r{i}", "row": 0, "variant": variant, "status": "ok", "latency_ms": 1.0,
                         "label": str(label), "prediction": "no", "probabilities": [1 - float(p[i]), float(p[i])],
                         "correct": label == "no", "shadow": variant != "champion"})
    frame = pd.DataFrame(rows)
    cands = [{"alias": "candidate-1", "version": "1", "val_metric": 0.10},
             {"alias": "candidate-2", "version": "2", "val_metric": 0.15}]
    ranking = MetricRanking("log_loss", ["no", "yes"], reference={"no": 0.95, "yes": 0.05})
    report = analyse(frame, cands, {"alias": "champion", "version": "9"}, ranking=ranking)
    assert report.metric == "log_loss"
    by_alias = {c.alias: c for c in report.candidates}
    assert by_alias["candidate-1"].online_accuracy == by_alias["candidate-2"].online_accuracy
    assert by_alias["candidate-2"].online_metric < by_alias["candidate-1"].online_metric
    assert (by_alias["candidate-1"].offline_rank, by_alias["candidate-1"].online_rank) == (1, 2)
    winner = report.winner
    assert winner.online_winner == "candidate-2" and winner.falls_behind and winner.gap > 0
    assert winner.test.test == "paired_t" and winner.test.paired_rows == 400 and winner.significant


def test_a_challenger_ranked_offline_only_is_refused_before_its_rollout():
    """The controller's judge for a version's metric (pipelines.control.context.judge_for): log loss replaces the
    primary, an offline-only metric is a ValueError that start_rollout turns into one line."""
    from monitoring.core.model_ref import ModelRef
    from pipelines.control.context import judge_for

    tags = {"nasops.metric": "log_loss", "nasops.classes": '["no", "yes"]'}
    ref = ModelRef.from_tags("credit", "2", tags)
    assert ref.metric == "log_loss" and ref.classes == ["no", "yes"]
    assert primary_label_metric(judge_for(default_judge_config(), ref)).name == "online_log_loss"
    cost = ModelRef.from_tags("credit", "2", {"nasops.metric": "cost", "nasops.metric_params": '{"cost_matrix": '
                                              '[[0, 1], [10, 0]]}'})
    assert cost.metric_params == {"cost_matrix": [[0, 1], [10, 0]]}
    with pytest.raises(ValueError, match="offline only"):
        judge_for(default_judge_config(), ModelRef.from_tags("credit", "3", {"nasops.metric": "roc_auc"}))
    unchanged = ModelRef.from_tags("digits", "1", {})  # a version registered before the metric tag
    assert judge_for(default_judge_config(), unchanged) == default_judge_config()


def test_prepared_data_carries_the_metric_and_class_weights_only_where_they_help(tmp_path):
    from nas.data import TaskData
    from pipelines.config import DataSpec
    from pipelines.data import prepare

    path = tmp_path / "t.csv"
    rng = np.random.default_rng(0)
    pd.DataFrame({"a": rng.normal(size=400), "y": np.where(rng.random(400) < 0.08, "yes", "no")}).to_csv(path,
                                                                                                     index=False)
    default = TaskData.load(prepare(DataSpec(source=str(path), target="y"), tmp_path / "d").path)
    assert default.meta["metric"] == "log_loss" and default.meta["class_weights"] is None  # weights bias p
    named = prepare(DataSpec(source=str(path), target="y", metric="f1", metric_params={"positive_class": "yes"}),
                    tmp_path / "d")
    assert named.metric == "f1" and named.metric_params == {"positive_class": "yes"}
    data = TaskData.load(named.path)
    assert named.path != prepare(DataSpec(source=str(path), target="y"), tmp_path / "d").path  # one file each
    weights = data.meta["class_weights"]
    counts = np.bincount(data.y_train)
    assert weights == pytest.approx((counts.sum() / (2 * counts)).tolist(), rel=1e-5) and weights[1] > 5


def test_multi_class_targets_name_the_positive_class_of_f1_but_not_of_auc():
    three = ["a", "b", "c"]
    assert resolve_params("roc_auc", three, {}) == {}  # one-vs-rest mean
    with pytest.raises(ValueError, match=r"needs metric_params\.positive_class"):
        resolve_params("f1", three, {})
    y = np.array([0, 1, 2, 2])
    p = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.85, 0.05, 0.1]])
    # class a: 0.8 above 0.2 and 0.1, below 0.85 -> 2/3; b: 1; c: (0.7, 0.1) vs (0.1, 0.1) -> (2 + 2 halves) / 4
    assert get_metric("roc_auc").score(y, p, three) == pytest.approx(np.mean([2 / 3, 1.0, 0.75]))
