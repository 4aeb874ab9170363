"""Rich tables for the end of a refresh and for ``nasops status``: what was found, how it did, what was decided."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from monitoring.core.tasks import TaskKind, get_task
from monitoring.vocabulary import CHALLENGER, CHAMPION
from pipelines.contracts import BaselineGap, CanaryOutput, ChampionFacts, HandoverOutput, RefreshResult
from pipelines.rescore import short


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
    """Champion against challenger, offline and online, side by side (short values only); the offline and online
    metrics are the challenger's task kind's (accuracy, or a regression's RMSE / MAE in the target's units)."""
    table = Table(title=f"nasops refresh — {result.model_name}", title_justify="left")
    table.add_column("", style="bold")
    table.add_column("champion", overflow="fold")
    table.add_column("challenger", overflow="fold")
    champ, chall = result.champion_before, result.challenger
    kind = get_task(chall.task)
    table.add_row("version", _fmt(champ and champ.version), _fmt(chall.version))
    table.add_row("kind", _fmt(champ and champ.model_kind), _fmt(chall.model_kind))
    table.add_row("rows scored (data)", split_cell(champ), short(result.data.fingerprint))
    for split in ("val", "test"):
        key = f"{split}_{kind.headline}"
        table.add_row(f"{split} {kind.headline_label} (offline)", _fmt(getattr(champ, key, None)),
                      _fmt(getattr(chall, key, None)))
    table.add_row("latency ms (batch 1)", _fmt(champ and champ.latency_ms, 3), _fmt(chall.latency_ms, 3))
    if isinstance(result.canary, CanaryOutput) and result.canary.online:
        _online_rows(table, result.canary, kind)
    return table


def split_cell(champ: ChampionFacts | None) -> str:
    """Which split the champion's offline figures are from: this refresh's (scored again on it when the data
    changed) or, when it could not be scored again, its own training data's (issue 24: the two columns were
    compared across different rows)."""
    if champ is None:
        return "—"
    if champ.rescored:
        return f"{champ.split} (re-scored; registered on {champ.registered_split})"
    return champ.split or "—"


def _online_rows(table: Table, canary: CanaryOutput, kind: TaskKind) -> None:
    c, n = canary.online[CHAMPION], canary.online[CHALLENGER]
    table.add_row("requests (online)", _fmt(c.requests), _fmt(n.requests))
    table.add_row("errors (online)", _fmt(c.errors), _fmt(n.errors))
    table.add_row("fallbacks served (online)", _fmt(c.fallbacks), "—")
    for metric in kind.online_metrics:
        table.add_row(f"{kind.label(metric)} (online)", _fmt(getattr(c, metric)), _fmt(getattr(n, metric)))
    table.add_row("p99 latency ms (online)", _fmt(c.p99_ms, 2), _fmt(n.p99_ms, 2))


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
        f"[bold]metric[/bold]              {result.data.metric} (ranked the search, retraining and tournament; "
        "judged by the canary)",
    ]
    lines.extend(_versus_baselines(result))
    if result.tournament is not None:
        from pipelines.tournament import summary_line

        lines.append(f"[bold]tournament[/bold]          {summary_line(result.tournament)}")
    lines.extend(_canary_lines(canary))
    lines.append(f"[bold]MLflow UI[/bold]           {mlflow_ui_hint(result.tracking_uri)}  "
                 f"(refresh run {result.refresh_run_id})")
    lines.append(f"[bold]time[/bold]                {_fmt(result.seconds, 1)} s")
    return lines


def gap_line(gap: BaselineGap) -> str:
    """One sentence: by how much the NAS winner beats or trails the best baseline on the test rows, with the
    paired interval (the same words in the summary, on the MLflow version and in ``nasops status``)."""
    label = get_task(gap.task).label(gap.metric.removeprefix("test_"))
    p = f", McNemar p {gap.p_value:.3g}" if gap.p_value is not None else ""
    return (f"NAS winner v{gap.nas_version} {gap.verdict} the best baseline ({gap.baseline_kind} "
            f"v{gap.baseline_version}) on test {label}: {_fmt(gap.nas_value)} vs {_fmt(gap.baseline_value)}, "
            f"advantage {gap.advantage:+.4f} ({gap.level:.0%} CI {gap.low:+.4f} … {gap.high:+.4f}; "
            f"{gap.method}, {gap.rows} rows{p})")


def gap_short(raw: str | None) -> str:
    """A ``vs_best_baseline`` tag as a status cell: the advantage and its interval."""
    if not raw:
        return ""
    try:
        gap = BaselineGap.model_validate_json(raw)
    except ValueError:
        return ""
    return f"{gap.verdict} {gap.advantage:+.3f} [{gap.low:+.3f}, {gap.high:+.3f}]"


def _versus_baselines(result: RefreshResult) -> list[str]:
    """The joint ranking, the NAS winner against the best baseline, and a baseline challenger said plainly."""
    chall = result.challenger
    if all(c.model_kind == "nas" for c in chall.ranking):  # images: no library baselines ranked
        return []
    kind = get_task(chall.task)
    ranks = " · ".join(f"{i}. v{c.version} {c.model_kind} {_fmt(c.offline.headline('val'))}"
                       for i, c in enumerate(chall.ranking, start=1))
    lines = [f"[bold]ranking[/bold]             by validation {kind.headline_label}: {ranks}"]
    if chall.versus_baseline is not None:
        lines.append(f"[bold]vs baselines[/bold]        {gap_line(chall.versus_baseline)}")
    if chall.model_kind != "nas":
        lines.append(f"[bold]challenger[/bold]          {chall.model_kind} v{chall.version}: a baseline ranked above "
                     f"the NAS winner (v{chall.nas_version}), so the canary judges the best model overall")
    if chall.ranking[0].version != chall.version:
        best = chall.ranking[0]
        lines.append(f"[bold]champion[/bold]            {best.model_kind} v{best.version} is champion already and "
                     "ranks first; the challenger is the next best")
    return lines


def _canary_lines(canary: CanaryOutput | HandoverOutput | None) -> list[str]:
    """Drift and the decision of an embedded canary, the hand-over's reason, or why nothing was decided."""
    if canary is None:
        return ["[bold]decision[/bold]            canary skipped: challenger registered, aliases unchanged"]
    if isinstance(canary, HandoverOutput):
        return [f"[bold]canary[/bold]              {canary.reason}"]
    drift = canary.drift
    note = f" — {drift.note}" if drift.note else ""
    return [
        f"[bold]drift[/bold]               data drift share {_fmt(drift.share, 2)} (dataset drift: "
        f"{drift.dataset_drift}), prediction drift {_fmt(drift.prediction_drift, 3)}{note}",
        f"[bold]decision[/bold]            {canary.decision} — {canary.reason}",
        f"[bold]champion now[/bold]        version {canary.champion_version}",
        f"[bold]report[/bold]              {canary.report_uri}",
    ]


