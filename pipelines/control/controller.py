"""The rollout controller: one reconcile step at a time over the durable rollout record.

A step reads the record, builds its :class:`~pipelines.control.context.StepContext` once (the policy, both
versions' ModelRefs and the drift reference stored with the record at start), and if the current interval is over,
collects that step's samples (the prediction log and Prometheus), judges them, applies the rollout rule
(:class:`~pipelines.control.rollout.RolloutState`) and writes the record back with a compare-and-set. Nothing lives
in the controller's memory, so killing it at any point and starting it again continues from the record: an
interval whose write did not commit is judged again (with the longer window it now has), one that committed is
never judged twice, and the registry decision is applied (and re-applied, idempotently) until the record says it
was. Gateways follow the record on their own (:mod:`serving.rollout_follower`), so the controller never talks to
them: it cannot tell real traffic from the embedded traffic process. It never loads a model or a training file.

Operator commands are in :mod:`pipelines.control.commands`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import mlflow
import pandas as pd

from monitoring.core.enums import Actor, Decision, Mode, Phase
from monitoring.core.model_ref import DriftReference
from monitoring.judge import Judge, Verdict
from monitoring.prediction_log import predictions, read_predictions
from monitoring.rollout_store import (
    PRODUCTION_TARGET,
    Rollout,
    RolloutConflict,
    RolloutStore,
    StaleRollout,
    rows_of,
)
from monitoring.sources import collect_samples
from monitoring.vocabulary import tag
from pipelines import registry
from pipelines.contracts import CanaryOutput
from pipelines.control.config import CanaryConfig
from pipelines.control.context import StepContext, judge_for
from pipelines.control.evidence import REPORT_DIR, attempt, evidence, record_decision
from pipelines.control.reference import resolve_models
from pipelines.control.rollout import RolloutState, schedule
from pipelines.control.versions import variants
from pipelines.errors import UserError
from pipelines.promotion import ChampionMoved

log = logging.getLogger("nasops.canary")

__all__ = ["ReconcileReport", "apply_decision", "reconcile", "record_history", "start_rollout"]


@dataclass
class ReconcileReport:
    """What one reconcile step did: ``waiting`` (interval not over), ``judged``, ``paused``, ``decided`` (a verdict
    ended the rollout), ``applied`` (a finished rollout's registry decision written), ``done``, ``conflict``, or
    ``manual`` (an operator's split from the gateway's admin API: nothing to judge or apply)."""

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
                  data_path: str | None = None, client: Any = None, actor: str = Actor.OPERATOR,
                  reference: DriftReference | None = None, target: str = PRODUCTION_TARGET) -> Rollout:
    """Create the rollout of ``@challenger`` against ``@champion`` steering the gateways of ``target``: its record
    (first phase, both versions' ModelRefs and the drift reference: ``reference`` when the caller has the prepared
    data, else the challenger's registered one) and its MLflow run. ``data_path`` is kept for lineage only."""
    client = client or registry.client_for_active()
    champion, challenger = variants(client, model_name)
    first = schedule(cfg)[0]
    active = store.active(model_name)
    if active is not None and active.manual:
        raise UserError(f"a manual split of {model_name!r} ({active.mode} at {active.weight:.0%}, rollout "
                        f"{active.rollout_id}, set through the gateway's admin API) is active; end it with "
                        "`/admin/weight 0` or `nasops canary abort` before starting a judged rollout")
    if active is not None:
        raise UserError(f"rollout {active.rollout_id} of {model_name!r} (challenger v{active.challenger_version}, "
                        f"target {active.target!r}) is still {active.phase}; follow it with `nasops canary status`, "
                        "or end it with `nasops canary abort` / `promote` before starting another")
    models = resolve_models(client, champion, challenger, reference, rows=cfg.reference_rows, seed=cfg.seed)
    try:  # a challenger ranked by a metric the canary cannot judge online is refused here, not at every step
        judge_for(cfg.judge, models.challenger)
    except ValueError as exc:
        raise UserError(f"{model_name} v{challenger.version}: {exc}") from None
    run_id = _open_run(client, model_name, str(champion.version), str(challenger.version), cfg)
    try:
        return store.create(model_name=model_name, champion_version=str(champion.version),
                            challenger_version=str(challenger.version), mode=first.mode, weight=first.weight,
                            config=cfg.model_dump(mode="json"), actor=actor, gateway_url=gateway_url, run_id=run_id,
                            data_path=data_path, model_ref=models.model_dump(mode="json"), now=store_time(store),
                            target=target)
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

def _state(ctx: StepContext) -> RolloutState:
    rollout = ctx.rollout
    return RolloutState(schedule(ctx.cfg), ctx.cfg, phase_index=rollout.step_index,
                        passes_in_phase=rollout.passes_in_step, failures=rollout.failures,
                        intervals=rollout.intervals, history=list(rollout.history))


def judge_window(ctx: StepContext, until: float) -> tuple[Verdict, dict]:
    """The verdict on the current step's samples (the judge of the challenger's task: a regression is judged on
    online RMSE / MAE), and the label coverage per variant beside it."""
    sources = ctx.sources()
    judge_cfg = ctx.judge_config
    rollout = ctx.rollout
    since = rollout.last_judged_at if ctx.cfg.window == "interval" else rollout.window_start
    # window matched: strata = the judged intervals, so the champion is compared over the challenger's time mix
    strata = ([since] + [h["judged_at"] for h in rollout.history if h.get("judged_at", since) > since]
              if ctx.cfg.window == "matched" else None)
    verdict = Judge(judge_cfg).judge(collect_samples(judge_cfg.metrics, sources, since, until, strata=strata))
    coverage = getattr(sources["prediction_log"], "coverage", {})
    return verdict, coverage


MAX_CLOCK_SKEW_S = 10.0
"""How far this host's clock may be from the database's before a controller refuses to act: timestamps come from
the database anyway, but the prediction rows it judges carry the gateways' host times."""


def store_time(store: RolloutStore) -> float:
    """The database's clock, after checking that this host's is within :data:`MAX_CLOCK_SKEW_S` of it."""
    here = time.time()
    now = store.clock()
    skew = here - now
    if abs(skew) > MAX_CLOCK_SKEW_S:
        raise UserError(f"this host's clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the "
                        f"rollout database's (bound {MAX_CLOCK_SKEW_S:g} s); fix the host's time (NTP) before "
                        "running a controller here")
    return now


def reconcile(store: RolloutStore, rollout_id: str, *, now: float | None = None, client: Any = None,
              force: bool = False) -> ReconcileReport:
    """One reconcile step of rollout ``rollout_id`` (``force``: judge now even if the interval is not over)."""
    rollout = store.get(rollout_id)
    if rollout is None:
        raise UserError(f"no rollout {rollout_id!r} in the prediction-log database; `nasops canary status` lists "
                        "the rollouts there")
    if rollout.manual:
        return _report(rollout, "manual")  # an operator's split: no controller judges or applies it
    if rollout.terminal and rollout.applied:
        return _report(rollout, "done")
    if rollout.phase == Phase.PAUSED:
        return _report(rollout, "paused")
    ctx = StepContext.build(store, rollout, client)
    if rollout.terminal:
        return apply_decision(ctx)
    now = store_time(store) if now is None else now
    due = rollout.last_judged_at + ctx.cfg.interval_s
    if now < due and not force:
        return _report(rollout, "waiting", next_due_s=round(due - now, 3))
    return _judge_interval(ctx, now)


def _judge_interval(ctx: StepContext, now: float) -> ReconcileReport:
    """Judge the interval that ended at ``now``, apply the rollout rule and write the record (compare-and-set)."""
    rollout = ctx.rollout
    verdict, coverage = judge_window(ctx, now)
    state = _state(ctx)
    judged = state.phase
    outcome = state.advance(verdict)
    step = {"interval": state.intervals, "mode": judged.mode, "weight": judged.weight, "verdict": verdict.verdict,
            "outcome": outcome, "score": round(verdict.score, 2), "failed_metrics": verdict.failed_metrics,
            "window": [rollout.window_start, now], "coverage": coverage, "judged_at": now,
            "evidence": verdict.table()}
    if ctx.cfg.drift_each_interval:
        step["drift"] = _interval_drift(ctx, rollout.last_judged_at, now)
    state.history.append(step)
    try:
        updated = ctx.store.update(rollout, _changes(rollout, state, verdict, coverage, now), kind="interval",
                                   actor=Actor.CONTROLLER, detail=step, now=now)
    except StaleRollout:
        return _report(ctx.store.get(rollout.rollout_id) or rollout, "conflict")
    _log_interval(ctx.client, updated, verdict, judged.weight, step)
    log.info("rollout %s interval %d (%s %.0f%%): %s -> %s", rollout.rollout_id, state.intervals, judged.mode,
             100 * judged.weight, verdict.summary(), outcome)
    if updated.terminal:
        report = apply_decision(ctx.with_rollout(updated))
        report.action, report.outcome, report.verdict = "decided", outcome, verdict.verdict
        return report
    return _report(updated, "judged", outcome=outcome, verdict=verdict.verdict)


def _changes(rollout: Rollout, state: RolloutState, verdict: Verdict, coverage: dict, now: float) -> dict[str, Any]:
    """The record's new fields after one judged interval: counters, history, the verdict, and the next phase or
    the decision."""
    changes: dict[str, Any] = {
        "step_index": state.phase_index, "passes_in_step": state.passes_in_phase, "failures": state.failures,
        "intervals": state.intervals, "history": state.history, "last_judged_at": now,
        # the interval's drift beside its verdict: the gateway publishes it from its routing read (no history)
        "last_verdict": {**verdict.to_dict(), "evidence": verdict.table(), "coverage": coverage,
                         "interval": state.intervals, "drift": state.history[-1].get("drift")},
    }
    judged_mode = state.history[-1]["mode"]
    if state.decision is not None:
        changes.update(phase=state.decision, decision=state.decision, reason=state.reason,
                       decided_by=Actor.CONTROLLER, mode=Mode.SPLIT,
                       weight=rollout.weight if state.decision == Decision.PROMOTED else 0.0)
    elif state.phase_index != rollout.step_index:
        nxt = state.phase
        changes.update(phase=nxt.mode, mode=nxt.mode, weight=nxt.weight, step_started_at=now)
        if judged_mode == Mode.SHADOW and nxt.mode == Mode.SPLIT:
            changes["window_start"] = now  # split evidence starts clean, without the mirrored calls
    return changes


def _interval_drift(ctx: StepContext, since: float, until: float) -> dict[str, Any]:
    """Data drift of each variant's distinct inputs in the interval against the training rows, and prediction
    drift; every gateway worker publishes it as ``nasops_drift_share``. Without a reference: None values and the
    reason why, in the step's evidence."""
    from monitoring.log_aggregates import sample_inputs
    from pipelines.control.drift import DRIFT_ROWS, interval_drift, no_drift

    reference = ctx.reference_frame()
    if reference is None:
        table = ctx.reference is not None and ctx.reference.input_form == "table"
        return no_drift(ctx.models.note or ("the table model's drift reference holds no raw training rows (its data "
                                            "was prepared before they were saved): its input drift is not computed"
                                            if table else "the drift reference holds no input rows"))
    try:
        rows = sample_inputs(ctx.store.engine, since, until, per_variant=DRIFT_ROWS, model_name=ctx.rollout.model_name,
                             instance=rows_of(ctx.rollout))
        return interval_drift(rows, reference, ctx.cfg)
    except Exception as exc:  # drift informs the dashboards; it must not stop the rollout
        log.warning("interval drift failed: %s", exc)
        return no_drift(f"interval drift failed: {exc}")


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

def apply_decision(ctx: StepContext) -> ReconcileReport:
    """Write a finished rollout's evidence and registry decision (idempotent), then mark the record applied."""
    rollout = ctx.rollout
    if rollout.manual:
        return _report(rollout, "manual")  # nothing to judge, report or decide in the registry
    ctx = ctx if ctx.client is not None else StepContext(rollout, ctx.store, ctx.cfg, ctx.models,
                                                          registry.client_for_active())
    if rollout.decided_by == Actor.CONTROLLER and (rollout.last_verdict or {}).get("metrics") is not None:
        verdict = Verdict.from_dict(rollout.last_verdict)  # the verdict that decided, not a later re-judging
    else:  # an operator's decision: the evidence as it stands now
        verdict, _ = judge_window(ctx, rollout.updated_at)
    result = evidence_and_decision(ctx, verdict)
    detail = {"decision": rollout.decision, "champion_version": result.champion_version}
    if result.warnings:
        detail["warnings"] = result.warnings
    try:
        applied = ctx.store.update(rollout, {"applied": True}, kind="applied", actor=Actor.CONTROLLER, detail=detail)
    except StaleRollout:
        applied = ctx.store.get(rollout.rollout_id) or rollout
    return _report(applied, "applied", result=result)


def evidence_and_decision(ctx: StepContext, verdict: Verdict) -> CanaryOutput:
    """The decision in the registry first (from the record alone), then the canary report in the rollout's MLflow
    run (both idempotent). Evidence that fails is a warning in the result: it never keeps the decision from being
    applied, so a controller never retries an apply forever over a report."""
    rollout, store = ctx.rollout, ctx.store
    if rollout.manual:
        raise ValueError(f"rollout {rollout.rollout_id} is a manual split: it has no evidence or decision")
    state = _state(ctx)
    state.decision, state.reason = rollout.decision, rollout.reason
    refused = None
    try:
        record_decision(ctx.client, state, verdict, ctx.cfg, model_name=rollout.model_name,
                        challenger_version=rollout.challenger_version, canary_run_id=rollout.run_id,
                        champion_version=rollout.champion_version)
    except ChampionMoved as exc:  # applied as a refusal: recorded, never retried forever
        log.warning("rollout %s: %s", rollout.rollout_id, exc)
        refused = str(exc)
    ctx.client.set_model_version_tag(rollout.model_name, rollout.challenger_version, tag("rollout_id"),
                                     rollout.rollout_id)
    result = _evidence(ctx, state, verdict)
    if refused is not None:
        result = result.model_copy(update={"warnings": [*result.warnings, refused]})
    record_history(store, rollout, ctx.client)
    return result


def _evidence(ctx: StepContext, state: RolloutState, verdict: Verdict) -> CanaryOutput:
    """The result and its artifacts in the rollout's MLflow run; a log that cannot be read or a run that cannot be
    opened is a warning, and the result is built from what there is."""
    rollout, reference = ctx.rollout, ctx.reference
    warnings: list[str] = []
    frame = attempt(warnings, "reading the prediction log",
                    lambda: read_predictions(ctx.store.engine, rollout.created_at, rollout.updated_at + 1.0,
                                             model_name=rollout.model_name, instance=rows_of(rollout)))
    if frame is None:  # no rows, the log's columns
        frame = pd.DataFrame(columns=[column.name for column in predictions.columns])
    facts = {"model_name": rollout.model_name, "champion_version": rollout.champion_version,
             "challenger_version": rollout.challenger_version, "gateway_url": rollout.gateway_url or "",
             "task": ctx.task.name,
             "calibrations": ctx.calibrations,
             "target_values": reference.target_values if reference is not None and ctx.task.numeric_labels else None}
    result: CanaryOutput | None = None
    try:
        with mlflow.start_run(run_id=rollout.run_id, nested=mlflow.active_run() is not None) as run:
            result = evidence(run, state, verdict, frame, ctx.reference_frame(), ctx.cfg,
                              decided_by=rollout.decided_by, **facts)
            result.rollout_id, result.decided_by = rollout.rollout_id, rollout.decided_by
            attempt(result.warnings, "logging result.json",
                    lambda: mlflow.log_dict(result.model_dump(mode="json"), f"{REPORT_DIR}/result.json"))
    except Exception as exc:  # the run could not be opened or closed: the evidence stays unlogged
        warnings.append(f"the rollout's MLflow run {rollout.run_id} failed: {type(exc).__name__}: {exc}")
        log.warning("canary evidence: %s", warnings[-1])
    if result is None:
        result = evidence(None, state, verdict, frame, ctx.reference_frame(), ctx.cfg,
                          decided_by=rollout.decided_by, **facts)
        result.rollout_id, result.decided_by, result.canary_run_id = (rollout.rollout_id, rollout.decided_by,
                                                                      rollout.run_id)
    result.warnings = [*warnings, *result.warnings]
    return result


def record_history(store: RolloutStore, rollout: Rollout, client: Any = None) -> None:
    """The rollout's history (start, operator commands, the decision) on the challenger's model version, so the
    registry tells what happened to it without the rollout store (best effort: the store stays the truth)."""
    import json
    from datetime import UTC, datetime

    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    if rollout.manual:
        return  # an operator's split names no challenger to record it on
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
