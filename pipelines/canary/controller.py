"""The rollout controller: one reconcile step at a time over the durable rollout record.

A step reads the record, and if the current interval is over, collects that step's samples (the prediction log and
Prometheus), judges them, applies the rollout rule (:class:`~pipelines.canary.rollout.RolloutState`) and writes the
record back with a compare-and-set. Nothing lives in the controller's memory, so killing it at any point and
starting it again continues from the record: an interval whose write did not commit is judged again (with the
longer window it now has), one that committed is never judged twice, and the registry decision is applied (and
re-applied, idempotently) until the record says it was. Gateways follow the record on their own
(:mod:`serving.rollout_follower`), so the controller never talks to them: it cannot tell real traffic from the
embedded traffic process.

Operator commands (:func:`pause`, :func:`resume`, :func:`promote_now`, :func:`abort`) are writes to the same record
through the same compare-and-set, each one an event in the rollout's history (Argo Rollouts' verbs).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from monitoring.judge import Judge, Verdict
from monitoring.judge_config import for_task
from monitoring.prediction_log import read_predictions
from monitoring.rollout_store import Rollout, RolloutConflict, RolloutStore, StaleRollout
from monitoring.sources import PredictionLogSource, PrometheusSource, SampleSource, collect_samples
from monitoring.vocabulary import PROMOTED, ROLLED_BACK, tag
from pipelines import registry
from pipelines.canary.config import CanaryConfig
from pipelines.canary.evidence import REPORT_DIR, finish
from pipelines.canary.rollout import RolloutState, schedule
from pipelines.contracts import CanaryOutput
from pipelines.errors import UserError

log = logging.getLogger("nasops.canary")

__all__ = ["ReconcileReport", "abort", "pause", "promote_now", "reconcile", "resume", "start_rollout"]


@dataclass
class ReconcileReport:
    """What one reconcile step did: ``waiting`` (interval not over), ``judged``, ``paused``, ``decided`` (a verdict
    ended the rollout), ``applied`` (a finished rollout's registry decision written), ``done`` or ``conflict``."""

    rollout_id: str
    action: str
    phase: str
    weight: float
    intervals: int
    outcome: str | None = None
    verdict: str | None = None
    decision: str | None = None
    next_due_s: float | None = None
    result: CanaryOutput | None = None  # the canary result (evidence, decision) once applied

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "result": self.result.model_dump(mode="json") if self.result else None}


def _report(rollout: Rollout, action: str, **extra: Any) -> ReconcileReport:
    return ReconcileReport(rollout.rollout_id, action, rollout.phase, rollout.weight, rollout.intervals,
                           decision=rollout.decision, **extra)


# -- start ---------------------------------------------------------------------------------------------------------

def start_rollout(store: RolloutStore, model_name: str, cfg: CanaryConfig, *, gateway_url: str | None = None,
                  data_path: str | None = None, client: Any = None, actor: str = "operator") -> Rollout:
    """Create the rollout of ``@challenger`` against ``@champion``: its record (first phase) and its MLflow run."""
    from pipelines.canary.flow import variants

    client = client or registry.client_for_active()
    champion, challenger = variants(client, model_name)
    first = schedule(cfg)[0]
    active = store.active(model_name)
    if active is not None:
        raise UserError(f"rollout {active.rollout_id} of {model_name!r} (challenger v{active.challenger_version}) "
                        f"is still {active.phase}; follow it with `nasops canary status`, or end it with "
                        "`nasops canary abort` / `promote` before starting another")
    run_id = _open_run(client, model_name, str(champion.version), str(challenger.version), cfg)
    try:
        return store.create(model_name=model_name, champion_version=str(champion.version),
                            challenger_version=str(challenger.version), mode=first.mode, weight=first.weight,
                            config=cfg.model_dump(mode="json"), actor=actor, gateway_url=gateway_url, run_id=run_id,
                            data_path=data_path)
    except RolloutConflict as exc:
        client.set_terminated(run_id, status="KILLED")
        raise UserError(f"{exc}; end it before starting another") from None


