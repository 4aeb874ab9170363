"""What the canary measures and how it decides, as validated configuration (YAML or a dict).

Two layers, after Kayenta's canary config: :class:`JudgeConfig` says which metrics are compared and how they are
scored (per metric: source, direction, critical flag, group, tolerance); :class:`CanaryConfig` adds the progressive
rollout around it (steps, interval, minimum samples, failure limit, shadow first, replay rate). Unknown keys are an
error that names the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Direction = Literal["increase", "decrease", "either"]
Source = Literal["prediction_log", "prometheus"]
Effect = Literal["relative", "absolute"]
Statistic = Literal["mean", "median", "p90", "p95", "p99"]

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default_canary.yaml")

# What the prediction-log source can compute per variant (see monitoring.sources.PredictionLogSource).
LOG_MEASURES = ("error", "latency_ms", "correct", "prediction_drift", "confidence")


class MetricConfig(BaseModel):
    """One compared metric. ``direction`` is the change that is bad: ``increase`` (errors, latency), ``decrease``
    (accuracy) or ``either``; a change the other way is reported (High/Low) but does not fail the metric."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, description="label in the evidence table")
    source: Source = Field("prediction_log", description="where the samples come from")
    measure: str | None = Field(None, description=f"prediction-log measure: one of {', '.join(LOG_MEASURES)}")
    query: str | None = Field(
        None, description="PromQL template for the prometheus source; {variant} and {window} are filled in"
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

    @model_validator(mode="after")
    def _source_fields(self) -> MetricConfig:
        if self.source == "prediction_log":
            if self.measure not in LOG_MEASURES:
                raise ValueError(
                    f"metric {self.name!r}: source prediction_log needs measure in {list(LOG_MEASURES)}, "
                    f"got {self.measure!r}"
                )
        elif not self.query or "{variant}" not in self.query:
            raise ValueError(
                f"metric {self.name!r}: source prometheus needs a PromQL 'query' containing {{variant}} "
                "(and optionally {window}), e.g. "
                "'sum(rate(nasops_requests_total{variant=\"{variant}\",status!=\"ok\"}[{window}]))'"
            )
        return self


class JudgeConfig(BaseModel):
    """Metrics, group weights and the score thresholds (0-100) that turn a score into pass / marginal / fail."""

    model_config = ConfigDict(extra="forbid")

    metrics: list[MetricConfig] = Field(..., min_length=1)
    groups: dict[str, float] = Field(default_factory=dict, description="group -> weight (missing groups: weight 1)")
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level of the Mann-Whitney U test")
    min_samples: int = Field(10, ge=1, description="default fewest samples per variant for a metric to have data")
    pass_threshold: float = Field(95.0, ge=0, le=100)
    marginal_threshold: float = Field(75.0, ge=0, le=100)

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


class CanaryConfig(BaseModel):
    """The progressive rollout around the judge. Defaults finish in about a minute on a laptop (see docs/canary.md)."""

    model_config = ConfigDict(extra="forbid")

    steps: list[float] = Field(default_factory=lambda: [0.05, 0.25, 0.5, 1.0],
                               description="challenger traffic share per step; after the last step it is promoted")
    interval_s: float = Field(4.0, gt=0, description="seconds of traffic between two judge runs")
    intervals_per_step: int = Field(1, ge=1, description="passing intervals needed before the next step")
    max_intervals: int | None = Field(None, ge=1, description="budget of intervals (default: steps x per-step + 4)")
    failure_limit: int = Field(1, ge=0, description="failing intervals tolerated; one more rolls back")
    on_marginal: Literal["hold", "advance", "fail"] = Field(
        "hold", description="marginal interval: hold the step (repeat it), advance anyway, or count as a failure"
    )
    window: Literal["cumulative", "interval"] = Field(
        "cumulative", description="judge all samples since the canary started, or only the last interval"
    )
    shadow_first: bool = Field(False, description="mirror traffic to the challenger before any split step")
    shadow_intervals: int = Field(1, ge=1, description="shadow intervals that must pass before the split steps")
    rate: float = Field(50.0, gt=0, le=2000, description="replayed requests per second")
    batch_size: int = Field(1, ge=1, le=256, description="rows per replayed request")
    warmup_requests: int = Field(20, ge=0, description="requests mirrored to both models before judging starts")
    drift: str | None = Field(None, description="drift injected into the replayed inputs, e.g. 'noise=0.3'")
    feedback: bool = Field(True, description="send true labels to /feedback (online accuracy)")
    seed: int = 0
    drift_threshold: float = Field(0.5, gt=0, le=1, description="share of drifted features that means dataset drift")
    drift_each_interval: bool = Field(True, description="compute drift shares each interval (gauges), not only at end")
    reference_rows: int = Field(1000, ge=50, description="training rows used as the drift reference")
    drift_report_features: int | None = Field(
        16, ge=1, description="features with a detailed panel in the Evidently HTML report (None: all)"
    )
    challenger_timeout_s: float = Field(0.5, gt=0, description="gateway: slower challenger answers fall back")
    keep_challenger_alias: bool = Field(False, description="leave the 'challenger' alias in place after the decision")
    prometheus_url: str | None = Field(None, description="Prometheus server for metrics with source: prometheus")
    judge: JudgeConfig = Field(default_factory=lambda: default_judge_config())

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[float]) -> list[float]:
        if not steps:
            raise ValueError("steps must list at least one challenger weight, e.g. [0.05, 0.25, 0.5, 1.0]")
        for weight in steps:
            if not 0 < weight <= 1:
                raise ValueError(f"every step is a traffic share in (0, 1]; got {weight}")
        if any(b < a for a, b in itertools.pairwise(steps)):
            raise ValueError(f"steps must not decrease; got {steps}")
        return steps

    @model_validator(mode="after")
    def _prometheus(self) -> CanaryConfig:
        if any(m.source == "prometheus" for m in self.judge.metrics) and not self.prometheus_url:
            raise ValueError("a judge metric uses source: prometheus, so prometheus_url must be set")
        return self

    @property
    def interval_budget(self) -> int:
        shadow = self.shadow_intervals if self.shadow_first else 0
        return self.max_intervals or (len(self.steps) * self.intervals_per_step + shadow + 4)


def _default_yaml() -> dict[str, Any]:
    text = DEFAULT_CONFIG_PATH.read_text()
    return yaml.safe_load(text)


def default_judge_config() -> JudgeConfig:
    """The judge of ``default_canary.yaml``: error rate, p99-style latency, online accuracy, prediction drift."""
    return JudgeConfig.model_validate(_default_yaml()["judge"])


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


def load_canary_config(source: dict[str, Any] | str | Path | None = None) -> CanaryConfig:
    """A :class:`CanaryConfig` from a dict, a YAML file path, or ``None`` (the packaged defaults).

    A dict or file may override any subset of keys; a ``judge`` section replaces the default judge entirely.
    Raises ``ValueError`` with every problem named (unknown keys included).
    """
    if source is None:
        raw: dict[str, Any] = {}
    elif isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"canary config file {str(path)!r} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"canary config file {str(path)!r} is not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ValueError(f"canary config file {str(path)!r} must hold a mapping of keys, got {type(raw).__name__}")
    elif isinstance(source, dict):
        raw = dict(source)
    else:
        raise ValueError(f"canary config must be a dict, a YAML path or None, got {type(source).__name__}")
    merged = {k: v for k, v in _default_yaml().items() if k != "judge"}
    merged.update(raw)
    try:
        return CanaryConfig.model_validate(merged)
    except ValidationError as exc:
        raise ValueError(format_validation_error(exc, "canary config")) from None
