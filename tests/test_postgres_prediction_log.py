"""The prediction log on a real PostgreSQL server: the same SQLAlchemy code as the SQLite default, another URL.

A throw-away cluster (``servers.start_postgres``: Debian's ``postgresql`` binaries, 127.0.0.1 only) serves the
whole module; every test gets its own database. The last test runs the real gateway over HTTP with its
``prediction_log_url`` pointing at PostgreSQL. Without the server binaries the module skips (fails under CI=true).
"""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest
from servers import free_port, start_postgres

from monitoring.prediction_log import (
    LabelConflict,
    PredictionLogWriter,
    apply_feedback,
    create_log_engine,
    prediction_rows,
    read_predictions,
)

pytestmark = pytest.mark.slow  # starts gateways and trains models

TOKEN = "pg-admin-token-0123456789-abcdefghijklm"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FEEDBACK_TOKEN = "pg-feedback-token-0123456789-abcdefghij"
FEEDBACK = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}


@pytest.fixture(scope="module")
def postgres():
    with start_postgres() as server:
        yield server


@pytest.fixture
def log_url(postgres, request) -> str:
    """A fresh, empty database for one test."""
    return postgres.create_database(request.node.name.lower().replace("test_", "t_")[:40])


def _column_types(postgres, url: str) -> dict[str, str]:
    database = url.rsplit("/", 1)[1]
    with postgres.connect(database) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type, character_maximum_length FROM information_schema.columns "
            "WHERE table_name = 'predictions'"
        ).fetchall()
    return {name: f"{kind}({length})" if length else kind for name, kind, length in rows}


def test_writer_creates_the_table_and_reader_decodes_json_columns(postgres, log_url):
    engine = create_log_engine(log_url)
    assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
    types = _column_types(postgres, log_url)
    assert types["ts"] == "double precision"  # unix seconds need more than float4's 7 digits
    assert types["shadow"] == "boolean" and types["correct"] == "boolean"
    assert types["variant"] == "character varying(255)"  # any MLflow alias name fits (PostgreSQL enforces it)

    writer = PredictionLogWriter(engine)
    t0 = 1_700_000_000.0
    writer.append(prediction_rows(
        request_id="pg-batch", variant="champion", model_version="3", inputs=np.array([[0.5, 1.0], [2.0, -1.5]]),
        predictions_=[1, 7], probabilities=np.array([[0.9, 0.1], [0.2, 0.8]]), latency_ms=2.5, status="ok", ts=t0,
    ))
    writer.append(prediction_rows(
        request_id="pg-strings", variant="challenger", model_version="4", inputs=[[3.25, 0.0]],
        predictions_=["cat"], probabilities=[[0.3, 0.7]], latency_ms=4.0, status="ok", ts=t0 + 10,
    ))
    writer.append(prediction_rows(
        request_id="pg-strings", variant="candidate-with-a-long-alias-name-2026-11", model_version="5",
        inputs=[[3.25, 0.0]], predictions_=["dog"], probabilities=[[0.6, 0.4]], latency_ms=5.0, status="ok",
        shadow=True, ts=t0 + 10,
    ))
    writer.append(prediction_rows(
        request_id="pg-failed", variant="challenger", model_version="4", inputs=[[1.0, 1.0]], predictions_=None,
        probabilities=None, latency_ms=250.0, status="timeout", ts=t0 + 20,
    ))
    assert writer.flush(timeout=20)
    writer.close()
    assert writer.errors == 0

    frame = read_predictions(engine)
    assert len(frame) == 5
    assert frame.id.is_monotonic_increasing
    batch = frame[frame.request_id == "pg-batch"].sort_values("row")
    assert batch.inputs.tolist() == [[0.5, 1.0], [2.0, -1.5]]
    assert batch.prediction.tolist() == [1, 7] and all(isinstance(p, int) for p in batch.prediction)
    assert batch.probabilities.tolist() == [[0.9, 0.1], [0.2, 0.8]]
    assert batch.ts.tolist() == [t0, t0]  # double precision keeps the fraction-free seconds exactly
    assert frame.shadow.dtype == bool and frame.shadow.sum() == 1
    assert frame.label.isna().all() and frame.correct.isna().all()
    failed = frame[frame.request_id == "pg-failed"].iloc[0]
    assert failed.prediction is None and failed.probabilities is None and failed.status == "timeout"
    long_alias = frame[frame.shadow].iloc[0]
    assert long_alias.variant == "candidate-with-a-long-alias-name-2026-11" and long_alias.prediction == "dog"

    assert read_predictions(engine, since=t0 + 5, until=t0 + 15).request_id.tolist() == ["pg-strings"] * 2
    assert set(read_predictions(engine, variant="challenger").request_id) == {"pg-strings", "pg-failed"}
    assert len(read_predictions(engine, include_shadow=False)) == 4
    engine.dispose()


