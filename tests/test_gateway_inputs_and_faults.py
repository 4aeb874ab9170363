"""No 5xx from client input, model faults that are not blamed on the caller, secrets that refuse a weak start,
readiness answers without internal text, an OpenAPI document that tells the truth, and a durable sync log.

Real parts: trained models in a SQLite MLflow registry, the gateway over HTTP (its own process for the kill -9).
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import httpx
import pytest
import torch
from fixtures_registry import build_registry
from pydantic import ValidationError
from support_metrics import metric
from support_models import digits_data, linear_classifier, train_small
from torch import nn

from monitoring.prediction_log import create_log_engine, read_predictions
from serving.config import GatewaySettings
from serving.server import start_gateway

pytestmark = pytest.mark.slow  # starts gateways and trains models

ADMIN_TOKEN = "inputs-admin-token-0123456789-abcdefghij"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class NanAboveModel(nn.Module):
    """A real classifier that returns NaN logits for rows whose first feature exceeds 100 (a valid input)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        return torch.where(x[:, :1] > 100, torch.full_like(logits, float("nan")), logits)


@pytest.fixture(scope="module")
def gateway(shared_registry):
    with start_gateway(shared_registry.gateway_settings(challenger_weight=0.0, admin_token=ADMIN_TOKEN)) as handle:
        yield handle


def row_body(values: dict[int, str], rows: int = 1, bad_row: int = 0) -> bytes:
    """A JSON body of ``rows`` rows of 64 zeros, with raw literals ``values`` (column -> text) in ``bad_row``."""
    out = []
    for r in range(rows):
        cells = [values.get(c, "0") if r == bad_row else "0" for c in range(64)]
        out.append("[" + ",".join(cells) + "]")
    return ('{"inputs": [' + ",".join(out) + "]}").encode()


