"""The end of a canary: the decision written to the registry (promote or roll back, with the decision tags), and its
evidence (judge tables, score plot, Evidently report, HTML page) logged to MLflow.

The decision comes first and needs nothing but the record: every evidence step (input drift, the Evidently report,
the plots, MLflow artifacts) can fail on what the log holds or on a store that does not answer, and each failure is
a warning in the result (``CanaryOutput.warnings``), never a decision left unapplied."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import pandas as pd

from monitoring.cbpe import estimated_accuracy
from monitoring.core.model_ref import Calibration
from monitoring.core.tasks import get_task
from monitoring.decision_reason import decision_sentence
from monitoring.drift import data_drift_report, prediction_drift
from monitoring.judge import Verdict
from monitoring.online import regression_summary, summarize_variants
from monitoring.report import canary_report_html, score_plot_png
from monitoring.vocabulary import CHALLENGER, CHAMPION, PROMOTED, VARIANTS, tag
from pipelines import promotion
from pipelines.contracts import CanaryOutput, CanaryStep, DriftSummary, VariantOnline
from pipelines.control.config import CanaryConfig
from pipelines.control.drift import MIN_DISTINCT_ROWS, comparable, predictions, served_inputs
from pipelines.control.rollout import RolloutState

REPORT_DIR = "canary"
STEP_KEYS = ("interval", "mode", "weight", "verdict", "outcome", "score")
T = TypeVar("T")

log = logging.getLogger("nasops.canary")


def attempt(warnings: list[str], what: str, step: Callable[[], T], default: T | None = None) -> T | None:
    """Run one evidence step; a failure is a warning in ``warnings`` (and the log) and ``default``, never an error:
    evidence informs a decision that is already made, so it must not keep the decision from being applied."""
    try:
        return step()
    except Exception as exc:
        message = f"{what} failed: {type(exc).__name__}: {exc}"
        log.warning("canary evidence: %s", message)
        warnings.append(message)
        return default


def drift_summary(frame: pd.DataFrame, reference: pd.DataFrame | None, cfg: CanaryConfig, history: list[dict],
                  html: Path, warnings: list[str] | None = None) -> dict[str, Any]:
    """Whole-canary data drift on the distinct served inputs (HTML report written to ``html``), prediction drift,
    and each variant's last per-interval share (a table model's raw columns against its raw training rows).
    Hashed inputs, rows not of the model's shape and a report that fails are a ``note`` (and a warning in
    ``warnings``), never an error."""
    warnings = [] if warnings is None else warnings
    screened = served_inputs(frame, reference, include_shadow=False)
    served = screened.frame
    notes = [screened.note()] if screened.note() else []
    info: dict[str, Any] = {"share": None, "dataset_drift": None, "distinct_rows": len(served)}
    if reference is None:
        notes.append("no drift reference with input rows stored with the rollout (see the steps' drift notes)")
    elif len(served) >= MIN_DISTINCT_ROWS:
        drift = attempt(warnings, "the data drift report", lambda: data_drift_report(
            *comparable(reference, served), html, threshold=cfg.drift_threshold,
            detail_columns=cfg.drift_report_features))
        if drift is not None:
            info.update(share=drift.share, dataset_drift=drift.dataset_drift, drifted_features=drift.count,
                        features=drift.columns)
        else:
            notes.append(warnings[-1])
    elif not screened.hashed or len(served):
        notes.append(f"too few distinct inputs ({len(served)} < {MIN_DISTINCT_ROWS}) to judge data drift")
    champ, chall = predictions(frame, CHAMPION), predictions(frame, CHALLENGER)
    info["prediction_drift"] = attempt(warnings, "the prediction drift",
                                       lambda: prediction_drift(champ, chall)) if champ and chall else None
    for variant in VARIANTS:
        values = [s.get("drift", {}).get(variant) for s in history]
        values = [v for v in values if v is not None]
        info[f"{variant}_share"] = values[-1] if values else None
    if notes:
        info["note"] = "; ".join(notes)
    return info


def canary_result(state: RolloutState, verdict: Verdict, frame: pd.DataFrame, drift: dict[str, Any], *,
                  run: Any, model_name: str, champion_version: str, challenger_version: str,
                  gateway_url: str, task: str = "classification",
                  target_values: list[float] | None = None,
                  calibrations: Mapping[str, Calibration | None] | None = None) -> CanaryOutput:
    """The canary stage's output; a task with numeric labels (a regression) has each variant's RMSE and MAE
    beside the counts, and its drift the target's: the labels that came back against the training targets
    (``target_values``). A classifier's ``estimated_accuracy`` (label-free, each version's map in ``calibrations``)
    sits beside the realised ``accuracy``."""
    online = summarize_variants(frame, VARIANTS)
    for variant, facts in online.items():
        rows = frame[frame["variant"] == variant] if len(frame) else frame
        facts["estimated_accuracy"] = estimated_accuracy(rows, (calibrations or {}).get(variant))
    if get_task(task).numeric_labels:
        for variant, facts in online.items():
            rows = frame[frame["variant"] == variant] if len(frame) else frame
            facts.update(regression_summary(rows), accuracy=None, correct_rows=None)
        drift = {**drift, "target_drift": target_drift(frame, target_values)}
    return CanaryOutput(
        task=task,
        decision=state.decision,
        reason=state.reason,
        verdict=decision_verdict(verdict),
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
        report_uri=f"{run.info.artifact_uri}/{REPORT_DIR}/canary_report.html" if run is not None else None,
        canary_run_id=run.info.run_id if run is not None else None,
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
                 drift_html: Path | None, warnings: list[str], why: str | None = None) -> None:
    """Judge table per interval, score plot, the HTML page (linking the Evidently report; ``why``: the sentence
    saying why it was decided) and headline metrics, each on its own: one that fails is a warning and the others
    are still logged."""
    rows = [{"interval": s["interval"], "weight": s["weight"], **row} for s in state.history
            for row in s.get("evidence", [])]
    attempt(warnings, "the judge table",
            lambda: mlflow.log_table(pd.DataFrame(rows), artifact_file=f"{REPORT_DIR}/judge_table.json"))
    plot = attempt(warnings, "the score plot", lambda: _log_plot(state.history, tmp / "score.png"))
    report = drift_html if drift_html is not None and drift_html.exists() else None
    if report is not None:
        attempt(warnings, "logging the Evidently report", lambda: mlflow.log_artifact(str(report), REPORT_DIR))

    def page() -> None:
        html = canary_report_html(result.model_dump(mode="json"), verdict.table(), state.history,
                                  drift_report_name=report.name if report else None, plot_png=plot, why=why)
        (tmp / "canary_report.html").write_text(html)
        mlflow.log_artifact(str(tmp / "canary_report.html"), REPORT_DIR)

    attempt(warnings, "the canary report page", page)
    drift = result.drift
    attempt(warnings, "the headline metrics", lambda: (
        mlflow.log_metrics({k: float(v) for k, v in {
            "final_score": verdict.score, "intervals": state.intervals, "drift_share": drift.share,
            "prediction_drift": drift.prediction_drift}.items() if v is not None}),
        mlflow.set_tags({tag("decision"): state.decision or "", tag("verdict"): result.verdict})))


def _log_plot(history: list[dict], path: Path) -> bytes:
    plot = score_plot_png(history)
    path.write_bytes(plot)
    mlflow.log_artifact(str(path), REPORT_DIR)
    return plot


def decision_why(state: RolloutState, verdict: Verdict, cfg: CanaryConfig, decided_by: str | None) -> str:
    """The one sentence saying why the rollout was decided: the deciding verdict's evidence, the step it judged,
    the rollout's window (:func:`monitoring.decision_reason.decision_sentence`)."""
    last = state.history[-1] if state.history else {}
    return decision_sentence(state.decision, verdict.table(), reason=state.reason, decided_by=decided_by,
                             mode=last.get("mode"), weight=last.get("weight"),
                             interval=last.get("interval", state.intervals), window=cfg.window)


