"""``nasops refresh``, ``nasops schedule`` and ``nasops status``: the main job, its schedule, and what it left."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console

from pipelines.errors import UserError

console = Console(stderr=True)


def _load_config_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    if not path.exists():
        raise UserError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"--config {path}: not valid YAML/JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping of RefreshConfig fields, got {type(data).__name__}")
    return data


def build_config(
    config_file: Path | None = None,
    data: str | None = None,
    target: str | None = None,
    max_rows: int | None = None,
    seed: int | None = None,
    model_name: str | None = None,
    space: str | None = None,
    budget: int | None = None,
    pool_size: int | None = None,
    max_latency_ms: float | None = None,
    runner: str | None = None,
    dask_address: str | None = None,
    epochs: int | None = None,
    top_k: int | None = None,
    drift: str | None = None,
    skip_canary: bool = False,
    skip_tournament: bool = False,
):
    """Merge a config file with command-line flags (flags win) into a validated ``RefreshConfig``."""
    from pipelines.refresh import RefreshConfig

    raw = _load_config_file(config_file)
    for key, value in {"data": data, "target": target, "max_rows": max_rows, "seed": seed,
                       "model_name": model_name}.items():
        if value is not None:
            raw[key] = value
    search = dict(raw.get("search") or {})
    for key, value in {"space": space, "budget": budget, "pool_size": pool_size, "max_latency_ms": max_latency_ms,
                       "runner": runner, "dask_address": dask_address}.items():
        if value is not None:
            search[key] = value
    retrain = dict(raw.get("retrain") or {})
    if epochs is not None:
        retrain["epochs"] = epochs
    if top_k is not None:  # the search must return as many candidates as retraining takes
        retrain["top_k"] = top_k
        search.setdefault("top_k", top_k)
    raw["retrain"] = retrain
    raw["search"] = search
    canary = dict(raw.get("canary") or {})
    if drift is not None:
        canary["drift"] = drift
    raw["canary"] = canary
    if skip_canary:
        raw["skip_canary"] = True
    if skip_tournament:
        raw["skip_tournament"] = True
    try:
        config = RefreshConfig.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_validation_message("refresh configuration", exc)) from exc
    _check_stage_configs(config)
    return config


def _validation_message(what: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return f"invalid {what}: " + "; ".join(parts)


def _check_stage_configs(config) -> None:
    """Validate the NAS and canary options before any work starts, so a typo costs seconds, not a search."""
    from pipelines.canary import CanaryConfig
    from pipelines.nas_stage import SearchStageConfig
    from pipelines.tournament import TournamentConfig

    for name, model, values in (("search", SearchStageConfig, config.search),
                                ("tournament", TournamentConfig, config.tournament),
                                ("canary", CanaryConfig, config.canary)):
        try:
            model.model_validate({"seed": config.seed, **values})
        except ValidationError as exc:
            raise UserError(_validation_message(f"{name} options", exc)) from exc


def _preflight_data(config) -> None:
    """Load and validate the data before Prefect starts: a bad file gets one clear line, not a failed flow run."""
    from pipelines.data import DataSpec, load_table, validate

    spec = DataSpec(source=config.data, target=config.target, seed=config.seed)
    x, y, _ = load_table(spec)
    validate(x, y, Path(config.data).name)


def refresh(
    data: str = typer.Option("digits", help="bundled dataset (digits, mnist5k) or a .csv/.parquet file"),
    target: str | None = typer.Option(None, help="label column of a CSV/Parquet file"),
    config_file: Path | None = typer.Option(None, "--config", help="YAML/JSON file of RefreshConfig fields"),
    max_rows: int | None = typer.Option(None, help="stratified subsample of the data, for quick runs"),
    seed: int | None = typer.Option(None, help="seed for splits, sampling and training"),
    model_name: str | None = typer.Option(None, help="registered model name (default $NASOPS_MODEL_NAME)"),
    space: str | None = typer.Option(None, help="search space (default: nb201 for images, mlp for tables)"),
    budget: int | None = typer.Option(None, help="low-fidelity trainings the search may spend"),
    pool_size: int | None = typer.Option(None, help="architectures sampled and scored by zero-cost proxies"),
    max_latency_ms: float | None = typer.Option(None, help="only accept architectures under this CPU latency"),
    runner: str | None = typer.Option(None, help="candidate evaluation runner: thread or dask"),
    dask_address: str | None = typer.Option(None, help="address of an existing Dask scheduler (with --runner dask)"),
    epochs: int | None = typer.Option(None, help="maximum epochs of the full retraining"),
    top_k: int | None = typer.Option(None, help="search candidates retrained fully"),
    drift: str | None = typer.Option(None, help="inject drift into the replayed traffic, e.g. noise=0.3"),
    skip_canary: bool = typer.Option(False, help="register the challenger without running the canary"),
    skip_tournament: bool = typer.Option(False, help="do not serve the retrained candidates in a shadow tournament"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as one JSON object"),
) -> None:
    """Run the whole model refresh: data prep, NAS, retrain + register, canary, promote or roll back."""
    config = build_config(config_file, data, target, max_rows, seed, model_name, space, budget, pool_size,
                          max_latency_ms, runner, dask_address, epochs, top_k, drift, skip_canary,
                          skip_tournament)
    _preflight_data(config)
    from pipelines.refresh import model_refresh
    from pipelines.summary import print_json, refresh_details, refresh_table

    console.rule("[bold]nasops refresh")
    console.print(f"data: {config.data}   model: {config.model_name or 'default'}   seed: {config.seed}")
    result = model_refresh(config)
    if as_json:
        print_json(result)
        return
    out = Console()
    out.print(refresh_table(result))
    for line in refresh_details(result):
        out.print(line, overflow="fold", highlight=False)


def schedule(
    cron: str = typer.Option(..., help='cron expression, e.g. "0 3 * * 0" (Sundays 03:00)'),
    name: str = typer.Option("nasops-refresh", help="deployment name"),
    timezone: str | None = typer.Option(None, help="IANA time zone of the cron expression (default UTC)"),
    data: str = typer.Option("digits", help="bundled dataset or a .csv/.parquet file"),
    target: str | None = typer.Option(None, help="label column of a CSV/Parquet file"),
    config_file: Path | None = typer.Option(None, "--config", help="YAML/JSON file of RefreshConfig fields"),
    check: bool = typer.Option(False, "--check", help="validate and print the deployment, then exit"),
) -> None:
    """Serve the refresh as a Prefect deployment on a cron schedule (runs until interrupted)."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as exc:
        raise UserError(f"--cron {cron!r} is not a valid cron expression (5 fields: minute hour day month "
                        f"weekday, e.g. \"0 3 * * 0\"): {exc.errors()[0]['msg']}") from exc
    config = build_config(config_file, data, target)
    _preflight_data(config)
    from pipelines.refresh import model_refresh

    deployment = model_refresh.to_deployment(
        name=name, schedule=CronSchedule(cron=cron, timezone=timezone),
        parameters={"config": config.model_dump(mode="json")},
        description="Scheduled nasops model refresh", tags=["nasops"],
    )
    info = {"deployment": f"model_refresh/{name}", "cron": cron, "timezone": timezone or "UTC",
            "parameters": deployment.parameters}
    if check:
        typer.echo(json.dumps(info))
        return
    from prefect import serve

    console.print(f"serving deployment [bold]model_refresh/{name}[/bold] on cron {cron!r}; Ctrl-C stops it")
    serve(deployment)


def status(
    model_name: str | None = typer.Option(None, help="registered model name (default $NASOPS_MODEL_NAME)"),
    history: bool = typer.Option(False, "--history", help="list every canary decision, oldest first"),
    as_json: bool = typer.Option(False, "--json", help="print as JSON"),
) -> None:
    """Registered versions, their aliases and the last canary decisions."""
    from pipelines import registry
    from pipelines.settings import Settings
    from pipelines.summary import decisions, history_table, print_json, status_table
    from pipelines.tracking import configure_mlflow

    settings = Settings()
    name = model_name or settings.model_name
    configure_mlflow(settings)
    versions = registry.list_versions(registry.client_for_active(), name)
    if as_json:
        print_json({"model_name": name, "versions": versions, "decisions": decisions(versions)})
        return
    out = Console()
    if not versions:
        out.print(f"no registered versions of {name!r} in {settings.tracking_uri}; run `nasops refresh` first")
        return
    out.print(history_table(name, versions) if history else status_table(name, versions))


def register(app: typer.Typer) -> None:
    app.command("refresh")(refresh)
    app.command("schedule")(schedule)
    app.command("status")(status)