@pytest.mark.parametrize(
    ("values", "rows", "bad_row", "needle", "reason"),
    [
        ({0: "1" + "0" * 400}, 1, 0, "row 0 column 0 ('pixel_0') is an integer beyond the float32 range", "range"),
        ({5: "3.4e38"}, 1, 0, "row 0 column 5 ('pixel_5') is 3.4e+38, beyond the accepted magnitude", "range"),
        ({3: "-2e9"}, 2, 1, "row 1 column 3 ('pixel_3')", "range"),
        ({7: "1e39"}, 1, 0, "row 0 column 7 ('pixel_7') overflows float32", "non_finite"),
    ],
)
def test_out_of_range_numbers_are_422_naming_row_and_column(gateway, values, rows, bad_row, needle, reason):
    before = httpx.get(f"{gateway.url}/metrics").text
    r = httpx.post(f"{gateway.url}/predict", content=row_body(values, rows, bad_row),
                   headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert needle in r.json()["error"], r.json()
    after = httpx.get(f"{gateway.url}/metrics").text
    assert metric(after, "nasops_invalid_requests_total", reason=reason) == \
        metric(before, "nasops_invalid_requests_total", reason=reason) + 1
    # a caller's mistake, never a model fault or a champion error
    assert metric(after, "nasops_model_faults_total") == metric(before, "nasops_model_faults_total")
    assert metric(after, "nasops_requests_total", variant="champion", status="error") == \
        metric(before, "nasops_requests_total", variant="champion", status="error")


def test_dataframe_split_names_the_callers_column(gateway):
    names = [f"pixel_{i}" for i in range(64)][::-1]
    data = [[0.0] * 64]
    data[0][2] = 5e9  # column 2 of the request is pixel_61
    r = httpx.post(f"{gateway.url}/predict", json={"dataframe_split": {"columns": names, "data": data}})
    assert r.status_code == 422 and "column 2 ('pixel_61')" in r.json()["error"], r.text


def test_a_non_finite_champion_output_is_answered_by_the_challenger_and_counted_as_a_model_fault(tmp_path):
    reg = build_registry(tmp_path / "reg")
    x_tr, y_tr, _, _ = digits_data()
    reg.register(NanAboveModel(train_small(linear_classifier(seed=4), x_tr, y_tr, steps=30)), alias="champion")
    settings = reg.gateway_settings(challenger_weight=0.0, admin_token=ADMIN_TOKEN, log_inputs="hash")
    ordinary = reg.x_test[0].tolist()
    odd = [500.0, *ordinary[1:]]  # valid: within max_abs_input, finite, float32
    with start_gateway(settings) as gw:
        fine = httpx.post(f"{gw.url}/predict", json={"inputs": [ordinary]}).json()
        rescued = httpx.post(f"{gw.url}/predict", json={"inputs": [odd]})
        text = httpx.get(f"{gw.url}/metrics").text
        assert rescued.status_code == 200, rescued.text
        assert fine["variant"] == "champion" and rescued.json()["variant"] == "challenger"
        assert metric(text, "nasops_model_faults_total", variant="champion", reason="invalid_output") == 1
        assert metric(text, "nasops_invalid_requests_total") == 0
        # without a challenger there is nothing to fall back to: a 500 that says what happened, no internals
        from mlflow.tracking import MlflowClient

        MlflowClient(reg.tracking_uri, reg.tracking_uri).delete_registered_model_alias(reg.model_name, "challenger")
        assert httpx.post(f"{gw.url}/admin/reload", headers=AUTH).status_code == 200
        failed = httpx.post(f"{gw.url}/predict", json={"inputs": [odd]})
    assert failed.status_code == 500
    assert failed.json()["error"] == "the champion model failed on this request"
    assert "nan" not in failed.text.lower() and "InvalidModelOutput" not in failed.text
    frame = read_predictions(create_log_engine(reg.prediction_log_url))
    fault = frame[(frame.request_id == rescued.json()["request_id"]) & (frame.variant == "champion")].iloc[0]
    assert fault.status == "error" and fault.inputs[0] == 500.0 and len(fault.inputs) == 64  # kept raw
    answered = frame[(frame.request_id == rescued.json()["request_id"]) & (frame.variant == "challenger")].iloc[0]
    assert answered.status == "fallback" and answered.inputs.startswith("sha256:")
    assert frame[frame.request_id == fine["request_id"]].iloc[0].inputs.startswith("sha256:")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"admin_token": "change-me"}, "at least 32"),
        ({"admin_token": "change-me-change-me-change-me-change-me"}, "placeholder"),
        ({"feedback_token": "x" * 31}, "at least 32"),
        ({"feedback_token": "ab" * 20}, "placeholder"),
        ({"admin_token": "same-token-0123456789-abcdefghijklmnop", "feedback_token":
          "same-token-0123456789-abcdefghijklmnop"}, "must be a different"),
    ],
)
def test_weak_tokens_refuse_the_start(kwargs, needle):
    with pytest.raises(ValidationError, match=needle):
        GatewaySettings(**kwargs)


def test_tokens_come_from_files(tmp_path):
    admin, feedback = tmp_path / "admin", tmp_path / "feedback"
    admin.write_text("file-admin-token-0123456789-abcdefghij\n")
    feedback.write_text("file-feedback-token-0123456789-abcdefghij")
    settings = GatewaySettings(admin_token_file=str(admin), feedback_token_file=str(feedback))
    assert settings.admin_token == "file-admin-token-0123456789-abcdefghij"
    assert settings.feedback_token == "file-feedback-token-0123456789-abcdefghij"
    assert "NASOPS_GATEWAY_ADMIN_TOKEN_FILE" not in settings.to_env()  # workers get the value, once checked
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValidationError, match="empty"):
        GatewaySettings(admin_token_file=str(tmp_path / "empty"))


