"""The pipelines ask the task kind (monitoring.core.tasks) instead of sniffing metric keys: unit checks of each
place that decides by it (no servers, no training)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.core.tasks import CLASSIFICATION, REGRESSION, get_task
from pipelines.config import SearchStageConfig
from pipelines.errors import UserError


def test_a_regression_search_refuses_what_it_cannot_do_and_a_classifier_may():
    from pipelines.nas_stage import _check_task

    with pytest.raises(UserError, match="a regression target searches with the default objective "
                                        r"\(validation RMSE\): drop --objective"):
        _check_task(SearchStageConfig(objective="latency_int8"), REGRESSION)
    with pytest.raises(UserError, match=r"weight-sharing searches .* a regression target needs"):
        _check_task(SearchStageConfig(strategy="darts"), REGRESSION)
    _check_task(SearchStageConfig(objective="latency_int8"), CLASSIFICATION)
    _check_task(SearchStageConfig(strategy="darts"), CLASSIFICATION)
    _check_task(SearchStageConfig(), REGRESSION)


def test_the_search_metric_is_the_objectives_unless_the_kind_has_one_score():
    assert CLASSIFICATION.search_metric("accuracy_int8") == "accuracy_int8"
    assert REGRESSION.search_metric("val_accuracy") == "val_neg_rmse"


@pytest.mark.parametrize("kind, history", [
    (CLASSIFICATION, {"train_accuracy": 0.5, "val_accuracy": 0.6}),
    (REGRESSION, {"val_rmse": 3.0}),  # no accuracy in a regression's history: it used to be sniffed from the keys
])
def test_learning_curves_draw_the_kinds_metrics(kind, history, tmp_path):
    from pipelines.plots import learning_curves

    rows = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e, **history} for e in (1, 2, 3)]
    path = learning_curves(rows, tmp_path / "curves.png", task=kind.name)
    assert path.stat().st_size > 0


def test_data_prep_encodes_the_target_as_the_kind_reads_labels():
    from pipelines.data import _encode_target
    from pipelines.targets import strata

    classes, codes = _encode_target(pd.Series(["b", "a", "b"]), CLASSIFICATION)
    assert classes == ["a", "b"] and codes.tolist() == [1, 0, 1] and CLASSIFICATION.num_classes(classes) == 2
    classes, values = _encode_target(pd.Series([1.5, 2.5, 3.0]), REGRESSION)
    assert classes == [] and values.dtype == np.float64 and REGRESSION.num_classes(classes) == 1
    y = np.linspace(0, 1, 200)
    assert len(np.unique(strata(y, "regression"))) == 10  # quantile bins, every split spans the target's range
    assert strata(codes, "classification") is codes


def test_the_tournament_skips_only_a_kind_it_cannot_rank():
    assert get_task("regression").tournament_skip and get_task(None).tournament_skip is None
    assert REGRESSION.label("rmse") == "RMSE" and CLASSIFICATION.label("accuracy") == "accuracy"
