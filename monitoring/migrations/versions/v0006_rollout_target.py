"""Revision 0006: ``nasops_rollouts.target``, the gateways a rollout steers.

Why: gateways followed the newest rollout of their model name, so a refresh run without a gateway URL (its embedded
canary, on the same database as production) published a rollout that every production replica followed to 5 % and
then 25 % (issue 25, finding 2). A rollout now names its target: ``production`` (the default of every gateway), or
``embedded:<session>`` for an embedded canary's private gateway; a gateway follows only its own target's rollouts.
Existing rollouts were all followed by production gateways, so they get ``production`` (the server default): what
they steered before, they steer after. Adding a column with a constant default rewrites no rows on PostgreSQL 11+,
and SQLite adds it in place.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("nasops_rollouts", sa.Column("target", sa.String(255), nullable=False,
                                               server_default="production"))


def downgrade() -> None:
    raise NotImplementedError("nasops schema revisions go forward only; restore a backup to go back")
