"""The prediction-log database's schema version: opened only at head, created at head when new, upgraded by
``nasops db upgrade`` (versioned Alembic migrations in ``monitoring/migrations/versions``).

Why versions: the tables (the prediction log, the rollout record) used to be made by ``create_all``, which adds a
missing table but never a missing column or index, so the first schema change would have broken every existing
PostgreSQL. Now the database records its revision in ``nasops_schema_version`` (Alembic's version table under our
own name, so it never meets MLflow's ``alembic_version`` when both share one PostgreSQL database), and:

- a database without any of our tables is created at head and stamped, on first open, as before (no extra step);
- a database at head opens (one catalogue query and one read: the per-open cost);
- a database behind head (an older revision, or the unversioned tables of a release before versions) is refused
  with one line naming the upgrade command; one ahead of head (a newer release wrote it) is refused too.

Creating and upgrading run in one transaction under a lock (PostgreSQL: an advisory lock and transactional DDL;
SQLite: ``BEGIN IMMEDIATE``, whose DDL is transactional too), so gateway workers racing to open a new database,
or an upgrade racing them, never see half a schema.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

__all__ = ["HEAD", "REVISIONS", "VERSION_TABLE", "SchemaOutOfDate", "SchemaStatus", "check_schema", "ensure_schema",
           "schema_status", "upgrade"]

VERSION_TABLE = "nasops_schema_version"
# oldest first; the last is head (tests check it against the scripts)
REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006")
HEAD = REVISIONS[-1]
UNVERSIONED = "0001"  # the tables of the release before versions are revision 0001 without the version table
OUR_TABLES = ("predictions", "nasops_rollouts", "nasops_rollout_events")
UPGRADE_HINT = "run `nasops db upgrade` (add --prediction-log-url URL when it is not the configured database)"
_PG_LOCK_KEY = 0x6E61736F7073  # "nasops": one advisory lock for every schema change of a database

version_metadata = sa.MetaData()
version_table = sa.Table(  # Alembic's own layout, so Alembic reads what a fresh database is stamped with
    VERSION_TABLE,
    version_metadata,
    sa.Column("version_num", sa.String(32), nullable=False),
    sa.PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
)


class SchemaOutOfDate(ValueError):
    """The database's schema is not the one this code needs (behind: upgrade it; ahead: a newer release wrote
    it). A ``ValueError``, so every caller that turns a bad prediction log into one line does so for this too."""


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database stands: ``current`` is ``None`` for a database without our tables (created at head on
    first open), :data:`UNVERSIONED` for the tables of the release before versions."""

    current: str | None
    head: str = HEAD
    versioned: bool = True
    pending: list[str] = field(default_factory=list)

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    def describe(self) -> str:
        if self.current is None:
            return "empty (created at head on first use)"
        return self.current + ("" if self.versioned else " (unversioned tables of a release before schema versions)")


def ensure_schema(engine: Engine) -> None:
    """Open the database for use: create it at head when it has none of our tables, pass when it is at head, and
    raise :class:`SchemaOutOfDate` (one line) otherwise. A database that cannot be opened is a ``ValueError``."""
    with _as_value_error(engine):
        with engine.connect() as conn:
            if _recorded_revision(conn) == HEAD:  # the common case: no lock, no write
                return
        with _locked(engine) as conn:
            status = _status(conn)
            if status.at_head:
                return
            if status.current is None:
                _create_at_head(conn)
                return
    raise SchemaOutOfDate(_refusal(engine, status))


def check_schema(engine: Engine) -> None:
    """Raise :class:`SchemaOutOfDate` (one line) unless the database is at head or has none of our tables yet;
    read-only (the pre-flight of the interactive commands)."""
    status = schema_status(engine)
    if status.current is not None and not status.at_head:
        raise SchemaOutOfDate(_refusal(engine, status))


def schema_status(engine: Engine) -> SchemaStatus:
    """The database's revision, head, and the revisions an upgrade would apply (read-only)."""
    with _as_value_error(engine), engine.connect() as conn:
        return _status(conn)


