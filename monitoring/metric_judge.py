"""The canary judge of a version's refresh-level metric: the judge's primary label metric becomes that metric's
online measure, with its direction and margin from the metric registry (``monitoring.core.metrics``).

The packaged judges compare ``online_accuracy`` (a classifier) or ``online_rmse`` (a regression) as their critical
label metric; a version ranked offline by, say, log loss is judged online on log loss in that place, with the same
rule (superiority / non-inferiority) the replaced metric had, so offline ranking and online judging ask one
question. Everything else (errors, latency, drift) stays as configured.
"""

from __future__ import annotations

from monitoring.core.metrics import get_metric, online_problem
from monitoring.judge_config import JudgeConfig, MetricConfig

__all__ = ["for_metric", "primary_label_metric"]

PRIMARY_MEASURES = ("correct", "abs_error", "log_loss", "balanced_correct", "cost")


def primary_label_metric(config: JudgeConfig) -> MetricConfig | None:
    """The critical metric on a label measure (the first one), or None for a judge without one."""
    return next((m for m in config.metrics if m.critical and m.measure in PRIMARY_MEASURES), None)


def for_metric(config: JudgeConfig, metric: str | None) -> JudgeConfig:
    """``config`` judging ``metric`` (None, or the metric the primary already measures: ``config`` unchanged).

    An offline-only metric (ROC AUC, F1) is a ``ValueError`` whose message says so: the canary never judges a
    model on another quantity under the name of the one the team chose."""
    if metric is None:
        return config
    problem = online_problem(metric)
    if problem is not None:
        raise ValueError(problem)
    entry = get_metric(metric)
    primary = primary_label_metric(config)
    if primary is None or (primary.measure == entry.online_measure and primary.statistic == entry.online_statistic):
        return config
    name = f"online_{metric}"
    replacement = MetricConfig.model_validate({
        **primary.model_dump(exclude={"margin", "min_effect"}),
        "name": name, "measure": entry.online_measure, "statistic": entry.online_statistic, "effect": entry.effect,
        "direction": "decrease" if entry.higher_is_better else "increase", "tolerance": entry.tolerance,
        **({"min_effect": entry.tolerance} if primary.min_effect is not None else {}),
        **({"margin": entry.tolerance} if primary.margin is not None else {}),
    })
    metrics = [replacement if m is primary else m for m in config.metrics if m is primary or m.name != name]
    return config.model_copy(update={"metrics": metrics})
