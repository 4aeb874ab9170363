"""Revision 0003: ``predictions.compute_ms``, the model call's own time beside the end-to-end ``latency_ms``.

The canary judge compares model compute time (measured on the gateway's worker thread) by default: end-to-end
latency also holds the gateway's queueing and the GIL waits of a busy host, which differ between the variants for
reasons that are not the models' (an A/A canary was rolled back on it). The column is nullable: the rows logged
before the upgrade (and by a gateway of an older release still running beside a new one) have no compute time, and
a judge reads them as no sample rather than as zero. Adding a nullable column rewrites nothing, on SQLite and on
PostgreSQL alike.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("predictions", sa.Column("compute_ms", sa.Float, nullable=True))


def downgrade() -> None:
    raise NotImplementedError("nasops schema revisions go forward only; restore a backup to go back")