def upgrade(engine: Engine) -> tuple[SchemaStatus, list[str]]:
    """Bring the database to head in one transaction: (the status before, notes the migrations left, e.g. the
    rollouts they ended). Idempotent: a database at head is left alone; an empty one is created at head."""
    with _as_value_error(engine), _locked(engine) as conn:
        before = _status(conn)
        if before.current is not None and before.current not in REVISIONS:
            raise SchemaOutOfDate(_refusal(engine, before))
        if before.at_head:
            return before, []
        if before.current is None:
            _create_at_head(conn)
            return before, []
        try:
            return before, _run_alembic(conn)
        except sa.exc.DBAPIError as exc:  # raised inside the transaction: leaving it rolls everything back
            cause = " ".join(str(exc.orig).split())[:300]
            raise ValueError(f"upgrading the prediction log {_shown(engine)!r} from {before.current} to {HEAD} "
                             f"failed, and nothing was changed (one transaction): {cause}") from exc


def _run_alembic(conn: Connection) -> list[str]:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    config.attributes["connection"] = conn  # env.py runs on it, inside our transaction
    config.attributes["notes"] = notes = []
    command.upgrade(config, "head")
    return notes


def _status(conn: Connection) -> SchemaStatus:
    recorded = _recorded_revision(conn)
    if recorded is None:
        existing = set(sa.inspect(conn).get_table_names()) & set(OUR_TABLES)
        current, versioned = (UNVERSIONED, False) if existing else (None, True)
    else:
        current, versioned = recorded, True
    # an unversioned database runs 0001 too: it creates the tables that release had not made yet
    pending = list(REVISIONS[REVISIONS.index(current) + (1 if versioned else 0):]) if current in REVISIONS else []
    return SchemaStatus(current=current, versioned=versioned, pending=pending)


def _recorded_revision(conn: Connection) -> str | None:
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    rows = conn.execute(sa.select(version_table.c.version_num)).scalars().all()
    return rows[0] if len(rows) == 1 else (None if not rows else ",".join(sorted(rows)))


def _create_at_head(conn: Connection) -> None:
    """Every table at head (the live definitions, which a test checks equal the migrations' result), stamped."""
    from monitoring import prediction_log, rollout_store

    for metadata in (prediction_log.metadata, rollout_store.metadata, version_metadata):
        metadata.create_all(conn, checkfirst=True)
    conn.execute(version_table.insert().values(version_num=HEAD))


def _shown(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _refusal(engine: Engine, status: SchemaStatus) -> str:
    shown = _shown(engine)
    if status.current in REVISIONS:
        return (f"the prediction log {shown!r} is at schema revision {status.describe()}, and this nasops needs "
                f"{HEAD}; {UPGRADE_HINT}")
    return (f"the prediction log {shown!r} is at schema revision {status.current}, which this nasops (head {HEAD}) "
            "does not know: a newer release wrote it; use that release (or newer) with this database")


@contextlib.contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds the database's schema lock: an advisory lock on PostgreSQL, the write lock on a
    SQLite file (``BEGIN IMMEDIATE`` on a connection of its own, so its DDL is inside the transaction too)."""
    if engine.dialect.name == "sqlite" and _sqlite_file(engine):
        locking = sa.create_engine(engine.url, poolclass=sa.pool.NullPool, connect_args={"timeout": 30})

        @sa.event.listens_for(locking, "connect")
        def _no_implicit_transactions(dbapi_conn, _record) -> None:  # pragma: no cover - driver callback
            dbapi_conn.isolation_level = None  # pysqlite would otherwise commit before every DDL statement

        @sa.event.listens_for(locking, "begin")
        def _begin_immediate(conn) -> None:  # pragma: no cover - driver callback
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        try:
            with locking.begin() as conn:
                yield conn
        finally:
            locking.dispose()
        return
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        yield conn


def _sqlite_file(engine: Engine) -> bool:
    database = engine.url.database
    return bool(database) and database != ":memory:" and not database.startswith("file:")


@contextlib.contextmanager
def _as_value_error(engine: Engine) -> Iterator[None]:
    """A database that cannot be opened (missing directory, server down, wrong credentials): one line naming it."""
    try:
        yield
    except sa.exc.OperationalError as exc:
        cause = " ".join(str(exc.orig).split())
        fix = ("check that its directory exists and is writable" if engine.dialect.name == "sqlite" else
               "check that the database server runs and that the URL (host, port, user, database) is right")
        raise ValueError(f"cannot open the prediction log {_shown(engine)!r}: {cause}; {fix}") from exc