def _open_run(client: Any, model_name: str, champion: str, challenger: str, cfg: CanaryConfig) -> str:
    """The rollout's evidence run (nested under the active run, e.g. the refresh's, when there is one)."""
    import json

    from mlflow.tracking.fluent import _get_experiment_id

    parent = mlflow.active_run()
    # the active experiment (the refresh's, or the one configure_mlflow set): resuming the run later must match it
    experiment_id = parent.info.experiment_id if parent else _get_experiment_id()
    tags = {tag("stage"): "canary", tag("champion_version"): champion, tag("challenger_version"): challenger,
            "mlflow.runName": f"canary-{model_name}-v{challenger}"}
    if parent is not None:
        tags["mlflow.parentRunId"] = parent.info.run_id
    run = client.create_run(experiment_id, tags=tags)
    for key, value in {"steps": json.dumps(cfg.steps), "interval_s": cfg.interval_s,
                       "failure_limit": cfg.failure_limit, "shadow_first": cfg.shadow_first,
                       "label_wait_s": cfg.label_wait_s, "judge_method": cfg.judge.method}.items():
        client.log_param(run.info.run_id, key, value)
    client.log_dict(run.info.run_id, cfg.model_dump(mode="json"), f"{REPORT_DIR}/canary_config.json")
    return run.info.run_id


# -- one reconcile step --------------------------------------------------------------------------------------------

def _state(rollout: Rollout, cfg: CanaryConfig) -> RolloutState:
    return RolloutState(schedule(cfg), cfg, phase_index=rollout.step_index, passes_in_phase=rollout.passes_in_step,
                        failures=rollout.failures, intervals=rollout.intervals, history=list(rollout.history))


def _sources(rollout: Rollout, store: RolloutStore, cfg: CanaryConfig) -> dict[str, SampleSource]:
    data = _prepared(rollout)
    regression = data is not None and data.is_regression  # its drift reference: the training targets' values
    sources: dict[str, SampleSource] = {"prediction_log": PredictionLogSource(
        store.engine, reference_classes=None if regression else _class_mix(rollout), label_wait_s=cfg.label_wait_s,
        min_label_coverage=cfg.min_label_coverage, reference_values=data.y_train if regression else None)}
    if cfg.prometheus_url:
        sources["prometheus"] = PrometheusSource(cfg.prometheus_url, step_s=cfg.interval_s)
    return sources


def _class_mix(rollout: Rollout) -> dict[str, float] | None:
    data = _prepared(rollout)
    if data is None or data.is_regression:
        return None
    classes = list(data.meta.get("classes") or range(data.num_classes))
    counts = np.bincount(data.y_train, minlength=data.num_classes).astype(float)
    return {str(classes[i]): float(c) for i, c in enumerate(counts)}


def _task(rollout: Rollout) -> str:
    """The task of the rollout's prepared data (classification when it is not known)."""
    data = _prepared(rollout)
    return data.task if data is not None else "classification"


def _target_values(rollout: Rollout) -> list[float] | None:
    """A regression's training targets (the target-drift reference), else None."""
    data = _prepared(rollout)
    return [float(v) for v in data.y_train] if data is not None and data.is_regression else None


def _prepared(rollout: Rollout) -> Any:
    if not rollout.data_path:
        return None
    from pipelines.prepared import load_prepared

    try:
        return load_prepared(rollout.data_path)
    except UserError:
        return None


def judge_window(rollout: Rollout, store: RolloutStore, cfg: CanaryConfig, until: float) -> tuple[Verdict, dict]:
    """The verdict on the current step's samples, and the label coverage per variant beside it."""
    sources = _sources(rollout, store, cfg)
    judge_cfg = for_task(cfg.judge, _task(rollout))  # a regression model: online RMSE / MAE, not accuracy
    judge_cfg = judge_cfg.for_shadow() if rollout.mode == "shadow" else judge_cfg
    since = rollout.window_start if cfg.window == "cumulative" else rollout.last_judged_at
    verdict = Judge(judge_cfg).judge(collect_samples(judge_cfg.metrics, sources, since, until))
    coverage = getattr(sources["prediction_log"], "coverage", {})
    return verdict, coverage


