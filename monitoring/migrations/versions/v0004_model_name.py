"""Revision 0004: ``predictions.model_name`` and ``predictions.instance``, so several models share one log.

Why: the judge filtered rows by time and variant only, so on a database shared by two teams one model's rollout
counted the other model's traffic (its champion sample grew by 477 rows with no traffic of its own). Every row now
names the registered model its gateway serves and the gateway replica (instance id) that wrote it; readers filter by
model. Rows written before the upgrade have neither (NULL): readers keep them for every model (they cannot be told
apart), which is what they did before. An index on ``(model_name, ts)`` serves the controller's windowed reads.
Adding nullable columns and an index rewrites no rows, on SQLite and on PostgreSQL alike.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("predictions", sa.Column("model_name", sa.String(255), nullable=True))
    op.add_column("predictions", sa.Column("instance", sa.String(64), nullable=True))
    op.create_index("ix_predictions_model_name_ts", "predictions", ["model_name", "ts"])


def downgrade() -> None:
    raise NotImplementedError("nasops schema revisions go forward only; restore a backup to go back")
