"""The prediction log loses nothing it answered while its database is away (issue 25, finding 3): the journal, the
writer's spill and in-order replay, idempotent inserts, and ``/feedback`` answering JSON while the database is down.

Real parts: SQLite files under ``tmp_path`` (the outage is a connection factory that refuses while the test says
the database is down: what a restarting server does to every new connection), the real app and gateway in-process
with the stand-in model backend. The PostgreSQL restart under HTTP load is ``test_log_outage.py`` (slow).
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from support_backend import StandInBackend, StandInModel

from monitoring.log_journal import JournalBound, LogJournal
from monitoring.prediction_log import PredictionLogWriter, create_log_engine, insert_rows, predictions
from serving.app import create_app
from serving.config import GatewaySettings

FEEDBACK = "journal-feedback-token-0123456789-abcdefghij"


def rows(request_id: str, n: int = 1, ts: float = 1000.0) -> list[dict]:
    return [{"request_id": request_id, "row": i, "ts": ts, "variant": "champion", "shadow": False,
             "model_version": "1", "inputs": "[1.0]", "prediction": "0", "probabilities": None, "latency_ms": 1.0,
             "compute_ms": None, "status": "ok", "model_name": "m", "instance": "i"} for i in range(n)]


def stored(engine) -> list[tuple[str, int]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(predictions.c.request_id, predictions.c.row)
                                                .order_by(predictions.c.id))]


class Outage:
    """A SQLite engine whose new connections fail while ``down`` is set (NullPool: every commit connects)."""

    def __init__(self, path) -> None:
        create_log_engine(f"sqlite:///{path}").dispose()  # the schema at head
        self.down = threading.Event()

        def connect():
            if self.down.is_set():
                raise sqlite3.OperationalError("connection refused (the test's outage)")
            return sqlite3.connect(path, check_same_thread=False)

        self.engine = sa.create_engine("sqlite://", creator=connect, poolclass=sa.pool.NullPool)


def test_the_journal_keeps_batches_in_order_across_a_crash_and_is_adopted_once(tmp_path):
    first = LogJournal(tmp_path)
    assert first.spill(rows("a", 2)) and first.spill(rows("b"))
    assert first.rows == 3 and first.path is not None and first.path.exists()
    with open(first.path, "ab") as handle:
        handle.write(b'[{"torn": ')  # the process died mid-write
    assert LogJournal(tmp_path).rows == 0  # a live process's journal is locked: not adopted
    first._file.close()  # the process dies without closing: its lock goes with it
    first._file = None
    heir = LogJournal(tmp_path)
    assert heir.rows == 3 and [b[0]["request_id"] for b in heir.batches()] == ["a", "b"]
    assert LogJournal(tmp_path).rows == 0  # adopted by one process only
    heir.clear()
    heir.close()
    assert list(tmp_path.glob("journal-*")) == []


def test_a_full_journal_drops_the_new_batch_and_counts_it():
    journal = LogJournal(None, JournalBound(max_rows=3))
    assert journal.spill(rows("a", 2))
    assert not journal.spill(rows("b", 2))
    assert journal.spill(rows("c", 1))
    assert journal.rows == 3 and journal.dropped == 2
    assert [b[0]["request_id"] for b in journal.batches()] == ["a", "c"]


def test_a_replayed_batch_is_stored_once(tmp_path):
    engine = create_log_engine(f"sqlite:///{tmp_path / 'log.db'}")
    insert_rows(engine, rows("r", 2))
    insert_rows(engine, rows("r", 2) + rows("s"))  # the first commit's acknowledgement was lost: replayed whole
    insert_rows(engine, rows("r", 1, ts=1001.0))  # a client reusing its id later: another request, kept
    assert stored(engine) == [("r", 0), ("r", 1), ("s", 0), ("r", 0)]


def test_rows_appended_while_the_database_is_away_are_stored_in_order_after_it_returns(tmp_path):
    outage = Outage(tmp_path / "log.db")
    events: list[tuple[str, int]] = []
    writer = PredictionLogWriter(outage.engine, interval_s=0.002, journal=LogJournal(tmp_path / "journal"),
                                 backoff_s=0.002, max_backoff_s=0.01, observe=lambda e, n: events.append((e, n)))
    try:
        writer.append(rows("before"))
        assert writer.flush()
        outage.down.set()
        for i in range(3):
            writer.append(rows(f"down-{i}"))
            assert writer.flush()  # handled: journaled, nothing lost
        assert writer.spilled_rows == 3 and writer.errors >= 1
        outage.down.clear()
        writer.append(rows("after"))
        deadline = time.monotonic() + 5
        while writer.spilled_rows and time.monotonic() < deadline:
            time.sleep(0.002)
        assert writer.flush()
    finally:
        writer.close()
    names = [rid for rid, _ in stored(outage.engine)]
    assert names == ["before", *[f"down-{i}" for i in range(3)], "after"]
    assert ("failure", 1) in events and sum(n for e, n in events if e == "spilled") >= 3  # "after" too, in a backoff
    assert events[-1] == ("depth", 0) or ("depth", 0) in events
    assert not any(e == "dropped" for e, _ in events)


def test_a_journal_left_by_a_crashed_writer_is_replayed_at_start(tmp_path):
    engine = create_log_engine(f"sqlite:///{tmp_path / 'log.db'}")
    dead = LogJournal(tmp_path / "journal")
    dead.spill(rows("crashed", 2))
    dead._file.close()  # killed: no close(), the file stays
    dead._file = None
    writer = PredictionLogWriter(engine, interval_s=0.01, journal=LogJournal(tmp_path / "journal"))
    writer.append(rows("new"))
    deadline = time.monotonic() + 5
    while writer.spilled_rows and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.close()
    assert stored(engine) == [("crashed", 0), ("crashed", 1), ("new", 0)]
    assert list((tmp_path / "journal").glob("journal-*")) == []


def test_feedback_while_the_database_is_away_is_a_json_503_with_retry_after(tmp_path):
    settings = GatewaySettings(tracking_uri="sqlite:///unused.db", model_name="standin", poll_interval_s=0,
                               prediction_log_url=f"sqlite:///{tmp_path / 'log.db'}", feedback_token=FEEDBACK,
                               log_journal_dir=str(tmp_path / "journal"))
    backend = StandInBackend({"champion": StandInModel("1"), "challenger": None})
    with TestClient(create_app(settings, backend=backend), raise_server_exceptions=False) as client:
        rid = client.post("/predict", json={"inputs": [[0.1, 0.2, 0.3, 0.4]]}).json()["request_id"]
        gateway = client.app.state.gateway
        healthy, gateway.log_engine = gateway.log_engine, sa.create_engine(
            f"sqlite:///{tmp_path / 'gone' / 'log.db'}")  # a database that cannot be opened
        try:
            r = client.post("/feedback", json={"request_id": rid, "label": 1},
                            headers={"Authorization": f"Bearer {FEEDBACK}"})
        finally:
            gateway.log_engine.dispose()
            gateway.log_engine = healthy
    assert r.status_code == 503 and r.headers["content-type"] == "application/json", r.text
    assert r.headers["retry-after"] == "5"
    body = r.json()
    assert set(body) == {"error", "detail"} and "database is unavailable" in body["error"]
    assert "Traceback" not in r.text


@pytest.mark.parametrize("value", ["sqlite:///{tmp}/log.db", "postgresql+psycopg://u@db:5432/log"])
def test_the_journal_directory_defaults_beside_a_sqlite_log_else_under_the_home(tmp_path, monkeypatch, value):
    monkeypatch.setenv("NASOPS_HOME", str(tmp_path / "home"))
    settings = GatewaySettings(tracking_uri="sqlite:///unused.db", prediction_log_url=value.format(tmp=tmp_path))
    expected = tmp_path / "log-journal" if value.startswith("sqlite") else tmp_path / "home" / "log-journal"
    assert settings.journal_directory() == str(expected)
    assert GatewaySettings(tracking_uri="sqlite:///u.db", prediction_log_url=value.format(tmp=tmp_path),
                           log_journal_dir="/j").journal_directory() == "/j"


def test_db_prune_deletes_old_rows_and_erases_older_inputs_in_batches(tmp_path, monkeypatch, capsys):
    """Retention (issue 25, finding 8): rows older than --days go, inputs older than --inputs-days are erased."""
    from support_cli import console_main

    from monitoring.prediction_log import delete_old_rows

    url = f"sqlite:///{tmp_path / 'log.db'}"
    engine = create_log_engine(url)
    now = time.time()
    for age_days in (40, 20, 1):
        insert_rows(engine, rows(f"age-{age_days}", 3, ts=now - age_days * 86400.0))
    code, out, err = console_main(monkeypatch, capsys, "db", "prune", "--days", "30", "--inputs-days", "7",
                                  "--prediction-log-url", url)
    assert code == 0, err
    assert "deleted 3 row(s) logged more than 30 day(s) ago" in out and "erased the inputs of 3 row(s)" in out
    with engine.connect() as conn:
        left = conn.execute(sa.select(predictions.c.request_id, predictions.c.inputs)).all()
    assert sorted(left) == [("age-1", "[1.0]")] * 3 + [("age-20", "null")] * 3
    assert delete_old_rows(engine, now, batch_rows=2) == 6  # several batches: every old row, none twice
    engine.dispose()


def test_db_prune_refuses_a_bad_number_of_days_in_one_line(tmp_path, monkeypatch, capsys):
    from support_cli import console_main

    from pipelines.cli.db import _days
    from pipelines.errors import UserError

    code, _, err = console_main(monkeypatch, capsys, "db", "prune", "--days", "abc", "--prediction-log-url",
                                f"sqlite:///{tmp_path / 'log.db'}")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "--days must be a positive number of days" in lines[0], err
    assert not (tmp_path / "log.db").exists()
    for value in ("0", "-3", "nan", "inf"):
        with pytest.raises(UserError, match="--inputs-days must be a positive number of days"):
            _days(value, "--inputs-days")
    assert _days("0.5", "--days") == 0.5


def test_db_prune_of_a_missing_or_empty_log_is_one_line_and_creates_nothing(tmp_path, monkeypatch, capsys):
    """`nasops db prune` on a fresh state dir raised SQLAlchemy's "no such table" traceback (exit 1) after
    creating an empty predictions.db; a log that does not exist, or holds none of our tables, is one line now."""
    from support_cli import console_main

    missing = tmp_path / "log.db"
    code, _, err = console_main(monkeypatch, capsys, "db", "prune", "--days", "30", "--prediction-log-url",
                                f"sqlite:///{missing}")
    assert code == 2 and "no prediction log at" in err and "Traceback" not in err, err
    assert not missing.exists()
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    code, _, err = console_main(monkeypatch, capsys, "db", "prune", "--days", "30", "--prediction-log-url",
                                f"sqlite:///{empty}")
    assert code == 2 and "holds no prediction log" in err and "Traceback" not in err, err
