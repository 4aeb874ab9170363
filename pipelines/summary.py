"""Rich tables for the end of a refresh and for ``nasops status``: what was found, how it did, what was decided."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from monitoring.vocabulary import CHALLENGER, CHAMPION
from pipelines.contracts import RefreshResult


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, float):
        if value != value:  # NaN
            return "—"
        return f"{value:.{digits}f}"
    return str(value)


def mlflow_ui_hint(tracking_uri: str) -> str:
    """How to look at the runs: the server's address, or the command that opens the embedded store."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri
    return f"mlflow ui --backend-store-uri {tracking_uri}"


def refresh_table(result: RefreshResult) -> Table:
    """Champion against challenger, offline and online, side by side (short values only)."""
    table = Table(title=f"nasops refresh — {result.model_name}", title_justify="left")
    table.add_column("", style="bold")
    table.add_column("champion", overflow="fold")
    table.add_column("challenger", overflow="fold")
    champ, chall = result.champion_before, result.challenger
    table.add_row("version", _fmt(champ and champ.version), _fmt(chall.version))
    regression = chall.task == "regression"
    if regression:  # RMSE / MAE in the target's units, lower is better
        table.add_row("val RMSE (offline)", _fmt(champ and champ.val_rmse), _fmt(chall.val_rmse))
        table.add_row("test RMSE (offline)", _fmt(champ and champ.test_rmse), _fmt(chall.test_rmse))
    else:
        table.add_row("val accuracy (offline)", _fmt(champ and champ.val_accuracy), _fmt(chall.val_accuracy))
        table.add_row("test accuracy (offline)", _fmt(champ and champ.test_accuracy), _fmt(chall.test_accuracy))
    table.add_row("latency ms (batch 1)", _fmt(champ and champ.latency_ms, 3), _fmt(chall.latency_ms, 3))
    online = result.canary.get("online") if result.canary else None
    if online:
        c, n = online[CHAMPION], online[CHALLENGER]
        table.add_row("requests (online)", _fmt(c["requests"]), _fmt(n["requests"]))
        table.add_row("errors (online)", _fmt(c["errors"]), _fmt(n["errors"]))
        table.add_row("fallbacks served (online)", _fmt(c["fallbacks"]), "—")
        if regression:
            table.add_row("RMSE (online)", _fmt(c.get("rmse")), _fmt(n.get("rmse")))
            table.add_row("MAE (online)", _fmt(c.get("mae")), _fmt(n.get("mae")))
        else:
            table.add_row("accuracy (online)", _fmt(c["accuracy"]), _fmt(n["accuracy"]))
        table.add_row("p99 latency ms (online)", _fmt(c["p99_ms"], 2), _fmt(n["p99_ms"], 2))
    return table


def refresh_details(result: RefreshResult) -> list[str]:
    """The long facts (architectures, decision, paths) as lines, so they never wrap inside table cells."""
    champ, chall, search, canary = result.champion_before, result.challenger, result.search, result.canary
    lines = [
        f"[bold]architecture found[/bold]  {chall.arch} ({search.space})",
        f"[bold]champion was[/bold]        {champ.arch if champ else '—'}",
        f"[bold]search[/bold]              pool {search.pool_size}, {search.evaluations} low-fidelity trainings"
        f"{f' ({search.failed_evaluations} failed)' if search.failed_evaluations else ''}, "
        f"{_fmt(search.seconds, 1)} s",
        f"[bold]seed[/bold]                {search.seed} (refresh {result.refresh_id})",
    ]
    if result.tournament.get("skipped"):
        lines.append(f"[bold]tournament[/bold]          skipped: {result.tournament['skipped']}")
    elif result.tournament:
        from pipelines.tournament import summary_line

        lines.append(f"[bold]tournament[/bold]          {summary_line(result.tournament)}")
    drift = canary.get("drift") if canary else None
    if drift:
        lines.append(f"[bold]drift[/bold]               data drift share {_fmt(drift.get('share'), 2)} "
                     f"(dataset drift: {drift.get('dataset_drift')}), prediction drift "
                     f"{_fmt(drift.get('prediction_drift'), 3)}" + (f" — {drift['note']}" if drift.get("note") else ""))
    if canary and canary.get("handed_over"):
        lines.append(f"[bold]canary[/bold]              {canary['reason']}")
    elif canary:
        lines.append(f"[bold]decision[/bold]            {canary['decision']} — {canary['reason']}")
        lines.append(f"[bold]champion now[/bold]        version {canary['champion_version']}")
        lines.append(f"[bold]report[/bold]              {canary['report_uri']}")
    else:
        lines.append("[bold]decision[/bold]            canary skipped: challenger registered, aliases unchanged")
    lines.append(f"[bold]MLflow UI[/bold]           {mlflow_ui_hint(result.tracking_uri)}  "
                 f"(refresh run {result.refresh_run_id})")
    lines.append(f"[bold]time[/bold]                {_fmt(result.seconds, 1)} s")
    return lines