def test_nasops_serve_refuses_a_placeholder_token_in_one_line(shared_registry, tmp_path):
    from support_cli import nasops  # in-process: the console script's own run(argv) and exit-code mapping

    out = nasops("serve", home=shared_registry.home, env={"NASOPS_GATEWAY_ADMIN_TOKEN": "change-me"})
    assert out.returncode == 2 and "admin_token" in out.stderr and "Traceback" not in out.stderr, out.stderr
    token_file = tmp_path / "feedback"
    token_file.write_text("short\n")
    out = nasops("serve", "--feedback-token-file", str(token_file), home=shared_registry.home,
                 env={"NASOPS_GATEWAY_ADMIN_TOKEN": None})
    assert out.returncode == 2 and "feedback_token" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_readiness_and_503_answers_keep_internal_errors_server_side(tmp_path):
    reg = build_registry(tmp_path / "reg")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(reg.tracking_uri, reg.tracking_uri)
    source = client.get_model_version_download_uri(reg.model_name, reg.challenger_version)
    shutil.rmtree(Path(source.removeprefix("file://")), ignore_errors=True)  # the challenger cannot load
    settings = reg.gateway_settings(admin_token=ADMIN_TOKEN)
    with start_gateway(settings) as gw:
        ready = httpx.get(f"{gw.url}/readyz")
        state = httpx.get(f"{gw.url}/admin/state", headers=AUTH).json()
    assert ready.status_code == 503 and ready.json()["error"] == "not ready: the challenger model is not loaded"
    assert str(tmp_path) not in ready.text and "Error" not in ready.json()["error"]
    assert state["load_errors"]["challenger"]  # the reason is there for an operator with the admin token
    with start_gateway(reg.gateway_settings(model_name="no-such-model")) as gw:
        r = httpx.post(f"{gw.url}/predict", json={"inputs": [[0.0] * 64]})
    assert r.status_code == 503 and r.json()["error"] == "no champion model is loaded"


def test_the_openapi_document_tells_the_truth(gateway):
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    request = spec["components"]["schemas"]["PredictRequest"]
    example = request["examples"][0]
    assert httpx.post(f"{gateway.url}/predict", json=example).status_code == 200  # its own example works
    assert request["properties"]["inputs"]["items"]["minItems"] == 64
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if "requestBody" in op:
                assert {"400", "413", "415", "422"} <= set(op["responses"]), (method, path)
                assert op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
                    "/ErrorResponse"), (method, path)
    bad = httpx.post(f"{gateway.url}/admin/weight", json={"weight": 2}, headers=AUTH)
    assert bad.status_code == 422 and set(bad.json()) == {"error", "detail"}
    wrong_method = httpx.get(f"{gateway.url}/predict")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    before = httpx.get(f"{gateway.url}/metrics").text
    empty = httpx.post(f"{gateway.url}/predict", content=b"", headers={"content-type": "application/json"})
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    plain = httpx.post(f"{gateway.url}/predict", content=b'{"inputs": [[0]]}', headers={"content-type": "text/plain"})
    assert plain.status_code == 415 and "application/json" in plain.json()["detail"]
    broken = httpx.post(f"{gateway.url}/admin/mode", content=b"{oops", headers={**AUTH,
                                                                                "content-type": "application/json"})
    assert broken.status_code == 400
    after = httpx.get(f"{gateway.url}/metrics").text
    assert metric(after, "nasops_invalid_requests_total", reason="json") == \
        metric(before, "nasops_invalid_requests_total", reason="json") + 2
    assert metric(after, "nasops_invalid_requests_total", reason="media_type") == \
        metric(before, "nasops_invalid_requests_total", reason="media_type") + 1


def test_sync_log_mode_keeps_every_answered_request_through_kill_9(shared_registry, tmp_path):
    log_url = f"sqlite:///{tmp_path / 'sync.db'}"
    settings = shared_registry.gateway_settings(log_mode="sync", prediction_log_url=log_url, admin_token=ADMIN_TOKEN,
                                                challenger_weight=0.5)
    row = [shared_registry.x_test[0].tolist()]
    with start_gateway(settings, mode="process") as gw:
        pid = httpx.get(f"{gw.url}/admin/state", headers=AUTH).json()["pid"]
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            answered = [client.post("/predict", json={"inputs": row}).json()["request_id"] for _ in range(60)]
        os.kill(pid, signal.SIGKILL)  # no flush, no shutdown hook
    frame = read_predictions(create_log_engine(log_url))
    assert set(answered) <= set(frame.request_id), f"{len(set(answered) - set(frame.request_id))} rows lost"
