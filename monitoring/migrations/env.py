"""Alembic's entry point: runs the migrations on the connection :func:`monitoring.schema.upgrade` hands over,
inside its transaction (so Alembic neither connects nor commits), with our own version table."""

from __future__ import annotations

from alembic import context

from monitoring.schema import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("nasops migrations run through `nasops db upgrade` (monitoring.schema.upgrade), on a connection")
context.configure(
    connection=connection,
    version_table=VERSION_TABLE,
    # SQLite cannot ALTER most things: batch mode copies the table instead (a later revision's column change)
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():  # nothing to begin: the caller's transaction is open (Alembic sees it)
    context.run_migrations()
