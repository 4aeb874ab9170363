"""The canary gateway over real HTTP: routing, feedback, metrics, admin, readiness and the OpenAPI contract.

Real parts only: a SQLite MLflow registry with trained digits models, the gateway under uvicorn on a loopback
port, httpx as the caller.
"""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest

from monitoring.prediction_log import create_log_engine, read_predictions
from serving.server import start_gateway

pytestmark = pytest.mark.slow  # starts gateways and trains models

TOKEN = "test-admin-token-0123456789-abcdefghij"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FEEDBACK_TOKEN = "test-feedback-token-0123456789-abcdefghij"
FEEDBACK = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}


@pytest.fixture(scope="module")
def gateway(shared_registry):
    with start_gateway(shared_registry.gateway_settings(challenger_weight=0.5, admin_token=TOKEN,
                                                       feedback_token=FEEDBACK_TOKEN)) as handle:
        yield handle


@pytest.fixture(autouse=True)
def _reset_routing(gateway):
    httpx.post(f"{gateway.url}/admin/mode", json={"mode": "split"}, headers=AUTH).raise_for_status()
    httpx.post(f"{gateway.url}/admin/weight", json={"weight": 0.5}, headers=AUTH).raise_for_status()
    yield


def metric_value(text: str, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        sample_labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_predicts_real_labels_and_both_variants_serve(gateway, shared_registry):
    x, y = shared_registry.x_test[:60], shared_registry.y_test[:60]
    seen, correct = {}, 0
    with httpx.Client(base_url=gateway.url) as client:
        for i in range(len(x)):
            r = client.post("/predict", json={"inputs": [x[i].tolist()]})
            assert r.status_code == 200, r.text
            body = r.json()
            assert set(body) == {"request_id", "variant", "model_version", "predictions", "probabilities"}
            assert body["variant"] in ("champion", "challenger")
            seen[body["variant"]] = body["model_version"]
            assert abs(sum(body["probabilities"][0]) - 1) < 1e-4
            correct += body["predictions"][0] == int(y[i])
    assert seen == {"champion": shared_registry.champion_version, "challenger": shared_registry.challenger_version}
    assert correct / len(x) > 0.8  # trained models, not constants


def test_batch_is_routed_as_one_unit_and_instances_form_is_accepted(gateway, shared_registry):
    x = shared_registry.x_test[:16].tolist()
    r = httpx.post(f"{gateway.url}/predict", json={"instances": x, "request_id": "batch-unit-1"})
    assert r.status_code == 200
    body = r.json()
    assert body["request_id"] == "batch-unit-1@anon" and len(body["predictions"]) == 16
    assert len(body["probabilities"]) == 16 and len(body["probabilities"][0]) == 10


def test_dataframe_split_form_orders_columns_by_feature_names(gateway, shared_registry):
    row = shared_registry.x_test[0]
    names = [f"pixel_{i}" for i in range(64)]
    reversed_split = {"columns": names[::-1], "data": [row[::-1].tolist()]}
    a = httpx.post(f"{gateway.url}/predict", json={"inputs": [row.tolist()]},
                   headers={"X-Request-Key": "same-user"}).json()
    b = httpx.post(f"{gateway.url}/predict", json={"dataframe_split": reversed_split},
                   headers={"X-Request-Key": "same-user"}).json()
    assert a["variant"] == b["variant"]
    np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=1e-6)


def test_sticky_key_keeps_a_caller_on_one_variant(gateway, shared_registry):
    row = [shared_registry.x_test[0].tolist()]
    variants_by_user = {}
    with httpx.Client(base_url=gateway.url) as client:
        for user in range(12):
            headers = {"X-Request-Key": f"u{user}"}
            got = {client.post("/predict", json={"inputs": row}, headers=headers).json()["variant"] for _ in range(4)}
            assert len(got) == 1, f"user u{user} was routed to {got}"
            variants_by_user[user] = got.pop()
    assert set(variants_by_user.values()) == {"champion", "challenger"}


