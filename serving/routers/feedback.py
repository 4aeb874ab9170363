"""``POST /feedback``: join true labels to logged predictions by request id."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from serving.deps import GatewayDep
from serving.errors import documented, error_response
from serving.schemas import FeedbackItem, FeedbackResponse

router = APIRouter(tags=["feedback"])


@router.post("/feedback", response_model=FeedbackResponse,
             responses=documented(404, 422, d404="unknown request_id", d422="label count does not match the batch"))
async def feedback(body: FeedbackItem | list[FeedbackItem], gateway: GatewayDep) -> Response:
    """Join true labels to logged predictions by request id (one object, or a list of them)."""
    items = body if isinstance(body, list) else [body]
    await gateway.shadow_settled([item.request_id for item in items])
    unknown, rows, accepted = [], 0, 0
    for item in items:
        try:
            rows += await run_in_threadpool(gateway.feedback, item.request_id, item.all_labels())
            accepted += 1
        except KeyError:
            unknown.append(item.request_id)
        except ValueError as exc:
            return error_response(422, str(exc), "one label per row of the original request, in row order")
    if unknown:
        return error_response(404, f"unknown request_id(s): {', '.join(unknown[:10])}",
                              f"request ids returned by /predict ({accepted} other item(s) were applied)")
    return JSONResponse({"accepted": accepted, "rows": rows})