def reconcile(store: RolloutStore, rollout_id: str, *, now: float | None = None, client: Any = None,
              force: bool = False) -> ReconcileReport:
    """One reconcile step of rollout ``rollout_id`` (``force``: judge now even if the interval is not over)."""
    rollout = store.get(rollout_id)
    if rollout is None:
        raise UserError(f"no rollout {rollout_id!r} in the prediction-log database; `nasops canary status` lists "
                        "the rollouts there")
    if rollout.terminal:
        if not rollout.applied:
            return _apply(store, rollout, client)
        return _report(rollout, "done")
    if rollout.phase == "paused":
        return _report(rollout, "paused")
    cfg = CanaryConfig.model_validate(rollout.config)
    now = time.time() if now is None else now
    due = rollout.last_judged_at + cfg.interval_s
    if now < due and not force:
        return _report(rollout, "waiting", next_due_s=round(due - now, 3))
    verdict, coverage = judge_window(rollout, store, cfg, now)
    state = _state(rollout, cfg)
    judged = state.phase
    outcome = state.advance(verdict)
    step = {"interval": state.intervals, "mode": judged.mode, "weight": judged.weight, "verdict": verdict.verdict,
            "outcome": outcome, "score": round(verdict.score, 2), "failed_metrics": verdict.failed_metrics,
            "window": [rollout.window_start, now], "coverage": coverage, "judged_at": now,
            "evidence": verdict.table()}
    if cfg.drift_each_interval:
        step["drift"] = _interval_drift(rollout, store, cfg, rollout.last_judged_at, now)
    state.history.append(step)
    changes: dict[str, Any] = {
        "step_index": state.phase_index, "passes_in_step": state.passes_in_phase, "failures": state.failures,
        "intervals": state.intervals, "history": state.history, "last_judged_at": now,
        "last_verdict": {**verdict.to_dict(), "evidence": verdict.table(), "coverage": coverage,
                         "interval": state.intervals},
    }
    if state.decision is not None:
        changes.update(phase=state.decision, decision=state.decision, reason=state.reason, decided_by="controller",
                       weight=rollout.weight if state.decision == PROMOTED else 0.0, mode="split")
    elif state.phase_index != rollout.step_index:
        nxt = state.phase
        changes.update(phase=nxt.mode, mode=nxt.mode, weight=nxt.weight, step_started_at=now)
        if judged.mode == "shadow" and nxt.mode == "split":
            changes["window_start"] = now  # split evidence starts clean, without the mirrored calls
    try:
        updated = store.update(rollout, changes, kind="interval", actor="controller", detail=step, now=now)
    except StaleRollout:
        return _report(store.get(rollout_id) or rollout, "conflict")
    _log_interval(client, updated, verdict, judged.weight, step)
    log.info("rollout %s interval %d (%s %.0f%%): %s -> %s", rollout_id, state.intervals, judged.mode,
             100 * judged.weight, verdict.summary(), outcome)
    if updated.terminal:
        report = _apply(store, updated, client)
        report.action, report.outcome, report.verdict = "decided", outcome, verdict.verdict
        return report
    return _report(updated, "judged", outcome=outcome, verdict=verdict.verdict)


def _interval_drift(rollout: Rollout, store: RolloutStore, cfg: CanaryConfig, since: float,
                    until: float) -> dict[str, float | None] | None:
    """Data drift of each variant's distinct inputs in the interval against the training rows (None without a
    reference); every gateway worker publishes it as ``nasops_drift_share``."""
    reference = _reference(rollout, cfg)
    if reference is None:
        return None
    from pipelines.canary.drift import interval_drift

    try:
        return interval_drift(read_predictions(store.engine, since, until), reference, cfg, _encoder(rollout))
    except Exception as exc:  # drift informs the dashboards; it must not stop the rollout
        log.warning("interval drift failed: %s", exc)
        return None


