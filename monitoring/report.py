"""The canary's evidence as one self-contained HTML page (decision, steps, judge table, online metrics, drift) and
a PNG plot of the score per interval. Plain HTML with inline CSS and the plot embedded, so the page opens straight
from the MLflow artifact view.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

from monitoring.decision_reason import decision_sentence, measure_label

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.promoted{color:#0a7d28}.rolled_back{color:#b00020}.Pass{background:#e8f5e9}.High,.Low{background:#ffebee}
.NoData{background:#f5f5f5;color:#777}
"""


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


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], class_column: str | None = None) -> str:
    """An HTML table of ``rows`` restricted to ``columns`` (a row's ``class_column`` value becomes its CSS class)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        css = f' class="{html.escape(str(row.get(class_column, "")))}"' if class_column else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{_fmt(row.get(c))}</td>" for c in columns) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


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
        table(evidence, EVIDENCE_COLUMNS, class_column="classification"),
        "<h3>Steps</h3>",
        table([{**s, "failed_metrics": ", ".join(s.get("failed_metrics", []))} for s in steps], STEP_COLUMNS),
    ]
    if plot_png:
        encoded = base64.b64encode(plot_png).decode()
        parts.append(f"<img alt='score per interval' src='data:image/png;base64,{encoded}'>")
    parts += [
        "<h3>Online metrics</h3>",
        table(online_rows, ("variant", "requests", "errors", "accuracy", "estimated_accuracy", "p50_ms", "p99_ms")),
        "<h3>Drift</h3>",
        table([drift], ("share", "dataset_drift", "prediction_drift", "champion_share", "challenger_share")),
    ]
    if drift_report_name:
        parts.append(f"<p>Per-feature data drift (Evidently): <a href='{html.escape(drift_report_name)}'>"
                     f"{html.escape(drift_report_name)}</a></p>")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>nasops canary</title><style>{_CSS}</style>" \
           f"</head><body>{''.join(parts)}</body></html>"