def test_metric(tags: dict[str, str]) -> str:
    """A version's test figure on the metric it was ranked by (``log_loss 0.231``, ``rmse 12.4``), else its task's
    headline (a regression's RMSE, a classifier's accuracy): issue 24, `status` showed nothing for a regression."""
    metric = tags.get("metric") or ("rmse" if tags.get("task") == "regression" else "accuracy")
    value = _float(tags.get(f"test_{metric}"))
    if value is None and metric != "accuracy":
        metric, value = "accuracy", _float(tags.get("test_accuracy"))
    return "" if value is None else f"{metric} {_fmt(value)}"


def status_table(model_name: str, versions: list[dict[str, Any]]) -> Table:
    """Registered versions with aliases, kind (nas or which baseline; the role of a version tagged before kinds),
    architecture, offline accuracy, the NAS winner against the best baseline, and the canary decision."""
    table = Table(title=f"{model_name}: registered versions", title_justify="left")
    for col in ("version", "aliases", "kind", "architecture", "test metric", "vs best baseline", "decision",
                "decided at"):
        # the architecture string takes the room left and wraps; it is never cut
        wraps = col == "architecture"
        table.add_column(col, overflow="fold", no_wrap=not wraps, ratio=1 if wraps else None)
    for row in versions:
        tags = row["tags"]
        table.add_row(
            row["version"],
            ", ".join(row["aliases"]) or "",
            tags.get("model_kind") or tags.get("role", ""),
            tags.get("arch", ""),
            test_metric(tags),
            gap_short(tags.get("vs_best_baseline")),
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
