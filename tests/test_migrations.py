"""Versioned schema migrations of the prediction-log database (the prediction log and the rollout record), on
SQLite and on a real PostgreSQL server (``servers.start_postgres``; those cases are slow-marked).

The previous release made its tables with ``create_all`` and recorded no version; the first column added would have
broken every existing PostgreSQL. Here: a new database is created at head on first open; one behind head is refused
in one line naming ``nasops db upgrade``; the upgrade keeps every row, adds what head has, ends the surplus active
rollouts the new unique index would refuse, and runs in one transaction (a failure changes nothing).
"""

from __future__ import annotations

import importlib
import json
import threading

import pytest
import sqlalchemy as sa
from support_cli import console_main

from monitoring import schema
from monitoring.prediction_log import (
    PredictionLogWriter,
    check_log_store,
    create_log_engine,
    insert_rows,
    log_engine,
    prediction_rows,
    predictions,
    read_predictions,
)
from monitoring.rollout_store import RolloutConflict, RolloutStore
from monitoring.schema import HEAD, REVISIONS, VERSION_TABLE, SchemaOutOfDate

previous_release = importlib.import_module("monitoring.migrations.versions.v0001_previous_release")

INDEX = "uq_nasops_rollouts_one_active"


@pytest.fixture(scope="module")
def postgres():
    from servers import start_postgres

    with start_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def new_db(request, tmp_path):
    """A factory of empty databases of one kind: ``new_db("name")`` -> URL."""
    if request.param == "sqlite":
        return lambda name="log": f"sqlite:///{tmp_path / name}.db"
    server = request.getfixturevalue("postgres")
    test = "".join(c for c in request.node.name.lower() if c.isalnum())[4:30]
    return lambda name="log": server.create_database(f"{test}_{name}")


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """The real console-script entry point, in-process: (exit code, stdout, stderr)."""
    return console_main(monkeypatch, capsys, *args)


def _rollout_row(rollout_id: str, model: str, phase: str, created_at: float) -> dict:
    return {"rollout_id": rollout_id, "model_name": model, "champion_version": "1", "challenger_version": "2",
            "phase": phase, "mode": "split", "weight": 0.25, "step_index": 1, "passes_in_step": 0, "failures": 0,
            "intervals": 3, "created_at": created_at, "updated_at": created_at, "step_started_at": created_at,
            "window_start": created_at, "last_judged_at": created_at, "generation": 4, "paused_phase": None,
            "decision": "promoted" if phase == "promoted" else None, "reason": "", "decided_by": None,
            "applied": phase == "promoted", "gateway_url": None, "run_id": None, "data_path": None,
            "config": json.dumps({"steps": [0.25, 1.0]}), "history": "[]", "last_verdict": None}


def build_previous_release(url: str, n_predictions: int = 40) -> None:
    """A database as the previous release left it: its ``create_all``, no version table, rows in every table --
    including two active rollouts of one model (its check-then-insert let that happen)."""
    engine = sa.create_engine(url)
    tables = previous_release.tables()
    with engine.begin() as conn:
        tables.create_all(conn)
        conn.execute(tables.tables["predictions"].insert(), [
            {"request_id": f"r{i}", "row": 0, "ts": 1000.0 + i, "variant": "champion", "shadow": False,
             "model_version": "1", "inputs": "[1.5,2.0]", "prediction": "1", "probabilities": "[0.2,0.8]",
             "latency_ms": 2.0, "status": "ok", "label": "1" if i % 2 else None, "correct": True if i % 2 else None,
             "label_ts": 1100.0 if i % 2 else None} for i in range(n_predictions)])
        conn.execute(tables.tables["nasops_rollouts"].insert(), [
            _rollout_row("done", "a", "promoted", 10.0), _rollout_row("a-live", "a", "split", 20.0),
            _rollout_row("b-old", "b", "split", 30.0), _rollout_row("b-new", "b", "paused", 40.0)])
        conn.execute(tables.tables["nasops_rollout_events"].insert(), [
            {"rollout_id": rid, "at": 1.0, "generation": 1, "kind": "start", "actor": "operator", "detail": "{}"}
            for rid in ("done", "a-live", "b-old", "b-new")])
    engine.dispose()


