"""The rollout record: the one durable truth of a canary, shared by the controller, every gateway worker and replica,
and the operator commands (the Argo Rollouts model: the rollout is state in storage that a controller reconciles).

It lives in the prediction-log database (SQLite by default, PostgreSQL in production), which every gateway already
writes and the judge already reads, so a rollout needs no new store. Two tables:

- ``nasops_rollouts``: one row per rollout; ``mode`` and ``weight`` are what every gateway applies. Each write bumps
  ``generation`` and is a compare-and-set on it (:meth:`RolloutStore.update`), so a controller restarted mid-step,
  two overlapping reconciles, or an operator command racing the controller can never both commit one step.
- ``nasops_rollout_events``: the append-only history (start, each judged interval, pause/resume/promote/abort, the
  decision), written in the same transaction as the row change it explains.

Every rollout has a **target**: the name of the gateways it steers. Production gateways follow
:data:`PRODUCTION_TARGET` (or the name their operator gives them); the private gateway of an embedded canary or a
tournament follows ``embedded:<session>`` (:func:`embedded_target`), so a refresh run without a gateway URL beside a
production gateway on the same database can never move production's split (issue 25, finding 2). One rollout per
*model* is active at a time, whatever its target: both would move the same registry aliases.

This module knows nothing of the judge or the registry: it stores and fences. The policy is in
``pipelines.control.controller``; the gateway's side is :class:`serving.rollout_follower.RolloutFollower`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from monitoring.core.enums import Decision, Mode, Phase
from monitoring.prediction_log import create_log_engine
from monitoring.schema import ensure_schema

__all__ = ["ACTIVE_PHASES", "EMBEDDED_PREFIX", "MANUAL_CONFIG", "PRODUCTION_TARGET", "TERMINAL_PHASES", "Rollout",
           "RolloutConflict", "RolloutStore", "StaleRollout", "embedded_target", "is_embedded", "manual_end", "rows_of"]

ACTIVE_PHASES = ("shadow", "split", "paused")
TERMINAL_PHASES = ("promoted", "rolled_back")
PRODUCTION_TARGET = "production"
"""The target of a gateway nobody named otherwise: the one callers use (and of every rollout before schema 0006)."""
EMBEDDED_PREFIX = "embedded:"
"""The namespace of private gateways (an embedded canary's, a tournament's): no production gateway follows it."""


def embedded_target(session: str) -> str:
    """The target of one private gateway session (``session``: an id unique to it)."""
    return f"{EMBEDDED_PREFIX}{session}"


def is_embedded(target: str) -> bool:
    """Whether ``target`` names a private gateway (an embedded canary's), never one callers use."""
    return target.startswith(EMBEDDED_PREFIX)


def rows_of(rollout: Rollout) -> str | None:
    """The ``instance`` whose prediction rows a rollout judges: an embedded canary's private gateway logs under its
    target (:func:`embedded_target`), so production traffic of the same model on the same log never enters its
    samples; a production rollout judges every replica's rows (None)."""
    return rollout.target if is_embedded(rollout.target) else None


metadata = sa.MetaData()

rollouts = sa.Table(
    "nasops_rollouts",
    metadata,
    sa.Column("rollout_id", sa.String(32), primary_key=True),
    sa.Column("model_name", sa.String(255), nullable=False, index=True),
    sa.Column("champion_version", sa.String(32), nullable=False),
    sa.Column("challenger_version", sa.String(32), nullable=False),
    sa.Column("phase", sa.String(16), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("weight", sa.Float, nullable=False),
    sa.Column("step_index", sa.Integer, nullable=False),
    sa.Column("passes_in_step", sa.Integer, nullable=False),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("intervals", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("step_started_at", sa.Float, nullable=False),
    sa.Column("window_start", sa.Float, nullable=False),
    sa.Column("last_judged_at", sa.Float, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("paused_phase", sa.String(16), nullable=True),
    sa.Column("decision", sa.String(16), nullable=True),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("decided_by", sa.String(16), nullable=True),
    sa.Column("applied", sa.Boolean, nullable=False, default=False),
    sa.Column("gateway_url", sa.Text, nullable=True),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("data_path", sa.Text, nullable=True),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("history", sa.Text, nullable=False),
    sa.Column("last_verdict", sa.Text, nullable=True),
    sa.Column("model_ref", sa.Text, nullable=True),  # JSON: the model facts and drift reference (schema 0002)
    # the gateways it steers (schema 0006): production's, or one embedded canary's private gateway
    sa.Column("target", sa.String(255), nullable=False, default=PRODUCTION_TARGET,
              server_default=PRODUCTION_TARGET),
)
# One active rollout per model, held by the database: two controllers starting one at the same moment cannot both
# insert (a check-then-insert let them), and a decided rollout cannot be put back in an active phase beside another.
ACTIVE_WHERE = sa.text(f"phase IN ({', '.join(repr(p) for p in ACTIVE_PHASES)})")
sa.Index("uq_nasops_rollouts_one_active", rollouts.c.model_name, unique=True, sqlite_where=ACTIVE_WHERE,
         postgresql_where=ACTIVE_WHERE)

events = sa.Table(
    "nasops_rollout_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rollout_id", sa.String(32), nullable=False, index=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
)

_JSON = ("config", "history", "last_verdict", "model_ref")
HEAVY = ("history", "model_ref")
"""Columns a routing read leaves out: the drift reference (up to ~1 MB) and the growing interval history. Every
gateway worker reads the record every ``rollout_poll_s``; routing needs neither (the last interval's drift, which
the gateway publishes, is in ``last_verdict``)."""
ROUTING_COLUMNS = [c for c in rollouts.c if c.name not in HEAVY]

MANUAL_KEY = "manual"
MANUAL_CONFIG = {MANUAL_KEY: True}
"""The ``config`` of a manual rollout: an operator's split set through the gateway's admin API, judged by no
controller (:mod:`serving.manual_rollout` writes it)."""


class RolloutConflict(RuntimeError):
    """Starting a rollout while another one of the same model is active."""


class StaleRollout(RuntimeError):
    """A compare-and-set lost: someone else wrote the rollout since it was read (re-read and decide again)."""


@dataclass
class Rollout:
    """One row of ``nasops_rollouts``, JSON columns decoded."""

    rollout_id: str
    model_name: str
    champion_version: str
    challenger_version: str
    phase: str
    mode: str
    weight: float
    step_index: int
    passes_in_step: int
    failures: int
    intervals: int
    created_at: float
    updated_at: float
    step_started_at: float
    window_start: float
    last_judged_at: float
    generation: int
    config: dict
    history: list = field(default_factory=list)
    last_verdict: dict | None = None
    paused_phase: str | None = None
    decision: str | None = None
    reason: str = ""
    decided_by: str | None = None
    applied: bool = False
    gateway_url: str | None = None
    run_id: str | None = None
    data_path: str | None = None
    model_ref: dict | None = None
    target: str = PRODUCTION_TARGET

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASES

    @property
    def manual(self) -> bool:
        """An operator's split (``/admin/weight``, ``/admin/mode``): no controller judges, applies or records it."""
        return bool((self.config or {}).get(MANUAL_KEY))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_COLUMNS = {f.name for f in fields(Rollout)}


def manual_end(actor: str, reason: str) -> dict[str, Any]:
    """The changes that end a manual rollout, whoever ends it (the gateway at weight 0, ``nasops canary abort``):
    rolled back by ``actor``, nobody reaches the challenger, and nothing to apply in the registry."""
    return {"phase": Phase.ROLLED_BACK, "decision": Decision.ROLLED_BACK, "decided_by": actor, "mode": Mode.SPLIT,
            "weight": 0.0, "applied": True, "reason": reason}


def _row_to_rollout(row: Mapping[str, Any]) -> Rollout:
    """A record from a row; a routing read's row lacks the :data:`HEAVY` columns, left at their defaults."""
    values = {k: row[k] for k in _COLUMNS if k in row}
    for key in _JSON:
        if key in values:
            values[key] = None if values[key] is None else json.loads(values[key])
    values["history"] = values.get("history") or []
    values["applied"] = bool(values["applied"])
    return Rollout(**values)


def _encode(changes: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(changes) - _COLUMNS
    if unknown:
        raise ValueError(f"not rollout fields: {sorted(unknown)}")
    return {k: (json.dumps(v, default=str) if k in _JSON and v is not None else v) for k, v in changes.items()}


class RolloutStore:
    """Read, create and compare-and-set rollouts in the prediction-log database at ``url`` (or an engine)."""

    def __init__(self, log: Engine | str) -> None:
        self.engine = create_log_engine(log) if isinstance(log, str) else log
        ensure_schema(self.engine)

    # -- reads --------------------------------------------------------------------------------------------------
    def clock(self) -> float:
        """The database's time in unix seconds: the one clock every rollout timestamp comes from, so a controller
        or gateway whose host clock runs ahead cannot write future timestamps that freeze the rollout for others.
        SQLite's is the OS clock of the host that holds the file, read by SQLite itself (not Python's)."""
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            query = sa.text("SELECT EXTRACT(EPOCH FROM clock_timestamp())")
        elif dialect == "sqlite":
            query = sa.text("SELECT (julianday('now') - 2440587.5) * 86400.0")
        else:
            return time.time()
        with self.engine.connect() as conn:
            return float(conn.execute(query).scalar_one())

    def get(self, rollout_id: str) -> Rollout | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(rollouts).where(rollouts.c.rollout_id == rollout_id)).mappings().first()
        return _row_to_rollout(row) if row else None

    def latest(self, model_name: str) -> Rollout | None:
        """The newest rollout of ``model_name`` (active or not), every column."""
        return self._latest(model_name, rollouts.c)

    def latest_routing(self, model_name: str, target: str | None = None) -> Rollout | None:
        """The newest rollout of ``model_name`` steering ``target`` (None: any target) without its :data:`HEAVY`
        columns (``history`` empty, ``model_ref`` None): what a gateway worker follows every poll. For routing
        only: never judge or report from it."""
        return self._latest(model_name, ROUTING_COLUMNS, target)

    def _latest(self, model_name: str, columns: Any, target: str | None = None) -> Rollout | None:
        query = (sa.select(*columns).where(rollouts.c.model_name == model_name)
                 .order_by(rollouts.c.created_at.desc(), rollouts.c.rollout_id.desc()).limit(1))
        if target is not None:
            query = query.where(rollouts.c.target == target)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return _row_to_rollout(row) if row else None

    def active(self, model_name: str) -> Rollout | None:
        latest = self.latest(model_name)
        return latest if latest is not None and latest.active else None

    def recent(self, model_name: str | None = None, limit: int = 20) -> list[Rollout]:
        query = sa.select(rollouts).order_by(rollouts.c.created_at.desc()).limit(limit)
        if model_name is not None:
            query = query.where(rollouts.c.model_name == model_name)
        with self.engine.connect() as conn:
            return [_row_to_rollout(r) for r in conn.execute(query).mappings().all()]

    def events(self, rollout_id: str) -> list[dict[str, Any]]:
        query = sa.select(events).where(events.c.rollout_id == rollout_id).order_by(events.c.id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]

    # -- writes -------------------------------------------------------------------------------------------------
    def create(self, *, model_name: str, champion_version: str, challenger_version: str, mode: str, weight: float,
               config: dict, actor: str = "operator", now: float | None = None, **extra: Any) -> Rollout:
        """A new rollout in its first phase; refused (:class:`RolloutConflict`) while another of the model is
        active, so two controllers can never steer one gateway (a unique index decides a race between starts)."""
        now = self.clock() if now is None else now
        rollout = Rollout(
            rollout_id=uuid.uuid4().hex, model_name=model_name, champion_version=str(champion_version),
            challenger_version=str(challenger_version), phase=mode, mode=mode, weight=float(weight), step_index=0,
            passes_in_step=0, failures=0, intervals=0, created_at=now, updated_at=now, step_started_at=now,
            window_start=now, last_judged_at=now, generation=1, config=config, **extra,
        )
        try:
            with self.engine.begin() as conn:
                self._refuse_if_active(conn, model_name)  # the usual case, named; the index settles a race
                conn.execute(rollouts.insert().values(**_encode(rollout.to_dict())))
                self._event(conn, rollout.rollout_id, now, rollout.generation, "start", actor,
                            {"champion_version": rollout.champion_version,
                             "challenger_version": rollout.challenger_version, "mode": mode, "weight": weight})
        except sa.exc.IntegrityError:
            self._raise_conflict(model_name)
            raise
        return rollout

    def update(self, rollout: Rollout, changes: Mapping[str, Any], *, kind: str, actor: str,
               detail: Mapping[str, Any] | None = None, now: float | None = None) -> Rollout:
        """Apply ``changes`` if nobody wrote since ``rollout`` was read (compare-and-set on ``generation``),
        with one history event in the same transaction; raises :class:`StaleRollout` otherwise, and
        :class:`RolloutConflict` for a phase change back to active while another rollout of the model is."""
        now = self.clock() if now is None else now
        generation = rollout.generation + 1
        values = {**_encode(changes), "generation": generation, "updated_at": now}
        try:
            with self.engine.begin() as conn:
                result = conn.execute(
                    rollouts.update().where(rollouts.c.rollout_id == rollout.rollout_id)
                    .where(rollouts.c.generation == rollout.generation).values(**values)
                )
                if result.rowcount != 1:
                    raise StaleRollout(f"rollout {rollout.rollout_id} changed since generation {rollout.generation}")
                self._event(conn, rollout.rollout_id, now, generation, kind, actor, dict(detail or {}))
        except sa.exc.IntegrityError:  # back into an active phase while another rollout of the model is active
            self._raise_conflict(rollout.model_name)
            raise
        updated = {**rollout.to_dict(), **dict(changes), "generation": generation, "updated_at": now}
        return Rollout(**updated)

    @staticmethod
    def _refuse_if_active(conn: Any, model_name: str) -> None:
        current = conn.execute(
            sa.select(rollouts.c.rollout_id, rollouts.c.phase, rollouts.c.target)
            .where(rollouts.c.model_name == model_name)
            .where(rollouts.c.phase.in_(ACTIVE_PHASES))
        ).first()
        if current is not None:
            raise RolloutConflict(f"rollout {current.rollout_id} of {model_name!r} (target {current.target!r}) is "
                                  f"still {current.phase}")

    def _raise_conflict(self, model_name: str) -> None:
        """After the unique index refused a write: :class:`RolloutConflict` naming the active rollout that won
        (returns when none is active: the refusal was something else, which the caller re-raises)."""
        try:
            with self.engine.connect() as conn:
                self._refuse_if_active(conn, model_name)
        except RolloutConflict as conflict:
            raise conflict from None

    @staticmethod
    def _event(conn: Any, rollout_id: str, at: float, generation: int, kind: str, actor: str,
               detail: Mapping[str, Any]) -> None:
        conn.execute(events.insert().values(rollout_id=rollout_id, at=at, generation=generation, kind=kind,
                                            actor=actor, detail=json.dumps(detail, default=str)))
