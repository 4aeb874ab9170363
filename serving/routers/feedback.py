"""``POST /feedback``: join true labels to logged predictions by request id (feedback token required).

All or nothing: every item is checked (labels against the model's classes — for a regression model, finite
numbers of a sane magnitude —, ids known, label counts, no label there already unless ``overwrite``) before one
transaction writes them, so a refused call changed nothing.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from monitoring.prediction_log import LabelConflict, LabelItem
from serving.deps import GatewayDep, SettingsDep, require_feedback
from serving.errors import count_invalid, documented, error_response
from serving.request_ids import feedback_request_id
from serving.schemas import FeedbackItem, FeedbackResponse
from serving.validation import RequestRejected, canonical_label, short_value, within

router = APIRouter(tags=["feedback"], dependencies=[Depends(require_feedback)])

RESPONSES = documented(
    400, 401, 403, 404, 409, 413, 415, 422, 429, 503,
    d429="over feedback_rate_per_s for this token (see the Retry-After header)",
    d404="unknown request_id, or the feedback API is off (no feedback token configured)",
    d409="a label exists already (send overwrite), or the id names more than one request",
    d413="more items than max_feedback_items", d422="wrong label count, or a label that is not a model class",
)


MAX_LABEL_MAGNITUDE = 1e12
"""Largest absolute value a regression label may have (what the training accepts as a target, pipelines.targets)."""


def numeric_label(label, where: str) -> float:
    """A regression model's true value: a finite number within :data:`MAX_LABEL_MAGNITUDE`, or 422 naming
    ``where`` (a class name or a boolean is refused: this model predicts numbers)."""
    expected = "a number in the target's units (this model is a regression)"
    if isinstance(label, bool) or not isinstance(label, int | float):
        raise RequestRejected(422, "label", f"{where}: label {label!r} is not a number", expected)
    if not within(label, MAX_LABEL_MAGNITUDE):
        raise RequestRejected(422, "label", f"{where}: label {short_value(label)} is not finite or beyond "
                              f"±{MAX_LABEL_MAGNITUDE:g}", expected)
    return float(label)


@router.post("/feedback", response_model=FeedbackResponse, responses=RESPONSES)
async def feedback(body: FeedbackItem | list[FeedbackItem], request: Request, gateway: GatewayDep,
                   settings: SettingsDep) -> Response:
    """Join true labels to logged predictions by request id (one object, or a list of them)."""
    items = body if isinstance(body, list) else [body]
    if not items:
        raise RequestRejected(422, "schema", "the feedback list is empty", "one or more feedback items")
    if len(items) > settings.max_feedback_items:
        raise RequestRejected(413, "batch_size", f"{len(items)} feedback items is over the limit",
                              f"at most {settings.max_feedback_items} items per request")
    model = gateway.contract()
    classes = model.classes

    def check(value, where: str):
        return numeric_label(value, where) if model.regression else canonical_label(value, classes, where)

    key = request.headers.get(settings.sticky_header)  # a bare client id is namespaced as /predict did
    labelled = [
        LabelItem(feedback_request_id(item.request_id, key, settings.namespace_secret),
                  [check(v, f"item {n} row {i}") for i, v in enumerate(item.all_labels())], item.overwrite)
        for n, item in enumerate(items)
    ]
    await gateway.shadow_settled([item.request_id for item in labelled])
    try:
        result = await run_in_threadpool(gateway.feedback, labelled)
    except KeyError as exc:
        unknown = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
        count_invalid(request.app, "unknown_id")
        return error_response(404, f"unknown request_id(s): {', '.join(unknown[:10])}",
                              "request ids as answered by /predict; nothing was applied")
    except LabelConflict as exc:
        count_invalid(request.app, "label_conflict")
        return error_response(409, str(exc), "nothing was applied")
    except ValueError as exc:
        count_invalid(request.app, "label")
        return error_response(422, str(exc), "one label per row of the original request, in row order; nothing "
                              "was applied")
    return JSONResponse({"accepted": result.items, "rows": result.rows})
