"""What a finished refresh leaves for a person browsing MLflow: the quality figures and registered versions on the
refresh (parent) run, and a short description on the registered model.

Issue 24: the refresh run showed no quality metric and no registered model, and the registered model had no
description, so the MLflow UI could not answer "what is this model, who is champion, how good, what was decided".
"""

from __future__ import annotations

import json
from typing import Any

from monitoring.core.tasks import get_task
from monitoring.vocabulary import tag
from pipelines.contracts import CanaryOutput, Contender, HandoverOutput, RefreshResult
from pipelines.rescore import short


def _figure(contender: Contender | None, key: str) -> float | None:
    if contender is None:
        return None
    value = contender.metrics.get(key)
    if value is None:
        value = getattr(contender.offline, key, None)
    return None if value is None or value != value else float(value)


def _challenger(result: RefreshResult) -> Contender | None:
    return next((c for c in result.challenger.ranking if c.version == result.challenger.version), None)


def _champion_figure(result: RefreshResult, version: str | None, key: str) -> float | None:
    """The champion's figure on this refresh's split: from the ranking when it was trained here, else its facts
    read before the refresh (scored again on this split when the data changed)."""
    ranked = next((c for c in result.challenger.ranking if c.version == version), None)
    if ranked is not None:
        return _figure(ranked, key)
    champ = result.champion_before
    if champ is None or champ.version != version:
        return None
    value = champ.figures.get(key, getattr(champ, key, None))
    return None if value is None or value != value else float(value)


def _best_baseline(result: RefreshResult) -> Contender | None:
    models = result.baselines.models if result.baselines else []
    return max(models, key=lambda c: c.score if c.score == c.score else -float("inf"), default=None)


def champion_now(result: RefreshResult) -> str | None:
    """The champion's version after the refresh: the canary's, else the one before, else the crowned baseline."""
    if isinstance(result.canary, CanaryOutput):
        return result.canary.champion_version
    if result.champion_before is not None:
        return result.champion_before.version
    return result.baseline.version if result.baseline else None


def registered_versions(result: RefreshResult) -> list[str]:
    """Every version this refresh registered: baselines, the first champion, the retrained candidates."""
    versions = [c.version for c in (result.baselines.models if result.baselines else [])]
    versions += [result.baseline.version] if result.baseline else []
    versions += [c.version for c in result.challenger.candidates]
    return list(dict.fromkeys(v for v in versions if v))


def run_facts(result: RefreshResult) -> tuple[dict[str, float], dict[str, str]]:
    """The refresh run's metrics (the challenger's ``val_<metric>`` / ``test_<metric>`` and the champion's, on the
    same split) and tags (registered versions, challenger, champion, the split's fingerprint)."""
    metric = result.data.metric
    headline = get_task(result.challenger.task).headline
    keys = list(dict.fromkeys(f"{s}_{m}" for m in (metric, headline) for s in ("val", "test")))
    challenger, champion = _challenger(result), champion_now(result)
    metrics = {k: v for k in keys if (v := _figure(challenger, k)) is not None}
    before = result.champion_before.version if result.champion_before else champion
    metrics.update({f"champion.{k}": v for k in keys if (v := _champion_figure(result, before, k)) is not None})
    split = short(result.data.fingerprint)
    tags = {tag("registered_versions"): ",".join(registered_versions(result)),
            tag("challenger_version"): result.challenger.version, tag("champion_version"): champion or "",
            tag("metric"): metric, tag("split_fingerprint"): split,
            tag("champion_split"): result.champion_before.split if result.champion_before else split}
    if result.champion_before is not None:
        tags[tag("champion_rescored")] = json.dumps(result.champion_before.rescored)
    return metrics, tags


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _decision_line(result: RefreshResult) -> str:
    canary = result.canary
    if canary is None:
        return "Last decision: none (canary skipped; aliases unchanged)."
    if isinstance(canary, HandoverOutput):
        return f"Last decision: pending — {canary.reason}."
    report = f" Report: {canary.report_uri}" if canary.report_uri else ""
    return (f"Last decision: {canary.decision} v{canary.challenger_version} — {canary.reason}.{report}")


def model_description(result: RefreshResult) -> str:
    """A registered model's description, a few lines: what it is, its champion and the champion's metric against
    the best baseline (on one split, named), the last decision with its reason and report."""
    data, metric = result.data, result.data.metric
    key = f"test_{metric}"
    lines = [f"{result.model_name}: {data.task} of {data.target or 'the target'} from {data.source}, refreshed by "
             f"nasops (refresh {result.refresh_id}; ranked by {metric})."]
    champion = champion_now(result)
    ranked = {c.version: c for c in result.challenger.ranking}
    kind = ranked[champion].model_kind if champion in ranked else (
        result.champion_before.model_kind if result.champion_before else "")
    line = f"Champion: v{champion}" + (f" ({kind})" if kind else "") if champion else "Champion: none"
    value = _champion_figure(result, champion, key)
    if value is not None:
        line += f", test {metric} {_fmt(value)}"
        best = _best_baseline(result)
        if best is not None and best.version != champion:
            line += f" vs best baseline {best.model_kind} v{best.version} {_fmt(_figure(best, key))}"
        line += f" (split {short(data.fingerprint)})"
    lines += [line + ".", _decision_line(result)]
    return "\n".join(lines)


def record_refresh(result: RefreshResult, client: Any = None) -> None:
    """Write :func:`run_facts` on the active (refresh) run and :func:`model_description` on the registered
    model. They inform: a store that fails here is a warning, never a failed refresh whose models are registered."""
    import logging

    import mlflow

    from pipelines import registry

    metrics, tags = run_facts(result)
    try:
        if metrics:
            mlflow.log_metrics(metrics)
        mlflow.set_tags(tags)
        client = client or registry.client_for_active()
        client.update_registered_model(result.model_name, description=model_description(result))
    except Exception as exc:  # the refresh's work is done and recorded elsewhere
        logging.getLogger("nasops.refresh").warning("the refresh run's figures or the model description were not "
                                                    "written: %s: %s", type(exc).__name__, exc)
