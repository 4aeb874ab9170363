"""``/admin/*``: routing weight and mode, reload, drift share, state; all behind the admin bearer token.

Weight and mode are an operator's *manual rollout* in the rollout record (:mod:`serving.manual_rollout`), so every
worker and replica follows them; they are refused (409) while a controller's rollout steers the split."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from monitoring.vocabulary import VARIANTS
from serving.deps import GatewayDep, MetricsDep, SettingsDep, require_admin
from serving.errors import documented
from serving.schemas import DriftRequest, ModeRequest, WeightRequest

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)],
                   responses=documented(401, 403, 404, d404="admin API off"))
WITH_BODY = documented(400, 413, 415, 422)
STEERING = documented(400, 409, 413, 415, 422, d409="a controller's rollout steers the split (use the canary "
                      "commands)")


@router.get("/state")
async def admin_state(gateway: GatewayDep) -> dict:
    """Mode, weight, loaded versions, load errors."""
    return gateway.state()


@router.post("/weight", responses=STEERING)
async def admin_weight(body: WeightRequest, gateway: GatewayDep) -> dict:
    """Set the challenger's share of traffic (split mode) as a manual rollout; weight 0 in split mode ends it."""
    await run_in_threadpool(gateway.set_weight, body.weight)
    return gateway.state()


@router.post("/mode", responses=STEERING)
async def admin_mode(body: ModeRequest, gateway: GatewayDep) -> dict:
    """Switch between weighted split and shadow mode (a manual rollout, like ``/admin/weight``)."""
    await run_in_threadpool(gateway.set_mode, body.mode)
    return gateway.state()


@router.post("/reload", responses=documented(413))
async def admin_reload(gateway: GatewayDep) -> dict:
    """Follow the aliases now (this worker immediately, the others within a fraction of a second)."""
    await run_in_threadpool(gateway.request_reload)
    return gateway.state()


@router.post("/drift", responses=WITH_BODY)
async def admin_drift(body: DriftRequest, metrics: MetricsDep, settings: SettingsDep) -> dict:
    """Publish the drift step's share of drifted features as ``nasops_drift_share{model, variant}``."""
    variants = list(VARIANTS) if body.variant == "all" else [body.variant]
    for variant in variants:
        metrics.drift_share.labels(settings.model_name, variant).set(body.share)
    return {"variants": variants, "share": body.share}
