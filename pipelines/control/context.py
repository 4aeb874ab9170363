"""Everything one reconcile step works with, built once at its start and passed down: the record, its parsed
policy, the two versions' :class:`~monitoring.core.model_ref.ModelRef`, the drift reference, the judge that fits
the challenger's task and the sample sources. Helpers read it; none reads the record, the registry or a file again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from monitoring.core.enums import Mode
from monitoring.core.model_ref import Calibration, DriftReference, ModelRef
from monitoring.core.tasks import TaskKind
from monitoring.judge_config import JudgeConfig, for_task
from monitoring.metric_judge import for_metric
from monitoring.rollout_store import Rollout, RolloutStore, rows_of
from monitoring.sources import PredictionLogSource, PrometheusSource, SampleSource
from monitoring.vocabulary import CHALLENGER, CHAMPION
from pipelines.control.config import CanaryConfig
from pipelines.control.reference import RolloutModels, reference_frame
from pipelines.control.versions import model_ref

log = logging.getLogger("nasops.canary")

__all__ = ["StepContext", "judge_for", "rollout_models"]


@dataclass(frozen=True)
class StepContext:
    """One reconcile step's view of a rollout (see the module docstring)."""

    rollout: Rollout
    store: RolloutStore
    cfg: CanaryConfig
    models: RolloutModels
    client: Any = None

    @classmethod
    def build(cls, store: RolloutStore, rollout: Rollout, client: Any = None) -> StepContext:
        cfg = CanaryConfig.model_validate(rollout.config)
        return cls(rollout, store, cfg, rollout_models(rollout, client), client)

    @property
    def challenger(self) -> ModelRef:
        return self.models.challenger

    @property
    def task(self) -> TaskKind:
        """The challenger's task: it decides what the judge compares (accuracy, or RMSE / MAE; the version's
        refresh-level metric replaces the task's primary label metric, ``monitoring.metric_judge``)."""
        return self.challenger.kind

    @property
    def reference(self) -> DriftReference | None:
        return self.models.reference

    @property
    def judge_config(self) -> JudgeConfig:
        judge = judge_for(self.cfg.judge, self.challenger)
        return judge.for_shadow() if self.rollout.mode == Mode.SHADOW else judge

    @property
    def calibrations(self) -> dict[str, Calibration | None]:
        """Each variant's calibration map (the label-free accuracy estimate, monitoring.cbpe; None: no map)."""
        return {CHAMPION: self.models.champion.calibration, CHALLENGER: self.challenger.calibration}

    def reference_frame(self) -> Any:
        return reference_frame(self.reference)

    def sources(self) -> dict[str, SampleSource]:
        """The samples' sources, with the reference of the challenger's task (class mix, or training targets)."""
        ref, numeric = self.reference, self.task.numeric_labels
        sources: dict[str, SampleSource] = {"prediction_log": PredictionLogSource(
            self.store.engine, reference_classes=None if numeric or ref is None else ref.class_mix,
            reference_values=ref.target_values if numeric and ref is not None else None,
            label_wait_s=self.cfg.label_wait_s, min_label_coverage=self.cfg.min_label_coverage,
            calibrations=self.calibrations, classes=self.challenger.classes,
            metric_params=self.challenger.metric_params, model_name=self.rollout.model_name,
            instance=rows_of(self.rollout))}
        if self.cfg.prometheus_url:
            sources["prometheus"] = PrometheusSource(self.cfg.prometheus_query_url(), step_s=self.cfg.interval_s,
                                                     model_name=self.rollout.model_name)
        return sources

    def with_rollout(self, rollout: Rollout) -> StepContext:
        """The same step after a write (the models and policy do not change during a rollout)."""
        return StepContext(rollout, self.store, self.cfg, self.models, self.client)


def judge_for(judge: JudgeConfig, challenger: ModelRef) -> JudgeConfig:
    """The judge of a challenger: its task's metric set, with its refresh-level metric as the primary label metric
    (``monitoring.metric_judge``). An offline-only or unknown metric is a ``ValueError`` saying so."""
    return for_metric(for_task(judge, challenger.task), challenger.metric)


def rollout_models(rollout: Rollout, client: Any = None) -> RolloutModels:
    """The record's stored models; a record from before they were stored reads the versions' tags from the
    registry when one is configured, else assumes classification, and says so (never silently)."""
    if rollout.model_ref:
        return RolloutModels.model_validate(rollout.model_ref)
    note = "the rollout record holds no model references (started before they were stored)"
    try:
        from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

        if client is None and not is_tracking_uri_set():
            raise LookupError("no registry configured in this process")
        from pipelines import registry

        client = client or registry.client_for_active()
        refs = [model_ref(client.get_model_version(rollout.model_name, v))
                for v in (rollout.champion_version, rollout.challenger_version)]
    except Exception as exc:
        log.warning("rollout %s: %s and its versions' tags could not be read (%s); judging it as a classifier",
                    rollout.rollout_id, note, exc)
        refs = [ModelRef(name=rollout.model_name, version=v)
                for v in (rollout.champion_version, rollout.challenger_version)]
        note += "; judged as a classifier"
    return RolloutModels(champion=refs[0], challenger=refs[1], note=note + "; no drift reference")
