"""The FastAPI application: HTTP in front of :class:`serving.gateway.Gateway`.

Every client mistake becomes a 4xx ``{"error", "detail"}`` JSON body (and is counted); only a failing champion or
a missing model answers 5xx. ``create_app_from_env`` is the factory uvicorn workers import.
"""

from __future__ import annotations

import hmac
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from monitoring.metrics import CONTENT_TYPE, GatewayMetrics, render_latest
from serving.config import GatewaySettings
from serving.gateway import ChampionFailed, Gateway, NotReady
from serving.schemas import (
    DriftRequest,
    ErrorResponse,
    FeedbackItem,
    FeedbackResponse,
    HealthResponse,
    ModeRequest,
    PredictRequest,
    PredictResponse,
    WeightRequest,
)
from serving.validation import RequestRejected, describe_validation_error, expected_contract, to_matrix

try:  # orjson encodes the float lists of an answer several times faster than the stdlib
    import orjson

    def _encode(payload: dict) -> bytes:
        return orjson.dumps(payload)
except ImportError:  # pragma: no cover - orjson ships with the pinned set
    import json

    def _encode(payload: dict) -> bytes:
        return json.dumps(payload, separators=(",", ":")).encode()

ERRORS = {
    400: {"model": ErrorResponse, "description": "malformed JSON"},
    413: {"model": ErrorResponse, "description": "body or batch over the configured limit"},
    422: {"model": ErrorResponse, "description": "wrong shape, type or non-finite values"},
    503: {"model": ErrorResponse, "description": "no champion model loaded yet"},
}


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


class BodySizeLimit:
    """Pure ASGI middleware: refuse bodies over ``max_bytes`` with 413 before anything parses them."""

    def __init__(self, app, max_bytes: int, on_reject) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_reject = on_reject

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                return await self._reject(scope, receive, send, int(length))
            return await self.app(scope, receive, send)
        # No length (chunked): read up to the limit here, then replay what was read.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await self._reject(scope, receive, send, size)
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _reject(self, scope, receive, send, size: int):
        self.on_reject(scope.get("path", ""))
        response = _error(413, f"request body is {size} bytes, over the limit",
                          f"at most {self.max_bytes} bytes; split the batch into smaller requests")
        await response(scope, receive, send)


