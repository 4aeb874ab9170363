"""The controller as Prefect sees it: the flow ``canary_reconcile`` (one reconcile step) and its deployment on an
interval schedule, served by a runner that stops once the rollout is decided, or run by a work pool's workers.

On a work pool nothing stops a worker from starting the next scheduled run while the last one still reads its
window, and nothing stops the schedule after the decision (issue 25, finding 4: 3-4 reconcile processes at once,
compare-and-set conflicts, then a new process every interval until paused by hand). So the pool deployment
allows one run at a time and cancels a new one that collides (:func:`one_at_a_time`), and the flow run that finds
its rollout decided and applied pauses its own deployment (:func:`stop_own_schedule`), which deletes the runs
already scheduled.

The flow takes only the rollout id and where the record lives: all state is in the record, so any run of it, on any
machine, after any crash, does the right next step. Missed runs are not replayed: when a controller comes back after
being killed, the scheduled runs that fell due while it was down are deleted, and the next run judges the whole
elapsed interval once (the record says which intervals were judged). One controller serves a rollout at a time
(:func:`controller_lock`): a second one is refused in one line naming the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from monitoring.rollout_store import Rollout, RolloutStore
from pipelines.control.config import CanaryConfig
from pipelines.control.controller import reconcile
from pipelines.errors import UserError

log = logging.getLogger("nasops.canary")

FLOW_NAME = "canary_reconcile"


@flow(name=FLOW_NAME, log_prints=True, retries=0)
def canary_reconcile(rollout_id: str, prediction_log_url: str | None = None,
                     tracking_uri: str | None = None) -> dict:
    """One reconcile step of a rollout: judge the interval if it is over, advance / hold / roll back / promote."""
    import mlflow

    from pipelines.settings import Settings
    from pipelines.tracking import ensure_tracking

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    else:
        ensure_tracking()
    store = RolloutStore(prediction_log_url or Settings().prediction_log_url)
    report = reconcile(store, rollout_id)
    with contextlib.suppress(Exception):  # outside a flow run there is no run logger
        get_run_logger().info("rollout %s: %s (%s, weight %.2f, %d interval(s) judged)", rollout_id, report.action,
                              report.phase, report.weight, report.intervals)
    final = store.get(rollout_id)
    if final is None or final.manual or (final.terminal and final.applied):
        stopped = stop_own_schedule()
        with contextlib.suppress(Exception):
            if stopped:
                get_run_logger().info("rollout %s is over: paused deployment %s (no more scheduled runs)",
                                      rollout_id, stopped)
    return report.to_dict()


def stop_own_schedule() -> str | None:
    """Pause the deployment this flow run was started from (Prefect deletes its scheduled runs as it pauses);
    returns its id, None outside a deployment. The runs of a decided rollout have nothing left to do."""
    from prefect import get_client
    from prefect.runtime import deployment

    deployment_id = deployment.id
    if not deployment_id:
        return None
    with get_client(sync_client=True) as client:
        client.pause_deployment(deployment_id)
    return str(deployment_id)


def one_at_a_time() -> Any:
    """The deployment concurrency of a controller on a work pool: one reconcile run at a time, and a run that
    becomes due while one is still running is cancelled (not queued: the next one judges the longer window).
    A worker killed mid-run holds its slot until Prefect's lease expires (300 s by default): one look is missed."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    return ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)


def deployment_name(model_name: str) -> str:
    return f"rollout-{model_name}"


