"""The curve model stops a clearly hopeless curve, lets a promising one run, and plugs into the real trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.datasets import bundled_task
from nas.learning_curves import FAMILIES, LearningCurveStopper, predict_final
from nas.spaces import get_space
from nas.trainer import TrainConfig, train


def _curve(final: float, rate: float, epochs: int, noise: float = 0.003, seed: int = 0) -> np.ndarray:
    """A saturating accuracy curve (pow3-like) with a little noise."""
    x = np.arange(1, epochs + 1)
    rng = np.random.default_rng(seed)
    return np.clip(final - (final - 0.1) * x ** (-rate) + rng.normal(0, noise, epochs), 0, 1)


def _history(values) -> list[dict[str, float]]:
    return [{"epoch": i + 1, "val_accuracy": float(v)} for i, v in enumerate(values)]


def _first_stop(stopper: LearningCurveStopper, values) -> int | None:
    for n in range(1, len(values) + 1):
        if stopper(_history(values[:n])):
            return n
    return None


def test_prediction_of_a_clean_saturating_curve_is_close():
    curve = _curve(0.9, 1.2, 20, noise=0.001)
    pred = predict_final(curve[:8], 20)
    assert pred is not None
    assert abs(pred.mean - curve[-1]) < 0.03
    assert pred.prob_above(0.99) < 0.05 < pred.prob_above(0.8)


def test_hopeless_curve_is_stopped_early():
    hopeless = _curve(0.55, 1.0, 20)  # plateaus near 55 % while the best so far reached 95 %
    stopper = LearningCurveStopper(0.95, total_epochs=20, min_epochs=3)
    stopped = _first_stop(stopper, hopeless)
    assert stopped is not None and stopped <= 8
    assert stopper.stopped_at == stopped
    assert stopper.last_prediction is not None and stopper.last_prediction.mean < 0.8


def test_promising_curve_runs_to_the_end():
    promising = _curve(0.97, 1.5, 20)  # ends near 96 %, above the 93 % bar
    stopper = LearningCurveStopper(0.93, total_epochs=20, min_epochs=3)
    assert _first_stop(stopper, promising) is None


def test_no_bar_never_stops_and_too_few_points_say_nothing():
    assert _first_stop(LearningCurveStopper(None, total_epochs=10), _curve(0.3, 1.0, 10)) is None
    assert predict_final([0.5], 10, families=["pow4"]) is None  # 4 parameters, 1 point


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="threshold"):
        LearningCurveStopper(0.9, total_epochs=10, threshold=1.5)
    with pytest.raises(ValueError, match="unknown curve families"):
        predict_final([0.1, 0.2, 0.3], 10, families=["cubic"])
    assert set(FAMILIES) >= {"pow3", "pow4", "log_power", "exp3", "mmf", "janoschek", "weibull", "ilog2"}


def test_stopper_ends_a_real_training_through_the_trainer_hook():
    data = bundled_task("digits")
    space = get_space("nb201", C=4, N=1)
    # a cell whose output is cut off from its input (every path through 'none') learns nothing: chance accuracy
    arch = space.from_string("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    torch.manual_seed(0)
    net = space.build(arch, data.num_classes, data.input_shape)
    stopper = LearningCurveStopper(0.95, total_epochs=12, min_epochs=3)
    result = train(net, data, TrainConfig(epochs=12, data_fraction=0.2), stop_when=stopper)
    assert result.stopped_early and result.epochs_run < 12
    assert stopper.stopped_at == result.epochs_run
