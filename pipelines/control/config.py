"""The canary's rollout policy as validated configuration: steps, intervals, failure limit, and the traffic and
gateway settings of the embedded canary.

This is pipeline policy (how the controller advances a rollout and how the embedded traffic is played), so it lives
in ``pipelines``; what the judge compares and how it scores is ``monitoring.judge_config``. The defaults finish in
about a minute on a laptop (see docs/canary.md); a rollout handed over to a gateway real callers use takes
:data:`PRODUCTION_DEFAULTS` instead (:func:`for_gateway`). Unknown keys are an error that names the key.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from monitoring.judge_config import JudgeConfig, default_judge_config, format_validation_error

__all__ = ["PRODUCTION_DEFAULTS", "CanaryConfig", "for_gateway", "load_canary_config", "parse_config"]


PROMETHEUS_PASSWORD_ENV = "NASOPS_PROMETHEUS_PASSWORD"
"""The Prometheus password of a controller started from a stored rollout (whose record holds the bare URL)."""


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
    window: Literal["matched", "cumulative", "interval"] = Field(
        "matched", description="judge all samples since the canary started, time-matched (matched: the champion "
                               "re-weighted to the challenger's mix of intervals), or as served (cumulative), or "
                               "only the last interval"
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
    prometheus_url: str | None = Field(None, description="Prometheus server for metrics with source: prometheus "
                                       "(a password in it is kept out of the record, artifacts and status)")
    prometheus_password: SecretStr | None = Field(None, exclude=True, description="taken from prometheus_url; "
                                                  "never stored or shown")
    label_wait_s: float = Field(3.0, ge=0, description="judge: a request's label counts only once the request is "
                                "this old (labels arrive late); younger requests are not yet 'unlabelled'")
    min_label_coverage: float = Field(0.5, ge=0, le=1, description="judge: below this labelled share of the "
                                      "requests old enough, label metrics are NoData (hold), not a failure")
    label_delay_s: float = Field(1.0, ge=0, le=3600, description="embedded traffic process: seconds between an "
                                 "answer and its label (a real system's labels come later still)")
    gateway_workers: int = Field(1, ge=1, le=8, description="embedded gateway: uvicorn worker processes")
    judge: JudgeConfig = Field(default_factory=lambda: default_judge_config())
    profile: Literal["demo", "production"] | None = Field(
        None, description="whose defaults fill the keys not given: demo (seconds, this class's defaults) or "
        "production (minutes, PRODUCTION_DEFAULTS); None: production on a gateway real callers use (a hand-over), "
        "demo for the embedded canary")

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

    @field_validator("drift")
    @classmethod
    def _drift(cls, drift: str | None) -> str | None:
        """A bad spec is refused with the configuration, before anything trains (not in the canary's traffic)."""
        from pipelines.replay import parse_drift

        parse_drift(drift)
        return drift

    @model_validator(mode="after")
    def _prometheus(self) -> CanaryConfig:
        if any(m.source == "prometheus" for m in self.judge.metrics) and not self.prometheus_url:
            raise ValueError("a judge metric uses source: prometheus, so prometheus_url must be set")
        if self.prometheus_url:  # the password leaves the URL here, before the config is stored or shown
            from monitoring.core.urls import split_password

            bare, password = split_password(self.prometheus_url)
            if password is not None:
                object.__setattr__(self, "prometheus_url", bare)
                object.__setattr__(self, "prometheus_password", SecretStr(password))
        return self

    def prometheus_query_url(self) -> str | None:
        """The Prometheus URL with its password for the requests (this process's, else ``PROMETHEUS_PASSWORD_ENV``:
        a controller started from the stored record has only the bare URL)."""
        import os

        from monitoring.core.urls import with_password

        if not self.prometheus_url:
            return None
        secret = self.prometheus_password.get_secret_value() if self.prometheus_password else None
        return with_password(self.prometheus_url, secret or os.environ.get(PROMETHEUS_PASSWORD_ENV))

    @property
    def interval_budget(self) -> int:
        shadow = self.shadow_intervals if self.shadow_first else 0
        return self.max_intervals or (len(self.steps) * self.intervals_per_step + shadow + 4)




PRODUCTION_DEFAULTS: dict[str, Any] = {
    "interval_s": 300.0,
    "intervals_per_step": 2,
    "failure_limit": 2,
    "label_wait_s": 60.0,
}
"""The canary policy of a rollout handed over to a production gateway, for the keys its config does not set.

Why these numbers: the demo's 4 s intervals and failure limit 1 exist so that ``make demo`` decides in a minute on
simulated traffic; on a real gateway they decided in ~2 minutes, on a few hundred requests, and one noisy
interval rolled back. Five-minute intervals give a 5% step of a 10 requests/s service ~150 challenger requests per
look (so every metric clears ``PRODUCTION_MIN_SAMPLES``) and span several Prometheus scrapes; two passing
intervals per step mean one lucky look does not advance; a failure limit of 2 means one bad interval (a cold
cache, a deploy blip, a late label batch) holds instead of rolling back, and a third rolls back. Labels get a
minute to arrive. With the default four steps a clean rollout takes 8 x 5 min = 40 minutes."""

PRODUCTION_MIN_SAMPLES = 100
"""The judge's fewest samples per variant (metrics without their own) on a production gateway: below it a metric
is NoData (hold), so a look at a quiet hour cannot decide on a handful of requests (the demo's is 10)."""

PRODUCTION_FLOOR = {"interval_s": 60.0}
"""Below these a hand-over is refused unless ``profile: demo`` is asked for: seconds-long looks are the demo's
setting, not a real canary's (a stricter failure limit is a policy choice, so it is not refused)."""


def for_gateway(cfg: CanaryConfig) -> CanaryConfig:
    """The policy of a rollout handed over to a gateway real callers use: the production defaults fill every key
    the config does not set, unless it asks for ``profile: demo``; a demo-sized interval or failure limit given
    explicitly is refused in one line (``profile: demo`` allows it)."""
    from pipelines.errors import UserError

    if cfg.profile == "demo":
        return cfg
    update = {k: v for k, v in PRODUCTION_DEFAULTS.items() if k not in cfg.model_fields_set}
    if "judge" not in cfg.model_fields_set:  # the packaged judge; a config's own judge keeps its min_samples
        update["judge"] = cfg.judge.model_copy(update={"min_samples": PRODUCTION_MIN_SAMPLES})
    resolved = cfg.model_copy(update={**update, "profile": "production"})
    demo = [f"{key}={getattr(resolved, key):g}" for key, floor in PRODUCTION_FLOOR.items()
            if getattr(resolved, key) < floor]
    if demo:
        raise UserError(f"a production hand-over with the demo's canary settings ({', '.join(demo)}; production "
                        f"needs interval_s >= {PRODUCTION_FLOOR['interval_s']:g}) would decide in minutes on a few "
                        "requests; drop them for the production defaults (interval_s 300), or ask for the demo's "
                        "with canary profile: demo (--canary-profile demo)")
    return resolved


def load_canary_config(source: dict[str, Any] | str | Path | None = None) -> CanaryConfig:
    """A :class:`CanaryConfig` from a dict, a YAML file path, or ``None`` (the packaged defaults).

    A dict or file may override any subset of keys; a ``judge`` section replaces the default judge entirely.
    Raises ``ValueError`` with every problem named (unknown keys included).
    """
    if source is None:
        raw: dict[str, Any] = {}
    elif isinstance(source, str | Path):
        from pipelines.config_file import read_mapping

        raw = read_mapping(source, f"canary config file {str(source)!r}")
    elif isinstance(source, dict):
        raw = dict(source)
    else:
        raise ValueError(f"canary config must be a dict, a YAML path or None, got {type(source).__name__}")
    try:
        return CanaryConfig.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(format_validation_error(exc, "canary config")) from None


def parse_config(config: dict[str, Any] | CanaryConfig | str | Path | None) -> CanaryConfig:
    """Validate the canary options (a dict, a YAML path or None for the defaults); mistakes -> UserError."""
    from pipelines.errors import UserError

    if isinstance(config, CanaryConfig):
        return config
    try:
        return load_canary_config(config)
    except ValueError as exc:
        raise UserError(f"{exc}") from None
