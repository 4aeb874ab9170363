"""``nasops canary start|status|pause|resume|promote|abort|controller``: a rollout on a running gateway, steered
as Argo Rollouts users steer theirs. Every command reads or writes the rollout record in the prediction-log
database that the gateway follows; ``start`` and ``controller`` serve the controller as a Prefect deployment."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from monitoring.core.enums import Actor, Decision
from pipelines.cli.output import make_console, print_json
from pipelines.errors import UserError
from pipelines.gateway_admin import gateway_ready, rollout_target, wait_follows
from pipelines.settings import Settings

console = make_console()

GATEWAY_HELP = "gateway base URL the rollout steers (default $NASOPS_GATEWAY_URL)"
LOG_HELP = "the rollout store: the gateway's prediction-log database URL (default: the state dir's SQLite file)"


def _store(prediction_log_url: str | None) -> tuple[Any, str]:
    from monitoring.rollout_store import RolloutStore
    from pipelines.store_checks import check_prediction_log

    url = prediction_log_url or Settings().prediction_log_url
    check_prediction_log(url)  # a malformed or dead store: one line naming the fix, before SQLAlchemy raises
    try:
        return RolloutStore(url), url
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _tracking() -> str:
    import mlflow

    from pipelines.tracking import ensure_tracking

    ensure_tracking()
    return mlflow.get_tracking_uri()


def _gateway_url(gateway: str | None) -> str:
    import os

    url = gateway or os.environ.get("NASOPS_GATEWAY_URL")
    if not url:
        raise UserError("no gateway to steer: pass --gateway URL (the running `nasops serve` or Kubernetes "
                        "service) or set NASOPS_GATEWAY_URL")
    if not url.startswith(("http://", "https://")):
        raise UserError(f"--gateway must be an http(s) URL, got {url!r}")
    return url.rstrip("/")


def start(
    gateway: str | None = typer.Option(None, "--gateway", help=GATEWAY_HELP),
    model_name: str | None = typer.Option(None, help="registered model name (default $NASOPS_MODEL_NAME)"),
    config_file: Path | None = typer.Option(None, "--config", help="YAML file of canary options (docs/canary.md)"),
    steps: str | None = typer.Option(None, help="challenger traffic shares, e.g. 0.05,0.25,0.5,1"),
    interval_s: float | None = typer.Option(None, "--interval-s", help="seconds between two judged looks"),
    canary_profile: str | None = typer.Option(None, "--canary-profile", help="whose defaults fill the keys not "
                                              "given: production (default: minutes) or demo (seconds)"),
    data: Path | None = typer.Option(None, help="prepared data (.npz) as the drift reference (default: the "
                                      "one registered with the challenger)"),
    prediction_log_url: str | None = typer.Option(None, "--prediction-log-url", help=LOG_HELP),
    detach: bool = typer.Option(False, "--detach", help="create the rollout and return; serve its controller with "
                                "`nasops canary controller`"),
    as_json: bool = typer.Option(False, "--json", help="print the rollout as JSON"),
) -> None:
    """Start a rollout of @challenger on a running gateway and serve its controller (a Prefect deployment)."""
    from pipelines.cli.canary import canary_options
    from pipelines.control.commands import abort
    from pipelines.control.config import for_gateway, parse_config
    from pipelines.control.controller import start_rollout

    url = _gateway_url(gateway)
    cfg = for_gateway(parse_config(canary_options(config_file, steps=steps, interval_s=interval_s,
                                                  profile=canary_profile)))
    if data is not None and not data.is_file():
        raise UserError(f"--data {str(data)!r} does not exist")
    target = rollout_target(gateway_ready(url) or {}, url)
    store, log_url = _store(prediction_log_url)
    tracking_uri = _tracking()
    name = model_name or Settings().model_name
    rollout = start_rollout(store, name, cfg, gateway_url=url, data_path=str(data) if data else None,
                            reference=_reference(data, cfg), target=target)
    try:
        wait_follows(url, rollout.rollout_id)
    except UserError:
        abort(store, name, actor=Actor.OPERATOR)
        raise
    if as_json:
        print_json(rollout.to_dict())
    else:
        console.print(f"rollout [bold]{rollout.rollout_id}[/]: {name} v{rollout.challenger_version} against "
                      f"champion v{rollout.champion_version} on {url}; first step {rollout.mode} "
                      f"{rollout.weight:.0%}")
    if detach:
        return
    _serve(store, rollout.rollout_id, log_url, tracking_uri)


def _reference(data: Path | None, cfg: Any) -> Any:
    """The drift reference from ``--data`` (the one place this command loads training data; without it the
    challenger's registered reference is used)."""
    if data is None:
        return None
    from pipelines.canary.reference import drift_reference
    from pipelines.prepared import load_prepared

    return drift_reference(load_prepared(str(data)), cfg.reference_rows, cfg.seed)


def controller(
    model_name: str | None = typer.Option(None, help="registered model name (default $NASOPS_MODEL_NAME)"),
    prediction_log_url: str | None = typer.Option(None, "--prediction-log-url", help=LOG_HELP),
    forever: bool = typer.Option(False, "--forever", help="keep running: serve each rollout of the model as it "
                                 "starts (a long-lived controller, e.g. a Kubernetes Deployment)"),
    wait_s: float = typer.Option(30.0, "--wait-s", min=0.01, help="with --forever: seconds between two looks for "
                                 "the model's next rollout"),
) -> None:
    """Serve the controller of the model's active rollout (after `start --detach`, or to restart a killed one)."""
    from pipelines.control.commands import active_rollout, refuse_manual

    store, log_url = _store(prediction_log_url)
    name = model_name or Settings().model_name
    tracking_uri = _tracking()
    if forever:
        serve_forever(store, name, log_url, tracking_uri, wait_s)
        return
    rollout = active_rollout(store, name)
    refuse_manual(rollout, "serve a controller for")
    _serve(store, rollout.rollout_id, log_url, tracking_uri)


def serve_forever(store: Any, model_name: str, log_url: str, tracking_uri: str, wait_s: float) -> None:
    """Serve every judged rollout of ``model_name`` as it starts, and wait for the next one between them: a
    controller that exits with nothing to do would be restarted in a loop by a Kubernetes Deployment."""
    import time

    console.print(f"controller of {model_name}: serving each rollout as it starts (looking every {wait_s:g} s)")
    while True:
        rollout = store.active(model_name)
        if rollout is not None and not rollout.manual:
            _serve(store, rollout.rollout_id, log_url, tracking_uri)
            continue
        time.sleep(wait_s)


def _serve(store: Any, rollout_id: str, log_url: str, tracking_uri: str) -> None:
    from pipelines.control.deployment import refuse_second_controller, serve_controller

    rollout = store.get(rollout_id)
    refuse_second_controller(rollout, log_url)
    last: dict[str, Any] = {"generation": rollout.generation}

    def on_poll(current: Any) -> None:
        if current.generation != last["generation"]:
            last["generation"] = current.generation
            console.print(f"  {current.phase} {current.weight:.0%}, {current.intervals} interval(s) judged"
                          + (f": {current.decision} — {current.reason}" if current.decision else ""))

    serve_controller(store, rollout_id, prediction_log_url=log_url, tracking_uri=tracking_uri, on_poll=on_poll,
                     announce=console.print)
    final = store.get(rollout_id)
    if final is not None and final.decision:
        colour = "green" if final.decision == Decision.PROMOTED else "red"
        console.print(f"[bold {colour}]{final.decision}[/]: {final.reason}")


def status(
    model_name: str | None = typer.Option(None, help="registered model name (default $NASOPS_MODEL_NAME)"),
    prediction_log_url: str | None = typer.Option(None, "--prediction-log-url", help=LOG_HELP),
    watch: bool = typer.Option(False, "--watch", help="refresh every 2 s until the rollout is decided"),
    as_json: bool = typer.Option(False, "--json", help="print the rollout record and its history as JSON"),
) -> None:
    """Phase, weight, time in step, samples and label coverage per variant, the last verdict and its evidence."""
    from pipelines.cli.canary import why
    from pipelines.cli.db import missing_sqlite

    settings = Settings()
    name = model_name or settings.model_name
    url = prediction_log_url or settings.prediction_log_url_uncreated  # a reader creates no state dir, no file
    missing = missing_sqlite(url, settings)
    if missing is not None:
        raise UserError(f"no rollout of {name!r} here yet: no rollout store at {missing}; start one with `nasops "
                        "canary start` (or check --prediction-log-url / NASOPS_HOME)")
    store, _ = _store(url)
    while True:
        rollout = store.latest(name)
        if rollout is None:
            raise UserError(f"no rollout of {name!r} in this rollout store; start one with `nasops canary start` "
                            "(or check --prediction-log-url)")
        if as_json:
            print_json({**rollout.to_dict(), "manual": rollout.manual, "why": why(rollout),
                        "events": store.events(rollout.rollout_id)})
        else:
            print_status(rollout, decided_at(rollout, store.events(rollout.rollout_id)) if rollout.terminal
                         else None)
        if not watch or rollout.terminal:
            return
        time.sleep(2.0)


AFTER_DECISION = ("applied",)
"""Event kinds written after a rollout is decided (the registry catching up): they do not move its decision time."""


def decided_at(rollout: Any, events: list[dict[str, Any]]) -> float:
    """When a terminal rollout was decided: its last event before the registry was brought in line (the record's
    ``updated_at`` moves again when the decision is applied)."""
    times = [e["at"] for e in events if e["kind"] not in AFTER_DECISION]
    return max(times) if times else rollout.updated_at


def step_clock(rollout: Any, decided: float | None, now: float) -> str:
    """Time in the current step; after a decision, the step's time until the decision and when it was taken (issue
    24: a decided rollout went on counting time in step 1)."""
    from datetime import UTC, datetime

    steps = (rollout.config or {}).get("steps") or []
    step = min(rollout.step_index, len(steps) - 1) + 1 if steps else rollout.step_index + 1  # a promotion ends past
    if decided is None:
        return f"{now - rollout.step_started_at:.0f} s in step {step}"
    stamp = datetime.fromtimestamp(decided, UTC).isoformat(timespec="seconds")
    return f"decided at {stamp} after {max(0.0, decided - rollout.step_started_at):.0f} s in step {step}"


def print_status(rollout: Any, decided: float | None = None) -> None:
    """The rollout as a person reads it; ``decided``: when a terminal rollout was decided (:func:`decided_at`)."""
    from monitoring.cbpe import beside_realised
    from pipelines.cli.canary import evidence_table, print_decision

    now = time.time()
    if rollout.terminal and decided is None:
        decided = rollout.updated_at
    if rollout.manual:
        console.print(f"[bold]rollout {rollout.rollout_id}[/] {rollout.model_name} (target {rollout.target}): "
                      "[bold]manual[/] split set through "
                      f"the gateway's admin API (no controller judges it): phase [bold]{rollout.phase}[/], "
                      f"{rollout.mode} weight {rollout.weight:.0%}, challenger v{rollout.challenger_version}"
                      + (f"; ended by {rollout.decided_by}: {rollout.reason}" if rollout.decision else ""))
        return
    console.print(f"[bold]rollout {rollout.rollout_id}[/] {rollout.model_name}: challenger "
                  f"v{rollout.challenger_version} vs champion v{rollout.champion_version}, steering the "
                  f"{rollout.target!r} gateways")
    console.print(f"phase [bold]{rollout.phase}[/], {rollout.mode} weight {rollout.weight:.0%}, "
                  f"{step_clock(rollout, decided, now)}, "
                  f"{rollout.intervals} interval(s) judged, {rollout.failures} failed")
    verdict = rollout.last_verdict or {}
    estimates = beside_realised(verdict.get("evidence") or [])  # label-free accuracy beside the realised one
    for variant, cov in (verdict.get("coverage") or {}).items():
        share = cov.get("coverage")
        console.print(f"  {variant}: {cov.get('rows', 0)} rows, {cov.get('eligible', 0)} old enough for a label, "
                      f"label coverage {'–' if share is None else f'{share:.0%}'}"
                      + (f"; {estimates[variant]}" if variant in estimates else ""))
    if verdict:
        console.print(evidence_table({"verdict": verdict.get("verdict"), "score": verdict.get("score", 0.0),
                                      "evidence": verdict.get("evidence", [])}))
    if rollout.decision:
        print_decision(rollout)


def _command(verb: str):
    def command(
        model_name: str | None = typer.Option(None, help="registered model name (default $NASOPS_MODEL_NAME)"),
        prediction_log_url: str | None = typer.Option(None, "--prediction-log-url", help=LOG_HELP),
    ) -> None:
        from pipelines.control import commands as ctl

        store, _ = _store(prediction_log_url)
        name = model_name or Settings().model_name
        action = {"pause": ctl.pause, "resume": ctl.resume, "promote": ctl.promote_now, "abort": ctl.abort}[verb]
        _tracking()  # every command is recorded on the challenger's version too
        rollout = action(store, name)
        console.print(f"rollout {rollout.rollout_id}: {rollout.phase}, {rollout.mode} weight {rollout.weight:.0%}"
                      + (f" — {rollout.reason}" if rollout.decision else ""))

    command.__doc__ = {
        "pause": "Hold the current step (its weight stays) until `resume`.",
        "resume": "Continue a paused rollout; the current interval starts again.",
        "promote": "Skip the remaining steps and promote now (recorded as a manual decision).",
        "abort": "Roll back now: every gateway stops sending the challenger traffic within one poll.",
    }[verb]
    return command


def register(canary_app: typer.Typer) -> None:
    canary_app.command("start")(start)
    canary_app.command("status")(status)
    for verb in ("pause", "resume", "promote", "abort"):
        canary_app.command(verb)(_command(verb))
    canary_app.command("controller")(controller)
