"""The prediction log: every row the gateway predicted, joined later to its true label (SQLAlchemy Core).

SQLite file by default; a PostgreSQL URL works with the same code. The gateway appends through
:class:`PredictionLogWriter` (a background thread that batches inserts, so a request never waits on a disk commit);
``/feedback`` joins labels with :func:`apply_feedback`; the canary judge reads with :func:`read_predictions`.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from monitoring.log_journal import LogJournal

log = logging.getLogger("nasops.prediction_log")

metadata = sa.MetaData()

predictions = sa.Table(
    "predictions",
    metadata,
    # 64-bit on PostgreSQL (BIGSERIAL); SQLite's INTEGER PRIMARY KEY (the rowid) is 64-bit already
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    # looked up by the unique index below, which leads with it (schema 0005 dropped its own index)
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("row", sa.Integer, nullable=False),
    sa.Column("ts", sa.Float, nullable=False, index=True),
    # champion, challenger, or a shadow alias name (MLflow allows 255 characters). PostgreSQL enforces the length,
    # SQLite does not: too short a column would make PostgreSQL refuse a whole logged batch.
    sa.Column("variant", sa.String(255), nullable=False),
    sa.Column("shadow", sa.Boolean, nullable=False, default=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("inputs", sa.Text, nullable=False),
    sa.Column("prediction", sa.Text, nullable=True),
    sa.Column("probabilities", sa.Text, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=False),  # the variant's end-to-end time in the gateway
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("label", sa.Text, nullable=True),
    sa.Column("correct", sa.Boolean, nullable=True),
    sa.Column("label_ts", sa.Float, nullable=True),
    # the model call alone, measured on the worker thread (schema 0003; null: a failed call, or an older gateway)
    sa.Column("compute_ms", sa.Float, nullable=True),
    # the registered model the writing gateway serves and its instance id (schema 0004; null: an older gateway)
    sa.Column("model_name", sa.String(255), nullable=True),
    sa.Column("instance", sa.String(64), nullable=True),
    sa.Index("ix_predictions_model_name_ts", "model_name", "ts"),
    # schema 0005: a replayed batch (its first commit succeeded, the acknowledgement was lost) is not stored twice
    sa.Index("uq_predictions_request_row_variant_ts", "request_id", "row", "variant", "ts", unique=True),
)

ROW_STATUSES = ("ok", "error", "fallback", "timeout")


def create_log_engine(url: str, *, durable: bool = False) -> Engine:
    """An engine for ``url`` whose schema is at head: created so on a new database, refused with one line
    (:class:`monitoring.schema.SchemaOutOfDate`, a ``ValueError``) on one that needs ``nasops db upgrade``."""
    from monitoring.schema import ensure_schema

    engine = log_engine(url, durable=durable)
    ensure_schema(engine)
    return engine


def log_engine(url: str, *, durable: bool = False) -> Engine:
    """An engine for ``url``, schema untouched (what ``nasops db`` opens). SQLite gets WAL and a busy timeout so
    several gateway workers (and a reader) can share one file; ``durable`` makes each SQLite commit reach the disk
    (``synchronous=FULL``: survives a power cut, not only a killed process)."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - driver callback
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            _set_wal(cur)
            cur.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            cur.close()
    else:
        parsed = _with_installed_postgres_driver(sa.engine.make_url(url))
        # libpq waits forever for a host that drops packets; a gateway should fail its start instead.
        connect_args = {"connect_timeout": 10} if parsed.get_backend_name() == "postgresql" else {}
        try:
            engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
        except ModuleNotFoundError as exc:
            raise ValueError(
                f"prediction log URL {url.split('@')[-1]!r} needs the database driver {exc.name!r}, which is not "
                "installed; for PostgreSQL: pip install 'psycopg[binary]' and use postgresql+psycopg://..."
            ) from exc
    return engine


def _set_wal(cur: Any, timeout_s: float = 30.0) -> None:
    """Switch a SQLite connection to WAL. The switch needs the file's exclusive lock and SQLite answers "database is
    locked" at once, without its busy handler, while another connection holds the write lock (a worker creating the
    schema of a new file): wait for it as the busy timeout would."""
    import sqlite3

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _with_installed_postgres_driver(url: sa.engine.URL) -> sa.engine.URL:
    """A plain ``postgresql://`` URL means psycopg2 to SQLAlchemy; use psycopg 3 (the pinned driver) when only it
    is installed, so the URL a database administrator hands out works as given."""
    if url.drivername != "postgresql":
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
        return url.set(drivername="postgresql+psycopg")
    return url


