"""One object per task kind, owning everything that differs between a classifier and a regressor.

Before, "is it a regression" was an ``if`` in 19 files, decided in places by sniffing metric keys. Now a model's
task is a name recorded once (data prep resolves it, the registered version carries it as the ``nasops.task`` tag)
and everything that depends on it asks the :class:`TaskKind` looked up by that name: the training loss, the score
the search ranks by, the offline metrics reported and tagged, the online measure the judge compares, the judge's
packaged defaults, how a label sent to ``/feedback`` is read, and the axis labels of the learning curves.

Kinds are looked up by name in a registry filled by :func:`register_task` (the timm way), so a third kind (say,
ranking) is one more decorated definition, not another round of ``if`` statements. Nothing here imports PyTorch,
MLflow or scikit-learn: the rollout controller and the gateway use it on their light start-up paths.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CLASSIFICATION", "REGRESSION", "TaskKind", "get_task", "register_task", "task_names"]

_TASKS: dict[str, TaskKind] = {}
_LABELS = {"rmse": "RMSE", "mae": "MAE"}


@dataclass(frozen=True)
class TaskKind:
    """What a task kind means for every plane. Fields are data, methods are the few rules that need code."""

    name: str
    loss: str
    """the training loss by name (``nas.trainer`` maps it to the torch function)"""
    score_key: str
    """the low-fidelity / validation metric the search and retraining rank by (higher is better)"""
    headline: str
    """the offline metric a person reads first (``accuracy``, ``rmse``)"""
    headline_label: str
    higher_is_better: bool
    offline_keys: tuple[str, ...]
    """the offline metrics every registered version carries (as tags and in ``OfflineMetrics``)"""
    online_measure: str
    """the prediction-log measure the judge compares once labels arrive (``monitoring.sources``)"""
    online_metrics: tuple[str, ...]
    """the online summary columns of a variant (``monitoring.online``) beside requests, errors and latency"""
    judge_defaults: str
    """the packaged judge configuration file next to ``monitoring/judge_config.py``"""
    numeric_labels: bool
    """a label is a number in the target's units (regression) rather than one of the model's classes"""
    loss_axis_label: str
    metric_axis_label: str
    curve_metrics: tuple[str, ...] = ()
    """the per-epoch history keys drawn in the learning curves' metric panel (``train_accuracy``, ``val_rmse``)"""
    evaluation_plot: str = "confusion"
    """the evaluation figure logged next to a trained model: ``confusion`` (matrix) or ``predicted_vs_true``"""
    deploy_forms: bool = True
    """the ONNX / int8 forms are built and checked (by their class labels) when a version is registered"""
    weight_sharing: bool = True
    """weight-sharing searches (darts, the supernet fidelity) train this kind (they train classifiers only)"""
    search_objectives: tuple[str, ...] = ("accuracy", "latency_int8")
    """the search objectives this kind can rank by"""
    ranks_by_objective: bool = True
    """a search ranks by its objective's metric (accuracy, int8 accuracy); False: always by :attr:`score_key`"""
    class_proxies: bool = True
    """zero-cost proxies that group a batch by class (epe_nas) apply"""
    tournament_skip: str | None = None
    """why the shadow tournament does not run for this kind (None: it does; it ranks by online accuracy)"""
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_regression(self) -> bool:
        """Transitional: the few call sites that still need a yes/no (kept true only for numeric-label tasks)."""
        return self.numeric_labels

    def score(self, metrics: Mapping[str, float]) -> float:
        """The ranking score of one training's metrics (higher is better), NaN when it is missing."""
        value = metrics.get(self.score_key)
        return float("nan") if value is None else float(value)

    def headline_value(self, metrics: Mapping[str, Any], split: str = "test") -> float | None:
        """``<split>_<headline>`` of an offline metrics mapping (None when absent or NaN)."""
        value = metrics.get(f"{split}_{self.headline}")
        if value is None:
            return None
        value = float(value)
        return None if math.isnan(value) else value

    @staticmethod
    def label(metric: str) -> str:
        """How a table names a metric of this registry (``rmse`` -> ``RMSE``; others as they are spelt)."""
        return _LABELS.get(metric, metric)

    def search_metric(self, objective_metric: str) -> str:
        """The metric a search strategy maximises: the objective's, or this kind's score when it has no choice."""
        return objective_metric if self.ranks_by_objective else self.score_key

    def num_classes(self, classes: list[Any]) -> int:
        """The width of the network's output: one per class, or one number."""
        return 1 if self.numeric_labels else len(classes)

    def offline_tags(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        """The offline figures a registered version is tagged with: :attr:`offline_keys` present in ``metrics``."""
        return {k: float(metrics[k]) for k in self.offline_keys if metrics.get(k) is not None}

    def better(self, a: float, b: float) -> bool:
        """Whether headline value ``a`` beats ``b``."""
        return a > b if self.higher_is_better else a < b

    def coerce_label(self, value: Any, classes: list[Any], where: str,
                     as_class: Callable[[Any, list[Any], str], Any],
                     as_number: Callable[[Any, str], float]) -> Any:
        """A label sent by a caller, read the way this task reads labels (the parsers are the caller's: the gateway
        bounds numbers with its own validator)."""
        return as_number(value, where) if self.numeric_labels else as_class(value, classes, where)


def register_task(kind: TaskKind) -> TaskKind:
    """Add a task kind to the registry (a name may be registered once)."""
    if kind.name in _TASKS:
        raise ValueError(f"task {kind.name!r} is already registered")
    _TASKS[kind.name] = kind
    return kind


def task_names() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str | TaskKind | None) -> TaskKind:
    """The task kind called ``name`` (``None``: classification, what a version without a task tag was trained as).
    An unknown name is a ``ValueError`` that lists the known ones."""
    if isinstance(name, TaskKind):
        return name
    key = "classification" if name in (None, "") else str(name)
    try:
        return _TASKS[key]
    except KeyError:
        raise ValueError(f"unknown task {key!r}; known tasks: {', '.join(task_names())}") from None


CLASSIFICATION = register_task(TaskKind(
    name="classification",
    loss="cross_entropy",
    score_key="val_accuracy",
    headline="accuracy",
    headline_label="accuracy",
    higher_is_better=True,
    offline_keys=("val_accuracy", "test_accuracy"),
    online_measure="correct",
    online_metrics=("accuracy",),
    judge_defaults="default_judge.yaml",
    numeric_labels=False,
    loss_axis_label="cross-entropy",
    metric_axis_label="accuracy",
    curve_metrics=("train_accuracy", "val_accuracy"),
    evaluation_plot="confusion",
    description="one of a fixed set of classes per row",
))

REGRESSION = register_task(TaskKind(
    name="regression",
    loss="mse",
    score_key="val_neg_rmse",
    headline="rmse",
    headline_label="RMSE",
    higher_is_better=False,
    offline_keys=("val_rmse", "val_mae", "test_rmse", "test_mae"),
    online_measure="abs_error",
    online_metrics=("rmse", "mae"),
    judge_defaults="default_judge_regression.yaml",
    numeric_labels=True,
    loss_axis_label="loss (standardised target)",
    metric_axis_label="RMSE (target units)",
    curve_metrics=("val_rmse",),
    evaluation_plot="predicted_vs_true",
    deploy_forms=False,
    weight_sharing=False,
    search_objectives=("accuracy",),
    ranks_by_objective=False,
    class_proxies=False,
    tournament_skip="regression target: the tournament ranks by online accuracy",
    description="one number per row, in the target's units",
))
