"""An operator's split, set through ``POST /admin/weight`` or ``/admin/mode``, kept as a *manual rollout*: a record
in the same :class:`~monitoring.rollout_store.RolloutStore` a controller's rollout lives in.

So there is one source of routing truth: every worker of every replica follows the newest record through its
:class:`~serving.rollout_follower.RolloutFollower`, whoever wrote it. The rules:

- A manual rollout is recognisable: ``config == {"manual": True}`` (:attr:`Rollout.manual`), started by the
  ``operator`` actor, ``decided_by`` unset until an operator ends it. No controller judges it: it steers traffic,
  it does not decide a challenger's fate.
- While a *controller's* rollout is active the admin API refuses to steer (409, :class:`RolloutControlled`).
- A change while a manual rollout is active updates that record (one compare-and-set, retried on a lost race).
- Weight 0 in split mode (nobody reaches the challenger, nothing mirrored) *ends* the manual rollout: phase and
  decision ``rolled_back``, ``decided_by`` ``operator``, ``applied`` (there is nothing to apply in the registry).
  From the start-up split (``nasops serve --weight``) a record is created and ended at once, so every worker
  follows the change. ``nasops canary abort`` ends one the same way (both write
  :func:`~monitoring.rollout_store.manual_end`).
- A manual rollout steers the gateway's own target (``rollout_target``), like any rollout it follows.
- :meth:`RolloutStore.create` refuses a new rollout while any is active, so a refresh's or ``nasops canary start``'s
  rollout is refused while a manual one is active: end it first (``/admin/weight`` 0, or ``nasops canary abort``).
"""

from __future__ import annotations

from collections.abc import Callable

from monitoring.core.enums import Actor, Mode
from monitoring.rollout_store import (
    MANUAL_CONFIG,
    PRODUCTION_TARGET,
    Rollout,
    RolloutConflict,
    RolloutStore,
    StaleRollout,
    manual_end,
)
from serving.routing import Split

__all__ = ["MANUAL_CONFIG", "RolloutControlled", "is_manual", "steer"]

RETRIES = 5


class RolloutControlled(RuntimeError):
    """An admin change of the split while a controller's rollout steers it (409: use the canary commands)."""


def is_manual(rollout: Rollout | None) -> bool:
    """Whether ``rollout`` is an operator's manual split (no controller may judge or apply it)."""
    return rollout is not None and rollout.manual


def _ended() -> dict:
    return manual_end(Actor.OPERATOR, "manual split ended by the operator (weight 0 in split mode)")


def _write(store: RolloutStore, model_name: str, active: Rollout | None, target: Split, current: Split,
           versions: tuple[str, str], gateways: str) -> Rollout | None:
    """One attempt, given the active record read: the record that carries ``target`` (None: nothing to write)."""
    if active is not None and not is_manual(active):
        raise RolloutControlled(f"rollout {active.rollout_id} ({active.phase}) steers the split")
    detail = {"mode": str(target.mode), "weight": target.weight}
    if active is not None and Split(Mode(active.mode), float(active.weight)) == target:
        return active  # already in force: no new generation
    if active is None:
        if target == current and target.neutral:
            return None  # already what every worker applies
        created = store.create(model_name=model_name, champion_version=versions[0], challenger_version=versions[1],
                               mode=target.mode, weight=target.weight, config=dict(MANUAL_CONFIG),
                               actor=Actor.OPERATOR, target=gateways)
        if not target.neutral:
            return created
        active = created
    if target.neutral:
        return store.update(active, _ended(), kind="manual_end", actor=Actor.OPERATOR, detail=detail)
    return store.update(active, {"phase": target.mode, "mode": target.mode, "weight": target.weight},
                        kind="manual", actor=Actor.OPERATOR, detail=detail)


def steer(store: RolloutStore, model_name: str, change: Callable[[Split], Split], current: Split,
          versions: tuple[str, str], *, gateways: str = PRODUCTION_TARGET) -> Rollout | None:
    """Apply ``change`` to the split now in force (the active manual rollout's, else ``current``) as a manual
    rollout of the ``gateways`` target; returns the record written (None: nothing to write). Raises
    :class:`RolloutControlled` while a controller's rollout is active (another target's included: one rollout per
    model is active at a time)."""
    conflict: RolloutConflict | None = None
    for _ in range(RETRIES):
        latest = store.latest_routing(model_name, gateways)  # the split is all this needs
        active = latest if latest is not None and latest.active else None
        base = Split(Mode(active.mode), active.weight) if is_manual(active) else current
        try:
            return _write(store, model_name, active, change(base), current, versions, gateways)
        except StaleRollout:
            continue  # another worker or command wrote in between: read again
        except RolloutConflict as exc:  # a race with another worker's start, or another target's rollout
            conflict = exc
    if conflict is not None:
        raise RolloutControlled(str(conflict))
    raise RolloutControlled("the rollout record kept changing under this admin call; try again")
