"""What the canary judge measures and how it scores, as validated configuration (YAML or a dict).

After Kayenta's canary config: :class:`JudgeConfig` says which metrics are compared and how they are scored (per
metric: source, direction, critical flag, group, tolerance). The rollout around the judge (steps, intervals,
traffic) is pipeline policy and lives in ``pipelines.control.config``. Unknown keys are an error that names the key,
so a typo never silently falls back to a default.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from monitoring.core.tasks import get_task

Direction = Literal["increase", "decrease", "either"]
Source = Literal["prediction_log", "prometheus"]
Effect = Literal["relative", "absolute"]
Statistic = Literal["mean", "median", "p90", "p95", "p99", "rms"]
Rule = Literal["superiority", "non_inferiority", "report"]
Method = Literal["sequential", "fixed_horizon"]

DEFAULT_JUDGE_PATH = Path(__file__).with_name("default_judge.yaml")
REGRESSION_JUDGE_PATH = Path(__file__).with_name("default_judge_regression.yaml")
"""A regression model's metric set: its accuracy metrics are online RMSE (critical) and MAE, its drift is that of the
predicted values (docs/canary.md)."""

# What the prediction-log source can compute per variant (see monitoring.sources.PredictionLogSource).
LOG_MEASURES = ("error", "latency_ms", "compute_ms", "correct", "prediction_drift", "confidence", "abs_error",
                "expected_correct", "log_loss", "balanced_correct", "cost")  # last three: online.LABEL_MEASURES
CLASS_MEASURES = ("correct", "confidence", "expected_correct", "log_loss", "balanced_correct", "cost")
"""Measures that need class labels: a regression model's judge replaces the metrics that use them."""
# Measures that are 0/1 per request (their sequential variance is the smoothed Bernoulli one).
BINARY_MEASURES = ("error", "correct")
COUNT_MEASURES = ("error",)
"""Rare events per request: their "worse" claim is the count test (monitoring.sequential.count_log_bayes_factor)."""
Ramp = Literal["within_margin", "proof"]


class MetricConfig(BaseModel):
    """One compared metric. ``direction`` is the change that is bad: ``increase`` (errors, latency), ``decrease``
    (accuracy) or ``either``; a change the other way is reported (High/Low) but does not fail the metric."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, description="label in the evidence table")
    source: Source = Field("prediction_log", description="where the samples come from")
    measure: str | None = Field(None, description=f"prediction-log measure: one of {', '.join(LOG_MEASURES)}")
    query: str | None = Field(
        None, description="PromQL template for the prometheus source; {model}, {variant} and {window} are filled in"
    )
    direction: Direction = "increase"
    critical: bool = Field(False, description="a failing critical metric fails the whole canary")
    must_have_data: bool = Field(False, description="NoData on this metric counts as a failure")
    group: str = Field("default", description="metrics are scored per group, groups are weighted")
    statistic: Statistic = Field("mean", description="summary of each variant's samples the effect compares")
    effect: Effect = Field("relative", description="effect size: relative (ratio - 1) or absolute (difference)")
    tolerance: float = Field(0.1, ge=0, description="largest effect (in the effect's unit) still treated as no change")
    min_samples: int | None = Field(None, ge=1, description="fewer samples per variant -> NoData (default: judge's)")
    judge_in_shadow: bool = Field(
        True, description="judge it in shadow mode too (latency of mirrored calls is not comparable: false for it)"
    )
    rule: Rule | None = Field(
        None,
        description="sequential method: superiority (prove better, powered for min_effect), non_inferiority (prove "
                    "not worse by more than margin) or report (in the table, never decides); default: "
                    "non_inferiority where testable (mean/median with a bad direction), else report",
    )
    log_offset: float = Field(
        0.0, ge=0, description="effect relative: added to every value before comparing (sequential: before the log), "
                               "so differences far below it (a sub-millisecond model against another) count little",
    )
    margin: float | None = Field(None, gt=0, description="non-inferiority margin, effect's unit (default: tolerance)")
    min_effect: float | None = Field(
        None, gt=0, description="superiority: the gain the test is powered for; a gain proven below it is 'not "
                                "better' (default: tolerance)",
    )

    @model_validator(mode="after")
    def _source_fields(self) -> MetricConfig:
        if self.source == "prediction_log":
            if self.measure not in LOG_MEASURES:
                raise ValueError(
                    f"metric {self.name!r}: source prediction_log needs measure in {list(LOG_MEASURES)}, "
                    f"got {self.measure!r}"
                )
        elif not self.query or "{variant}" not in self.query or "{model}" not in self.query:
            raise ValueError(  # {model}: models sharing one Prometheus must not read each other's traffic
                f"metric {self.name!r}: source prometheus needs a PromQL 'query' containing {{model}} and {{variant}} "
                "(and optionally {window}), e.g. "
                "'sum(rate(nasops_requests_total{model=\"{model}\",variant=\"{variant}\",status!=\"ok\"}[{window}]))'"
            )
        if self.rule not in (None, "report") and self.direction == "either":
            raise ValueError(f"metric {self.name!r}: rule {self.rule} needs a direction (increase or decrease), not "
                             "'either'; use rule: report for a metric without a better side")
        if self.rule not in (None, "report") and not self._testable_statistic:
            raise ValueError(f"metric {self.name!r}: rule {self.rule} compares means (of logs for effect: relative; "
                             f"rms with effect: relative as a log ratio), so statistic {self.statistic} with effect "
                             f"{self.effect} is not testable sequentially; use rule: report")
        return self

    @property
    def effective_rule(self) -> str:
        """The sequential rule in force (see ``rule``)."""
        if self.rule is not None:
            return self.rule
        testable = self.direction != "either" and self._testable_statistic
        return "non_inferiority" if testable else "report"

    @property
    def _testable_statistic(self) -> bool:
        """Means and medians (as means, of logs for a relative effect), and an RMSE as the log ratio of the two
        variants' roots of mean squares (monitoring.sequential.log_rms_ratio_bounds)."""
        return self.statistic in ("mean", "median") or (self.statistic == "rms" and self.effect == "relative")

    @property
    def binary(self) -> bool:
        return self.source == "prediction_log" and self.measure in BINARY_MEASURES

    @property
    def count(self) -> bool:
        """Events counted per request whose increase is bad (errors): judged "worse" by the count test."""
        return self.source == "prediction_log" and self.measure in COUNT_MEASURES and self.direction == "increase"

    @property
    def threshold(self) -> float:
        """Margin (non-inferiority) or minimum effect (superiority) on the compared scale: relative effects are
        compared as differences of log values, so a relative 0.5 becomes log(1.5)."""
        value = self.min_effect if self.effective_rule == "superiority" else self.margin
        value = self.tolerance if value is None else value
        return math.log1p(value) if self.effect == "relative" else value


