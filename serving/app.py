"""The FastAPI application: HTTP in front of :class:`serving.gateway.Gateway`, assembled from routers by concern.

Every client mistake becomes a 4xx ``{"error", "detail"}`` JSON body (and is counted); only a failing champion or
a missing model answers 5xx. ``create_app_from_env`` is the factory uvicorn workers import.
"""

from __future__ import annotations

import gc
import sys
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from monitoring.metrics import GatewayMetrics
from serving.backend import ModelBackend
from serving.config import GatewaySettings
from serving.errors import count_invalid, install_error_handlers
from serving.gateway import Gateway
from serving.middleware import BearerGuard, BodySizeLimit
from serving.openapi import install_openapi
from serving.rate_limit import TokenBucket
from serving.routers import admin, feedback, operations, predict

DESCRIPTION = (
    "Serves the registered champion and challenger side by side (weighted, sticky split or shadow), validates "
    "every request against the model signature, logs predictions and joins labels."
)


@asynccontextmanager
async def _lifespan(app: FastAPI):
    """Load the models before the first request (so ``/healthz`` answering means loading was tried)."""
    gateway = Gateway(app.state.settings, app.state.metrics, app.state.backend)
    await run_in_threadpool(gateway.start)
    app.state.gateway = gateway
    if app.state.freeze_gc:
        # The ~10^6 objects of torch, MLflow and the loaded models are permanent: left to the collector, each full
        # collection scans them all (0.1-0.3 s on this machine), a stall of every request in flight.
        gc.freeze()
    try:
        yield
    finally:
        await run_in_threadpool(gateway.stop)


def create_app(settings: GatewaySettings | None = None, metrics: GatewayMetrics | None = None, *,
               backend: ModelBackend | None = None, freeze_gc: bool = False) -> FastAPI:
    """A gateway app; settings, metrics and the gateway live on ``app.state`` and reach the routes through
    ``Depends``. ``backend``: where models come from (default: the MLflow registry; tests pass a stand-in).
    ``freeze_gc``: once the models are loaded, move every object alive to the collector's permanent generation
    (``gc.freeze``; for a process that is the gateway's alone)."""
    settings = settings or GatewaySettings()
    otel = settings.opentelemetry
    app = FastAPI(title="nasops canary gateway", version="1", description=DESCRIPTION, lifespan=_lifespan,
                  telemetry={"tracing": otel, "metrics": otel, "logs": otel})
    app.state.settings = settings
    app.state.metrics = metrics or GatewayMetrics.create()
    app.state.gateway = None
    app.state.backend = backend
    app.state.freeze_gc = freeze_gc
    app.state.feedback_limiter = TokenBucket(settings.feedback_rate_per_s, settings.feedback_burst)

    app.add_middleware(BodySizeLimit, max_bytes=app.state.settings.max_body_bytes,
                       on_reject=lambda path: count_invalid(app, "body_size"))
    app.add_middleware(BearerGuard, tokens=lambda path: _guarded(app.state.settings, path))  # runs first
    install_error_handlers(app)
    for router in (predict.router, feedback.router, operations.router, admin.router):
        app.include_router(router)
    install_openapi(app)
    return app


def _guarded(settings: GatewaySettings, path: str) -> tuple[str | None, str] | None:
    """The token a path needs (checked before its body is read), or None for the open routes."""
    if path.startswith("/admin/"):
        return settings.admin_token, "admin"
    if path == "/feedback":
        return settings.feedback_token, "feedback"
    return None


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory serving.app:create_app_from_env`` (settings from NASOPS_GATEWAY_*, store
    defaults from the core settings, read here once).

    A worker process is the gateway's alone, so it also sets the interpreter's GIL switch interval and freezes the
    objects alive after loading out of the collector's reach (process-wide settings, left alone when the gateway
    runs in a thread of another program)."""
    settings = GatewaySettings()
    sys.setswitchinterval(settings.gil_switch_interval_s)
    return create_app(settings, freeze_gc=True)

