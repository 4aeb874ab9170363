"""``ModelRef``: every fact about a registered model version that the planes after registration need.

Registration writes these facts as ``nasops.*`` tags on the version; the rollout control plane, the gateway and the
operator commands read them back through :meth:`ModelRef.from_version`, so nothing downstream of registration needs
the training file (a rollout started on another host, after the state directory was cleaned, or without
``--data`` is judged with the right task and metric). It reads tags only, so it imports no MLflow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitoring.core.tasks import TaskKind, get_task

__all__ = ["Calibration", "DriftReference", "ModelRef"]

TAG_PREFIX = "nasops."


def _json(tags: Mapping[str, str], key: str, default: Any) -> Any:
    raw = tags.get(TAG_PREFIX + key)
    if raw in (None, ""):
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return default


class DriftReference(BaseModel):
    """What the judge and the drift check compare live traffic with, stored with the rollout when it starts.

    ``class_mix``: training label counts (classification); ``target_values``: a sample of the training targets
    (regression); ``columns`` + ``rows``: a bounded sample of the training inputs as the gateway logs them (feature
    values for a float-matrix model, raw named columns for a table model).
    """

    model_config = ConfigDict(extra="forbid")

    class_mix: dict[str, float] | None = None
    target_values: list[float] | None = None
    columns: list[str] = Field(default_factory=list)
    rows: list[list[Any]] = Field(default_factory=list)
    input_form: str = "tensor"


class Calibration(BaseModel):
    """A version's calibration map, fitted at registration (``pipelines/calibration.py``): the probability that a
    prediction is right as a piecewise-linear function of the model's top-class probability, as knots ``x``
    (increasing) and ``y``; ``n`` held-out rows of ``split`` fitted it. Plain numbers, so the control plane applies it
    with ``np.interp`` (``monitoring/cbpe.py``) and never imports scikit-learn."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    x: list[float] = Field(..., min_length=1)
    y: list[float] = Field(..., min_length=1)
    n: int = Field(0, ge=0, description="held-out rows the map was fitted on")
    split: str = "val"
    method: str = "isotonic"
    score: str = Field("top_probability", description="what x is: the highest class probability of a row")

    @model_validator(mode="after")
    def _knots(self) -> Calibration:
        if len(self.x) != len(self.y):
            raise ValueError(f"calibration knots: {len(self.x)} x values but {len(self.y)} y values")
        if any(b < a for a, b in zip(self.x, self.x[1:], strict=False)):
            raise ValueError("calibration knots: x must be non-decreasing")
        return self


def _calibration(tags: Mapping[str, str]) -> Calibration | None:
    """The ``nasops.calibration`` tag; an unreadable one is no map (the estimate is NoData), never a failed read."""
    raw = _json(tags, "calibration", None)
    try:
        return Calibration.model_validate(raw) if raw else None
    except ValueError:
        return None


class ModelRef(BaseModel):
    """A registered version as the planes after registration see it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    task: str = "classification"
    input_form: str = Field("tensor", description="'tensor' (a float matrix) or 'table' (named raw columns)")
    input_schema: list[dict[str, Any]] = Field(default_factory=list)
    feature_names: list[str] = Field(default_factory=list)
    classes: list[Any] = Field(default_factory=list)
    metric: str | None = Field(None, description="the metric the refresh ranked and the canary judges by")
    metric_params: dict[str, Any] = Field(
        default_factory=dict, description="the metric's parameters (positive_class, cost_matrix)")
    role: str | None = Field(None, description="'nas', 'baseline', ...")
    drift_reference_artifact: str | None = Field(
        None, description="artifact path (in the version's training run) of its DriftReference JSON")
    calibration: Calibration | None = Field(
        None, description="top-class probability -> P(correct), for the label-free accuracy estimate (classifiers)")

    @property
    def kind(self) -> TaskKind:
        return get_task(self.task)

    @classmethod
    def from_tags(cls, name: str, version: str | int, tags: Mapping[str, str]) -> ModelRef:
        """Read a version's ``nasops.*`` tags (missing tags: the defaults of a version trained before they
        existed)."""
        task = tags.get(TAG_PREFIX + "task") or "classification"
        get_task(task)  # an unknown task tag is an error here, not a wrong judge later
        return cls(
            name=name, version=str(version), task=task,
            input_form=tags.get(TAG_PREFIX + "input_form") or "tensor",
            input_schema=_json(tags, "input_schema", []),
            feature_names=_json(tags, "features", []),
            classes=[] if get_task(task).numeric_labels else _json(tags, "classes", []),
            metric=tags.get(TAG_PREFIX + "metric") or None,
            metric_params=_json(tags, "metric_params", {}) or {},
            role=tags.get(TAG_PREFIX + "role") or None,
            drift_reference_artifact=tags.get(TAG_PREFIX + "drift_reference") or None,
            calibration=None if get_task(task).numeric_labels else _calibration(tags),
        )

    @classmethod
    def from_version(cls, mv: Any) -> ModelRef:
        """From an MLflow ``ModelVersion`` (anything with ``name``, ``version`` and ``tags``)."""
        return cls.from_tags(str(mv.name), str(mv.version), dict(mv.tags or {}))