def test_feedback_joins_labels_by_request_id(postgres, log_url):
    engine = create_log_engine(log_url)
    writer = PredictionLogWriter(engine)
    x = [[float(i), 0.0] for i in range(4)]
    writer.append(prediction_rows(request_id="fb-4", variant="challenger", model_version="2", inputs=x,
                                  predictions_=[0, 1, 2, 3], probabilities=None, latency_ms=1.0, status="ok"))
    writer.append(prediction_rows(request_id="fb-4", variant="shadow-a", model_version="9", inputs=x,
                                  predictions_=[0, 0, 2, 0], probabilities=None, latency_ms=1.0, status="ok",
                                  shadow=True))
    writer.append(prediction_rows(request_id="fb-str", variant="champion", model_version="1", inputs=[[1.0, 1.0]],
                                  predictions_=["cat"], probabilities=None, latency_ms=1.0, status="ok"))
    assert writer.flush(timeout=20)
    writer.close()

    result = apply_feedback(engine, "fb-4", [0, 1, 2, 9], ts=123.5)
    assert result.rows == 8
    assert result.counts == {("challenger", True): 3, ("challenger", False): 1,
                             ("shadow-a", True): 2, ("shadow-a", False): 2}
    with pytest.raises(LabelConflict, match="labelled already"):  # a second label never silently replaces the first
        apply_feedback(engine, "fb-4", [0, 1, 2, 0])
    again = apply_feedback(engine, "fb-4", [0, 1, 2, 9], overwrite=True)
    assert again.rows == 8 and again.counts == again.retracted == result.counts  # counters can follow the log
    assert apply_feedback(engine, "fb-str", ["cat"]).counts == {("champion", True): 1}
    with pytest.raises(KeyError, match="never-logged"):
        apply_feedback(engine, "never-logged", [1])
    with pytest.raises(ValueError, match="4 row"):
        apply_feedback(engine, "fb-4", [1, 2])

    frame = read_predictions(engine)
    served = frame[(frame.request_id == "fb-4") & ~frame.shadow].sort_values("row")
    assert served.label.tolist() == [0, 1, 2, 9] and all(isinstance(v, int) for v in served.label)
    assert served.correct.tolist() == [True, True, True, False]
    assert all(isinstance(v, bool) for v in served.correct)
    shadow = frame[frame.shadow].sort_values("row")
    assert shadow.correct.tolist() == [True, False, True, False] and (shadow.label_ts > 0).all()
    assert frame[frame.request_id == "fb-str"].iloc[0].label == "cat"
    with postgres.connect(log_url.rsplit("/", 1)[1]) as conn:  # what is stored, read without our code
        stored = conn.execute("SELECT label, correct FROM predictions WHERE request_id = 'fb-str'").fetchone()
    assert stored == ('"cat"', True)
    engine.dispose()


def test_workers_can_race_to_create_the_table_and_plain_urls_work(postgres, log_url):
    """Several gateway workers start at once against one new database: every one must get a working engine."""
    errors: list[BaseException] = []
    engines = []
    start = threading.Barrier(4)

    def open_log() -> None:
        start.wait()
        try:
            engines.append(create_log_engine(log_url))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_log) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and len(engines) == 4
    for engine in engines:
        engine.dispose()

    plain = create_log_engine(log_url.replace("postgresql+psycopg://", "postgresql://"))  # as a DBA writes it
    assert plain.dialect.driver == "psycopg"
    assert read_predictions(plain).empty
    plain.dispose()

    nowhere = f"postgresql+psycopg://nasops:secret@127.0.0.1:{free_port()}/nasops"
    with pytest.raises(ValueError, match="cannot open the prediction log") as info:
        create_log_engine(nowhere)
    assert "secret" not in str(info.value) and "URL (host, port, user, database)" in str(info.value)


