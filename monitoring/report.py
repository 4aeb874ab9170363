"""The canary's evidence as one self-contained HTML page (decision, steps, judge table, online metrics, drift) and
a PNG plot of the score per interval. Plain HTML with inline CSS and the plot embedded, so the page opens straight
from the MLflow artifact view.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from monitoring.decision_reason import decision_sentence, measure_label

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.promoted{color:#0a7d28}.rolled_back{color:#b00020}.Pass{background:#e8f5e9}.worse{background:#ffebee}
.better{background:#c8e6c9}.NoData{background:#f5f5f5;color:#777}td.worse{color:#b00020}td.better{color:#0a7d28}
"""

LOWER_IS_BETTER = {"requests": None, "errors": True, "p50_ms": True, "p99_ms": True}
"""Online columns that are no metric of the registry: which way is better (None: neither)."""
ONLINE_METRICS = ("accuracy", "estimated_accuracy", "rmse", "mae", "log_loss", "cost")
"""The online metric columns a report can show, in order; a report shows those its variants have."""


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        return f"{value:.4g}"
    return html.escape(str(value))


def _css(value: Any) -> str:
    return f' class="{html.escape(str(value))}"' if value else ""


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], class_column: str | None = None,
          cell_class: Callable[[Mapping[str, Any], str], str | None] | None = None) -> str:
    """An HTML table of ``rows`` restricted to ``columns`` (a row's ``class_column`` value becomes its CSS class;
    ``cell_class(row, column)`` a cell's)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        css = _css(row.get(class_column, "")) if class_column else ""
        cells = "".join(f"<td{_css(cell_class(row, c) if cell_class else None)}>{_fmt(row.get(c))}</td>"
                        for c in columns)
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def higher_is_better(name: str) -> bool | None:
    """Which way ``name`` is better: the metric registry's direction (``online_rmse`` is ``rmse``: lower), the
    online counts and latencies lower; None when neither (issue 24: a regression's lower RMSE was painted red)."""
    from monitoring.core.metrics import get_metric

    base = name.removeprefix("online_").removeprefix("estimated_")
    if base in LOWER_IS_BETTER:
        lower = LOWER_IS_BETTER[base]
        return None if lower is None else not lower
    try:
        return get_metric(base).higher_is_better
    except ValueError:
        return None


def tone(row: Mapping[str, Any]) -> str:
    """An evidence row's colour by what it means for the challenger, not by the sign of the shift: ``worse`` (it
    failed), ``better`` (a significant shift the good way: lower RMSE, higher accuracy), else its class."""
    cls = str(row.get("classification") or "")
    if row.get("failed"):
        return "worse"
    if cls in ("High", "Low"):
        bad = row.get("direction")
        if bad not in ("increase", "decrease"):  # no judge direction: the registry's
            higher = higher_is_better(str(row.get("name", "")))
            bad = None if higher is None else ("decrease" if higher else "increase")
        good = {"increase": "Low", "decrease": "High"}.get(str(bad))
        return "better" if cls == good else "worse" if good else cls
    return cls


def _online_tone(rows: Sequence[Mapping[str, Any]]) -> Callable[[Mapping[str, Any], str], str | None]:
    """The challenger's online cells coloured better or worse than the champion's, in each metric's direction."""
    champion = next((r for r in rows if r.get("variant") == "champion"), {})

    def cell(row: Mapping[str, Any], column: str) -> str | None:
        higher = higher_is_better(column)
        mine, theirs = row.get(column), champion.get(column)
        if row.get("variant") != "challenger" or higher is None or None in (mine, theirs) or mine == theirs:
            return None
        return "better" if (mine > theirs) == higher else "worse"

    return cell


def online_columns(rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The online table's columns: the counts, the metrics the variants have (a regression's RMSE and MAE, a
    classifier's accuracy), the latencies."""
    metrics = tuple(m for m in ONLINE_METRICS if any(r.get(m) is not None for r in rows)) or ("accuracy",)
    return ("variant", "requests", "errors", *metrics, "p50_ms", "p99_ms")


def score_plot_png(steps: Sequence[Mapping[str, Any]]) -> bytes:
    """Score (0-100) and challenger weight per interval, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [s["interval"] for s in steps]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(xs, [s.get("score") or 0 for s in steps], marker="o", label="judge score")
    ax.set_ylim(-5, 105)
    ax.set_xlabel("interval")
    ax.set_ylabel("score (0-100)")
    ax2 = ax.twinx()
    ax2.step(xs, [100 * s.get("weight", 0) for s in steps], where="mid", color="tab:orange", label="challenger %")
    ax2.set_ylim(-5, 105)
    ax2.set_ylabel("challenger traffic %")
    fig.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


EVIDENCE_COLUMNS = ("name", "measure", "classification", "critical", "n_champion", "n_challenger", "statistic",
                    "champion_value", "challenger_value", "effect", "tolerance", "u_statistic", "p_value", "reason")
STEP_COLUMNS = ("interval", "mode", "weight", "verdict", "outcome", "score", "failed_metrics")


def report_sentence(result: Mapping[str, Any], evidence: Sequence[Mapping[str, Any]],
                    steps: Sequence[Mapping[str, Any]], window: str | None = None) -> str:
    """Why the canary ``result`` was decided, in one sentence (:func:`monitoring.decision_reason.decision_sentence`
    of its evidence and last judged step; ``window``: the rollout's, which the result does not hold)."""
    last = steps[-1] if steps else {}
    return decision_sentence(result.get("decision"), evidence, reason=str(result.get("reason") or ""),
                             decided_by=result.get("decided_by"), mode=last.get("mode"), weight=last.get("weight"),
                             interval=result.get("intervals"), window=window)


def _online_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Online metrics with each metric's own column (``online_rmse``), the challenger's cells coloured."""
    columns = online_columns(rows)
    shown = [{**r, **{f"online_{m}": r.get(m) for m in ONLINE_METRICS}} for r in rows]
    named = tuple(f"online_{c}" if c in ONLINE_METRICS and c != "estimated_accuracy" else c for c in columns)
    return table(shown, named, cell_class=_online_tone(shown))


def canary_report_html(result: Mapping[str, Any], evidence: Sequence[Mapping[str, Any]],
                       steps: Sequence[Mapping[str, Any]], *, drift_report_name: str | None = None,
                       plot_png: bytes | None = None, why: str | None = None) -> str:
    """The whole report page for one canary ``result`` (the flow's return value); ``why``: the sentence saying why
    it was decided (default: :func:`report_sentence` without the window, which the result does not hold)."""
    why = why or report_sentence(result, evidence, steps)
    evidence = [{**row, "measure": measure_label(row.get("measure"))} for row in evidence]
    decision = result.get("decision", "")
    online = result.get("online", {})
    online_rows = [{"variant": v, **vals} for v, vals in online.items()]
    drift = result.get("drift", {})
    parts = [
        f"<h1>Canary: {html.escape(str(result.get('model_name', '')))} version "
        f"{html.escape(str(result.get('challenger_version', '')))}</h1>",
        f"<h2 class='{html.escape(decision)}'>{html.escape(decision.replace('_', ' '))}</h2>",
        f"<p class='why'><b>Why:</b> {html.escape(why)}</p>",
        f"<p><small>Detail: {html.escape(str(result.get('reason', '')))}</small></p>",
        f"<p>Verdict <b>{html.escape(str(result.get('verdict', '')))}</b>, score {_fmt(result.get('score'))}/100 "
        f"after {_fmt(result.get('intervals'))} interval(s). Champion after the decision: version "
        f"{html.escape(str(result.get('champion_version', '')))}.</p>",
        "<h3>Evidence (last judge run)</h3>",
        table([{**row, "tone": tone(row)} for row in evidence], EVIDENCE_COLUMNS, class_column="tone"),
        "<h3>Steps</h3>",
        table([{**s, "failed_metrics": ", ".join(s.get("failed_metrics", []))} for s in steps], STEP_COLUMNS),
    ]
    if plot_png:
        encoded = base64.b64encode(plot_png).decode()
        parts.append(f"<img alt='score per interval' src='data:image/png;base64,{encoded}'>")
    parts += [
        "<h3>Online metrics</h3>",
        _online_table(online_rows),
        "<h3>Drift</h3>",
        table([drift], ("share", "dataset_drift", "prediction_drift", "champion_share", "challenger_share")),
    ]
    if drift_report_name:
        parts.append(f"<p>Per-feature data drift (Evidently): <a href='{html.escape(drift_report_name)}'>"
                     f"{html.escape(drift_report_name)}</a></p>")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>nasops canary</title><style>{_CSS}</style>" \
           f"</head><body>{''.join(parts)}</body></html>"