SQLITE_HEADER = b"SQLite format 3\x00"
LOG_URL_FIX = "set NASOPS_PREDICTION_LOG_URL to sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB"


def check_sqlite_file(path: Path, what: str, fix: str) -> None:
    """Raise ``ValueError`` (one line) when ``path`` cannot be a SQLite database we write: a directory, not SQLite,
    not writable, or a new file in a directory that is missing or not writable. Tried for real (open, create a
    file), not ``os.access``: root passes every access check, but not a read-only mount or ``/proc``."""
    import os
    import tempfile

    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a directory, not a SQLite database; {fix}")
    if path.exists():
        try:
            with path.open("r+b") as handle:
                header = handle.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise ValueError(f"{what} {str(path)!r} cannot be opened for writing ({exc.strerror}); make it "
                             f"writable, or {fix}") from None
        if header and header != SQLITE_HEADER:
            raise ValueError(f"{what} {str(path)!r} is not a SQLite database (corrupt?); {fix}")
        return
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(f"{what} {str(path)!r}: its directory {str(parent)!r} does not exist; create it, or {fix}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".nasops-probe-", dir=parent)
    except OSError as exc:
        raise ValueError(f"{what} {str(path)!r}: its directory {str(parent)!r} is not writable ({exc.strerror}); "
                         f"{fix}") from None
    os.close(fd)
    os.unlink(probe)


def probe_database(url: str, timeout_s: float, what: str, fix: str) -> None:
    """Connect to the database at ``url`` and run ``SELECT 1`` within about ``timeout_s`` seconds, or raise
    ``ValueError`` (one line, password hidden). The connection runs in a daemon thread with a wall-clock cap: a
    driver's own timeout does not cover every way a host can hang (DNS, a peer that accepts and never answers)."""
    try:
        parsed = _with_installed_postgres_driver(sa.engine.make_url(url))
    except sa.exc.ArgumentError:
        raise ValueError(f"{what} {url!r} is not a database URL; {fix}") from None
    shown = parsed.render_as_string(hide_password=True)
    connect_args = {"connect_timeout": max(1, int(timeout_s))} if parsed.get_backend_name() == "postgresql" else {}
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            engine = sa.create_engine(parsed, connect_args=connect_args, poolclass=sa.pool.NullPool)
            try:
                with engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
            finally:
                engine.dispose()
            outcome.append(None)
        except BaseException as exc:  # reported to the caller's thread below
            outcome.append(exc)

    worker = threading.Thread(target=attempt, name="nasops-db-probe", daemon=True)
    worker.start()
    worker.join(timeout_s + 1.0)
    if not outcome:
        raise ValueError(f"{what} {shown!r} does not answer within {timeout_s:g}s; check that the database server "
                         f"runs and that host and port are right, or {fix}")
    exc = outcome[0]
    if exc is None:
        return
    if isinstance(exc, ModuleNotFoundError | sa.exc.NoSuchModuleError):
        raise ValueError(f"{what} {shown!r} needs a database driver that is not installed ({exc}); for PostgreSQL: "
                         "pip install 'psycopg[binary]' and use postgresql+psycopg://...") from None
    cause = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
    raise ValueError(f"cannot connect to {what} {shown!r} ({cause}); check that the database server runs and that "
                     f"the URL (host, port, user, database) is right, or {fix}") from None


def check_log_store(url: str, timeout_s: float = 3.0, *, schema: bool = True) -> None:
    """Fail fast, with one line (``ValueError``), on a prediction log that cannot work: a URL that does not parse,
    a SQLite file that is a directory, not SQLite or not writable (or whose directory is missing or read-only), a
    database server that refuses or does not answer within ``timeout_s``, and (``schema``) a database whose schema
    needs ``nasops db upgrade``. What the interactive commands call before they start anything;
    :func:`create_log_engine` would otherwise retry, or fail inside a worker (or after a refresh's search)."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise ValueError(f"the prediction log URL {url!r} is not a database URL; {LOG_URL_FIX}") from None
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file:"):
            return
        check_sqlite_file(Path(parsed.database), "the prediction log", LOG_URL_FIX)
        if not Path(parsed.database).exists():
            return  # created at head when first opened
    else:
        probe_database(url, timeout_s, "the prediction log", LOG_URL_FIX)
    if schema:
        from monitoring.schema import check_schema

        engine = log_engine(url)
        try:
            check_schema(engine)
        finally:
            engine.dispose()


try:  # orjson is ~10x faster on float lists (the log encodes every input row); stdlib json is the fallback
    import orjson

    def dumps(value: Any) -> str:
        """Compact JSON, as stored in the text columns."""
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
except ImportError:  # pragma: no cover - orjson ships with the pinned set

    def dumps(value: Any) -> str:
        """Compact JSON, as stored in the text columns."""
        return json.dumps(value, separators=(",", ":"))


def prediction_rows(
    *,
    request_id: str,
    variant: str,
    model_version: str,
    inputs: Sequence[Sequence[float]],
    predictions_: Sequence[Any] | None,
    probabilities: Sequence[Sequence[float]] | None,
    latency_ms: float,
    status: str,
    shadow: bool = False,
    ts: float | None = None,
    inputs_mode: str = "raw",
    compute_ms: float | None = None,
    model_name: str | None = None,
    instance: str | None = None,
) -> list[dict]:
    """One dict per batch row, ready for :meth:`PredictionLogWriter.append` (``None`` predictions: a failed call).

    ``latency_ms`` is the variant's end-to-end time, ``compute_ms`` the model call's alone (None when unknown);
    ``model_name`` and ``instance`` say which model and gateway replica the row belongs to (readers filter on it).

    ``inputs_mode="hash"`` stores ``"sha256:<hex>"`` of each row's float32 bytes instead of its values (privacy:
    the same row still hashes alike, so duplicates stay countable, but the values cannot be read back)."""
    ts = time.time() if ts is None else ts
    if inputs_mode == "hash" and len(inputs) and isinstance(inputs[0], dict):  # named rows of a table model
        inputs = [f"sha256:{hashlib.sha256(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()}"
                  for row in inputs]
    elif inputs_mode == "hash":
        inputs = [f"sha256:{hashlib.sha256(row.tobytes()).hexdigest()}"
                  for row in np.asarray(inputs, dtype=np.float32)]
    elif inputs_mode != "raw":
        raise ValueError(f"inputs_mode must be 'raw' or 'hash', got {inputs_mode!r}")
    if hasattr(inputs, "tolist"):
        inputs = inputs.tolist()
    if probabilities is not None and hasattr(probabilities, "tolist"):
        probabilities = probabilities.tolist()
    rows = []
    for i, x in enumerate(inputs):
        rows.append(
            {
                "request_id": request_id,
                "row": i,
                "ts": ts,
                "variant": variant,
                "shadow": shadow,
                "model_version": model_version,
                "inputs": dumps(x),
                "prediction": None if predictions_ is None else dumps(predictions_[i]),
                "probabilities": None if probabilities is None else dumps([round(p, 6) for p in probabilities[i]]),
                "latency_ms": float(latency_ms),
                "compute_ms": None if compute_ms is None else float(compute_ms),
                "status": status,
                "model_name": model_name,
                "instance": instance,
            }
        )
    return rows


class PredictionLogWriter:
    """Appends rows from a background thread in batches; :meth:`flush` waits until everything queued is handled.

    The request path only appends to a deque (atomic under the GIL: no lock, no wake-up of the writer), and the
    writer wakes every ``interval_s`` to drain it. A ``queue.Queue`` here cost a condition-variable notify per
    request and a writer thread polling every 5 ms, both fighting the event loop for the GIL (``py-spy`` on the
    serving benchmark: ~17 % of the event loop's samples in ``Queue.put``). Loss on ``kill -9``: what was appended
    within the last ``interval_s`` (plus one commit in flight), as before.

    A batch the database cannot take (it is restarting, unreachable, locked) goes to the :class:`LogJournal`
    (a bounded local file, see :mod:`monitoring.log_journal`), and so does every later batch until the journal has
    been replayed: retries back off exponentially (``backoff_s`` doubling up to ``max_backoff_s``), rows keep
    their order, and a replayed batch whose commit had succeeded before its acknowledgement was lost is not
    stored twice (:func:`insert_rows` ignores rows already there). A batch the database refuses for its content
    (a constraint, a bad value) is dropped and counted, as before: retrying it could never succeed.
    ``observe(event, n)`` is told ``failure`` (a failed commit), ``spilled``, ``dropped`` (rows) and ``depth``
    (rows in the journal), for the gateway's metrics.
    """

    def __init__(self, engine: Engine, *, batch_size: int = 256, interval_s: float = 0.05,
                 journal: LogJournal | None = None, backoff_s: float = 0.1, max_backoff_s: float = 2.0,
                 observe: Callable[[str, int], None] | None = None) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.journal = journal if journal is not None else LogJournal()
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self._delay = 0.0  # the current retry delay (0: the database answered the last commit)
        self._next_try = 0.0  # monotonic time of the next replay attempt
        self._observe = observe or (lambda event, n: None)
        self._items: collections.deque = collections.deque()
        self._appended = itertools.count(1)  # next() is atomic in CPython: a lock-free append counter
        self._last_ticket = 0
        self._committed = 0  # items taken from the deque and handled (stored, journaled, or counted as an error)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._done = threading.Condition()
        self.errors = 0
        if self.journal.rows:  # left by a process that died: replayed first, before any new row
            log.warning("replaying %d prediction log row(s) journaled by an earlier gateway process",
                        self.journal.rows)
            self._observe("depth", self.journal.rows)
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    def append(self, rows: Iterable[dict]) -> None:
        """Queue ready-made rows."""
        rows = list(rows)
        if rows:
            self._put(rows)

    def append_later(self, build: Callable[..., list[dict]], /, **kwargs: Any) -> None:
        """Queue ``build(**kwargs)``, called on the writer thread (keeps JSON encoding off the request path)."""
        self._put((build, kwargs))

    def _put(self, item) -> None:
        self._items.append(item)
        self._last_ticket = next(self._appended)

    @property
    def pending(self) -> int:
        """Items appended and not yet handled by the writer."""
        return len(self._items)

    @property
    def spilled_rows(self) -> int:
        """Rows waiting in the journal for the database to return."""
        return self.journal.rows

    def write(self, rows: list[dict]) -> None:
        """Commit ``rows`` now, on the caller's thread (the log's synchronous mode); raises when the commit fails."""
        try:
            insert_rows(self.engine, rows)
        except Exception:
            self.errors += 1
            self._observe("failure", 1)
            raise

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until every row appended before this call is handled: committed, or journaled while the database
        is away (or ``timeout``); True when it is."""
        deadline = time.monotonic() + timeout
        target = self._last_ticket  # how many items were appended before this call
        self._wake.set()
        with self._done:
            while self._committed < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._done.wait(left)
        return True

    def close(self) -> None:
        """Flush, try the journal's replay once more, and stop; rows still journaled stay on disk for the next
        process (a journal directory) to replay."""
        self.flush()
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        if self.journal.rows and not self._thread.is_alive():  # never beside a replay still running
            self._next_try = 0.0
            self._replay()
        self.journal.close()

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            if not self._items:
                if stopping:
                    return
                if self.journal.rows:
                    self._replay()  # the database may be back: drain the backlog even without new rows
                self._wake.wait(self.interval_s)
                self._wake.clear()
                continue
            items = []
            while self._items and len(items) < self.batch_size:
                items.append(self._items.popleft())
            try:
                batch: list[dict] = []
                for item in items:
                    batch.extend(item if isinstance(item, list) else item[0](**item[1]))
            except Exception:  # a row that cannot be built is never stored: count it, keep serving
                self.errors += 1
                batch = []
            if batch:
                self._store(batch)
            with self._done:
                self._committed += len(items)
                self._done.notify_all()
            if not self._items and not self._stop.is_set():
                # Gather for one interval before the next commit: one commit per batch, not per request.
                self._wake.wait(self.interval_s)
                self._wake.clear()

    def _store(self, batch: list[dict]) -> None:
        """Commit ``batch`` after the journal's backlog (order kept), or journal it while the database is away."""
        if not self.journal.rows or self._replay():
            try:
                insert_rows(self.engine, batch)
                return
            except Exception as exc:  # keep serving: a log write must never take the gateway down
                self._failed(exc)
                if not _transient(exc):
                    self._observe("dropped", len(batch))
                    return
        self._spill(batch)

    def _spill(self, batch: list[dict]) -> None:
        try:
            kept = self.journal.spill(batch)
        except (OSError, TypeError, ValueError):  # its disk is full or gone, or a row is not JSON: lost, and counted
            log.exception("journaling %d prediction log row(s) failed; they are lost", len(batch))
            kept = False
        self._observe("spilled" if kept else "dropped", len(batch))
        self._observe("depth", self.journal.rows)

    def _replay(self) -> bool:
        """Store the journal's batches in order (when the backoff allows); True when it is empty afterwards."""
        if time.monotonic() < self._next_try:
            return False
        try:
            for batch in self.journal.batches():
                try:
                    insert_rows(self.engine, batch)
                except Exception as exc:
                    if _transient(exc):
                        raise
                    self._failed(exc)  # refused for its content: it never will be stored
                    self._observe("dropped", len(batch))
        except Exception as exc:
            self._failed(exc)
            self._delay = min(self.max_backoff_s, max(self.backoff_s, 2 * self._delay))
            self._next_try = time.monotonic() + self._delay
            return False
        self.journal.clear()
        self._delay, self._next_try = 0.0, 0.0
        self._observe("depth", 0)
        return True

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self._observe("failure", 1)
        if not self._delay:  # once per outage, not per retry
            log.warning("prediction log write failed (%s); journaling rows until the database answers",
                        " ".join(str(getattr(exc, "orig", None) or exc).split())[:200])


