"""The refresh's canary against a gateway that real callers use: start the rollout there, and return.

Instead of simulating traffic, the refresh creates the rollout record on the configured gateway (``--gateway URL``
or ``NASOPS_GATEWAY_URL``), checks that the gateway follows it (it reads the same prediction-log database), and
hands the rollout to its controller: a Prefect deployment run by a worker of ``controller_work_pool`` when one is
configured, else ``nasops canary controller`` (which the result names). The decision comes hours later, from real
traffic; ``nasops canary status`` follows it.
"""

from __future__ import annotations

from pathlib import Path

from monitoring.core.enums import Actor
from monitoring.rollout_store import RolloutStore
from pipelines.contracts import HandoverOutput
from pipelines.control.commands import abort
from pipelines.control.config import CanaryConfig, for_gateway
from pipelines.control.controller import start_rollout
from pipelines.errors import UserError
from pipelines.gateway_admin import rollout_target, wait_follows, wait_ready
from pipelines.settings import Settings


def hand_over(model_name: str, data_path: str, cfg: CanaryConfig, gateway_url: str, *,
              work_pool: str | None = None, prediction_log_url: str | None = None,
              admin_token: str | None = None) -> HandoverOutput:
    """Start the rollout of ``@challenger`` on ``gateway_url``; with the production canary defaults
    (:func:`~pipelines.control.config.for_gateway`); returns the canary stage's (undecided) result.

    The gateway must be ready: it has loaded the champion and the challenger this refresh registered (on the first
    refresh of a fresh stack, the champion too), which it does within one alias poll, or at once when the admin
    token (``admin_token``, else ``NASOPS_GATEWAY_ADMIN_TOKEN``) lets the hand-over ask it to reload."""
    import os

    import mlflow

    cfg = for_gateway(cfg)  # a demo-sized policy is refused before the gateway is touched
    url = gateway_url.rstrip("/")
    ready = wait_ready(url, admin_token=admin_token or os.environ.get("NASOPS_GATEWAY_ADMIN_TOKEN"))
    log_url = prediction_log_url or Settings().prediction_log_url
    store = RolloutStore(log_url)
    # the drift reference is the one registration logged with the challenger: data_path is lineage only
    rollout = start_rollout(store, model_name, cfg, gateway_url=url, data_path=data_path or None,
                            actor=Actor.REFRESH, target=rollout_target(ready, url))
    try:
        wait_follows(url, rollout.rollout_id)
    except UserError:
        abort(store, model_name, actor=Actor.REFRESH)
        raise
    tracking_uri = mlflow.get_tracking_uri()
    if work_pool:
        deploy_to_pool(rollout.rollout_id, model_name, cfg.interval_s, work_pool, prediction_log_url=log_url,
                       tracking_uri=tracking_uri)
        controller = f"a worker of Prefect work pool {work_pool!r} runs its controller deployment"
    else:
        controller = "serve its controller with `nasops canary controller` (or pass --controller-work-pool)"
    return HandoverOutput(
        rollout_id=rollout.rollout_id, gateway_url=url, model_name=model_name,
        champion_version=rollout.champion_version, challenger_version=rollout.challenger_version,
        first_step={"mode": rollout.mode, "weight": rollout.weight},
        reason=f"rollout {rollout.rollout_id} started on {url}; {controller}; follow it with "
               "`nasops canary status --watch`",
        canary_run_id=rollout.run_id,
    )


def deploy_to_pool(rollout_id: str, model_name: str, interval_s: float, work_pool: str, *,
                   prediction_log_url: str, tracking_uri: str) -> str:
    """Register the controller deployment on a process work pool (its workers import nasops from this checkout or
    installation): one run at a time, and a run that finds the rollout decided pauses it
    (:mod:`pipelines.control.deployment`); returns the deployment id."""
    from datetime import timedelta

    from pipelines.control.deployment import canary_reconcile, deployment_name, one_at_a_time

    root = Path(__file__).resolve().parents[2]
    flow = canary_reconcile.from_source(source=str(root), entrypoint="pipelines/control/deployment.py:canary_reconcile")
    deployment_id = flow.deploy(
        name=deployment_name(model_name), work_pool_name=work_pool, interval=timedelta(seconds=interval_s),
        parameters={"rollout_id": rollout_id, "prediction_log_url": prediction_log_url, "tracking_uri": tracking_uri},
        tags=["nasops", "canary"], print_next_steps=False, concurrency_limit=one_at_a_time(),
    )
    return str(deployment_id)