def test_gateway_logs_predictions_and_feedback_to_postgres(postgres, log_url, registry):
    from serving.server import start_gateway

    settings = registry.gateway_settings(prediction_log_url=log_url, challenger_weight=0.5, admin_token=TOKEN,
                                         feedback_token=FEEDBACK_TOKEN)
    x, y = registry.x_test[:12], registry.y_test[:12]
    answers = {}
    with start_gateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=30) as client:
        for i in range(8):  # sticky keys spread the callers over both variants
            r = client.post("/predict", json={"inputs": [x[i].tolist()], "request_id": f"pg-{i}"},
                            headers={"X-Request-Key": f"user-{i}"})
            assert r.status_code == 200, r.text
            answers[f"pg-{i}"] = r.json()
            assert r.json()["request_id"] != f"pg-{i}@anon"  # namespaced by the caller's key
        r = client.post("/predict", json={"inputs": x[8:12].tolist(), "request_id": "pg-batch"})
        assert r.status_code == 200, r.text
        answers["pg-batch"] = r.json()
        assert client.post("/admin/mode", json={"mode": "shadow"}, headers=AUTH).status_code == 200
        r = client.post("/predict", json={"inputs": [x[0].tolist()], "request_id": "pg-shadowed"})
        assert r.status_code == 200 and r.json()["variant"] == "champion"
        answers["pg-shadowed"] = r.json()

        labels = {rid: [int(v) for v in y[i:i + 1]] for i, rid in enumerate(f"pg-{i}" for i in range(8))}
        labels["pg-batch"] = [int(v) for v in y[8:12]]
        labels["pg-shadowed"] = [int(y[0])]
        feedback = client.post("/feedback", headers=FEEDBACK, json=[
            {"request_id": answers[rid]["request_id"], "labels": lab} for rid, lab in labels.items()])
        assert feedback.status_code == 200, feedback.text
        assert feedback.json() == {"accepted": 10, "rows": 8 + 4 + 2}  # the shadow copy is labelled too
        state = client.get("/admin/state", headers=AUTH).json()
        assert state["prediction_log_errors"] == 0
    assert {a["variant"] for rid, a in answers.items() if rid.startswith("pg-") and rid[3:].isdigit()} == {
        "champion", "challenger"}

    engine = create_log_engine(log_url)
    frame = read_predictions(engine)
    engine.dispose()
    served = frame[~frame.shadow]
    assert sorted(served.request_id.unique()) == sorted(a["request_id"] for a in answers.values())
    for rid, answer in answers.items():
        rows = served[served.request_id == answer["request_id"]].sort_values("row")
        assert rows.variant.unique().tolist() == [answer["variant"]]
        assert rows.model_version.unique().tolist() == [answer["model_version"]]
        assert rows.prediction.tolist() == answer["predictions"]
        assert rows.label.tolist() == labels[rid]
        assert rows.correct.tolist() == [p == t for p, t in zip(answer["predictions"], labels[rid], strict=True)]
        assert all(len(v) == 64 for v in rows.inputs) and (rows.latency_ms > 0).all()
        np.testing.assert_allclose(rows.probabilities.tolist(), answer["probabilities"], atol=1e-5)
    mirrored = frame[frame.shadow]
    assert mirrored.request_id.tolist() == ["pg-shadowed@anon"]
    assert mirrored.variant.tolist() == ["challenger"] and mirrored.label.tolist() == [int(y[0])]
    assert mirrored.model_version.tolist() == [registry.challenger_version]
    assert (frame.ts > time.time() - 600).all() and frame.correct.notna().all()


def test_the_rollout_record_fences_concurrent_writers_on_postgres(postgres, log_url):
    """The rollout store in production is this database: two writers from one read, only one commits."""
    from monitoring.rollout_store import RolloutConflict, RolloutStore, StaleRollout

    store, other = RolloutStore(log_url), RolloutStore(log_url)  # two processes' worth of engines
    rollout = store.create(model_name="m", champion_version="1", challenger_version="2", mode="split", weight=0.05,
                           config={"interval_s": 4.0})
    with pytest.raises(RolloutConflict):
        other.create(model_name="m", champion_version="1", challenger_version="3", mode="split", weight=0.05,
                     config={})
    store.update(rollout, {"weight": 0.25, "step_index": 1}, kind="interval", actor="controller", detail={"n": 1})
    with pytest.raises(StaleRollout):
        other.update(rollout, {"phase": "rolled_back", "weight": 0.0}, kind="abort", actor="operator")
    latest = other.latest("m")
    assert (latest.weight, latest.phase, latest.generation) == (0.25, "split", 2)
    assert [e["kind"] for e in other.events(rollout.rollout_id)] == ["start", "interval"]
