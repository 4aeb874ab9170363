"""Every answer that is not a success: one ``{"error", "detail"}`` body, and the exception handlers that make it.

Client mistakes are 4xx and counted in ``nasops_invalid_requests_total``; server-side conditions (no champion, a
failing champion) are 5xx and never repeat internal exception text to the caller (it goes to the server log).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from monitoring.vocabulary import CHAMPION
from serving.schemas import ErrorResponse
from serving.validation import RequestRejected, describe_validation_error, expected_contract

log = logging.getLogger("nasops.gateway")

SCHEMA_HINT = "see the OpenAPI schema at /docs"
DB_RETRY_AFTER_S = 5  # seconds a client waits before retrying while the log's database is away (a restart's order)

HTTP_HINTS = {
    404: "see the OpenAPI schema at /docs for the routes",
    405: "see the OpenAPI schema at /docs for the methods of this route",
    401: "send the header 'Authorization: Bearer <token>'",
    403: "send the token the gateway was configured with",
    429: "slow down: wait the Retry-After seconds, and batch labels (up to max_feedback_items per request)",
}


def error_response(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def documented(*codes: int, **descriptions: str) -> dict:
    """The ``responses=`` entry of a route: each status code with the error body and a description."""
    defaults = {
        400: "malformed or empty JSON body", 401: "missing bearer token", 403: "wrong token", 404: "not found",
        409: "conflict", 413: "body or batch over the configured limit", 415: "body not sent as application/json",
        422: "wrong shape, type or out-of-range values", 503: "no champion model loaded yet",
    }
    return {code: {"model": ErrorResponse, "description": descriptions.get(f"d{code}", defaults.get(code, ""))}
            for code in codes}


def count_invalid(app, reason: str) -> None:
    """Count one rejected client request (both the reason counter and the per-outcome request counter)."""
    metrics, settings = app.state.metrics, app.state.settings
    metrics.invalid.labels(settings.model_name, reason).inc()
    metrics.requests.labels(settings.model_name, "none", "none", "invalid").inc()


def contract_hint(request: Request) -> str:
    gateway = getattr(request.app.state, "gateway", None)
    champion = gateway.models.get(CHAMPION) if gateway is not None else None
    if champion is None:
        return SCHEMA_HINT
    return expected_contract(champion.n_features, request.app.state.settings.max_batch)


class _BodyErrors:
    """Adapter so :func:`describe_validation_error` reads FastAPI's error list (locations start with 'body')."""

    def __init__(self, exc: RequestValidationError) -> None:
        self.exc = exc

    def errors(self) -> list[dict]:
        out = []
        for err in self.exc.errors():
            loc = tuple(err.get("loc", ()))
            if loc and loc[0] == "body":
                loc = loc[1:]
            out.append({**err, "loc": loc})
        return out


def _is_json(request: Request) -> bool:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        count_invalid(request.app, "json")
        return error_response(400, "request body is empty", "a JSON object, sent with Content-Type: application/json")
    if not _is_json(request):
        count_invalid(request.app, "media_type")
        media = request.headers.get("content-type") or "none"
        return error_response(415, f"request body has Content-Type {media!r}, not JSON",
                              "send the JSON body with the header Content-Type: application/json")
    if first.get("type") == "json_invalid":
        count_invalid(request.app, "json")
        ctx = errors[0].get("ctx") or {}
        return error_response(400, f"request body is not valid JSON ({ctx.get('error', 'decode error')})",
                              "a JSON object")
    reason, message = describe_validation_error(_BodyErrors(exc))
    count_invalid(request.app, reason)
    hint = contract_hint(request) if request.url.path == "/predict" else SCHEMA_HINT
    return error_response(422, f"invalid request: {message}", hint)


async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return error_response(exc.status_code, detail, HTTP_HINTS.get(exc.status_code, SCHEMA_HINT),
                          headers=getattr(exc, "headers", None))


async def on_rejected(request: Request, exc: RequestRejected) -> JSONResponse:
    count_invalid(request.app, exc.reason)
    return JSONResponse(exc.body(), status_code=exc.status)


def install_error_handlers(app: FastAPI) -> None:
    from serving.gateway import ChampionFailed, ChampionTimedOut, LogUnavailable, NotReady
    from serving.manual_rollout import RolloutControlled

    settings = app.state.settings

    async def on_not_ready(request: Request, exc: NotReady) -> JSONResponse:
        log.warning("answered 503, no champion: %s", exc)
        return error_response(503, "no champion model is loaded", "register a model version and set its alias "
                              f"{settings.champion_alias!r}; the gateway picks it up on the next poll or POST "
                              "/admin/reload (the gateway log says why loading failed)")

    async def on_champion_failed(request: Request, exc: ChampionFailed) -> JSONResponse:
        log.error("answered 500: %s", exc)
        return error_response(500, "the champion model failed on this request", "a model fault, not a problem "
                              "with the request: it is counted in nasops_model_faults_total and logged with its "
                              "input for diagnosis")

    async def on_champion_timed_out(request: Request, exc: ChampionTimedOut) -> JSONResponse:
        log.error("answered 504: %s", exc)
        return error_response(504, f"the champion model did not answer within {settings.champion_timeout_s:g}s",
                              "retry later; counted in nasops_model_faults_total{reason=\"timeout\"} (raise "
                              "champion_timeout_s for a model that is slow on large batches)")

    async def on_log_unavailable(request: Request, exc: LogUnavailable) -> JSONResponse:
        return error_response(503, "the prediction log cannot be written, so no answer is given (sync log mode)",
                              "retry later; the gateway log says why the database refused the write")

    async def on_database_error(request: Request, exc: sa_exc.DBAPIError) -> JSONResponse:
        # /feedback (and the admin reads) go to the log's database on the request path: while it is away, say so
        # in the error envelope, with when to retry, never a plain-text 500 with a traceback.
        cause = " ".join(str(exc.orig or exc).split())[:300]
        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) or exc.connection_invalidated:
            log.error("answered 503, the prediction log's database is unavailable: %s", cause)
            return error_response(503, "the prediction log's database is unavailable", "retry after the Retry-After "
                                  "seconds; nothing was applied (the gateway log says why the database refused)",
                                  headers={"Retry-After": str(DB_RETRY_AFTER_S)})
        log.error("answered 500, the prediction log's database refused the request: %s", cause)
        return error_response(500, "the prediction log's database refused this request", "nothing was applied; "
                              "the gateway log says why")

    async def on_rollout_controlled(request: Request, exc: RolloutControlled) -> JSONResponse:
        return error_response(409, f"{exc}, so the admin API does not change it",
                              "steer the rollout with `nasops canary pause|resume|promote|abort`; every worker and "
                              "replica follows the rollout record")

    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestRejected, on_rejected)
    app.add_exception_handler(NotReady, on_not_ready)
    app.add_exception_handler(ChampionFailed, on_champion_failed)
    app.add_exception_handler(ChampionTimedOut, on_champion_timed_out)
    app.add_exception_handler(LogUnavailable, on_log_unavailable)
    app.add_exception_handler(RolloutControlled, on_rollout_controlled)
    app.add_exception_handler(sa_exc.DBAPIError, on_database_error)