def controller_deployment(rollout_id: str, model_name: str, interval_s: float, *, prediction_log_url: str,
                          tracking_uri: str) -> Any:
    """The Prefect deployment of ``canary_reconcile`` for one rollout, on an interval schedule."""
    from prefect.deployments.runner import EntrypointType

    return canary_reconcile.to_deployment(
        name=deployment_name(model_name), interval=timedelta(seconds=interval_s),
        parameters={"rollout_id": rollout_id, "prediction_log_url": prediction_log_url,
                    "tracking_uri": tracking_uri},
        description=f"nasops canary controller of rollout {rollout_id} ({model_name})", tags=["nasops", "canary"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


async def _drop_missed_runs(deployment_id: Any) -> int:
    """Delete the scheduled runs of the deployment that fell due while no controller ran (caught up by one run)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    async with get_client() as client:
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
                expected_start_time=FlowRunFilterExpectedStartTime(before_=datetime.now(UTC)),
            ),
        )
        for run in runs:
            await client.delete_flow_run(run.id)
        return len(runs)


def prefect_api_url() -> str | None:
    """The Prefect API this process would report to (environment, then profile), read now; None: no server."""
    from prefect.settings import Settings as PrefectSettings

    return PrefectSettings().api.url or None


def check_prefect(url: str, timeout_s: float = 5.0) -> None:
    """Refuse in one line when the configured Prefect server does not answer: a runner would otherwise wait on
    it silently while the challenger keeps its traffic share unjudged."""
    import httpx

    try:
        answer = httpx.get(f"{url.rstrip('/')}/health", timeout=timeout_s)
        answer.raise_for_status()
    except (httpx.HTTPError, ValueError) as exc:
        raise UserError(f"the Prefect server at PREFECT_API_URL={url} does not answer ({type(exc).__name__}); start "
                        "it (`prefect server start`), or unset PREFECT_API_URL to run the controller in this "
                        "process") from None


def serve_controller(store: RolloutStore, rollout_id: str, *, prediction_log_url: str, tracking_uri: str,
                     poll_s: float = 1.0, on_poll: Any = None, announce: Any = None) -> None:
    """Serve the rollout's controller here until the rollout is decided and applied (or SIGTERM): as a Prefect
    deployment when a Prefect server is configured (it must answer), else as a plain reconcile loop in this
    process (no temporary Prefect server that could outlive it). ``announce(sentence)`` says which."""
    rollout = store.get(rollout_id)
    if rollout is None:
        raise UserError(f"no rollout {rollout_id!r}")
    from pipelines.control.commands import refuse_manual

    refuse_manual(rollout, "serve a controller for")
    cfg = CanaryConfig.model_validate(rollout.config)
    api = prefect_api_url()
    if api is not None:
        check_prefect(api)
    with controller_lock(rollout, lock_dir(prediction_log_url)):
        if api is None:
            if announce is not None:
                announce(f"no Prefect server configured (PREFECT_API_URL): reconciling in this process every "
                         f"{cfg.interval_s:g} s; it stops when the rollout is decided")
            reconcile_here(store, rollout_id, tracking_uri=tracking_uri, interval_s=cfg.interval_s, poll_s=poll_s,
                           on_poll=on_poll)
            return
        if announce is not None:
            announce(f"serving the controller deployment {FLOW_NAME}/{deployment_name(rollout.model_name)} every "
                     f"{cfg.interval_s:g} s on {api}; it stops when the rollout is decided")
        deployment = controller_deployment(rollout_id, rollout.model_name, cfg.interval_s,
                                           prediction_log_url=prediction_log_url, tracking_uri=tracking_uri)
        asyncio.run(_serve(deployment, store, rollout_id, poll_s, on_poll))


def reconcile_here(store: RolloutStore, rollout_id: str, *, tracking_uri: str, interval_s: float,
                   poll_s: float = 1.0, on_poll: Any = None) -> None:
    """The controller without Prefect: the same reconcile step as the deployment's flow, called in this process
    when the interval is due, until the rollout is decided and applied."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    while True:
        rollout = store.get(rollout_id)
        if rollout is None or (rollout.terminal and rollout.applied):
            return
        report = reconcile(store, rollout_id, client=client)
        if on_poll is not None:
            on_poll(store.get(rollout_id) or rollout)
        due = report.next_due_s if report.next_due_s is not None else interval_s
        time.sleep(max(0.05, min(poll_s, interval_s, due)))


def lock_dir(prediction_log_url: str) -> Path:
    """Where a rollout's controller lock lives: beside a SQLite rollout store (whoever shares the file shares the
    lock), else in the state directory."""
    if prediction_log_url.startswith("sqlite:///"):
        return Path(prediction_log_url[len("sqlite:///"):]).expanduser().resolve().parent
    from pipelines.settings import Settings

    return Settings().state_dir


def refuse_second_controller(rollout: Rollout, prediction_log_url: str) -> None:
    """Refuse now, in one line, when another controller serves the rollout (before a command prints anything; the
    lock :func:`serve_controller` takes still decides a race)."""
    with controller_lock(rollout, lock_dir(prediction_log_url)):
        pass


def controller_lock(rollout: Rollout, directory: Path) -> contextlib.AbstractContextManager[None]:
    """One controller per rollout: an exclusive lock on ``controller-<rollout id>.lock`` (:mod:`pipelines.locks`),
    held while it serves. A second controller is refused in one line naming the first (pid, host and start)."""
    from pipelines.locks import exclusive

    return exclusive(directory / f"controller-{rollout.rollout_id}.lock", lambda holder: (
        f"a controller of rollout {rollout.rollout_id} ({rollout.model_name}) is already running ({holder}); "
        "follow it with `nasops canary status`, or stop it before starting another (one controller per rollout)"))


class _AtCapacityFilter(logging.Filter):
    """Drops the runner's "N scheduled runs skipped (at capacity)" line: with ``limit=1`` and a prefetch window
    the next scheduled run is always "skipped" while one runs, so the line came every poll (every second)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "(at capacity)" not in record.getMessage()


def quiet_runner_capacity_log() -> None:
    """Install :class:`_AtCapacityFilter` on Prefect's runner logger once."""
    runner_log = logging.getLogger("prefect.runner")
    if not any(isinstance(f, _AtCapacityFilter) for f in runner_log.filters):
        runner_log.addFilter(_AtCapacityFilter())


async def _serve(deployment: Any, store: RolloutStore, rollout_id: str, poll_s: float, on_poll: Any) -> None:
    from prefect.runner import Runner

    quiet_runner_capacity_log()
    runner = Runner(name=f"nasops-canary-{rollout_id[:12]}", query_seconds=poll_s, limit=1, pause_on_shutdown=True)
    deployment_id = await runner.aadd_deployment(deployment)
    dropped = await _drop_missed_runs(deployment_id)
    if dropped:
        log.info("dropped %d reconcile run(s) missed while no controller ran", dropped)

    async def watch() -> None:
        while True:
            await asyncio.sleep(poll_s)
            rollout = store.get(rollout_id)
            if on_poll is not None and rollout is not None:
                on_poll(rollout)
            if rollout is None or (rollout.terminal and rollout.applied):
                with contextlib.suppress(RuntimeError):  # not started yet: stopping is a no-op
                    await runner.astop()
                return

    watcher = asyncio.create_task(watch())
    started = time.monotonic()
    try:
        await runner.start()
    finally:
        watcher.cancel()
        log.info("controller of rollout %s stopped after %.0f s", rollout_id, time.monotonic() - started)
