"""Who may label what, and how often: the feedback credential, request ids, one label per request, label checks,
bounded work, all-or-nothing writes, and metrics that agree with the prediction log after a mixed load.

Real parts: a trained SQLite MLflow registry, the gateway under uvicorn on a loopback port, httpx callers.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from support_metrics import metric

from monitoring.prediction_log import create_log_engine, read_predictions
from serving.server import start_gateway

pytestmark = pytest.mark.slow  # starts gateways and trains models

ADMIN_TOKEN = "hardening-admin-token-0123456789-abcdefghij"
FEEDBACK_TOKEN = "hardening-feedback-token-0123456789-abcdefghij"
FEEDBACK = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}


@pytest.fixture(scope="module")
def gateway(shared_registry):
    settings = shared_registry.gateway_settings(challenger_weight=0.5, admin_token=ADMIN_TOKEN,
                                                feedback_token=FEEDBACK_TOKEN)
    with start_gateway(settings) as handle:
        yield handle


def predict(url: str, rows, request_id: str | None = None, key: str | None = None) -> dict:
    body = {"inputs": rows} if request_id is None else {"inputs": rows, "request_id": request_id}
    r = httpx.post(f"{url}/predict", json=body, headers={"X-Request-Key": key} if key else None)
    assert r.status_code == 200, r.text
    return r.json()


def log_rows(shared_registry, request_id: str):
    frame = read_predictions(create_log_engine(shared_registry.prediction_log_url))
    return frame[frame.request_id == request_id]


def test_labels_need_the_feedback_token_and_not_the_admin_one(gateway, shared_registry):
    rid = predict(gateway.url, [shared_registry.x_test[0].tolist()])["request_id"]
    item = {"request_id": rid, "label": 1}
    assert httpx.post(f"{gateway.url}/feedback", json=item).status_code == 401
    assert httpx.post(f"{gateway.url}/feedback", json=item,
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 403
    assert httpx.post(f"{gateway.url}/feedback", json=item, headers={"Authorization": "Bearer guess"}).status_code \
        == 403
    assert log_rows(shared_registry, rid).label.isna().all()  # nothing was written by the refused calls
    assert httpx.post(f"{gateway.url}/feedback", json=item, headers=FEEDBACK).status_code == 200


def test_feedback_is_off_without_a_feedback_token(shared_registry):
    with start_gateway(shared_registry.gateway_settings()) as gw:
        rid = predict(gw.url, [shared_registry.x_test[0].tolist()])["request_id"]
        r = httpx.post(f"{gw.url}/feedback", json={"request_id": rid, "label": 1}, headers=FEEDBACK)
    assert r.status_code == 404 and "feedback API is off" in r.json()["error"]


def test_generated_request_ids_are_random_128_bit(gateway, shared_registry):
    row = [shared_registry.x_test[0].tolist()]
    ids = [predict(gateway.url, row)["request_id"] for _ in range(20)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids
    assert len(set(ids)) == 20
    # no shared prefix and no counter: consecutive ids share no more than chance does
    assert len({i[:8] for i in ids}) == 20


def test_client_ids_of_two_callers_do_not_collide(gateway, shared_registry):
    x, y = shared_registry.x_test, shared_registry.y_test
    a = predict(gateway.url, [x[0].tolist()], request_id="order-42", key="tenant-a")
    b = predict(gateway.url, [x[1].tolist()], request_id="order-42", key="tenant-b")
    assert a["request_id"] != b["request_id"]
    assert a["request_id"].startswith("order-42@") and b["request_id"].startswith("order-42@")
    r = httpx.post(f"{gateway.url}/feedback", json={"request_id": a["request_id"], "label": int(y[0])},
                   headers=FEEDBACK)
    assert r.status_code == 200 and r.json() == {"accepted": 1, "rows": 1}  # one row, not both callers'
    assert log_rows(shared_registry, b["request_id"]).label.isna().all()


def test_a_reused_client_id_is_refused_not_labelled_twice(gateway, shared_registry):
    x = shared_registry.x_test
    first = predict(gateway.url, [x[2].tolist()], request_id="reused-7", key="same-caller")
    second = predict(gateway.url, [x[3].tolist()], request_id="reused-7", key="same-caller")
    assert first["request_id"] == second["request_id"]
    r = httpx.post(f"{gateway.url}/feedback", json={"request_id": first["request_id"], "label": 1}, headers=FEEDBACK)
    assert r.status_code == 409 and "more than one" in r.json()["error"]
    assert log_rows(shared_registry, first["request_id"]).label.isna().all()


def test_a_second_label_is_409_unless_overwrite_and_metrics_follow_the_log(gateway, shared_registry):
    x, y = shared_registry.x_test[20:24], shared_registry.y_test[20:24]
    answer = predict(gateway.url, x.tolist())
    rid, variant = answer["request_id"], answer["variant"]
    truth = [int(v) for v in y]
    wrong = [(int(p) + 1) % 10 for p in answer["predictions"]]  # every row wrong
    assert httpx.post(f"{gateway.url}/feedback", json={"request_id": rid, "labels": truth},
                      headers=FEEDBACK).status_code == 200
    before = httpx.get(f"{gateway.url}/metrics").text
    again = httpx.post(f"{gateway.url}/feedback", json={"request_id": rid, "labels": wrong}, headers=FEEDBACK)
    assert again.status_code == 409 and "overwrite" in again.json()["error"]
    assert log_rows(shared_registry, rid).label.tolist() == truth  # the first label stands
    refused = httpx.get(f"{gateway.url}/metrics").text
    replaced = httpx.post(f"{gateway.url}/feedback", json={"request_id": rid, "labels": wrong, "overwrite": True},
                          headers=FEEDBACK)
    assert replaced.status_code == 200, replaced.text
    after = httpx.get(f"{gateway.url}/metrics").text
    rows = log_rows(shared_registry, rid)
    assert rows.label.tolist() == wrong and not rows.correct.any()

    def labelled(text: str, correct: str) -> float:
        return metric(text, "nasops_feedback_total", variant=variant, correct=correct) - metric(
            text, "nasops_feedback_retracted_total", variant=variant, correct=correct)

    n_true = sum(p == t for p, t in zip(answer["predictions"], truth, strict=True))
    for correct in ("true", "false"):
        assert labelled(refused, correct) == labelled(before, correct)  # a refused label counts nothing
    assert labelled(after, "true") - labelled(before, "true") == -n_true  # the first labels are retracted...
    assert labelled(after, "false") - labelled(before, "false") == n_true  # ...and the wrong ones counted


@pytest.mark.parametrize("label", ["12", "10", "2e400", "NaN", "18446744073709551616", "true", '"cat"'])
def test_labels_are_checked_against_the_model_classes_and_a_batch_is_all_or_nothing(
        gateway, shared_registry, label):
    x, y = shared_registry.x_test, shared_registry.y_test
    good = predict(gateway.url, [x[30].tolist()])["request_id"]
    bad = predict(gateway.url, [x[31].tolist()])["request_id"]
    body = f'[{{"request_id": "{good}", "label": {int(y[30])}}}, {{"request_id": "{bad}", "label": {label}}}]'
    r = httpx.post(f"{gateway.url}/feedback", content=body.encode(),
                   headers={**FEEDBACK, "content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert set(r.json()) == {"error", "detail"}
    # the valid first item was not committed either
    assert log_rows(shared_registry, good).label.isna().all() and log_rows(shared_registry, bad).label.isna().all()


def test_unknown_ids_cost_one_bounded_wait_not_one_per_id(shared_registry, tmp_path):
    # A control file makes the gateway behave as one worker of several: unknown ids may be another worker's rows
    # not yet committed, so it waits for them, at most feedback_wait_s for the whole call (was: per id).
    settings = shared_registry.gateway_settings(feedback_token=FEEDBACK_TOKEN, feedback_wait_s=1.0,
                                                control_file=str(tmp_path / "control.json"))
    with start_gateway(settings) as gw:
        known = predict(gw.url, [shared_registry.x_test[0].tolist()])["request_id"]
        items = [{"request_id": known, "label": 0}] + [{"request_id": f"missing-{i}", "label": 0} for i in range(5)]
        t0 = time.perf_counter()
        r = httpx.post(f"{gw.url}/feedback", json=items, headers=FEEDBACK, timeout=30)
        elapsed = time.perf_counter() - t0
    assert r.status_code == 404 and all(f"missing-{i}" in r.json()["error"] for i in range(5))
    assert elapsed < 2 * settings.feedback_wait_s, f"{elapsed:.1f} s for 5 unknown ids"
    assert log_rows(shared_registry, known).label.isna().all()


def test_metrics_and_log_agree_after_a_mixed_load(shared_registry):
    """Concurrent predictions, first labels, duplicate labels, overwrites, unknown ids and bad labels: afterwards
    the log's labelled rows per (variant, correct) equal nasops_feedback_total minus the retractions."""
    x, y = shared_registry.x_test[:60], shared_registry.y_test[:60]
    settings = shared_registry.gateway_settings(challenger_weight=0.5, feedback_token=FEEDBACK_TOKEN,
                                                mode="split", model_name=shared_registry.model_name)
    lock = threading.Lock()
    ids: list[str] = []
    with start_gateway(settings) as gw, httpx.Client(base_url=gw.url, timeout=30, headers=FEEDBACK) as client:

        def job(i: int) -> None:
            r = client.post("/predict", json={"inputs": [x[i % 60].tolist()]})
            rid = r.json()["request_id"]
            with lock:
                ids.append(rid)
            label = int(y[i % 60])
            client.post("/feedback", json={"request_id": rid, "label": label})
            if i % 3 == 0:  # a duplicate: refused
                client.post("/feedback", json={"request_id": rid, "label": (label + 1) % 10})
            if i % 5 == 0:  # an overwrite: accepted, retracts the first
                client.post("/feedback", json={"request_id": rid, "label": (label + 1) % 10, "overwrite": True})
            if i % 7 == 0:
                client.post("/feedback", json={"request_id": f"nope-{i}", "label": 1})
                client.post("/feedback", json={"request_id": rid, "label": 99, "overwrite": True})

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(job, range(120)))
        text = client.get("/metrics").text
    frame = read_predictions(create_log_engine(shared_registry.prediction_log_url))
    frame = frame[frame.request_id.isin(ids) & frame.correct.notna()]
    assert len(frame) == 120
    for variant in ("champion", "challenger"):
        for correct in (True, False):
            in_log = int(((frame.variant == variant) & (frame.correct == correct)).sum())
            word = "true" if correct else "false"
            counted = metric(text, "nasops_feedback_total", variant=variant, correct=word) - metric(
                text, "nasops_feedback_retracted_total", variant=variant, correct=word)
            assert counted == in_log, (variant, correct, counted, in_log)
