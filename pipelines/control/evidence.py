"""The end of a canary: its evidence (judge tables, score plot, Evidently report, HTML page) logged to MLflow, and
the decision written to the registry (promote or roll back, with the decision tags)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from monitoring.core.tasks import get_task
from monitoring.drift import data_drift_report, prediction_drift
from monitoring.judge import Verdict
from monitoring.online import regression_summary, summarize_variants
from monitoring.report import canary_report_html, score_plot_png
from monitoring.vocabulary import CHALLENGER, CHAMPION, PROMOTED, VARIANTS, tag
from pipelines import promotion
from pipelines.contracts import CanaryOutput, CanaryStep, DriftSummary, VariantOnline
from pipelines.control.config import CanaryConfig
from pipelines.control.drift import MIN_DISTINCT_ROWS, comparable, distinct_inputs, predictions
from pipelines.control.rollout import RolloutState

REPORT_DIR = "canary"
STEP_KEYS = ("interval", "mode", "weight", "verdict", "outcome", "score")


def drift_summary(frame: pd.DataFrame, reference: pd.DataFrame | None, cfg: CanaryConfig, history: list[dict],
                  html: Path) -> dict[str, Any]:
    """Whole-canary data drift on the distinct served inputs (HTML report written to ``html``), prediction drift,
    and each variant's last per-interval share (a table model's raw columns against its raw training rows)."""
    served = distinct_inputs(frame, reference, include_shadow=False)
    if reference is None:
        info: dict[str, Any] = {"share": None, "dataset_drift": None, "distinct_rows": len(served),
                                "note": "no drift reference with input rows stored with the rollout (see the "
                                "steps' drift notes)"}
    elif len(served) >= MIN_DISTINCT_ROWS:
        drift = data_drift_report(*comparable(reference, served), html, threshold=cfg.drift_threshold,
                                  detail_columns=cfg.drift_report_features)
        info = {"share": drift.share, "dataset_drift": drift.dataset_drift,
                                "drifted_features": drift.count, "features": drift.columns,
                                "distinct_rows": len(served)}
    else:
        info = {"share": None, "dataset_drift": None, "distinct_rows": len(served),
                "note": f"too few distinct inputs ({len(served)} < {MIN_DISTINCT_ROWS}) to judge data drift"}
    champ, chall = predictions(frame, CHAMPION), predictions(frame, CHALLENGER)
    info["prediction_drift"] = prediction_drift(champ, chall) if champ and chall else None
    for variant in VARIANTS:
        values = [s.get("drift", {}).get(variant) for s in history]
        values = [v for v in values if v is not None]
        info[f"{variant}_share"] = values[-1] if values else None
    return info


def canary_result(state: RolloutState, verdict: Verdict, frame: pd.DataFrame, drift: dict[str, Any], *,
                  run: Any, model_name: str, champion_version: str, challenger_version: str,
                  gateway_url: str, task: str = "classification",
                  target_values: list[float] | None = None) -> CanaryOutput:
    """The canary stage's output; a task with numeric labels (a regression) has each variant's RMSE and MAE
    beside the counts, and its drift the target's: the labels that came back against the training targets
    (``target_values``)."""
    online = summarize_variants(frame, VARIANTS)
    if get_task(task).numeric_labels:
        for variant, facts in online.items():
            rows = frame[frame["variant"] == variant] if len(frame) else frame
            facts.update(regression_summary(rows), accuracy=None, correct_rows=None)
        drift = {**drift, "target_drift": target_drift(frame, target_values)}
    return CanaryOutput(
        task=task,
        decision=state.decision,
        reason=state.reason,
        verdict="fail" if verdict.verdict == "nodata" else verdict.verdict,
        score=round(float(verdict.score), 2),
        champion_version=challenger_version if state.decision == PROMOTED else champion_version,
        challenger_version=challenger_version,
        previous_champion_version=champion_version,
        intervals=state.intervals,
        failed_intervals=state.failures,
        highest_weight=state.highest_weight,
        steps=[CanaryStep(**{k: s[k] for k in STEP_KEYS}) for s in state.history],
        evidence=verdict.table(),
        online={variant: VariantOnline(**facts) for variant, facts in online.items()},
        drift=DriftSummary(**drift),
        report_uri=f"{run.info.artifact_uri}/{REPORT_DIR}/canary_report.html",
        canary_run_id=run.info.run_id,
        gateway_url=gateway_url,
        model_name=model_name,
    )


def target_drift(frame: pd.DataFrame, target_values: list[float] | None) -> float | None:
    """Drift of a regression's target: the labels /feedback brought (served rows, one per request row) against the
    training targets, Evidently's normed Wasserstein distance (None with fewer than 10 labels or no reference)."""
    from monitoring.drift import prediction_drift

    if not target_values or not len(frame):
        return None
    served = frame[~frame["shadow"].astype(bool)].drop_duplicates(["request_id", "row"])
    labels = [float(v) for v in served["label"].dropna() if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(labels) < 10:
        return None
    return prediction_drift([float(v) for v in target_values], labels)


def log_evidence(result: CanaryOutput, state: RolloutState, verdict: Verdict, tmp: Path,
                 drift_html: Path | None) -> None:
    """Judge table per interval, score plot, the HTML page (linking the Evidently report) and headline metrics."""
    rows = [{"interval": s["interval"], "weight": s["weight"], **row} for s in state.history
            for row in s.get("evidence", [])]
    mlflow.log_table(pd.DataFrame(rows), artifact_file=f"{REPORT_DIR}/judge_table.json")
    plot = score_plot_png(state.history)
    (tmp / "score.png").write_bytes(plot)
    mlflow.log_artifact(str(tmp / "score.png"), REPORT_DIR)
    if drift_html is not None and drift_html.exists():
        mlflow.log_artifact(str(drift_html), REPORT_DIR)
    page = canary_report_html(result.model_dump(mode="json"), verdict.table(), state.history,
                              drift_report_name=drift_html.name if drift_html and drift_html.exists() else None,
                              plot_png=plot)
    (tmp / "canary_report.html").write_text(page)
    mlflow.log_artifact(str(tmp / "canary_report.html"), REPORT_DIR)
    drift = result.drift
    mlflow.log_metrics({k: float(v) for k, v in {
        "final_score": verdict.score, "intervals": state.intervals, "drift_share": drift.share,
        "prediction_drift": drift.prediction_drift}.items() if v is not None})
    mlflow.set_tags({tag("decision"): state.decision or "", tag("verdict"): result.verdict})


def record_decision(client: Any, result: CanaryOutput, verdict: Verdict, cfg: CanaryConfig) -> None:
    """Move the aliases (promote) or tag the challenger rejected (roll back), with the decision tags."""
    decide = promotion.promote if result.decision == PROMOTED else promotion.roll_back
    decide(client, result.model_name, result.challenger_version, reason=result.reason,
           verdict=result.verdict, score=verdict.score, canary_run_id=result.canary_run_id,
           keep_challenger_alias=cfg.keep_challenger_alias)


def finish(run: Any, state: RolloutState, verdict: Verdict, frame: pd.DataFrame, reference: pd.DataFrame | None,
           cfg: CanaryConfig, client: Any, **facts: Any) -> CanaryOutput:
    """Drift report, evidence artifacts and the registry decision; returns the stage's result."""
    with tempfile.TemporaryDirectory(prefix="nasops-canary-") as tmp:
        html = Path(tmp) / "data_drift.html"
        drift = drift_summary(frame, reference, cfg, state.history, html)
        result = canary_result(state, verdict, frame, drift, run=run, **facts)
        log_evidence(result, state, verdict, Path(tmp), html)
    record_decision(client, result, verdict, cfg)
    return result
