"""A bad challenger never reaches callers; malformed requests never produce a 5xx.

Faulty challengers (raise on 20% of calls, +50 ms, garbage outputs) are real registered model versions, each under
its own alias, served against a trained champion.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fixtures_registry import build_registry
from support_metrics import metric
from support_models import FlakyModel, GarbageModel, SlowModel, digits_data, linear_classifier, train_small

from monitoring.prediction_log import create_log_engine, read_predictions
from serving.server import start_gateway

pytestmark = pytest.mark.slow  # starts gateways and trains models


@pytest.fixture(scope="module")
def faulty_registry(tmp_path_factory):
    """Champion + good challenger, plus faulty versions under the aliases flaky, slow and garbage."""
    reg = build_registry(tmp_path_factory.mktemp("faulty"))
    x_tr, y_tr, _, _ = digits_data()
    inner = train_small(linear_classifier(seed=3), x_tr, y_tr, steps=40)
    reg.register(FlakyModel(inner, period=5), alias="flaky")
    reg.register(SlowModel(inner, delay_s=0.05), alias="slow")
    reg.register(GarbageModel(inner), alias="garbage")
    return reg


def _send(url: str, rows, n: int, headers=None) -> list[httpx.Response]:
    with httpx.Client(base_url=url, timeout=30) as client:
        return [client.post("/predict", json={"inputs": rows[i % len(rows)]}, headers=headers) for i in range(n)]


@pytest.mark.parametrize(
    ("alias", "reason", "expected_fallbacks"),
    [("flaky", "error", 20), ("slow", "timeout", 100), ("garbage", "invalid_output", 100)],
)
def test_faulty_challenger_never_fails_a_caller(faulty_registry, alias, reason, expected_fallbacks):
    # only the slow one should time out: a generous timeout elsewhere keeps a loaded machine from adding timeouts
    timeout = 0.02 if alias == "slow" else 2.0
    settings = faulty_registry.gateway_settings(challenger_alias=alias, challenger_weight=1.0,
                                                challenger_timeout_s=timeout)
    rows = [[r.tolist()] for r in faulty_registry.x_test[:50]]
    with start_gateway(settings) as gw:
        responses = _send(gw.url, rows, 100)
        text = httpx.get(f"{gw.url}/metrics").text
    assert [r.status_code for r in responses] == [200] * 100
    served = [r.json()["variant"] for r in responses]
    fallbacks = served.count("champion")
    assert fallbacks == expected_fallbacks
    assert metric(text, "nasops_fallback_total", reason=reason) == expected_fallbacks
    failed_status = "timeout" if reason == "timeout" else "error"
    assert metric(text, "nasops_requests_total", variant="challenger", status=failed_status) == expected_fallbacks
    assert metric(text, "nasops_requests_total", variant="champion", status="fallback") == expected_fallbacks
    assert metric(text, "nasops_requests_total", variant="challenger", status="ok") == 100 - expected_fallbacks
    # every answer is a real prediction: probabilities over the 10 classes
    assert all(len(r.json()["probabilities"][0]) == 10 for r in responses)


def test_fallbacks_are_logged_for_the_judge(faulty_registry):
    settings = faulty_registry.gateway_settings(challenger_alias="flaky", challenger_weight=1.0)
    rows = [[r.tolist()] for r in faulty_registry.x_test[:10]]
    with start_gateway(settings) as gw:
        ids = [r.json()["request_id"] for r in _send(gw.url, rows, 10)]
    frame = read_predictions(create_log_engine(faulty_registry.prediction_log_url))
    frame = frame[frame.request_id.isin(ids)]
    failed = frame[(frame.variant == "challenger") & (frame.status == "error")]
    assert len(failed) == 2 and failed.prediction.isna().all()
    rescued = frame[(frame.variant == "champion") & (frame.status == "fallback")]
    assert set(rescued.request_id) == set(failed.request_id)


def test_shadow_mode_mirrors_to_a_flaky_challenger_without_showing_it(faulty_registry):
    token = "faults-feedback-token-0123456789-abcdefghij"
    settings = faulty_registry.gateway_settings(challenger_alias="flaky", mode="shadow", challenger_weight=0.5,
                                                feedback_token=token)
    rows = [[r.tolist()] for r in faulty_registry.x_test[:20]]
    labels = [int(v) for v in faulty_registry.y_test[:20]]
    with start_gateway(settings) as gw:
        responses = []
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            for i in range(40):
                responses.append(client.post("/predict", json={"inputs": rows[i % 20]}))
                # labels sent right after the answer still reach the mirrored prediction (feedback waits for it)
                fb = client.post("/feedback", json={"request_id": responses[-1].json()["request_id"],
                                                    "label": labels[i % 20]},
                                 headers={"Authorization": f"Bearer {token}"})
                assert fb.status_code == 200
        # mirrored calls finish after the responses: wait (bounded) for all 40 to be counted
        deadline = time.monotonic() + 10
        text = httpx.get(f"{gw.url}/metrics").text
        while metric(text, "nasops_shadow_total") < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
            text = httpx.get(f"{gw.url}/metrics").text
    assert {r.status_code for r in responses} == {200}
    assert {r.json()["variant"] for r in responses} == {"champion"}
    assert metric(text, "nasops_shadow_total", status="ok") == 32
    assert metric(text, "nasops_shadow_total", status="error") == 8
    frame = read_predictions(create_log_engine(faulty_registry.prediction_log_url))
    ids = {r.json()["request_id"] for r in responses}
    shadow = frame[frame.request_id.isin(ids) & frame.shadow]
    assert len(shadow) == 40 and set(shadow.variant) == {"challenger"}
    assert (shadow.status == "ok").sum() == 32
    answered = shadow[shadow.status == "ok"]
    assert answered.label.notna().all() and answered.correct.notna().all()
    assert metric(text, "nasops_feedback_total", variant="challenger") == 32


def test_malformed_requests_mixed_into_load_get_4xx_and_nothing_gets_5xx(faulty_registry):
    settings = faulty_registry.gateway_settings(challenger_alias="flaky", challenger_weight=0.5,
                                                max_body_bytes=64 * 1024, max_batch=64)
    good = [r.tolist() for r in faulty_registry.x_test[:40]]
    nan_row = "[" + ",".join(["NaN"] + ["0"] * 63) + "]"
    malformed = [
        b'{"inputs": [[1, 2, 3]]}', b'{"inputs": [["x"' + b",0" * 63 + b"]]}", f'{{"inputs": [{nan_row}]}}'.encode(),
        b'{"inputs": ', b"", b'{"rows": [[0]]}', b'{"inputs": [[0' + b",0" * 63 + b"]]" + b" " * 70000 + b"}",
        b'{"inputs": [[0' + b",0" * 63 + b"],]}",
        b'{"inputs": [' + b",".join([b"[" + b",".join([b"0"] * 64) + b"]"] * 65) + b"]}", b"null",
    ]
    rng = random.Random(0)
    jobs = []
    for i in range(240):
        if rng.random() < 0.3:
            jobs.append(("bad", malformed[i % len(malformed)]))
        else:
            jobs.append(("good", good[i % len(good)]))
    with start_gateway(settings) as gw, httpx.Client(base_url=gw.url, timeout=30) as client:

        def call(job):
            kind, payload = job
            if kind == "good":
                return kind, client.post("/predict", json={"inputs": [payload]}).status_code
            return kind, client.post("/predict", content=payload,
                                     headers={"content-type": "application/json"}).status_code

        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(call, jobs))
        assert client.get("/healthz").status_code == 200
    statuses = [s for _, s in results]
    assert not [s for s in statuses if s >= 500], "a 5xx was returned"
    assert all(s == 200 for k, s in results if k == "good")
    bad = [s for k, s in results if k == "bad"]
    assert bad and all(400 <= s < 500 for s in bad)
