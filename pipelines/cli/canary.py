"""``nasops canary``: the rollout commands (:mod:`pipelines.cli.rollout`) and ``run``, the embedded canary (the
refresh's canary stage on its own), with the judge's evidence table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from monitoring.core.enums import Decision
from monitoring.decision_reason import decision_sentence, measure_label
from pipelines.cli.output import make_console, print_json
from pipelines.errors import UserError
from pipelines.settings import Settings

console = make_console()


def _latest_prepared(settings: Settings) -> Path:
    files = sorted(settings.data_dir.glob("*.npz"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise UserError(f"no prepared data under {settings.data_dir}; run `nasops refresh` first or pass --data "
                        "PATH.npz (a file written by the prepare_data stage)")
    return files[-1]


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def evidence_table(result: dict) -> Table:
    """The last judge run, one row per metric: samples, U, p-value, effect and the class."""
    table = Table(title=f"judge evidence (verdict {result['verdict']}, score {result['score']:.0f}/100)",
                  title_justify="left")
    for col in ("metric", "measure", "class", "critical", "n champ", "n chall", "stat", "champion", "challenger",
                "effect", "tolerance", "U", "p"):
        table.add_column(col)
    colours = {"Pass": "green", "High": "red", "Low": "red", "NoData": "dim"}
    for row in result.get("evidence", []):
        cls = row["classification"]
        table.add_row(row["name"], measure_label(row.get("measure")), f"[{colours.get(cls, 'white')}]{cls}[/]",
                      "yes" if row["critical"] else "",
                      _fmt(row["n_champion"]), _fmt(row["n_challenger"]), row["statistic"],
                      _fmt(row["champion_value"]), _fmt(row["challenger_value"]), _fmt(row["effect"]),
                      _fmt(row["tolerance"]), _fmt(row["u_statistic"]), _fmt(row["p_value"]))
    return table


def why(rollout: Any) -> str | None:
    """The one sentence saying why a decided rollout record was decided (None while it runs, or a manual split)."""
    if not rollout.decision or rollout.manual:
        return None
    from monitoring.decision_reason import rollout_sentence

    return rollout_sentence(rollout)


def print_decision(rollout: Any) -> None:
    """A decided rollout's last lines of ``status``: the sentence saying why, then the rollout's full reason."""
    colour = "green" if rollout.decision == Decision.PROMOTED else "red"
    console.print(f"[bold {colour}]{escape(why(rollout) or rollout.decision)}[/] (decided by {rollout.decided_by})")
    console.print(f"[dim]detail: {escape(rollout.reason or '')}[/]")


def steps_table(result: dict) -> Table:
    table = Table(title="rollout", title_justify="left")
    for col in ("interval", "mode", "challenger %", "verdict", "outcome", "score"):
        table.add_column(col)
    for step in result["steps"]:
        table.add_row(str(step["interval"]), step["mode"], f"{100 * step['weight']:.0f}", step["verdict"],
                      step["outcome"], _fmt(step["score"]))
    return table


def canary_options(config_file: Path | None, **options: Any) -> dict[str, Any]:
    """The canary options of a command: the ``--config`` file, then each flag given (``steps`` as a CSV string)."""
    raw: dict[str, Any] = {}
    if config_file is not None:
        from pipelines.config_file import read_mapping

        raw = read_mapping(config_file, f"--config {str(config_file)!r}")
    steps = options.pop("steps", None)
    if steps is not None:
        try:
            raw["steps"] = [float(s) for s in steps.split(",") if s.strip()]
        except ValueError:
            raise UserError(f"--steps must be comma-separated numbers in (0, 1], got {steps!r}") from None
    raw.update({k: v for k, v in options.items() if v is not None})
    return raw


def _check_variants(settings: Settings, model_name: str) -> None:
    """Both aliases exist and name two versions, read from the registry before Prefect starts: a canary of one
    version against itself was refused only inside the flow, a minute later (issue 24)."""
    from pipelines.control.versions import variants
    from pipelines.tracking import client

    variants(client(settings), model_name)


def run(
    data: Path | None = typer.Option(None, help="prepared data (.npz from prepare_data; default: the newest one)"),
    config_file: Path | None = typer.Option(None, "--config", help="YAML file of canary options (docs/canary.md)"),
    drift: str | None = typer.Option(None, help="drift injected into the replayed inputs, e.g. noise=0.3"),
    steps: str | None = typer.Option(None, help="challenger traffic shares, e.g. 0.05,0.25,0.5,1"),
    interval_s: float | None = typer.Option(None, "--interval-s", help="seconds of traffic per judge run"),
    model_name: str | None = typer.Option(None, help="registered model name (default $NASOPS_MODEL_NAME)"),
    rate: float | None = typer.Option(None, help="replayed requests per second"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """The embedded canary: a local gateway, a traffic process replaying the prod split, the controller."""
    from pipelines.canary import canary_rollout, parse_config

    settings = Settings()
    raw = canary_options(config_file, steps=steps, drift=drift, interval_s=interval_s, rate=rate)
    parse_config(raw)  # a typo fails here, before a gateway starts
    path = data or _latest_prepared(settings)
    if not path.is_file():
        raise UserError(f"--data {str(path)!r} does not exist")
    name = model_name or settings.model_name
    _check_variants(settings, name)
    result = canary_rollout(name, str(path), raw).model_dump(mode="json")
    if as_json:
        print_json(result)
        return
    console.print(steps_table(result))
    console.print(evidence_table(result))
    colour = "green" if result["decision"] == Decision.PROMOTED else "red"
    last = result["steps"][-1] if result["steps"] else {}
    sentence = decision_sentence(result["decision"], result.get("evidence"), reason=result["reason"],
                                 decided_by=result.get("decided_by"), mode=last.get("mode"),
                                 weight=last.get("weight"), interval=result.get("intervals"),
                                 window=parse_config(raw).window)
    console.print(f"[bold {colour}]{escape(sentence)}[/]")
    console.print(f"[dim]detail: {escape(result['reason'])}[/]")
    console.print(f"champion is version {result['champion_version']}; report: {result['report_uri']}")


def register(app: typer.Typer) -> None:
    from pipelines.cli import rollout

    canary_app = typer.Typer(name="canary", no_args_is_help=True, help="Canary rollouts of @challenger against "
                             "@champion: on a running gateway (start, status, pause, resume, promote, abort, "
                             "controller) or embedded (run).")
    canary_app.command("run")(run)
    rollout.register(canary_app)
    app.add_typer(canary_app)