def status_table(model_name: str, versions: list[dict[str, Any]]) -> Table:
    """Registered versions with aliases, role, architecture, offline accuracy and the canary decision."""
    table = Table(title=f"{model_name}: registered versions", title_justify="left")
    for col in ("version", "aliases", "role", "architecture", "test acc", "decision", "decided at"):
        # the architecture string takes the room left and wraps; it is never cut
        wraps = col == "architecture"
        table.add_column(col, overflow="fold", no_wrap=not wraps, ratio=1 if wraps else None)
    for row in versions:
        tags = row["tags"]
        table.add_row(
            row["version"],
            ", ".join(row["aliases"]) or "",
            tags.get("role", ""),
            tags.get("arch", ""),
            _fmt(_float(tags.get("test_accuracy"))),
            tags.get("decision", "rejected" if row.get("rejected") else ""),
            tags.get("decision_time", ""),
        )
    return table


def online_table(online: dict[str, dict[str, Any]], window_s: float) -> Table:
    """What each variant did on live traffic in the last ``window_s`` seconds (monitoring.online's definitions)."""
    table = Table(title=f"live traffic, last {window_s:.0f} s (prediction log)", title_justify="left")
    for col in ("variant", "requests", "errors", "fallbacks served", "labelled rows", "accuracy", "p50 ms", "p99 ms"):
        table.add_column(col)
    for variant, facts in online.items():
        table.add_row(variant, _fmt(facts["requests"]), _fmt(facts["errors"]), _fmt(facts["fallbacks"]),
                      _fmt(facts["labelled_rows"]), _fmt(facts["accuracy"]), _fmt(facts["p50_ms"], 2),
                      _fmt(facts["p99_ms"], 2))
    return table


def history_table(model_name: str, versions: list[dict[str, Any]]) -> Table:
    """Every canary decision, oldest first, with its verdict and reason."""
    table = Table(title=f"{model_name}: decision history", title_justify="left")
    for col in ("decided at", "version", "decision", "verdict", "score", "reason"):
        table.add_column(col)
    for row in decisions(versions):
        table.add_row(row["decision_time"], row["version"], row["decision"], row["verdict"],
                      _fmt(_float(row["score"]), 1), row["reason"])
    return table


def decisions(versions: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The decision tags of every decided version, oldest first."""
    rows = []
    for row in versions:
        tags = row["tags"]
        if "decision" not in tags:
            continue
        rows.append({
            "version": row["version"],
            "decision": tags["decision"],
            "verdict": tags.get("verdict", ""),
            "score": tags.get("verdict_score", ""),
            "reason": tags.get("decision_reason", ""),
            "decision_time": tags.get("decision_time", ""),
        })
    rows.sort(key=lambda r: r["decision_time"])
    return rows


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def print_json(data: Any) -> None:
    """One line of JSON on stdout (machine-readable output of ``--json``), never wrapped or coloured."""
    sys.stdout.write(json.dumps(data, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
