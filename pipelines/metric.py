"""The refresh-level metric as the training stages use it: a scorer for the search and retraining to rank and
early-stop by, and the class weights of the training loss, both read from the prepared data (``pipelines.data``
resolved and stored them: ``meta["metric"]``, ``meta["metric_params"]``, ``meta["class_weights"]``).

``nas`` imports nothing of ours, so the metric reaches it as plain values: a callable ``(y_true, output) -> float``
(higher is better) and a list of weights. The task's own metric (accuracy for classes, RMSE for a number) is what
the trainer already computes as its score key: no scorer is passed then, and a default refresh ranks exactly as
before (``val_accuracy`` / ``val_neg_rmse``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from monitoring.core.metrics import get_metric, scorer
from monitoring.core.tasks import get_task
from nas.data import TaskData
from nas.evaluators import SCORER_KEY

__all__ = ["SCORER_KEY", "metric_figures", "metric_of", "ranked_by_scorer", "test_value", "training_options"]


def metric_of(data: TaskData) -> str:
    """The data's refresh-level metric (data prepared before it existed: the task's headline metric)."""
    return str(data.meta.get("metric") or get_task(data.task).headline)


def ranked_by_scorer(data: TaskData) -> bool:
    """Whether the stages rank by a scorer (``val_metric``) rather than the task's own score key."""
    return metric_of(data) != get_task(data.task).headline


def training_options(data: TaskData) -> dict[str, Any]:
    """``scorer`` and ``class_weights`` keyword arguments of ``nas.trainer.train`` / ``TrainingEvaluator``."""
    weights = data.meta.get("class_weights")
    options: dict[str, Any] = {"class_weights": list(weights) if weights else None, "scorer": None}
    if ranked_by_scorer(data):
        options["scorer"] = _scorer(data)
    return options


def _scorer(data: TaskData) -> Callable[[np.ndarray, np.ndarray], float]:
    classes = data.meta.get("classes") or list(range(data.num_classes))
    return scorer(metric_of(data), classes, data.meta.get("metric_params") or {})


def test_value(data: TaskData, y_true: np.ndarray, output: np.ndarray) -> float:
    """The metric on a split, in its own direction (a log loss as a loss): what a version is tagged with."""
    classes = data.meta.get("classes") or list(range(data.num_classes))
    entry = get_metric(metric_of(data))
    return float(entry.score(y_true, output, classes, **(data.meta.get("metric_params") or {})))


def metric_figures(data: TaskData, outputs: dict[str, np.ndarray], val_score: float | None = None
                   ) -> dict[str, float]:
    """A trained model's figures of the refresh-level metric, when it is not the task's own: ``val_metric`` (the
    ranked, higher-is-better score: ``val_score`` when training already computed it) and ``val_<metric>`` /
    ``test_<metric>`` in the metric's own direction. ``outputs``: the model's output on each split (class
    probabilities, or values in the target's units). One place for networks and baselines alike, so they rank on
    the same key."""
    if not ranked_by_scorer(data):
        return {}
    name = metric_of(data)
    score = val_score if val_score is not None else _scorer(data)(data.y_val, outputs["val"])
    figures = {SCORER_KEY: float(score)}
    for split in ("val", "test"):
        figures[f"{split}_{name}"] = test_value(data, getattr(data, f"y_{split}"), outputs[split])
    return figures
