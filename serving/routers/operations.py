"""``/healthz``, ``/readyz``, ``/metrics``: what orchestrators and Prometheus ask."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from monitoring.metrics import CONTENT_TYPE, render_latest
from monitoring.vocabulary import CHALLENGER, CHAMPION
from serving.deps import GatewayDep, MetricsDep, SettingsDep
from serving.errors import documented, error_response
from serving.schemas import HealthResponse

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response)
async def prometheus_metrics(metrics: MetricsDep) -> Response:
    """Prometheus text exposition (all worker processes merged in multiprocess mode)."""
    return Response(render_latest(metrics.registry), media_type=CONTENT_TYPE)


@router.get("/healthz", response_model=HealthResponse)
async def healthz(settings: SettingsDep) -> dict:
    """The process is up and answering."""
    return {"status": "ok", "instance": settings.instance_id}


@router.get("/readyz", responses=documented(503))
async def readyz(gateway: GatewayDep) -> Response:
    """200 when the champion and the challenger (if its alias exists) are loaded; names the rollout this worker
    follows (so a controller can check that the gateway reads the same rollout store)."""
    ready, _ = gateway.ready()
    if not ready:  # the reason (exception text) stays server-side: logged, and in GET /admin/state
        missing = CHAMPION if gateway.models[CHAMPION] is None else CHALLENGER
        return error_response(503, f"not ready: the {missing} model is not loaded",
                              "the gateway log and GET /admin/state (admin token) say why; the alias must point at "
                              "a loadable version in the registry")
    followed = gateway.rollouts.describe() if gateway.rollouts is not None else None
    rollout = {k: followed[k] for k in ("rollout_id", "generation", "phase")} if followed else None
    return JSONResponse({"status": "ready", "versions": gateway.versions(), "rollout": rollout,
                         "rollout_target": gateway.settings.rollout_target})