def test_weight_zero_and_one_route_everything(gateway, shared_registry):
    row = [shared_registry.x_test[1].tolist()]
    for weight, expected in ((0.0, "champion"), (1.0, "challenger")):
        r = httpx.post(f"{gateway.url}/admin/weight", json={"weight": weight}, headers=AUTH)
        assert r.status_code == 200 and r.json()["weight"] == weight
        got = {httpx.post(f"{gateway.url}/predict", json={"inputs": row}).json()["variant"] for _ in range(10)}
        assert got == {expected}


def test_feedback_joins_labels_to_the_log_and_counts_online_accuracy(gateway, shared_registry):
    x, y = shared_registry.x_test[100:110], shared_registry.y_test[100:110]
    before = httpx.get(f"{gateway.url}/metrics").text
    r = httpx.post(f"{gateway.url}/predict", json={"inputs": x.tolist(), "request_id": "fb-join-1"})
    body = r.json()
    rid = body["request_id"]
    fb = httpx.post(f"{gateway.url}/feedback", json={"request_id": rid, "labels": y.tolist()}, headers=FEEDBACK)
    assert fb.status_code == 200, fb.text
    assert fb.json() == {"accepted": 1, "rows": 10}
    frame = read_predictions(create_log_engine(shared_registry.prediction_log_url), variant=body["variant"])
    rows = frame[frame.request_id == rid].sort_values("row")
    assert list(rows.label) == y.tolist()
    assert list(rows.prediction) == body["predictions"]
    assert list(rows.correct) == [p == t for p, t in zip(body["predictions"], y.tolist(), strict=True)]
    assert rows.model_version.unique().tolist() == [body["model_version"]]
    assert len(rows.inputs.iloc[0]) == 64 and (rows.latency_ms > 0).all()
    after = httpx.get(f"{gateway.url}/metrics").text
    n_correct = int(rows.correct.sum())
    assert metric_value(after, "nasops_feedback_total", variant=body["variant"], correct="true") - metric_value(
        before, "nasops_feedback_total", variant=body["variant"], correct="true") == n_correct
    # bulk form, single-label form, and the mistakes
    r1 = httpx.post(f"{gateway.url}/predict", json={"inputs": [x[0].tolist()], "request_id": "fb-one"}).json()
    assert r1["request_id"] == "fb-one@anon"
    bulk = httpx.post(f"{gateway.url}/feedback", json=[{"request_id": "fb-one@anon", "label": int(y[0])}],
                      headers=FEEDBACK)
    assert bulk.status_code == 200 and bulk.json()["accepted"] == 1
    unknown = httpx.post(f"{gateway.url}/feedback", json={"request_id": "never-sent", "label": 1}, headers=FEEDBACK)
    assert unknown.status_code == 404 and "never-sent" in unknown.json()["error"]
    wrong_count = httpx.post(f"{gateway.url}/feedback", json={"request_id": rid, "labels": [1, 2]}, headers=FEEDBACK)
    assert wrong_count.status_code == 422 and "10 row" in wrong_count.json()["error"]