def previous_release_rows(url: str) -> list[tuple]:
    """The logged predictions in the previous release's columns, in id order: what an upgrade must keep as is."""
    table = previous_release.tables().tables["predictions"]
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c.id))]
    engine.dispose()
    return rows


def upgrade_to(url: str, revision: str) -> None:
    """Run the migrations up to ``revision`` only (a database as a release with that head left it)."""
    from alembic import command
    from alembic.config import Config

    engine = log_engine(url)
    with schema._locked(engine) as conn:
        config = Config()
        config.set_main_option("script_location", "monitoring:migrations")
        config.attributes["connection"] = conn
        config.attributes["notes"] = []
        command.upgrade(config, revision)
    engine.dispose()


def snapshot(url: str) -> dict:
    """Our tables as the database describes them: columns (type, nullable), primary keys, indexes (with a
    partial index's condition), and the version recorded."""
    engine = sa.create_engine(url)
    out: dict = {}
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        for table in schema.OUR_TABLES:
            columns = {c["name"]: (str(c["type"]).split("(")[0], c["nullable"]) for c in inspector.get_columns(table)}
            indexes = {i["name"]: (tuple(i["column_names"]), bool(i["unique"]),
                                   " ".join(str(i.get("dialect_options", {}).get(
                                       f"{engine.dialect.name}_where", "")).split()))
                       for i in inspector.get_indexes(table)}
            out[table] = {"columns": columns, "pk": inspector.get_pk_constraint(table)["constrained_columns"],
                          "indexes": indexes}
        out["version"] = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
        if engine.dialect.name == "postgresql":  # a SERIAL's sequence has a type of its own
            out["sequences"] = dict(conn.execute(sa.text(
                "SELECT sequence_name, data_type FROM information_schema.sequences")).all())
    engine.dispose()
    return out


