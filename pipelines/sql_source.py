"""A SQL query as a data source: ``--data "postgresql://USER@HOST/DB" --query "SELECT …"`` (or ``sqlite:///PATH``).

The rows come through SQLAlchemy into a ``pandas.DataFrame`` and then meet the same validation as a CSV or Parquet
file (:func:`pipelines.data.validate`). Everything that can go wrong before a single row arrives — a URL that does
not parse, a missing driver, a server that refuses or does not answer (a short connect timeout and a wall-clock cap,
never a hang), a query the database rejects, a result without rows — is one :class:`~pipelines.errors.UserError`
line naming the fix. The password never appears in a message, a parameter or a tag: :func:`display_url` hides it,
and :func:`strip_password` lets the CLI keep it out of the refresh's configuration; it is handed to
:func:`read_query` explicitly (a field that is never dumped). Only a process started by something else (a scheduled
deployment's flow run) reads it from the environment variable :data:`PASSWORD_ENV` it was started with.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from pipelines.errors import UserError

PASSWORD_ENV = "NASOPS_DATA_PASSWORD"
"""The database password of a process that was started with it (a scheduled deployment's flow run), when neither the
URL nor the caller gives one: Prefect records a flow's parameters, and the refresh state keeps its configuration."""
CONNECT_TIMEOUT_S = float(os.environ.get("NASOPS_SQL_CONNECT_TIMEOUT_S", "10"))
"""How long a database may take to accept the connection before the refresh says so and stops."""
QUERY_LINEAGE_CHARS = 4000
"""The query text recorded as lineage is cut to this length (MLflow limits tag and parameter values)."""
URL_FIX = "use e.g. postgresql://USER@HOST:PORT/DB or sqlite:///PATH/TO/FILE.db"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# What a statement looks like once its string literals, quoted identifiers and comments are blanked out.
_LITERALS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/", re.S)
READ_ONLY_FIX = "give one SELECT (or WITH … SELECT) statement: nasops only reads the training table"


class SourceUnavailable(UserError):
    """The database did not answer, or dropped the query (a DB-API ``OperationalError``): the one failure of a
    data source that a retry may cure (:func:`pipelines.retry.transient`); everything else here is deterministic."""


def is_sql_url(source: str) -> bool:
    """True for a database URL (``scheme://…``); bundled names and file paths have no scheme."""
    return bool(_SCHEME.match(source or ""))


def display_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (also when SQLAlchemy cannot parse it); not a URL: as it is."""
    if not is_sql_url(url):
        return url
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def strip_password(url: str) -> tuple[str, str | None]:
    """``(url without its password, the password or None)``; a URL that does not parse is returned as it is."""
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        return url, None
    if parsed.password is None:
        return url, None
    bare = sa.engine.URL.create(parsed.drivername, parsed.username, None, parsed.host, parsed.port,
                                parsed.database, parsed.query)  # URL.set(password=None) keeps the password
    return bare.render_as_string(hide_password=False), str(parsed.password)


def check_select(query: str) -> None:
    """Refuse anything but one ``SELECT`` / ``WITH`` statement, before connecting.

    Why: the query runs with the caller's database rights; a refresh must never change the source (``DROP TABLE``,
    ``…; COMMIT; CREATE TABLE``). This is the early, readable refusal; the guarantee is the read-only transaction
    :func:`read_query` opens (a ``WITH x AS (DELETE …) SELECT`` passes this check and fails there)."""
    blanked = _LITERALS.sub(" ", query).strip().rstrip(";").strip()
    if ";" in blanked:
        raise UserError(f"--query holds more than one statement; {READ_ONLY_FIX}")
    first = blanked.split(None, 1)[0].upper() if blanked else ""
    if first not in ("SELECT", "WITH"):
        raise UserError(f"--query starts with {first or 'nothing'!r}, not SELECT; {READ_ONLY_FIX}")


def lineage_query(query: str | None) -> str:
    """The query as recorded in MLflow (whitespace collapsed, cut to :data:`QUERY_LINEAGE_CHARS`)."""
    text = " ".join((query or "").split())
    return text if len(text) <= QUERY_LINEAGE_CHARS else text[:QUERY_LINEAGE_CHARS - 1] + "…"


def _password(password: str | None) -> str | None:
    """The caller's password, else the one this process was started with (:data:`PASSWORD_ENV`)."""
    return password or os.environ.get(PASSWORD_ENV) or None


def _engine_url(url: str, password: str | None = None) -> sa.engine.URL:
    from monitoring.prediction_log import _with_installed_postgres_driver

    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise UserError(f"--data {display_url(url)!r} is not a database URL; {URL_FIX}") from None
    if parsed.password is None and _password(password):
        parsed = parsed.set(password=_password(password))
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            raise UserError(f"--data {display_url(url)!r}: an in-memory SQLite database holds no table; {URL_FIX}")
        if not Path(database).expanduser().is_file():  # SQLite would silently create an empty file
            raise UserError(f"--data {display_url(url)!r}: the SQLite file {database!r} does not exist; check the path "
                            "(sqlite:///relative/path.db or sqlite:////absolute/path.db)")
    return _with_installed_postgres_driver(parsed)