def create_app(settings: GatewaySettings | None = None, metrics: GatewayMetrics | None = None) -> FastAPI:
    """A gateway app; models load in the lifespan startup (so ``/healthz`` answering means loading was tried)."""
    settings = settings or GatewaySettings()
    metrics = metrics or GatewayMetrics.create()
    holder: dict[str, Gateway] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        gateway = Gateway(settings, metrics)
        await run_in_threadpool(gateway.start)
        holder["gateway"] = gateway
        app.state.gateway = gateway
        try:
            yield
        finally:
            await run_in_threadpool(gateway.stop)

    app = FastAPI(
        title="nasops canary gateway",
        version="1",
        description="Serves the registered champion and challenger side by side (weighted, sticky split or "
        "shadow), validates every request against the model signature, logs predictions and joins labels.",
        lifespan=lifespan,
    )

    def count_invalid(reason: str) -> None:
        metrics.invalid.labels(reason).inc()
        metrics.requests.labels(settings.model_name, "none", "none", "invalid").inc()

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes,
                       on_reject=lambda path: count_invalid("body_size"))

    def gw() -> Gateway:
        return holder["gateway"]

    def contract_hint() -> str:
        champion = holder.get("gateway") and holder["gateway"].models.get("champion")
        if champion is None:
            return "see the OpenAPI schema at /docs"
        return expected_contract(champion.n_features, settings.max_batch)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if errors and errors[0].get("type") == "json_invalid":
            count_invalid("json")
            ctx = errors[0].get("ctx") or {}
            return _error(400, f"request body is not valid JSON ({ctx.get('error', 'decode error')})",
                          "a JSON object")
        reason, message = describe_validation_error(_as_validation(exc))
        if request.url.path == "/predict":
            count_invalid(reason)
            return _error(422, f"invalid request: {message}", contract_hint())
        return _error(422, f"invalid request: {message}", "see the OpenAPI schema at /docs")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return _error(exc.status_code, detail, _HTTP_HINTS.get(exc.status_code, "see the OpenAPI schema at /docs"))

    @app.exception_handler(RequestRejected)
    async def _rejected(request: Request, exc: RequestRejected):
        count_invalid(exc.reason)
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(NotReady)
    async def _not_ready(request: Request, exc: NotReady):
        return _error(503, f"no champion model is loaded: {exc}", "register a model version and set its alias "
                      f"{settings.champion_alias!r}; the gateway picks it up on the next poll or POST /admin/reload")

    @app.exception_handler(ChampionFailed)
    async def _champion_failed(request: Request, exc: ChampionFailed):
        return _error(500, str(exc), "a server-side failure; the champion model could not answer")

    # -- serving -----------------------------------------------------------------------------------------
    @app.post("/predict", response_model=PredictResponse, responses=ERRORS, tags=["serving"])
    async def predict(body: PredictRequest, request: Request) -> Response:
        """Predict class labels for a batch; the whole batch goes to one variant."""
        gateway = gw()
        model = gateway.contract()
        x = to_matrix(body, model.n_features, settings.max_batch, model.feature_names)
        key = request.headers.get(settings.sticky_header)
        answer = await gateway.predict(x, body.request_id, key)
        return Response(_encode(answer.to_json()), media_type="application/json")

    @app.post("/feedback", response_model=FeedbackResponse, tags=["serving"],
              responses={404: {"model": ErrorResponse, "description": "unknown request_id"},
                         422: {"model": ErrorResponse, "description": "label count does not match the batch"}})
    async def feedback(body: FeedbackItem | list[FeedbackItem]) -> Response:
        """Join true labels to logged predictions by request id (one object, or a list of them)."""
        items = body if isinstance(body, list) else [body]
        gateway = gw()
        await gateway.shadow_settled([item.request_id for item in items])
        unknown, rows, accepted = [], 0, 0
        for item in items:
            try:
                rows += await run_in_threadpool(gateway.feedback, item.request_id, item.all_labels())
                accepted += 1
            except KeyError:
                unknown.append(item.request_id)
            except ValueError as exc:
                return _error(422, str(exc), "one label per row of the original request, in row order")
        if unknown:
            return _error(404, f"unknown request_id(s): {', '.join(unknown[:10])}",
                          f"request ids returned by /predict ({accepted} other item(s) were applied)")
        return JSONResponse({"accepted": accepted, "rows": rows})

    # -- operations --------------------------------------------------------------------------------------
    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition (all worker processes merged in multiprocess mode)."""
        return Response(render_latest(metrics.registry), media_type=CONTENT_TYPE)

    @app.get("/healthz", response_model=HealthResponse, tags=["operations"])
    async def healthz() -> dict:
        """The process is up and answering."""
        return {"status": "ok", "instance": settings.instance_id}

    @app.get("/readyz", tags=["operations"], responses={503: {"model": ErrorResponse}})
    async def readyz() -> Response:
        """200 when the champion and the challenger (if its alias exists) are loaded."""
        gateway = gw()
        ready, why = gateway.ready()
        if not ready:
            return _error(503, f"not ready: {why}", "both aliases resolvable and loadable in the registry")
        return JSONResponse({"status": "ready", "versions": gateway.versions()})

    # -- admin -------------------------------------------------------------------------------------------
    def require_admin(request: Request) -> None:
        if not settings.admin_token:
            raise StarletteHTTPException(404, "the admin API is off (no admin token configured)")
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise StarletteHTTPException(401, "missing bearer token")
        if not hmac.compare_digest(token.encode(), settings.admin_token.encode()):
            raise StarletteHTTPException(403, "wrong admin token")

    admin = {"tags": ["admin"], "dependencies": [Depends(require_admin)],
             "responses": {401: {"model": ErrorResponse}, 403: {"model": ErrorResponse},
                           404: {"model": ErrorResponse, "description": "admin API off"}}}

    @app.get("/admin/state", **admin)
    async def admin_state() -> dict:
        """Mode, weight, loaded versions, load errors."""
        return gw().state()

    @app.post("/admin/weight", **admin)
    async def admin_weight(body: WeightRequest) -> dict:
        """Set the challenger's share of traffic (split mode)."""
        gw().set_weight(body.weight)
        return gw().state()

    @app.post("/admin/mode", **admin)
    async def admin_mode(body: ModeRequest) -> dict:
        """Switch between weighted split and shadow mode."""
        gw().set_mode(body.mode)
        return gw().state()

    @app.post("/admin/reload", **admin)
    async def admin_reload() -> dict:
        """Follow the aliases now (this worker immediately, the others within a fraction of a second)."""
        await run_in_threadpool(gw().request_reload)
        return gw().state()

    @app.post("/admin/drift", **admin)
    async def admin_drift(body: DriftRequest) -> dict:
        """Publish the drift step's share of drifted features as ``nasops_drift_share{variant}``."""
        variants = ["champion", "challenger"] if body.variant == "all" else [body.variant]
        for variant in variants:
            metrics.drift_share.labels(variant).set(body.share)
        return {"variants": variants, "share": body.share}

    return app


_HTTP_HINTS = {
    404: "see the OpenAPI schema at /docs for the routes",
    405: "see the OpenAPI schema at /docs for the methods of this route",
    401: "send the header 'Authorization: Bearer <admin token>'",
    403: "send the admin token the gateway was configured with",
}


def _as_validation(exc: RequestValidationError):
    """Adapter so :func:`describe_validation_error` reads FastAPI's error list (locations start with 'body')."""

    class _Errors:
        def errors(self):
            out = []
            for err in exc.errors():
                loc = tuple(err.get("loc", ()))
                if loc and loc[0] == "body":
                    loc = loc[1:]
                out.append({**err, "loc": loc})
            return out

    return _Errors()


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory serving.app:create_app_from_env`` (settings from NASOPS_GATEWAY_*)."""
    return create_app(GatewaySettings())
