"""Revision 0001: the schema as the release before schema versions made it with ``create_all``.

Frozen copies of the table definitions of that release (never import the live ones here: they move on with head).
Upgrading an unversioned database starts here: tables that exist are left alone (it is what that release made),
missing ones are created, so a database that had only the prediction log (a gateway that never followed a rollout)
is upgraded as well as one that had all three tables.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def tables() -> sa.MetaData:
    """The three tables of the previous release, exactly as its ``create_all`` made them (also what the tests
    build a previous-release database with)."""
    metadata = sa.MetaData()
    sa.Table(
        "predictions",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False, index=True),
        sa.Column("row", sa.Integer, nullable=False),
        sa.Column("ts", sa.Float, nullable=False, index=True),
        sa.Column("variant", sa.String(255), nullable=False),
        sa.Column("shadow", sa.Boolean, nullable=False, default=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("inputs", sa.Text, nullable=False),
        sa.Column("prediction", sa.Text, nullable=True),
        sa.Column("probabilities", sa.Text, nullable=True),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("label", sa.Text, nullable=True),
        sa.Column("correct", sa.Boolean, nullable=True),
        sa.Column("label_ts", sa.Float, nullable=True),
    )
    sa.Table(
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
    )
    sa.Table(
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
    return metadata


def upgrade() -> None:
    tables().create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    raise NotImplementedError("nasops schema revisions go forward only; restore a backup to go back")
