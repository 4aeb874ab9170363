"""A gateway worker's side of the rollout record: poll it, and apply what it says.

Every worker of every replica runs one follower (a daemon thread) against the shared rollout store, so they all
apply the same split within ``rollout_poll_s`` of the controller's write, whatever worker or replica an operator
or the controller talks to. The record is the one routing source: a controller's rollout, or an operator's manual
one (``/admin/weight`` and ``/admin/mode`` write one, :mod:`serving.manual_rollout`). While a rollout is active its
``mode`` and ``weight`` are the split; when it ends, the challenger's weight is 0 and, after a promotion, the
worker re-reads the aliases the controller moved.

A worker follows only the rollouts of its **target** (``rollout_target``: ``production`` unless its operator names
another): an embedded canary's rollout on the same database steers its own private gateway (``embedded:<session>``)
and never a production one, whatever model name they share.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from monitoring.rollout_store import PRODUCTION_TARGET, Rollout, RolloutStore
from serving.manual_rollout import is_manual

log = logging.getLogger("nasops.gateway")


def _newer(record: Rollout, applied: Rollout | None) -> bool:
    """Whether ``record`` comes after the one ``applied`` (a poll that read just before an admin call wrote must not
    take the worker back to the older state)."""
    if applied is None:
        return True
    if record.rollout_id == applied.rollout_id:
        return record.generation > applied.generation
    return (record.created_at, record.rollout_id) > (applied.created_at, applied.rollout_id)


class RolloutFollower:
    """Polls the newest rollout of ``model_name`` steering ``target``; ``on_change(previous, current)`` runs on each
    new generation."""

    def __init__(self, store: RolloutStore, model_name: str, poll_s: float,
                 on_change: Callable[[Rollout | None, Rollout], None], *, target: str = PRODUCTION_TARGET) -> None:
        self.store = store
        self.model_name = model_name
        self.target = target
        self.poll_s = poll_s
        self.on_change = on_change
        self.current: Rollout | None = None
        self.errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the poller and an admin call applying a record do not interleave
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> Rollout | None:
        """The rollout that steers routing now (None: none is active)."""
        current = self.current
        return current if current is not None and current.active else None

    def poll_once(self) -> Rollout | None:
        """Read the record; apply a new generation. A store error keeps the last state (and is counted)."""
        try:
            latest = self.store.latest_routing(self.model_name, self.target)  # not the drift reference nor history
        except Exception as exc:  # a busy or briefly unreachable database: keep following what we know
            self.errors += 1
            log.warning("reading the rollout record failed: %s", exc)
            return self.current
        with self._lock:
            previous = self.current
            if latest is not None and _newer(latest, previous):
                self.current = latest
                try:
                    self.on_change(previous, latest)
                except Exception:
                    log.exception("applying rollout %s generation %d failed", latest.rollout_id, latest.generation)
            return self.current

    def observe(self, record: Rollout) -> None:
        """Apply a record this worker just wrote (an admin call) now, without waiting for the next poll; an older
        generation than the one applied, or another target's record, is ignored."""
        with self._lock:
            previous = self.current
            if record.target != self.target or not _newer(record, previous):
                return
            self.current = record
            self.on_change(previous, record)

    def start(self) -> None:
        self.poll_once()
        self._thread = threading.Thread(target=self._loop, name="rollout-follower", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.poll_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def describe(self) -> dict | None:
        current = self.current
        if current is None:
            return None
        return {"rollout_id": current.rollout_id, "generation": current.generation, "phase": current.phase,
                "mode": current.mode, "weight": current.weight, "challenger_version": current.challenger_version,
                "manual": is_manual(current), "target": current.target}