def test_the_revision_list_is_the_migration_scripts_chain():
    """HEAD is what the per-open check compares against without loading Alembic: it must be the scripts' head."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", "monitoring:migrations")
    scripts = ScriptDirectory.from_config(config)
    assert scripts.get_heads() == [HEAD]
    assert [s.revision for s in reversed(list(scripts.walk_revisions()))] == list(REVISIONS)


def test_a_new_database_is_created_at_head_beside_mlflow(new_db, monkeypatch, capsys):
    """No extra step for a new user; MLflow's ``alembic_version`` (same PostgreSQL database) is neither read nor
    touched."""
    url = new_db()
    setup = sa.create_engine(url)
    with setup.begin() as conn:  # what MLflow leaves in a database it shares
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('1b5f0d9ad7c1')"))
    engine = create_log_engine(url)
    store = RolloutStore(engine)
    state = snapshot(url)
    assert state["version"] == [HEAD]
    assert "model_ref" in state["nasops_rollouts"]["columns"]
    assert state["nasops_rollouts"]["indexes"][INDEX][:2] == (("model_name",), True)
    rollout = store.create(model_name="m", champion_version="1", challenger_version="2", mode="split", weight=0.1,
                           config={}, model_ref={"flavour": "pytorch", "reference": [1, 2]})
    assert store.get(rollout.rollout_id).model_ref == {"flavour": "pytorch", "reference": [1, 2]}
    with setup.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == ["1b5f0d9ad7c1"]
    engine.dispose()
    setup.dispose()
    code, out, _ = cli(monkeypatch, capsys, "db", "status", "--prediction-log-url", url)
    assert code == 0 and f"current  {HEAD}" in out and "up to date" in out


def test_a_previous_release_database_is_refused_then_upgraded_in_place(new_db, monkeypatch, capsys):
    url = new_db()
    build_previous_release(url)
    before = previous_release_rows(url)
    for opening in (create_log_engine, RolloutStore):
        with pytest.raises(SchemaOutOfDate) as info:
            opening(url)
        message = str(info.value)
        assert "\n" not in message and "0001" in message and f"needs {HEAD}" in message
        assert "run `nasops db upgrade`" in message
    code, _, err = cli(monkeypatch, capsys, "canary", "status", "--model-name", "b", "--prediction-log-url", url)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "nasops db upgrade" in lines[0], err

    code, out, _ = cli(monkeypatch, capsys, "db", "status", "--prediction-log-url", url)
    assert code == 0 and "unversioned" in out and f"pending  {', '.join(REVISIONS)}: run `nasops db upgrade`" in out
    code, out, err = cli(monkeypatch, capsys, "db", "upgrade", "--prediction-log-url", url)
    assert code == 0, err
    assert f"upgraded 0001 (unversioned tables of a release before schema versions) -> {HEAD}" in out
    assert "ended rollout b-old of 'b' (was split; b-new is newer and stays)" in " ".join(out.split())

    state = snapshot(url)
    assert state["version"] == [HEAD] and "model_ref" in state["nasops_rollouts"]["columns"]
    assert state["nasops_rollouts"]["indexes"][INDEX][:2] == (("model_name",), True)
    after = previous_release_rows(url)
    assert len(after) == len(before) == 40 and after == before  # not a row lost, not a value changed
    logged = read_predictions(create_log_engine(url))
    assert len(logged) == 40 and logged.compute_ms.isna().all()  # no compute time was measured for them
    store = RolloutStore(url)
    assert [r.rollout_id for r in store.recent(limit=10)] == ["b-new", "b-old", "a-live", "done"]
    ended = store.get("b-old")
    assert (ended.phase, ended.decision, ended.weight, ended.generation) == ("rolled_back", "rolled_back", 0.0, 5)
    assert [e["kind"] for e in store.events("b-old")] == ["start", "abort"]
    assert store.get("b-new").phase == "paused" and store.get("a-live").phase == "split"
    assert store.get("b-new").model_ref is None and store.get("done").config == {"steps": [0.25, 1.0]}
    with pytest.raises(RolloutConflict, match="b-new"):
        store.create(model_name="b", champion_version="1", challenger_version="3", mode="split", weight=0.1,
                     config={})
    store.engine.dispose()

    code, out, _ = cli(monkeypatch, capsys, "db", "upgrade", "--prediction-log-url", url)
    assert code == 0 and f"already at head {HEAD}" in out
    assert snapshot(url) == state


def test_an_upgraded_database_is_the_same_schema_as_a_new_one(new_db):
    """Head is defined twice -- the live tables (a new database) and the chain of migrations (an upgraded one):
    they must not drift apart."""
    fresh, upgraded = new_db("fresh"), new_db("upgraded")
    create_log_engine(fresh).dispose()
    build_previous_release(upgraded, n_predictions=1)
    schema.upgrade(log_engine(upgraded))
    assert snapshot(upgraded) == snapshot(fresh)


def test_a_0002_database_gets_the_compute_time_column(new_db, monkeypatch, capsys):
    """Revision 0003 adds ``predictions.compute_ms`` (the model call's own time, what the judge's latency compares):
    a database of the release before it is refused until upgraded, keeps every row (compute time unknown: null,
    which the judge reads as no sample, not as 0 ms), and then takes rows with a compute time."""
    url = new_db()
    build_previous_release(url, n_predictions=5)
    upgrade_to(url, "0002")
    assert "compute_ms" not in snapshot(url)["predictions"]["columns"] and snapshot(url)["version"] == ["0002"]
    before = previous_release_rows(url)
    with pytest.raises(SchemaOutOfDate, match=f"at schema revision 0002, and this nasops needs {HEAD}"):
        create_log_engine(url)
    code, out, _ = cli(monkeypatch, capsys, "db", "status", "--prediction-log-url", url)
    assert code == 0 and f"pending  {', '.join(REVISIONS[2:])}: run `nasops db upgrade`" in out
    code, out, err = cli(monkeypatch, capsys, "db", "upgrade", "--prediction-log-url", url)
    assert code == 0 and f"upgraded 0002 -> {HEAD}" in out, err
    state = snapshot(url)
    columns = state["predictions"]["columns"]
    assert columns["compute_ms"] == (columns["latency_ms"][0], True) and state["version"] == [HEAD]  # nullable float
    assert previous_release_rows(url) == before
    engine = create_log_engine(url)
    writer = PredictionLogWriter(engine)
    writer.write(prediction_rows(request_id="new", variant="challenger", model_version="2", inputs=[[1.0, 2.0]],
                                 predictions_=[1], probabilities=[[0.2, 0.8]], latency_ms=3.5, status="ok",
                                 compute_ms=0.25))
    writer.close()
    logged = read_predictions(engine).set_index("request_id")
    assert logged.loc["new", "compute_ms"] == 0.25 and logged.loc["new", "latency_ms"] == 3.5
    assert logged.drop(index="new").compute_ms.isna().all() and len(logged) == 6
    engine.dispose()


@pytest.mark.slow
def test_prediction_ids_are_64_bit_on_postgres_after_the_upgrade(postgres):
    url = postgres.create_database("bigint_ids")
    build_previous_release(url, n_predictions=2)
    schema.upgrade(log_engine(url))
    database = url.rsplit("/", 1)[1]
    with postgres.connect(database) as conn:
        assert conn.execute("SELECT data_type FROM information_schema.columns WHERE table_name = 'predictions' "
                            "AND column_name = 'id'").fetchone() == ("bigint",)
        assert conn.execute("SELECT data_type FROM information_schema.sequences WHERE sequence_name = "
                            "'predictions_id_seq'").fetchall() == [("bigint",)]  # else nextval stops at 2^31 - 1
        conn.execute("SELECT setval(pg_get_serial_sequence('predictions', 'id'), 3000000000)")
    engine = create_log_engine(url)
    with engine.begin() as conn:
        conn.execute(predictions.insert(), [{"request_id": "big", "row": 0, "ts": 1.0, "variant": "champion",
                                             "shadow": False, "model_version": "1", "inputs": "[]",
                                             "latency_ms": 1.0, "status": "ok"}])
    assert read_predictions(engine).id.max() == 3_000_000_001  # past 2^31 - 1
    engine.dispose()


def test_a_failed_upgrade_changes_nothing(new_db, monkeypatch, capsys):
    """The upgrade is one transaction (PostgreSQL's DDL is transactional; SQLite's too, under BEGIN IMMEDIATE):
    a migration that fails half-way leaves the database exactly as it was, and says so in one line."""
    url = new_db()
    build_previous_release(url)
    setup = sa.create_engine(url)
    with setup.begin() as conn:  # an index of the name revision 0002 creates: its CREATE INDEX fails
        conn.execute(sa.text(f"CREATE INDEX {INDEX} ON predictions (ts)"))
    setup.dispose()
    before = snapshot_without_version(url)
    code, _, err = cli(monkeypatch, capsys, "db", "upgrade", "--prediction-log-url", url)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "nothing was changed" in lines[0], err
    assert snapshot_without_version(url) == before  # b-old still active, no model_ref, no version table


def snapshot_without_version(url: str) -> dict:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table(VERSION_TABLE)
        phases = dict(conn.execute(sa.text("SELECT rollout_id, phase FROM nasops_rollouts")).all())
        events = conn.execute(sa.text("SELECT count(*) FROM nasops_rollout_events")).scalar()
        columns = [c["name"] for c in sa.inspect(conn).get_columns("nasops_rollouts")]
    engine.dispose()
    return {"phases": phases, "events": events, "columns": columns}


def _stamp(url: str, revision: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        schema.version_metadata.create_all(conn)
        conn.execute(schema.version_table.insert().values(version_num=revision))
    engine.dispose()


def test_an_older_versioned_revision_is_refused_and_upgraded_from_there(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    build_previous_release(url)
    _stamp(url, "0001")
    with pytest.raises(SchemaOutOfDate, match=f"at schema revision 0001, and this nasops needs {HEAD}; run"):
        create_log_engine(url)
    with pytest.raises(SchemaOutOfDate, match="nasops db upgrade"):  # the pre-flight of serve, refresh, canary
        check_log_store(url)
    check_log_store(url, schema=False)  # reachable: what `nasops db` checks before it looks at the schema
    check_log_store(f"sqlite:///{tmp_path / 'new.db'}")  # a new file is no refusal: it is created at head
    code, out, _ = cli(monkeypatch, capsys, "db", "status", "--prediction-log-url", url)
    assert code == 0 and "current  0001\n" in out
    assert f"pending  {', '.join(REVISIONS[1:])}: run `nasops db upgrade`" in out
    code, out, _ = cli(monkeypatch, capsys, "db", "upgrade", "--prediction-log-url", url)
    assert code == 0 and f"upgraded 0001 -> {HEAD}" in out
    create_log_engine(url).dispose()


def test_a_revision_from_a_newer_release_is_refused(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    create_log_engine(url).dispose()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(schema.version_table.update().values(version_num="0099"))
    engine.dispose()
    with pytest.raises(SchemaOutOfDate, match=r"at schema revision 0099, which this nasops .* does not know"):
        create_log_engine(url)
    code, _, err = cli(monkeypatch, capsys, "db", "upgrade", "--prediction-log-url", url)
    assert code == 2 and "0099" in err and len(err.strip().splitlines()) == 1, err


def test_a_new_database_opened_by_racing_workers_is_created_once(tmp_path):
    """Four gateway workers open one new SQLite file at the same moment: each gets a working engine, and the
    version is stamped once (the creation holds SQLite's write lock: nobody sees half a schema)."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    engines, errors, barrier = [], [], threading.Barrier(4)

    def open_log() -> None:
        barrier.wait()
        try:
            engines.append(create_log_engine(url))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_log) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and len(engines) == 4
    assert snapshot(url)["version"] == [HEAD]
    for engine in engines:
        engine.dispose()


