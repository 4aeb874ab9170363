"""The prediction log's stated policies, on a real SQLite file (no server): hashed inputs, input retention, one
label per request with counters that can follow an overwrite, all-or-nothing batches, and request-id namespaces."""

from __future__ import annotations

import hashlib
import threading
import time

import numpy as np
import pytest

from monitoring.prediction_log import (
    LabelConflict,
    LabelItem,
    PredictionLogWriter,
    apply_feedback,
    apply_feedback_batch,
    create_log_engine,
    erase_old_inputs,
    prediction_rows,
    read_predictions,
)
from serving.request_ids import effective_request_id, namespace_of, new_request_id


@pytest.fixture
def engine(tmp_path):
    engine = create_log_engine(f"sqlite:///{tmp_path / 'log.db'}")
    yield engine
    engine.dispose()


def log(engine, request_id: str, n: int = 2, ts: float | None = None, mode: str = "raw", variant="champion"):
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    writer = PredictionLogWriter(engine)
    writer.append(prediction_rows(request_id=request_id, variant=variant, model_version="1", inputs=x,
                                  predictions_=list(range(n)), probabilities=None, latency_ms=1.0, status="ok",
                                  ts=ts, inputs_mode=mode))
    writer.close()
    return x


def test_hashed_inputs_store_no_values(engine):
    x = log(engine, "h", mode="hash")
    stored = read_predictions(engine).inputs.tolist()
    assert stored == [f"sha256:{hashlib.sha256(row.tobytes()).hexdigest()}" for row in x]
    with pytest.raises(ValueError, match="inputs_mode"):
        prediction_rows(request_id="r", variant="champion", model_version="1", inputs=x, predictions_=None,
                        probabilities=None, latency_ms=1.0, status="ok", inputs_mode="zip")


def test_retention_erases_old_inputs_and_keeps_the_rest(engine):
    now = time.time()
    log(engine, "old", ts=now - 10 * 86400)
    log(engine, "new", ts=now)
    assert erase_old_inputs(engine, now - 7 * 86400) == 2
    assert erase_old_inputs(engine, now - 7 * 86400) == 0  # idempotent
    frame = read_predictions(engine)
    old, new = frame[frame.request_id == "old"], frame[frame.request_id == "new"]
    assert old.inputs.isna().all() and old.prediction.tolist() == [0, 1]  # the judge's history stays
    assert new.inputs.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_one_label_per_request_and_overwrite_reports_what_it_retracted(engine):
    log(engine, "a")
    first = apply_feedback(engine, "a", [0, 0])
    assert first.counts == {("champion", True): 1, ("champion", False): 1}
    with pytest.raises(LabelConflict, match="overwrite"):
        apply_feedback(engine, "a", [0, 1])
    second = apply_feedback(engine, "a", [0, 1], overwrite=True)
    assert second.retracted == first.counts and second.counts == {("champion", True): 2}
    assert read_predictions(engine).label.tolist() == [0, 1]


def test_a_batch_with_one_bad_item_writes_nothing(engine):
    log(engine, "ok")
    log(engine, "two-rows")
    for bad in (LabelItem("two-rows", [1]), LabelItem("two-rows", [1, 2**64]), LabelItem("two-rows", [1, np.nan]),
                LabelItem("missing", [1, 1]), LabelItem("ok", [1, 1])):
        with pytest.raises((ValueError, KeyError, LabelConflict)):
            apply_feedback_batch(engine, [LabelItem("ok", [0, 1]), bad])
        assert read_predictions(engine).label.isna().all(), bad


def test_two_concurrent_labels_count_once(engine):
    log(engine, "race", n=1)
    outcomes, barrier = [], threading.Barrier(4)

    def send() -> None:
        barrier.wait()
        try:
            outcomes.append(apply_feedback(engine, "race", [0]).counts)
        except LabelConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert outcomes.count("conflict") == 3 and {("champion", True): 1} in outcomes


def test_request_ids_random_and_namespaced():
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 32 for i in ids)
    assert effective_request_id("order-42", "alice") != effective_request_id("order-42", "bob")
    assert effective_request_id("order-42", "alice") == f"order-42@{namespace_of('alice')}"
    assert effective_request_id("order-42", None) == "order-42@anon"
    assert len(effective_request_id(None, "alice")) == 32


def test_a_namespace_cannot_be_computed_from_the_sticky_key_alone():
    """Adversarial round 3, finding 9: the namespace was an unkeyed hash, so anyone who knew a caller's sticky key
    could send its ids first and make them unlabelable (409). It is an HMAC under the gateway's secret now."""
    import hashlib

    unkeyed = hashlib.blake2b(b"alice", digest_size=8, person=b"nasops-request").hexdigest()
    assert namespace_of("alice", b"s3cret") not in (unkeyed, namespace_of("alice", b""), namespace_of("alice", b"x"))
    assert namespace_of("alice", b"s3cret") == namespace_of("alice", b"s3cret")  # every replica agrees


def test_flush_waits_for_every_row_appended_from_several_threads(engine):
    """The lock-free writer: appends from the event loop and executor threads, a flush at any moment returns only
    once everything appended before it is committed, and close stores the rest."""
    writer = PredictionLogWriter(engine, interval_s=0.02, batch_size=7)
    x = np.zeros((1, 3), dtype=np.float32)

    def append(prefix: str, n: int) -> None:
        for i in range(n):
            writer.append_later(prediction_rows, request_id=f"{prefix}-{i}", variant="champion", model_version="1",
                                inputs=x, predictions_=[0], probabilities=None, latency_ms=1.0, status="ok")

    threads = [threading.Thread(target=append, args=(f"t{k}", 150)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert writer.flush(timeout=10)
    assert writer.pending == 0
    assert len(read_predictions(engine)) == 450  # every row of every thread, none twice
    append("late", 5)
    writer.close()
    assert len(read_predictions(engine)) == 455 and writer.errors == 0