def test_metrics_follow_the_issue_names_and_units(gateway, shared_registry):
    httpx.post(f"{gateway.url}/predict", json={"inputs": [shared_registry.x_test[2].tolist()]})
    text = httpx.get(f"{gateway.url}/metrics").text
    for name in ("nasops_requests_total", "nasops_request_duration_seconds_bucket", "nasops_predictions_total",
                 "nasops_model_version_info", "nasops_challenger_weight"):
        assert name in text, name
    assert metric_value(text, "nasops_requests_total", model=shared_registry.model_name, status="ok") >= 1
    assert 'le="0.001"' in text  # seconds, not milliseconds


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b'{"inputs": [[1.0, 2.0]]}', 422, "64 features"),
        (b'{"inputs": [["a", "b"]]}', 422, "valid number"),
        (b'{"inputs": [[true' + b", 0" * 63 + b"]]}", 422, "valid number"),
        (b'{"inputs": [[NaN' + b", 0" * 63 + b"]]}", 422, "finite"),
        (b'{"inputs": [[Infinity' + b", 0" * 63 + b"]]}", 422, "finite"),
        (b'{"inputs": [[1e39' + b", 0" * 63 + b"]]}", 422, "float32"),
        (b'{"inputs": [[0' + b", 0" * 63 + b']], "extra": 1}', 422, "extra"),
        (b'{"inputs": []}', 422, "no rows"),
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 422, "invalid request"),
        (b'{"inputs": [[0' + b", 0" * 63 + b']], "instances": [[0]]}', 422, "exactly one"),
        (b'{"dataframe_split": {"columns": ["a"], "data": [[1]]}}', 422, "columns"),
    ],
)
def test_client_mistakes_get_4xx_json_and_are_counted(gateway, body, status, needle):
    before = metric_value(httpx.get(f"{gateway.url}/metrics").text, "nasops_requests_total", status="invalid")
    r = httpx.post(f"{gateway.url}/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    payload = r.json()
    assert set(payload) == {"error", "detail"} and needle in payload["error"] + payload["detail"], payload
    after = metric_value(httpx.get(f"{gateway.url}/metrics").text, "nasops_requests_total", status="invalid")
    assert after == before + 1
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200


def test_oversized_body_and_batch_are_413(gateway):
    big = b'{"inputs": [[' + b"0," * (3 * 1024 * 1024) + b"0]]}"
    r = httpx.post(f"{gateway.url}/predict", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "bytes" in r.json()["error"]
    rows = [[0.0] * 64] * 1025
    r = httpx.post(f"{gateway.url}/predict", json={"inputs": rows})
    assert r.status_code == 413 and "1025 rows" in r.json()["error"]


def test_admin_api_needs_the_token(gateway, shared_registry):
    assert httpx.get(f"{gateway.url}/admin/state").status_code == 401
    assert httpx.get(f"{gateway.url}/admin/state", headers={"Authorization": "Bearer nope"}).status_code == 403
    state = httpx.get(f"{gateway.url}/admin/state", headers=AUTH).json()
    assert state["models"]["champion"]["version"] == shared_registry.champion_version
    assert state["models"]["challenger"]["version"] == shared_registry.challenger_version
    bad = httpx.post(f"{gateway.url}/admin/weight", json={"weight": 1.5}, headers=AUTH)
    assert bad.status_code == 422 and "weight" in bad.json()["error"]
    assert httpx.post(f"{gateway.url}/admin/mode", json={"mode": "yolo"}, headers=AUTH).status_code == 422
    drift = httpx.post(f"{gateway.url}/admin/drift", json={"variant": "challenger", "share": 0.25}, headers=AUTH)
    assert drift.status_code == 200
    text = httpx.get(f"{gateway.url}/metrics").text
    assert metric_value(text, "nasops_drift_share", variant="challenger") == 0.25


def test_admin_is_off_without_a_token_and_readiness(shared_registry):
    with start_gateway(shared_registry.gateway_settings()) as gw:
        r = httpx.post(f"{gw.url}/admin/weight", json={"weight": 1.0}, headers=AUTH)
        assert r.status_code == 404 and "off" in r.json()["error"]
        ready = httpx.get(f"{gw.url}/readyz")
        assert ready.status_code == 200
        assert ready.json()["versions"] == {"champion": shared_registry.champion_version,
                                            "challenger": shared_registry.challenger_version}


def test_gateway_without_a_champion_is_alive_but_not_ready(shared_registry):
    settings = shared_registry.gateway_settings(model_name="no-such-model")
    with start_gateway(settings) as gw:
        assert httpx.get(f"{gw.url}/healthz").status_code == 200
        ready = httpx.get(f"{gw.url}/readyz")
        assert ready.status_code == 503 and "champion" in ready.json()["error"]
        r = httpx.post(f"{gw.url}/predict", json={"inputs": [[0.0] * 64]})
        assert r.status_code == 503 and "no champion" in r.json()["error"]


def test_openapi_describes_the_real_contract(gateway):
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    predict = spec["paths"]["/predict"]["post"]
    ref = predict["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    request_schema = spec["components"]["schemas"][ref]
    assert {"inputs", "instances", "dataframe_split", "request_id"} <= set(request_schema["properties"])
    assert {"200", "400", "413", "422"} <= set(predict["responses"])
    response_schema = spec["components"]["schemas"]["PredictResponse"]
    assert set(response_schema["required"]) >= {"request_id", "variant", "model_version", "predictions"}
    assert "/feedback" in spec["paths"] and "/admin/weight" in spec["paths"]