@pytest.mark.parametrize("command", ["status", "upgrade"])
@pytest.mark.parametrize("url", ["notaurl", "postgresql+psycopg://nasops:secret@127.0.0.1:{port}/nasops"])
def test_a_malformed_or_dead_database_url_is_one_line(command, url, monkeypatch, capsys):
    from servers import free_port

    url = url.format(port=free_port())  # nothing listens there
    code, _, err = cli(monkeypatch, capsys, "db", command, "--prediction-log-url", url)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert ("notaurl" in lines[0]) if url == "notaurl" else ("cannot connect" in lines[0] and "secret" not in err)


def test_the_configured_prediction_log_is_the_default(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NASOPS_HOME", str(tmp_path))
    monkeypatch.delenv("NASOPS_PREDICTION_LOG_URL", raising=False)
    code, out, _ = cli(monkeypatch, capsys, "db", "upgrade")
    assert code == 0 and f"new database: created at head {HEAD}" in out
    assert snapshot(f"sqlite:///{tmp_path / 'predictions.db'}")["version"] == [HEAD]


def test_a_0003_database_gets_the_model_and_instance_columns(new_db, monkeypatch, capsys):
    """Revision 0004 (issue 25, tenancy): every row names its model and replica; older rows keep NULL."""
    url = new_db()
    build_previous_release(url, n_predictions=5)
    upgrade_to(url, "0003")
    before = previous_release_rows(url)
    code, out, err = cli(monkeypatch, capsys, "db", "upgrade", "--prediction-log-url", url)
    assert code == 0 and f"upgraded 0003 -> {HEAD}" in out, err
    columns = snapshot(url)["predictions"]["columns"]
    assert columns["model_name"][1] and columns["instance"][1]  # nullable
    assert previous_release_rows(url) == before
    engine = create_log_engine(url)
    writer = PredictionLogWriter(engine)
    for model in ("credit", "churn"):
        writer.write(prediction_rows(request_id=f"r-{model}", variant="champion", model_version="1",
                                     inputs=[[1.0]], predictions_=[1], probabilities=[[0.2, 0.8]], latency_ms=1.0,
                                     status="ok", model_name=model, instance=f"gw-{model}"))
    writer.close()
    credit = read_predictions(engine, model_name="credit")
    assert set(credit.request_id) == {"r-credit", *read_predictions(engine).request_id[:5]}  # its own + legacy
    assert "r-churn" not in set(credit.request_id) and credit.set_index("request_id").loc["r-credit", "instance"] \
        == "gw-credit"
    engine.dispose()


def test_a_0004_database_gets_the_replay_key_and_its_duplicates_are_removed(new_db, monkeypatch, capsys):
    """Revision 0005 (issue 25, a log that loses nothing): a unique (request id, row, variant, time) index, so a
    journal's replay of a batch already committed stores nothing twice; exact duplicates already there are removed
    (the oldest kept, and said), and a client reusing its request id later still gets its rows logged."""
    url = new_db()
    build_previous_release(url, n_predictions=3)
    upgrade_to(url, "0004")
    table = previous_release.tables().tables["predictions"]
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # r1 twice, as a bulk copy could have left it
        conn.execute(table.insert().from_select([c.name for c in table.columns if c.name != "id"], sa.select(
            *[c for c in table.columns if c.name != "id"]).where(table.c.request_id == "r1")))
    engine.dispose()
    code, out, err = cli(monkeypatch, capsys, "db", "upgrade", "--prediction-log-url", url)
    assert code == 0 and f"upgraded 0004 -> {HEAD}" in out and "removed 1 duplicate prediction row" in out, err
    assert snapshot(url)["predictions"]["indexes"]["uq_predictions_request_row_variant_ts"] == (
        ("request_id", "row", "variant", "ts"), True, "")
    assert [r[1] for r in previous_release_rows(url)] == ["r0", "r1", "r2"]
    engine = create_log_engine(url)
    batch = prediction_rows(request_id="r9", variant="champion", model_version="1", inputs=[[1.0], [2.0]],
                            predictions_=[1, 0], probabilities=None, latency_ms=1.0, status="ok", ts=2000.0)
    insert_rows(engine, batch)
    insert_rows(engine, batch)  # replayed: its acknowledgement was lost
    insert_rows(engine, [{**batch[0], "ts": 2001.0}])  # the same client id, a later request
    assert read_predictions(engine).request_id.tolist() == ["r0", "r1", "r2", "r9", "r9", "r9"]
    engine.dispose()


def test_a_0004_database_gets_the_rollout_target_and_its_rollouts_stay_production(new_db, monkeypatch, capsys):
    """Revision 0006 (issue 25, tenancy): a rollout names the gateways it steers; every rollout written before
    was followed by production gateways, so it keeps steering them (target ``production``)."""
    url = new_db()
    build_previous_release(url, n_predictions=2)
    upgrade_to(url, "0004")
    code, out, err = cli(monkeypatch, capsys, "db", "upgrade", "--prediction-log-url", url)
    assert code == 0 and f"upgraded 0004 -> {HEAD}" in out, err
    assert snapshot(url)["nasops_rollouts"]["columns"]["target"][1] is False  # NOT NULL
    store = RolloutStore(url)
    assert {r.target for r in store.recent()} == {"production"}
    latest = store.latest("b")
    assert store.latest_routing("b", "production").rollout_id == latest.rollout_id
    assert store.latest_routing("b", "embedded:x") is None
    store.engine.dispose()