def decision_verdict(verdict: Verdict) -> str:
    """The verdict as the result and the decision tags spell it: the deciding look's own word. No data stays
    ``nodata`` (it was spelt ``fail``, so ``--json`` said fail while its reason said every step had no data; the
    decision ``rolled_back`` already says what was done)."""
    return str(verdict.verdict)


def record_decision(client: Any, state: RolloutState, verdict: Verdict, cfg: CanaryConfig, *, model_name: str,
                    challenger_version: str, canary_run_id: str | None, champion_version: str | None = None) -> None:
    """Move the aliases (promote) or tag the challenger rejected (roll back), with the decision tags. Built from the
    record alone, so no evidence step has to succeed before it. A promotion moves ``champion`` only while it still
    points at ``champion_version`` (the version the rollout compared with): :class:`promotion.ChampionMoved`."""
    common = {"reason": state.reason, "verdict": decision_verdict(verdict), "score": verdict.score,
              "canary_run_id": canary_run_id or "", "keep_challenger_alias": cfg.keep_challenger_alias}
    if state.decision == PROMOTED:
        promotion.promote(client, model_name, challenger_version, judged_against=champion_version, **common)
    else:
        promotion.roll_back(client, model_name, challenger_version, **common)


def evidence(run: Any | None, state: RolloutState, verdict: Verdict, frame: pd.DataFrame,
             reference: pd.DataFrame | None, cfg: CanaryConfig, *, decided_by: str | None = None,
             **facts: Any) -> CanaryOutput:
    """The stage's result with its drift report and artifacts (in ``run``, the active MLflow run; None: no run
    could be opened, nothing logged). Each step that fails is a warning in ``result.warnings``. ``decided_by``:
    who decided (the controller, or an operator), for the report's sentence saying why."""
    warnings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="nasops-canary-") as tmp:
        html = Path(tmp) / "data_drift.html"
        drift = attempt(warnings, "the drift summary",
                        lambda: drift_summary(frame, reference, cfg, state.history, html, warnings),
                        {"note": "the drift summary failed (see the warnings)"})
        result = attempt(warnings, "the online summary",
                         lambda: canary_result(state, verdict, frame, drift, run=run, **facts))
        if result is None:  # the summary of what was served failed: the result without it
            result = canary_result(state, verdict, frame.iloc[:0], drift, run=run, **facts)
        if run is not None:
            log_evidence(result, state, verdict, Path(tmp), html, warnings,
                         why=decision_why(state, verdict, cfg, decided_by))
    result.warnings = warnings
    return result


def finish(run: Any, state: RolloutState, verdict: Verdict, frame: pd.DataFrame, reference: pd.DataFrame | None,
           cfg: CanaryConfig, client: Any, **facts: Any) -> CanaryOutput:
    """The registry decision first, then the drift report and evidence artifacts; returns the stage's result."""
    record_decision(client, state, verdict, cfg, model_name=facts["model_name"],
                    challenger_version=facts["challenger_version"], canary_run_id=run.info.run_id)
    return evidence(run, state, verdict, frame, reference, cfg, **facts)
