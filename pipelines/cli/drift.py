"""``nasops drift-watch``: is the champion's recent traffic still like its training data? Optionally refresh."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError

from pipelines.errors import UserError


def drift_watch_command(
    model_name: str | None = typer.Option(None, help="registered model name (default $NASOPS_MODEL_NAME)"),
    window_s: float = typer.Option(3600.0, help="look at the champion's inputs of the last N seconds"),
    threshold: float = typer.Option(0.5, help="share of drifted features that counts as drift (0-1]"),
    min_rows: int = typer.Option(100, help="fewer logged rows in the window: no decision"),
    trigger_refresh: bool = typer.Option(False, "--trigger-refresh", help="start a refresh when drift is found"),
    data: Path | None = typer.Option(None, help="reference .npz (default: the champion's training data)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as one JSON object"),
) -> None:
    """Measure Evidently data drift on the champion's served inputs; with --trigger-refresh, refresh if drifted."""
    from pipelines import registry
    from pipelines.cli.output import print_json
    from pipelines.drift_trigger import DriftTriggerConfig, drift_watch
    from pipelines.settings import Settings
    from pipelines.tracking import Tracking

    config = {"window_s": window_s, "threshold": threshold, "min_rows": min_rows, "trigger_refresh": trigger_refresh}
    try:
        DriftTriggerConfig.model_validate(config)
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors())
        raise UserError(f"invalid drift-watch option: {problems}") from None
    if data is not None and not data.is_file():
        raise UserError(f"--data {data}: no such file (pass a prepared .npz from the state dir's data/ folder)")
    settings = Settings()
    name = model_name or settings.model_name
    if registry.alias_version(Tracking.open(settings).client, name, registry.CHAMPION) is None:
        raise UserError(f"model {name!r} has no champion in {settings.tracking_uri}; nothing to watch "
                        "(run `nasops refresh` first)")
    result = drift_watch(name, config, str(data) if data else None)
    if as_json:
        print_json(result)
        return
    drift = result["drift"]
    if drift is None:
        typer.echo(f"{name}: fewer than {min_rows} champion requests in the last {window_s:g} s — no decision")
    else:
        typer.echo(f"{name}: {drift['share']:.2f} of features drifted over {drift['rows']} rows "
                   f"(threshold {threshold:g}); refresh {'started' if result['triggered'] else 'not started'}")


def register(app: typer.Typer) -> None:
    app.command("drift-watch")(drift_watch_command)
