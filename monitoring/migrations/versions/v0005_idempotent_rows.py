"""Revision 0005: a unique index on ``predictions (request_id, row, variant, ts)``, so a replayed row is stored once.

Why: the gateway's log writer now journals the batches a database outage refuses and replays them when it returns
(:mod:`monitoring.log_journal`). A batch whose commit succeeded just before the connection broke (the
acknowledgement lost) is replayed too; the inserts skip rows the index already has (``ON CONFLICT DO NOTHING`` on
PostgreSQL, ``INSERT OR IGNORE`` on SQLite). The time is part of the key because a client may reuse its request id:
two requests under one id are two logged requests (they differ in time), a replayed batch is the same rows.

Rows that already collide (never written by nasops, which stamps each call's time) would make the index fail: the
upgrade keeps the oldest of each such group and says how many it removed. ``predictions.id`` is BIGINT on
PostgreSQL since 0002; nothing to do for it here. The index on ``request_id`` alone goes: the new one leads with it
and serves the feedback lookups as well, so each insert still maintains the same number of indexes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

INDEX = "uq_predictions_request_row_variant_ts"
KEY = ("request_id", "row", "variant", "ts")


def upgrade() -> None:
    bind = op.get_bind()
    same = " AND ".join(f"q.{c} = p.{c}" for c in KEY)
    removed = bind.execute(sa.text(
        f"DELETE FROM predictions WHERE id IN (SELECT p.id FROM predictions p WHERE EXISTS "
        f"(SELECT 1 FROM predictions q WHERE {same} AND q.id < p.id))")).rowcount
    if removed and removed > 0:
        context.config.attributes.setdefault("notes", []).append(
            f"removed {removed} duplicate prediction row(s) (same request id, row, variant and time)")
    op.create_index(INDEX, "predictions", list(KEY), unique=True)
    op.drop_index("ix_predictions_request_id", table_name="predictions")  # the new index leads with request_id


def downgrade() -> None:
    raise NotImplementedError("nasops schema revisions go forward only; restore a backup to go back")
