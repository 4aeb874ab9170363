"""``nasops serve`` (the canary gateway alone, against the registry) and ``nasops replay`` (traffic to a gateway)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from pipelines.cli.output import make_console, print_json
from pipelines.errors import UserError
from pipelines.settings import Settings

console = make_console(stderr=True)


def gateway_settings(settings: Settings, **overrides):
    """:class:`serving.config.GatewaySettings` following the nasops settings (NASOPS_GATEWAY_* env still wins for
    anything not overridden here)."""
    from pydantic import ValidationError

    from serving.config import GatewaySettings

    values = {"tracking_uri": settings.tracking_uri, "model_name": settings.model_name,
              "prediction_log_url": settings.prediction_log_url}
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return GatewaySettings(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UserError(f"invalid gateway option: {problems}") from None


def serve(
    host: str = typer.Option("127.0.0.1", help="interface to bind (0.0.0.0 exposes it to the network)"),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port"),
    workers: int = typer.Option(1, min=1, help="uvicorn worker processes (metrics merged in multiprocess mode)"),
    model_name: str | None = typer.Option(None, "--model-name", help="registered model to serve (default "
                                          "$NASOPS_MODEL_NAME, else nasops-classifier)"),
    weight: float = typer.Option(None, help="challenger share of traffic in split mode, 0-1 (default 0: the "
                                 "champion serves everything until a rollout or /admin/weight says otherwise)"),
    mode: str = typer.Option(None, help="split or shadow (default split)"),
    poll_interval: float = typer.Option(None, "--poll-interval-s", help="seconds between alias polls (0: off; "
                                        "default 10)"),
    challenger_timeout: float = typer.Option(None, "--challenger-timeout-s",
                                             help="seconds before a challenger answer falls back"),
    admin_token_file: Path = typer.Option(
        None, envvar="NASOPS_GATEWAY_ADMIN_TOKEN_FILE", help="file holding the admin API's bearer token, at least 32 "
        "random bytes (or set NASOPS_GATEWAY_ADMIN_TOKEN; default: admin off)"),
    feedback_token_file: Path = typer.Option(
        None, envvar="NASOPS_GATEWAY_FEEDBACK_TOKEN_FILE", help="file holding the bearer token /feedback requires, "
        "at least 32 random bytes, not the admin token (or set NASOPS_GATEWAY_FEEDBACK_TOKEN; default: labels off)"),
    log_mode: str = typer.Option(None, help="prediction log: batched (default) or sync (durable before answering)"),
    unknown_columns: str = typer.Option(None, help="a named column the model never saw: ignore (default; answered "
                                        "and counted) or reject (422); columns dropped at training are always "
                                        "ignored"),
) -> None:
    """Serve champion and challenger from the registry (the canary gateway) until interrupted."""
    from serving.server import serve_forever

    if mode is not None and mode not in ("split", "shadow"):
        raise UserError(f"--mode must be 'split' or 'shadow', got {mode!r}")
    settings = Settings()
    gw = gateway_settings(settings, model_name=model_name, challenger_weight=weight, mode=mode,
                          poll_interval_s=poll_interval,
                          challenger_timeout_s=challenger_timeout, log_mode=log_mode,
                          unknown_columns=unknown_columns,
                          admin_token_file=str(admin_token_file) if admin_token_file else None,
                          feedback_token_file=str(feedback_token_file) if feedback_token_file else None)
    champion = _preflight(gw)
    if champion is None:
        console.print(f"[yellow]warning:[/] model {gw.model_name!r} has no alias {gw.champion_alias!r} yet: the "
                      "gateway starts unready and picks it up when it appears (run `nasops refresh` first)")
    console.print(f"gateway on http://{host}:{port}  (champion v{champion}, mode {gw.mode}, weight "
                  f"{gw.challenger_weight}, admin {'on' if gw.admin_token else 'off'}, feedback "
                  f"{'on' if gw.feedback_token else 'off'}, log {gw.log_mode}, workers {workers})")
    from pipelines import supervisor

    # SIGTERM: uvicorn drains (serving.server.SHUTDOWN_DRAIN_S), then the workers are stopped and the run
    # directory removed, exit 143 within 5 s; kill -9: the watchdog stops the workers and removes it
    supervisor.exit_on_sigterm(unwind_s=3.0, children_grace_s=1.0)
    watchdog = supervisor.start(run_roots=[settings.state_dir / "gateway"])
    try:
        serve_forever(gw, host=host, port=port, workers=workers, state_dir=settings.state_dir / "gateway")
    finally:
        supervisor.done(watchdog)


def _preflight(gw) -> str | None:
    """The stores the gateway will use answer, in seconds (not MLflow's minutes of retries) or one line, exit 2;
    returns the champion's version (None: no champion yet)."""
    from mlflow.tracking import MlflowClient

    from monitoring.prediction_log import create_log_engine
    from pipelines.store_checks import check_prediction_log, check_tracking_store
    from serving.models import resolve_alias

    check_tracking_store(gw.tracking_uri)
    check_prediction_log(gw.prediction_log_url)
    client = MlflowClient(tracking_uri=gw.tracking_uri, registry_uri=gw.tracking_uri)
    try:
        champion = resolve_alias(client, gw.model_name, gw.champion_alias)
    except Exception as exc:
        raise UserError(f"cannot reach the MLflow registry at {gw.tracking_uri!r}: {exc}") from exc
    try:  # a wrong log URL is the user's to fix: say so here, not inside a worker's traceback
        create_log_engine(gw.prediction_log_url).dispose()
    except (ValueError, ImportError) as exc:
        raise UserError(f"prediction log: {exc}") from exc
    return champion


def _load_rows(data: Path, split: str, target: str | None):
    """``(x, y, classes)`` from a prepared ``.npz`` (TaskData) or a CSV/Parquet table with a target column."""
    import numpy as np

    if not data.exists():
        raise UserError(f"--data {data}: no such file")
    suffix = data.suffix.lower()
    if suffix == ".npz":
        from nas.data import SPLITS, TaskData

        if split not in SPLITS:
            raise UserError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
        try:
            task = TaskData.load(data)
        except Exception as exc:
            raise UserError(f"--data {data}: not a prepared nasops dataset ({exc})") from exc
        x, y = getattr(task, f"x_{split}"), getattr(task, f"y_{split}")
        if x is None:
            raise UserError(f"--data {data} has no {split!r} split; choose --split train/val/test/prod")
        return x, y, task.meta.get("classes")
    if suffix in (".csv", ".parquet"):
        import pandas as pd

        frame = pd.read_csv(data) if suffix == ".csv" else pd.read_parquet(data)
        y = classes = None
        if target is not None:
            if target not in frame.columns:
                raise UserError(f"--target {target!r} is not a column of {data} (columns: {list(frame.columns)[:10]})")
            codes, uniques = pd.factorize(frame.pop(target), sort=True)
            y, classes = codes.astype(np.int64), uniques.tolist()
        non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
        if non_numeric:
            raise UserError(f"--data {data}: non-numeric feature columns {non_numeric[:5]}; pass --target for the "
                            "label column and keep features numeric")
        return frame.to_numpy(dtype=np.float32), y, classes
    raise UserError(f"--data {data}: expected a prepared .npz, or a .csv/.parquet table")


def replay_command(
    url: str = typer.Option(..., help="gateway base URL, e.g. http://127.0.0.1:8000"),
    data: Path = typer.Option(..., help="prepared dataset (.npz from nasops) or a .csv/.parquet table"),
    split: str = typer.Option("prod", help="split of a .npz dataset to replay"),
    target: str = typer.Option(None, help="label column of a .csv/.parquet table (enables --feedback)"),
    rate: float = typer.Option(20.0, help="requests per second"),
    duration: float = typer.Option(None, "--duration-s", help="seconds to run, cycling the rows (default: every "
                                   "row once)"),
    batch_size: int = typer.Option(1, min=1, help="rows per request"),
    drift: str = typer.Option(None, help="injected drift, e.g. 'noise=0.3', 'shift=0.5', 'scale=1.5' (commas)"),
    feedback: bool = typer.Option(True, "--feedback/--no-feedback", help="send true labels to /feedback"),
    sticky_keys: int = typer.Option(0, min=0, help="simulate N users with sticky X-Request-Key headers (0: none)"),
    seed: int = typer.Option(0, help="row order and drift noise seed"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON on stdout"),
    feedback_token_file: Path = typer.Option(
        None, envvar="NASOPS_GATEWAY_FEEDBACK_TOKEN_FILE", help="file holding the gateway's feedback token (or set "
        "NASOPS_GATEWAY_FEEDBACK_TOKEN)"),
) -> None:
    """Drive production-like traffic at a running gateway and summarise what came back."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pipelines.replay import replay

    x, y, classes = _load_rows(data, split, target)
    feedback_token = _feedback_token(feedback_token_file) if feedback else None
    key_fn = (lambda i: f"user-{i % sticky_keys}") if sticky_keys else None
    with Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=as_json) as bar:
        task = bar.add_task("replay", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            summary = replay(url, x, y, rate=rate, duration=duration, batch_size=batch_size, drift=drift,
                             feedback=feedback, seed=seed, classes=classes, request_key_fn=key_fn,
                             progress=progress, feedback_token=feedback_token)
        except OSError as exc:
            raise UserError(f"cannot reach the gateway at {url}: {exc}") from exc
    if as_json:
        print_json(summary.to_dict())
        return
    table = Table(title=f"replay to {url}", show_header=False)
    table.add_row("requests sent / ok", f"{summary.sent} / {summary.ok}")
    table.add_row("errors", ", ".join(f"{k}: {v}" for k, v in summary.errors.items()) or "none")
    table.add_row("throughput", f"{summary.throughput_rps:.1f} req/s (target {rate:g})")
    lat = summary.latency_ms
    if lat:
        table.add_row("latency ms", f"p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f}  "
                      f"max {lat['max']:.2f}")
    table.add_row("variants", ", ".join(f"{k}: {v} (v{summary.versions.get(k)})"
                                        for k, v in summary.variants.items()) or "-")
    table.add_row("feedback sent / failed", f"{summary.feedback_sent} / {summary.feedback_errors}")
    table.add_row("drift", drift or "none")
    make_console().print(table)
    if summary.ok == 0:
        raise UserError(f"no request succeeded (errors: {summary.errors}); is the gateway at {url} running?")


def _feedback_token(path: Path | None) -> str | None:
    """The feedback token from ``path`` or NASOPS_GATEWAY_FEEDBACK_TOKEN (never a command-line value)."""
    import os

    if path is None:
        return os.environ.get("NASOPS_GATEWAY_FEEDBACK_TOKEN") or None
    try:
        token = path.expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        message = f"--feedback-token-file {path}: cannot be read ({exc}); give a file holding the token"
        raise UserError(message) from None
    if not token:
        raise UserError(f"--feedback-token-file {path} is empty; write the gateway's feedback token into it")
    return token


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("replay")(replay_command)
