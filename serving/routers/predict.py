"""``POST /predict``: validate a batch against the champion's signature (a float matrix, or a table model's named
columns) and answer it from one variant."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serving import input_notes
from serving.deps import GatewayDep, SettingsDep
from serving.errors import documented
from serving.request_ids import effective_request_id
from serving.schemas import PredictRequest, PredictResponse
from serving.validation import ignored_columns, to_matrix, to_table_rows

try:  # orjson encodes the float lists of an answer several times faster than the stdlib
    import orjson

    def _encode(payload: dict) -> bytes:
        return orjson.dumps(payload)
except ImportError:  # pragma: no cover - orjson ships with the pinned set
    import json

    def _encode(payload: dict) -> bytes:
        return json.dumps(payload, separators=(",", ":")).encode()

router = APIRouter(tags=["serving"])


@router.post("/predict", response_model=PredictResponse, responses=documented(
    400, 413, 415, 422, 500, 503, 504, d500="the champion failed on a valid request and no challenger could answer "
    "(a model fault, logged for diagnosis)", d503="no champion loaded yet, or (sync log mode) the log cannot be "
    "written", d504="the champion did not answer within champion_timeout_s and no challenger could answer"))
async def predict(body: PredictRequest, request: Request, gateway: GatewayDep, settings: SettingsDep) -> Response:
    """Predict class labels for a batch; the whole batch goes to one variant."""
    model = gateway.contract()
    known = [c["name"] for c in model.input_schema] if model.input_schema is not None else model.feature_names or []
    ignored = ignored_columns(body, known, getattr(model, "dropped_columns", None) or {}, settings.unknown_columns)
    if model.input_schema is not None:  # a table model: named raw rows, encoded by the model itself
        x = to_table_rows(body, model.input_schema, settings.max_batch, settings.max_abs_input, ignore=ignored)
    else:
        x = to_matrix(body, model.n_features, settings.max_batch, model.feature_names, settings.max_abs_input,
                      ignore=ignored)
    flags = input_notes.row_flags(model, x)
    input_notes.count(gateway.metrics, settings.model_name, ignored, flags)
    key = request.headers.get(settings.sticky_header)
    request_id = effective_request_id(body.request_id, key, settings.namespace_secret)
    answer = await gateway.predict(x, request_id, key)
    payload = answer.to_json()
    if body.explain_inputs:
        payload = input_notes.explained(payload, ignored, flags, len(x))
    return Response(_encode(payload), media_type="application/json")