def _log_interval(client: Any, rollout: Rollout, verdict: Verdict, weight: float, step: dict) -> None:
    if not rollout.run_id:
        return
    client = client or registry.client_for_active()
    try:
        stamp = int(time.time() * 1000)
        for key, value in {"canary_score": verdict.score, "challenger_weight": weight,
                           "failed_intervals": rollout.failures}.items():
            client.log_metric(rollout.run_id, key, float(value), timestamp=stamp, step=step["interval"])
    except Exception as exc:  # evidence is best effort per interval; the record is the truth
        log.warning("logging interval %d to MLflow failed: %s", step["interval"], exc)


# -- the end: evidence and the registry decision ------------------------------------------------------------------

def _apply(store: RolloutStore, rollout: Rollout, client: Any) -> ReconcileReport:
    """Write a finished rollout's evidence and registry decision (idempotent), then mark the record applied."""
    client = client or registry.client_for_active()
    cfg = CanaryConfig.model_validate(rollout.config)
    if rollout.decided_by == "controller" and (rollout.last_verdict or {}).get("metrics") is not None:
        verdict = Verdict.from_dict(rollout.last_verdict)  # the verdict that decided, not a later re-judging
    else:  # an operator's decision: the evidence as it stands now
        verdict, _ = judge_window(rollout, store, cfg, rollout.updated_at)
    result = evidence_and_decision(store, rollout, cfg, verdict, client)
    try:
        applied = store.update(rollout, {"applied": True}, kind="applied", actor="controller",
                               detail={"decision": rollout.decision, "champion_version": result.champion_version})
    except StaleRollout:
        applied = store.get(rollout.rollout_id) or rollout
    return _report(applied, "applied", result=result)


def evidence_and_decision(store: RolloutStore, rollout: Rollout, cfg: CanaryConfig, verdict: Verdict,
                          client: Any) -> CanaryOutput:
    """The canary report in the rollout's MLflow run and the decision in the registry (both idempotent)."""
    state = _state(rollout, cfg)
    state.decision, state.reason = rollout.decision, rollout.reason
    frame = read_predictions(store.engine, rollout.created_at, rollout.updated_at + 1.0)
    reference = _reference(rollout, cfg)
    facts = {"model_name": rollout.model_name, "champion_version": rollout.champion_version,
             "challenger_version": rollout.challenger_version, "gateway_url": rollout.gateway_url or "",
             "task": _task(rollout), "target_values": _target_values(rollout)}
    with mlflow.start_run(run_id=rollout.run_id, nested=mlflow.active_run() is not None) as run:
        result = finish(run, state, verdict, frame, reference, cfg, client, _encoder(rollout), **facts)
        result.rollout_id, result.decided_by = rollout.rollout_id, rollout.decided_by
        mlflow.log_dict(result.model_dump(mode="json"), f"{REPORT_DIR}/result.json")
    client.set_model_version_tag(rollout.model_name, rollout.challenger_version, tag("rollout_id"),
                                 rollout.rollout_id)
    record_history(store, rollout, client)
    return result


def record_history(store: RolloutStore, rollout: Rollout, client: Any = None) -> None:
    """The rollout's history (start, operator commands, the decision) on the challenger's model version, so the
    registry tells what happened to it without the rollout store (best effort: the store stays the truth)."""
    import json
    from datetime import UTC, datetime

    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    if client is None and not is_tracking_uri_set():
        return  # no registry configured in this process (a store-only caller)
    events = [{"kind": e["kind"], "actor": e["actor"],
               "at": datetime.fromtimestamp(e["at"], UTC).isoformat(timespec="seconds")}
              for e in store.events(rollout.rollout_id) if e["kind"] != "interval"]
    try:
        client = client or registry.client_for_active()
        client.set_model_version_tag(rollout.model_name, rollout.challenger_version, tag("rollout_history"),
                                     json.dumps(events[-40:]))
    except Exception as exc:
        log.warning("recording the rollout history on version %s failed: %s", rollout.challenger_version, exc)