def read_query(url: str, query: str | None, timeout_s: float | None = None, password: str | None = None
               ) -> pd.DataFrame:
    """The rows ``query`` returns from the database at ``url``, or :class:`UserError` (one line, password hidden);
    ``password`` when the URL carries none.

    The connection is made in a daemon thread capped at ``timeout_s`` (plus libpq's own ``connect_timeout``): a
    driver's timeout does not cover every way a host can hang (DNS, a peer that accepts and never answers)."""
    shown = display_url(url)
    timeout_s = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    if not (query or "").strip():
        raise UserError(f"--data {shown!r} is a database: say which rows to train on with --query \"SELECT …\"")
    check_select(query or "")
    parsed = _engine_url(url, password)
    connect_args = _read_only_connect_args(parsed, timeout_s)
    try:
        engine = sa.create_engine(parsed, connect_args=connect_args, poolclass=sa.pool.NullPool)
    except (ModuleNotFoundError, sa.exc.NoSuchModuleError) as exc:
        raise UserError(f"--data {shown!r} needs a database driver that is not installed ({exc}); for PostgreSQL: "
                        "pip install 'psycopg[binary]'") from None
    outcome: list = []

    def connect() -> None:
        try:
            outcome.append(engine.connect())
        except BaseException as exc:  # reported to the caller's thread below
            outcome.append(exc)

    worker = threading.Thread(target=connect, name="nasops-sql-connect", daemon=True)
    worker.start()
    worker.join(timeout_s + 1.0)
    try:
        cause = _cause(outcome[0], url, password) if outcome and isinstance(outcome[0], BaseException) else ""
        if not outcome or "timeout" in cause.lower():
            raise SourceUnavailable(f"the database {shown!r} does not answer within {timeout_s:g}s; check that the "
                                    "server runs and that host and port are right")
        if isinstance(outcome[0], BaseException):
            raise SourceUnavailable(f"cannot connect to the database {shown!r} ({cause}); check that the server runs "
                                    "and that the URL (host, port, user, password, database) is right") from None
        with outcome[0] as conn:
            frame = _run(conn, query, shown, url, password)
    finally:
        engine.dispose()
    if frame.empty:
        raise UserError(f"the query on {shown!r} returned no rows; nasops needs labelled examples to train on "
                        "(check its WHERE clause and the table)")
    return frame


def _read_only_connect_args(parsed: sa.engine.URL, timeout_s: float) -> dict:
    """Driver options that make every transaction of the connection read-only: PostgreSQL's
    ``default_transaction_read_only`` set at connect (a statement cannot undo it without a second statement, which
    :func:`check_select` refuses); SQLite's ``query_only`` pragma is set by :func:`_run` on the DB-API connection."""
    if parsed.get_backend_name() == "postgresql":
        return {"connect_timeout": max(1, int(timeout_s)), "options": "-c default_transaction_read_only=on"}
    if parsed.get_backend_name() == "sqlite":
        return {"check_same_thread": False}
    return {}


def _run(conn: sa.Connection, query: str, shown: str, url: str, password: str | None = None) -> pd.DataFrame:
    """``query`` exactly as written, on the driver's own cursor without parameters: neither SQLAlchemy's ``:name``
    nor psycopg's ``%s`` placeholder parsing touches a ``'10:00'`` or a ``LIKE 'r%'`` in it."""
    dbapi = conn.connection.dbapi_connection
    cursor = dbapi.cursor()
    try:
        if conn.dialect.name == "sqlite":
            cursor.execute("PRAGMA query_only = ON")  # a write through this connection fails: 'readonly database'
        elif conn.dialect.name != "postgresql":
            cursor.execute("SET TRANSACTION READ ONLY")  # MySQL, MariaDB and others that speak the standard
        cursor.execute(query)
        if cursor.description is None:
            raise UserError(f"--query on {shown!r} returns no rows (is it a SELECT?); give a query that returns the "
                            "training table")
        columns = [d[0] for d in cursor.description]
        return pd.DataFrame.from_records(cursor.fetchall(), columns=columns, coerce_float=True)  # NUMERIC -> float
    except conn.dialect.loaded_dbapi.Error as exc:
        kind = SourceUnavailable if _transient(exc, conn) else UserError
        raise kind(f"the query failed on {shown!r}: {_cause(exc, url, password)}; fix the SQL of --query") from None
    finally:
        cursor.close()
        dbapi.rollback()  # nothing the statement did is kept (it could do nothing: the transaction was read-only)


def _transient(exc: BaseException, conn: sa.Connection) -> bool:
    """A lost connection or a busy database (worth a retry), not a query the database refuses: a DB-API
    ``OperationalError``, except SQLite's, which also covers a missing table and bad syntax (only "locked" counts)."""
    if not isinstance(exc, conn.dialect.loaded_dbapi.OperationalError):
        return False
    return conn.dialect.name != "sqlite" or "locked" in str(exc).lower()


def _cause(exc: BaseException, url: str, password: str | None = None) -> str:
    """The driver's own words, on one line, without the password (a driver may echo the connection string)."""
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
    password = strip_password(url)[1] or _password(password)
    return text.replace(password, "***") if password else text
