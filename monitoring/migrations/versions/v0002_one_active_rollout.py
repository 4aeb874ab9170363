"""Revision 0002: one active rollout per model enforced by the database, ``model_ref`` on the rollout, and a
64-bit prediction-log key on PostgreSQL.

- A partial unique index on ``nasops_rollouts(model_name)`` over the active phases: two controllers starting a
  rollout of one model at once can no longer both insert (the store's check-then-insert let 2-4 in).
  A database that already holds such duplicates is repaired first, not refused: every active rollout that is not
  its model's newest is ended as ``rolled_back`` (with an ``abort`` event by ``nasops db upgrade``). Gateways and
  the ``nasops canary`` commands only ever follow a model's newest rollout, so the ended ones steered no traffic,
  and no command could have reached them to end them.
- ``nasops_rollouts.model_ref`` (nullable JSON text): the model facts and drift reference the controller needs.
- ``predictions.id`` becomes BIGINT on PostgreSQL (column and its sequence): 2^31 logged rows is a few weeks of a
  busy gateway. SQLite's ``INTEGER PRIMARY KEY`` is 64-bit already. PostgreSQL rewrites the table for this (an
  exclusive lock for the duration: stop the gateways, or expect writes to wait).
"""

from __future__ import annotations

import json
import time

import sqlalchemy as sa
from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ACTIVE_PHASES = ("shadow", "split", "paused")  # frozen here: the index is defined on these
ACTIVE_WHERE = "phase IN ('shadow', 'split', 'paused')"
INDEX = "uq_nasops_rollouts_one_active"

rollouts = sa.table(
    "nasops_rollouts", sa.column("rollout_id"), sa.column("model_name"), sa.column("phase"), sa.column("mode"),
    sa.column("weight"), sa.column("created_at"), sa.column("updated_at"), sa.column("generation"),
    sa.column("decision"), sa.column("decided_by"), sa.column("reason"),
)
events = sa.table(
    "nasops_rollout_events", sa.column("rollout_id"), sa.column("at"), sa.column("generation"), sa.column("kind"),
    sa.column("actor"), sa.column("detail"),
)


def upgrade() -> None:
    bind = op.get_bind()
    notes = context.config.attributes.setdefault("notes", [])
    notes.extend(end_superseded_active_rollouts(bind, time.time()))
    op.add_column("nasops_rollouts", sa.Column("model_ref", sa.Text, nullable=True))
    where = sa.text(ACTIVE_WHERE)
    op.create_index(INDEX, "nasops_rollouts", ["model_name"], unique=True, sqlite_where=where,
                    postgresql_where=where)
    if bind.dialect.name == "postgresql":
        op.alter_column("predictions", "id", type_=sa.BigInteger, existing_type=sa.Integer,
                        existing_nullable=False)
        sequence = bind.execute(sa.text("SELECT pg_get_serial_sequence('predictions', 'id')")).scalar()
        if sequence:  # the SERIAL's sequence is AS integer: it would stop at 2^31 - 1 all the same
            op.execute(f"ALTER SEQUENCE {sequence} AS BIGINT")


def end_superseded_active_rollouts(bind: sa.Connection, now: float) -> list[str]:
    """End every active rollout that is not its model's newest; one note per rollout ended."""
    newest: dict[str, str] = {}
    for row in bind.execute(sa.select(rollouts.c.model_name, rollouts.c.rollout_id)
                            .order_by(rollouts.c.created_at.desc(), rollouts.c.rollout_id.desc())):
        newest.setdefault(row.model_name, row.rollout_id)
    active = bind.execute(sa.select(rollouts.c.rollout_id, rollouts.c.model_name, rollouts.c.phase,
                                    rollouts.c.generation).where(rollouts.c.phase.in_(ACTIVE_PHASES))).all()
    notes = []
    for row in active:
        kept = newest[row.model_name]
        if row.rollout_id == kept:
            continue
        reason = (f"ended by `nasops db upgrade` (schema {revision}): rollout {kept} of {row.model_name!r} is newer "
                  "and only one rollout of a model may be active; gateways followed the newer one")
        generation = row.generation + 1
        bind.execute(rollouts.update().where(rollouts.c.rollout_id == row.rollout_id).values(
            phase="rolled_back", decision="rolled_back", decided_by="db upgrade", mode="split", weight=0.0,
            reason=reason, generation=generation, updated_at=now))
        bind.execute(events.insert().values(
            rollout_id=row.rollout_id, at=now, generation=generation, kind="abort", actor="nasops db upgrade",
            detail=json.dumps({"was": row.phase, "newer": kept, "schema_revision": revision})))
        notes.append(f"ended rollout {row.rollout_id} of {row.model_name!r} (was {row.phase}; {kept} is newer and "
                     "stays): only one rollout of a model may be active")
    return notes


def downgrade() -> None:
    raise NotImplementedError("nasops schema revisions go forward only; restore a backup to go back")