def _encoder(rollout: Rollout) -> Any:
    """A table model's row encoder for drift (its training split's fitted transformer), else None."""
    data = _prepared(rollout)
    if data is None:
        return None
    from pipelines.canary.drift import table_encoder

    try:
        return table_encoder(data)
    except Exception as exc:  # drift informs; an unreadable transformer must not stop the rollout
        log.warning("the table model's transformer for drift could not be loaded: %s", exc)
        return None


def _reference(rollout: Rollout, cfg: CanaryConfig) -> pd.DataFrame | None:
    data = _prepared(rollout)
    if data is None:
        return None
    from pipelines.canary.flow import reference_frame

    return reference_frame(data, cfg)


# -- operator commands ---------------------------------------------------------------------------------------------

def active_rollout(store: RolloutStore, model_name: str) -> Rollout:
    """The active rollout of ``model_name``; none is a UserError saying what happened to the last one."""
    rollout = store.active(model_name)
    if rollout is None:
        latest = store.latest(model_name)
        where = (f"the last one ({latest.rollout_id}) ended {latest.phase}" if latest else "none was ever started")
        raise UserError(f"no active rollout of {model_name!r}: {where}; start one with `nasops canary start`")
    return rollout


def pause(store: RolloutStore, model_name: str, *, actor: str = "operator") -> Rollout:
    """Hold the current split (the weight stays) until :func:`resume`; no interval is judged meanwhile."""
    rollout = active_rollout(store, model_name)
    if rollout.phase == "paused":
        return rollout
    paused = store.update(rollout, {"phase": "paused", "paused_phase": rollout.phase}, kind="pause", actor=actor,
                          detail={"weight": rollout.weight, "mode": rollout.mode})
    record_history(store, paused)
    return paused


def resume(store: RolloutStore, model_name: str, *, actor: str = "operator") -> Rollout:
    """Continue a paused rollout; its current interval starts again now."""
    rollout = active_rollout(store, model_name)
    if rollout.phase != "paused":
        raise UserError(f"rollout {rollout.rollout_id} is {rollout.phase}, not paused; nothing to resume")
    resumed = store.update(rollout, {"phase": rollout.paused_phase or rollout.mode, "paused_phase": None,
                                     "last_judged_at": time.time()}, kind="resume", actor=actor, detail={})
    record_history(store, resumed)
    return resumed


def promote_now(store: RolloutStore, model_name: str, *, actor: str = "operator", client: Any = None) -> Rollout:
    """Skip the remaining steps: promote now (recorded as a manual decision), then apply it."""
    return _decide(store, model_name, PROMOTED, actor, client, "promoted manually, skipping the remaining steps")


def abort(store: RolloutStore, model_name: str, *, actor: str = "operator", client: Any = None) -> Rollout:
    """Roll back now: every gateway sends the challenger no more traffic within one poll of the record."""
    return _decide(store, model_name, ROLLED_BACK, actor, client, "aborted by the operator")


def _decide(store: RolloutStore, model_name: str, decision: str, actor: str, client: Any, why: str) -> Rollout:
    for _ in range(5):  # the controller may write between our read and our write: read again and retry
        rollout = active_rollout(store, model_name)
        where = "shadow" if rollout.mode == "shadow" else f"{rollout.weight:.0%} traffic"
        changes = {"phase": decision, "decision": decision, "decided_by": actor, "mode": "split",
                   "reason": f"{why} at {where} after {rollout.intervals} judged interval(s)",
                   "weight": 0.0 if decision == ROLLED_BACK else rollout.weight}
        try:
            kind = {PROMOTED: "promote", ROLLED_BACK: "abort"}[decision]
            detail = {"at_weight": rollout.weight, "intervals": rollout.intervals}
            decided = store.update(rollout, changes, kind=kind, actor=actor, detail=detail)
        except StaleRollout:
            continue
        _apply(store, decided, client)
        return store.get(decided.rollout_id) or decided
    raise UserError(f"rollout of {model_name!r} kept changing under the command; try again")