class JudgeConfig(BaseModel):
    """Metrics, group weights and the score thresholds (0-100) that turn a score into pass / marginal / fail."""

    model_config = ConfigDict(extra="forbid")

    metrics: list[MetricConfig] = Field(..., min_length=1)
    groups: dict[str, float] = Field(default_factory=dict, description="group -> weight (missing groups: weight 1)")
    method: Method = Field(
        "fixed_horizon",
        description="sequential: always-valid confidence sequences with the per-metric rules (promotes only a "
                    "proven better challenger); fixed_horizon: a Mann-Whitney U test at every look (never worse)",
    )
    alpha: float = Field(0.05, gt=0, lt=1, description="fixed_horizon: U-test level; sequential: error rate of a "
                                                       "'good' claim (false promotion / false non-inferiority)")
    beta: float = Field(0.05, gt=0, lt=1, description="sequential: error rate of a 'bad' claim (rolling back a "
                                                     "challenger within the margin / gaining min_effect)")
    ramp: Ramp = Field(
        "within_margin",
        description="sequential: what lets a step advance before promotion: within_margin (no guard proven worse "
                    "and every guard's estimate inside its margin) or proof (every guard proven non-inferior); "
                    "promotion always needs the proof",
    )
    min_samples: int = Field(10, ge=1, description="default fewest samples per variant for a metric to have data")
    pass_threshold: float = Field(95.0, ge=0, le=100)
    marginal_threshold: float = Field(75.0, ge=0, le=100)

    @model_validator(mode="before")
    @classmethod
    def _default_metrics(cls, data: Any) -> Any:
        """A section without ``metrics`` keeps the packaged metrics (and their settings), so that e.g.
        ``judge: {method: fixed_horizon}`` switches the method without restating every metric."""
        if isinstance(data, dict) and "metrics" not in data:
            return {**_default_yaml(), **data}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> JudgeConfig:
        if self.marginal_threshold > self.pass_threshold:
            raise ValueError(
                f"marginal_threshold ({self.marginal_threshold}) must not exceed pass_threshold ({self.pass_threshold})"
            )
        names = [m.name for m in self.metrics]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"metric names must be unique; repeated: {dupes}")
        if self.method == "sequential" and not any(
            m.critical and m.effective_rule != "report" for m in self.metrics
        ):
            raise ValueError("method sequential decides on critical metrics: mark at least one metric with a "
                             "rule (superiority / non_inferiority) as critical: true")
        for group, weight in self.groups.items():
            if weight < 0:
                raise ValueError(f"group {group!r} has a negative weight {weight}")
        return self

    def group_weight(self, group: str) -> float:
        return float(self.groups.get(group, 1.0))

    def for_shadow(self) -> JudgeConfig:
        """The judge of a shadow phase: only the metrics that mean the same for mirrored calls."""
        kept = [m for m in self.metrics if m.judge_in_shadow]
        return self.model_copy(update={"metrics": kept}) if kept else self


def _default_yaml() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_JUDGE_PATH.read_text())


def default_judge_config() -> JudgeConfig:
    """The judge of ``default_judge.yaml``: error rate, latency, online accuracy, prediction drift."""
    return JudgeConfig.model_validate(_default_yaml())


def regression_judge_config() -> JudgeConfig:
    """The packaged judge of a regression model (``default_judge_regression.yaml``)."""
    return JudgeConfig.model_validate(yaml.safe_load(REGRESSION_JUDGE_PATH.read_text()))


def for_task(config: JudgeConfig, task: str) -> JudgeConfig:
    """``config`` as it applies to a model of ``task``: for a regression, the metrics that need class labels
    (:data:`CLASS_MEASURES`: online accuracy, confidence) are replaced by the regression metric set's RMSE and MAE
    (kept where the config names them already); everything else (errors, latency, drift) stays as configured."""
    if not get_task(task).numeric_labels or not any(m.measure in CLASS_MEASURES for m in config.metrics):
        return config
    kept = [m for m in config.metrics if m.measure not in CLASS_MEASURES]
    names = {m.name for m in kept}
    extra = [m for m in regression_judge_config().metrics if m.measure == "abs_error" and m.name not in names]
    return config.model_copy(update={"metrics": kept + extra})


def format_validation_error(exc: ValidationError, what: str) -> str:
    """One readable line per problem: where (dotted path) and what was wrong."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "(top level)"
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "unknown key (check the spelling; see docs/canary.md for the accepted keys)"
        lines.append(f"{where}: {msg}")
    return f"invalid {what}: " + "; ".join(lines)