def _transient(exc: BaseException) -> bool:
    """A failure worth retrying: the database is away or busy (not a row it refuses for its content)."""
    if isinstance(exc, sa.exc.DBAPIError):
        return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError) or exc.connection_invalidated
    return isinstance(exc, sa.exc.TimeoutError | OSError)


def insert_rows(engine: Engine, rows: list[dict]) -> None:
    """Insert ``rows`` in one transaction, skipping any already stored (same request id, row, variant and time:
    a replayed batch whose first commit succeeded). Needs the unique index of schema 0005."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        statement = pg_insert(predictions).on_conflict_do_nothing()
    elif engine.dialect.name == "sqlite":
        statement = predictions.insert().prefix_with("OR IGNORE")
    else:
        statement = predictions.insert()
    with engine.begin() as conn:
        conn.execute(statement, rows)


def _same_label(prediction_json: str | None, label: Any) -> bool | None:
    if prediction_json is None:
        return None
    predicted = json.loads(prediction_json)
    return predicted == label or str(predicted) == str(label)


class LabelConflict(Exception):
    """A label would silently replace another: the request already has one (resend with ``overwrite``), the id
    names more than one logged request, or another caller labelled it at the same moment."""


@dataclass(frozen=True)
class LabelItem:
    """True labels for one request id: one per row of the original batch, in row order."""

    request_id: str
    labels: Sequence[Any]
    overwrite: bool = False


@dataclass
class FeedbackResult:
    """What one feedback call changed, per (variant, correct) pair: rows now counted, and rows whose earlier label
    was replaced (``retracted``, so counters can follow the log: labelled = counted - retracted)."""

    request_id: str | None = None
    rows: int = 0
    items: int = 0
    counts: dict[tuple[str, bool], int] = field(default_factory=dict)
    retracted: dict[tuple[str, bool], int] = field(default_factory=dict)


_LOOKUP_CHUNK = 500  # ids per IN (...) query: well under SQLite's and PostgreSQL's bound-parameter limits


def find_request_rows(engine: Engine, request_ids: str | Sequence[str]) -> dict[str, list[sa.Row]]:
    """Logged rows of each of ``request_ids`` (one query per 500 ids), keyed by request id; absent ids are absent."""
    ids = [request_ids] if isinstance(request_ids, str) else list(dict.fromkeys(request_ids))
    out: dict[str, list[sa.Row]] = {}
    cols = (predictions.c.id, predictions.c.request_id, predictions.c.row, predictions.c.variant,
            predictions.c.shadow, predictions.c.prediction, predictions.c.label, predictions.c.correct,
            predictions.c.label_ts)
    with engine.connect() as conn:
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            chunk = ids[start:start + _LOOKUP_CHUNK]
            for r in conn.execute(sa.select(*cols).where(predictions.c.request_id.in_(chunk))):
                out.setdefault(r.request_id, []).append(r)
    return out


def _check_label(label: Any, where: str) -> None:
    # What the text column can hold and a judge can compare: no NaN/Infinity, no integer beyond 64 bits.
    if isinstance(label, bool) or not isinstance(label, int | float | str):
        raise ValueError(f"{where}: label {label!r} is not a number or a string")
    if isinstance(label, float) and not np.isfinite(label):
        raise ValueError(f"{where}: label {label} is not finite")
    if isinstance(label, int) and not -(2**63) <= label < 2**63:
        raise ValueError(f"{where}: label {label} is outside the 64-bit integer range")


def _plan_item(item: LabelItem, rows: list[sa.Row], ts: float, result: FeedbackResult) -> list[dict]:
    """The row updates of one item (validated, nothing written), adding its counts to ``result``."""
    rid = item.request_id
    n_rows = max(r.row for r in rows) + 1
    if len(item.labels) != n_rows:
        raise ValueError(f"request {rid!r} had {n_rows} row(s) but {len(item.labels)} label(s) were sent; send one "
                         "label per row")
    slots = [(r.variant, bool(r.shadow), r.row) for r in rows]
    if len(set(slots)) != len(slots):
        raise LabelConflict(f"request id {rid!r} names more than one logged request (a client-chosen id was used "
                            "twice); it cannot be labelled unambiguously, use a fresh id per request")
    labelled = [r for r in rows if r.label_ts is not None]
    if labelled and not item.overwrite:
        raise LabelConflict(f"request {rid!r} is labelled already; send it with \"overwrite\": true to replace "
                            "the label")
    updates = []
    for r in rows:
        label = item.labels[r.row]
        _check_label(label, f"request {rid!r} row {r.row}")
        correct = _same_label(r.prediction, label)
        if r.label_ts is not None and r.correct is not None:
            key = (r.variant, bool(r.correct))
            result.retracted[key] = result.retracted.get(key, 0) + 1
        if correct is not None:
            key = (r.variant, bool(correct))
            result.counts[key] = result.counts.get(key, 0) + 1
        updates.append({"id": r.id, "old_ts": r.label_ts, "label": dumps(label), "correct": correct, "ts": ts})
    result.rows += len(updates)
    return updates


def apply_feedback_batch(
    engine: Engine, items: Sequence[LabelItem], *, ts: float | None = None,
    rows_by_id: dict[str, list[sa.Row]] | None = None,
) -> FeedbackResult:
    """Join the labels of every item to every logged row of its request (served and shadow), all or nothing.

    Raises ``KeyError`` (unknown request ids, all listed), ``ValueError`` (label count or an unstorable label)
    or :class:`LabelConflict` before anything is written; the writes are one transaction, and each row is updated
    only if its label did not change since it was read (so two callers cannot both count the same row).
    """
    ts = time.time() if ts is None else ts
    ids = [item.request_id for item in items]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise LabelConflict(f"request id(s) {', '.join(map(repr, twice[:5]))} listed more than once in one call")
    rows_by_id = find_request_rows(engine, ids) if rows_by_id is None else rows_by_id
    missing = [i for i in ids if not rows_by_id.get(i)]
    if missing:
        raise KeyError(missing)
    result = FeedbackResult(request_id=ids[0] if len(ids) == 1 else None, items=len(items))
    updates = [u for item in items for u in _plan_item(item, rows_by_id[item.request_id], ts, result)]
    with engine.begin() as conn:
        for u in updates:
            unchanged = (predictions.c.label_ts.is_(None) if u["old_ts"] is None
                         else predictions.c.label_ts == u["old_ts"])
            stmt = (predictions.update().where(predictions.c.id == u["id"], unchanged)
                    .values(label=u["label"], correct=u["correct"], label_ts=u["ts"]))
            if conn.execute(stmt).rowcount != 1:
                raise LabelConflict("another feedback call labelled these rows at the same moment; nothing was "
                                    "written, send the labels again (with overwrite to replace theirs)")
    return result


def apply_feedback(
    engine: Engine, request_id: str, labels: Sequence[Any], *, ts: float | None = None, overwrite: bool = False
) -> FeedbackResult:
    """Join true ``labels`` (one per batch row) to every logged row of ``request_id`` (served and shadow).

    Raises ``KeyError`` for an unknown request id, ``ValueError`` when the number of labels does not match the
    batch, and :class:`LabelConflict` when the request is labelled already and ``overwrite`` is false (a second
    label never silently replaces the first).
    """
    try:
        return apply_feedback_batch(engine, [LabelItem(request_id, labels, overwrite)], ts=ts)
    except KeyError:
        raise KeyError(f"unknown request_id {request_id!r}: no logged prediction has it") from None


RETENTION_BATCH_ROWS = 10_000  # rows per retention transaction: short locks on a log that gateways keep writing


def erase_old_inputs(engine: Engine, older_than: float, *, batch_rows: int = RETENTION_BATCH_ROWS) -> int:
    """Replace the logged inputs of rows older than ``older_than`` (unix seconds) by ``null``; returns how many.

    The input retention of the log: labels, predictions and latencies stay (the judge's history), the feature
    values do not. In transactions of ``batch_rows`` rows, so a first run over millions of rows never holds one
    long lock against the gateways' inserts."""
    old = sa.select(predictions.c.id).where(predictions.c.ts < older_than, predictions.c.inputs != "null")
    return _in_batches(engine, lambda ids: predictions.update().where(predictions.c.id.in_(ids))
                       .values(inputs="null"), old, batch_rows)


def delete_old_rows(engine: Engine, older_than: float, *, batch_rows: int = RETENTION_BATCH_ROWS) -> int:
    """Delete the logged rows older than ``older_than`` (unix seconds), ``batch_rows`` per transaction; returns how
    many. The row retention of the log (``nasops db prune``): without it the table only grows (1 M rows ~ 0.4 GB)."""
    old = sa.select(predictions.c.id).where(predictions.c.ts < older_than)
    return _in_batches(engine, lambda ids: predictions.delete().where(predictions.c.id.in_(ids)), old, batch_rows)


def _in_batches(engine: Engine, statement: Callable[[Any], Any], selection: sa.Select, batch_rows: int) -> int:
    total = 0
    while True:
        ids = selection.order_by(predictions.c.id).limit(batch_rows).scalar_subquery()
        with engine.begin() as conn:
            done = conn.execute(statement(ids)).rowcount
        total += done
        if done < batch_rows:
            return total


def read_predictions(
    engine: Engine,
    since: float | None = None,
    until: float | None = None,
    variant: str | None = None,
    *,
    include_shadow: bool = True,
    model_name: str | None = None,
    instance: str | None = None,
):
    """Logged rows as a pandas DataFrame (JSON columns decoded), optionally in ``[since, until)`` unix seconds, for
    one variant, and for one model (``model_name``: its rows, and rows of gateways older than schema 0004, which do
    not say). Columns: those of the ``predictions`` table."""
    import pandas as pd

    query = sa.select(predictions)
    if since is not None:
        query = query.where(predictions.c.ts >= since)
    if until is not None:
        query = query.where(predictions.c.ts < until)
    if variant is not None:
        query = query.where(predictions.c.variant == variant)
    if not include_shadow:
        query = query.where(predictions.c.shadow.is_(False))
    if model_name is not None:
        query = query.where(sa.or_(predictions.c.model_name == model_name, predictions.c.model_name.is_(None)))
    if instance is not None:  # one gateway's rows: an embedded canary's private gateway beside production's
        query = query.where(predictions.c.instance == instance)
    with engine.connect() as conn:
        frame = pd.DataFrame(conn.execute(query.order_by(predictions.c.id)).mappings().all(),
                             columns=[c.name for c in predictions.columns])
    for column in ("inputs", "prediction", "probabilities", "label"):
        frame[column] = frame[column].map(lambda v: None if v is None else json.loads(v))
    return frame
