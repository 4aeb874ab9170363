"""The refresh-level metric reaches the training library as plain values (``nas`` imports nothing of ours): a
scorer the trainer early-stops and ranks on, the evaluator's ``val_metric``, and class weights in the loss. Tiny
trainings (a few hundred rows, a few epochs): the fast layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monitoring.core.metrics import scorer
from nas.data import TaskData
from nas.evaluators import SCORER_KEY, TrainingEvaluator
from nas.spaces import get_space
from nas.trainer import TrainConfig, train

MLP = "depth=1|widths=32|act=relu|norm=none|dropout=0|residual=0"


def _imbalanced(seed: int = 0, rows: int = 600) -> TaskData:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=rows) > 1.8).astype(np.int64)  # ~5 % positives
    cut = rows * 2 // 3
    return TaskData(x[:cut], y[:cut], x[cut:], y[cut:], (4,), 2, meta={"classes": [0, 1]})


def test_the_trainer_early_stops_and_reports_on_the_scorer():
    data = _imbalanced()
    loss = scorer("log_loss", [0, 1])
    torch.manual_seed(0)
    net = get_space("mlp").from_string(MLP).build(2, data.input_shape)
    result = train(net, data, TrainConfig(epochs=6, patience=2, lr=0.05), scorer=loss)
    values = [row[SCORER_KEY] for row in result.history]
    assert all(v < 0 for v in values)  # minus the log loss: higher is better
    assert result.val_score == pytest.approx(max(values))
    assert result.best_epoch == 1 + int(np.argmax(values))


def test_class_weights_move_the_decision_towards_the_rare_class():
    data = _imbalanced()
    predicted = {}
    for weights in (None, [0.5, 10.0]):
        torch.manual_seed(0)
        net = get_space("mlp").from_string(MLP).build(2, data.input_shape)
        train(net, data, TrainConfig(epochs=5, lr=0.05), class_weights=weights)
        with torch.no_grad():
            predicted[weights is None] = int(net(data.tensors("val")[0]).argmax(1).sum())
    assert predicted[False] > predicted[True]  # weighted: more rows called positive


def test_the_evaluator_ranks_by_the_scorer_and_keeps_the_tasks_figure():
    data = _imbalanced()
    evaluator = TrainingEvaluator(data, epochs=2, measure_latency=False, scorer=scorer("balanced_accuracy", [0, 1]),
                                  class_weights=[0.55, 5.0])
    assert evaluator.metric == SCORER_KEY
    result = evaluator.evaluate(get_space("mlp").from_string(MLP))
    assert 0 <= result.metrics[SCORER_KEY] <= 1 and 0 <= result.metrics["val_accuracy"] <= 1
