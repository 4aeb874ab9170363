"""Operator commands on a rollout (Argo Rollouts' verbs): pause, resume, promote now, abort. Each is a write to the
rollout record through the same compare-and-set as the controller's, and an event in the rollout's history.

A *manual* rollout (an operator's split from the gateway's ``/admin/weight`` or ``/admin/mode``) has no controller,
evidence or registry decision: ``abort`` ends it as the gateway does at weight 0, ``promote`` is refused."""

from __future__ import annotations

from typing import Any

from monitoring.core.enums import Actor, Decision, Mode, Phase
from monitoring.rollout_store import Rollout, RolloutStore, StaleRollout, manual_end
from pipelines.control.context import StepContext
from pipelines.control.controller import apply_decision, record_history
from pipelines.errors import UserError

__all__ = ["abort", "active_rollout", "pause", "promote_now", "refuse_manual", "resume"]


def active_rollout(store: RolloutStore, model_name: str) -> Rollout:
    """The active rollout of ``model_name``; none is a UserError saying what happened to the last one."""
    rollout = store.active(model_name)
    if rollout is None:
        latest = store.latest(model_name)
        where = (f"the last one ({latest.rollout_id}) ended {latest.phase}" if latest else "none was ever started")
        raise UserError(f"no active rollout of {model_name!r}: {where}; start one with `nasops canary start`")
    return rollout


def refuse_manual(rollout: Rollout, what: str) -> None:
    """A UserError when ``rollout`` is a manual split: ``what`` (promote it, serve its controller) needs a judged
    rollout."""
    if rollout.manual:
        raise UserError(f"rollout {rollout.rollout_id} of {rollout.model_name!r} is a manual split ({rollout.mode} at "
                        f"{rollout.weight:.0%}) set through the gateway's admin API: nothing to {what}; set the "
                        "weight with `/admin/weight`, or start a judged rollout with `nasops canary start`")


def pause(store: RolloutStore, model_name: str, *, actor: str = Actor.OPERATOR) -> Rollout:
    """Hold the current split (the weight stays) until :func:`resume`; no interval is judged meanwhile."""
    rollout = active_rollout(store, model_name)
    if rollout.phase == Phase.PAUSED:
        return rollout
    paused = store.update(rollout, {"phase": Phase.PAUSED, "paused_phase": rollout.phase}, kind="pause",
                          actor=actor, detail={"weight": rollout.weight, "mode": rollout.mode})
    record_history(store, paused)
    return paused


def resume(store: RolloutStore, model_name: str, *, actor: str = Actor.OPERATOR) -> Rollout:
    """Continue a paused rollout; its current interval starts again now."""
    rollout = active_rollout(store, model_name)
    if rollout.phase != Phase.PAUSED:
        raise UserError(f"rollout {rollout.rollout_id} is {rollout.phase}, not paused; nothing to resume")
    resumed = store.update(rollout, {"phase": rollout.paused_phase or rollout.mode, "paused_phase": None,
                                     "last_judged_at": store.clock()}, kind="resume", actor=actor, detail={})
    record_history(store, resumed)
    return resumed


def promote_now(store: RolloutStore, model_name: str, *, actor: str = Actor.OPERATOR, client: Any = None) -> Rollout:
    """Skip the remaining steps: promote now (recorded as a manual decision), then apply it. Refused for a manual
    split: it has no judged challenger to promote."""
    refuse_manual(active_rollout(store, model_name), "promote")
    return _decide(store, model_name, Decision.PROMOTED, actor, client,
                   "promoted manually, skipping the remaining steps")


def abort(store: RolloutStore, model_name: str, *, actor: str = Actor.OPERATOR, client: Any = None) -> Rollout:
    """Roll back now: every gateway sends the challenger no more traffic within one poll of the record."""
    return _decide(store, model_name, Decision.ROLLED_BACK, actor, client, "aborted by the operator")


def _decide(store: RolloutStore, model_name: str, decision: Decision, actor: str, client: Any, why: str) -> Rollout:
    for _ in range(5):  # the controller may write between our read and our write: read again and retry
        rollout = active_rollout(store, model_name)
        where = "shadow" if rollout.mode == Mode.SHADOW else f"{rollout.weight:.0%} traffic"
        changes = {"phase": decision, "decision": decision, "decided_by": actor, "mode": Mode.SPLIT,
                   "reason": f"{why} at {where} after {rollout.intervals} judged interval(s)",
                   "weight": 0.0 if decision == Decision.ROLLED_BACK else rollout.weight}
        kind = {Decision.PROMOTED: "promote", Decision.ROLLED_BACK: "abort"}[decision]
        if rollout.manual:  # ended as the gateway ends one at weight 0: nothing to apply in the registry
            changes = manual_end(actor, f"manual split ended by `nasops canary abort` at {where}")
        try:
            decided = store.update(rollout, changes, kind=kind, actor=actor,
                                   detail={"at_weight": rollout.weight, "intervals": rollout.intervals})
        except StaleRollout:
            continue
        if decided.manual:
            return decided
        apply_decision(StepContext.build(store, decided, client))
        return store.get(decided.rollout_id) or decided
    raise UserError(f"rollout of {model_name!r} kept changing under the command; try again")
