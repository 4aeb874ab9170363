"""The canary stage: a Prefect flow that proves the challenger on live traffic, then promotes or rolls back.

One run opens a gateway session serving ``@champion`` and ``@challenger``, plays the ``prod`` split at it interval
by interval while stepping the challenger's traffic share (5% -> 25% -> 50% -> 100% by default, optionally shadow
first), sends the true labels to ``/feedback``, and after each interval lets the judge compare the variants; the
rollout state machine turns each verdict into the next step. Evidence goes to an MLflow run nested under the
refresh's run (see :mod:`pipelines.canary.evidence`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from prefect import flow, get_run_logger

from monitoring.drift import features_frame
from monitoring.judge import Judge, Verdict
from monitoring.sources import PredictionLogSource, PrometheusSource, SampleSource, collect_samples
from monitoring.vocabulary import CHALLENGER, CHAMPION, ROLLED_BACK, tag
from nas.data import TaskData
from pipelines import registry
from pipelines.canary.config import CanaryConfig, load_canary_config
from pipelines.canary.drift import DriftWorker
from pipelines.canary.evidence import REPORT_DIR, finish
from pipelines.canary.rollout import Phase, RolloutState, schedule
from pipelines.errors import UserError
from pipelines.gateway_session import GatewaySession, gateway_session
from pipelines.tracking import ensure_tracking


def parse_config(config: dict[str, Any] | CanaryConfig | str | Path | None) -> CanaryConfig:
    """Validate the canary options (a dict, a YAML path or None for the defaults); mistakes -> UserError."""
    if isinstance(config, CanaryConfig):
        return config
    try:
        return load_canary_config(config)
    except ValueError as exc:
        raise UserError(f"{exc}") from None


def load_prepared(data_path: str) -> TaskData:
    """The prepared data of a refresh, with the ``prod`` split the traffic replays."""
    path = Path(data_path)
    if not path.is_file():
        raise UserError(f"prepared data {data_path!r} does not exist; run the refresh's prepare_data stage first")
    data = TaskData.load(path)
    if data.x_prod is None or len(data.x_prod) == 0:
        raise UserError(f"prepared data {data_path!r} has no 'prod' split to replay; re-run prepare_data")
    return data


def _variants(client: Any, model_name: str) -> tuple[Any, Any]:
    champion = registry.alias_version(client, model_name, CHAMPION)
    challenger = registry.alias_version(client, model_name, CHALLENGER)
    if champion is None or challenger is None:
        missing = [a for a, v in ((CHAMPION, champion), (CHALLENGER, challenger)) if v is None]
        raise UserError(f"model {model_name!r} has no {' and no '.join(missing)} alias; register versions and set "
                        "the aliases 'champion' and 'challenger' before running the canary")
    if str(champion.version) == str(challenger.version):
        raise UserError(f"'champion' and 'challenger' of {model_name!r} both point at version {champion.version}; "
                        "register a new version as challenger")
    return champion, challenger


def _reference(data: TaskData, cfg: CanaryConfig) -> pd.DataFrame:
    """Training rows (a seeded sample) as the drift reference."""
    x = data.x_train
    if len(x) > cfg.reference_rows:
        x = x[np.sort(np.random.default_rng(cfg.seed).choice(len(x), cfg.reference_rows, replace=False))]
    names = [str(n) for n in data.meta.get("feature_names") or []] or None
    return features_frame(x, names)


def _class_mix(data: TaskData, classes: list) -> dict[str, float]:
    counts = np.bincount(data.y_train, minlength=data.num_classes).astype(float)
    return {str(classes[i]): float(c) for i, c in enumerate(counts)}


@dataclass
class _Loop:
    """What one canary's interval loop needs and accumulates."""

    session: GatewaySession
    data: TaskData
    cfg: CanaryConfig
    classes: list
    sources: dict[str, SampleSource]
    state: RolloutState
    log: Any
    sent: int = 0
    failed: int = 0
    verdict: Verdict | None = None
    started: float = 0.0
    traffic_s: float = 0.0
    judge_s: float = 0.0


def _interval(loop: _Loop, phase: Phase, window_start: float, judges: dict[str, Judge]) -> dict:
    """Play one interval of traffic, judge it, advance the rollout; returns the step record."""
    cfg, state = loop.cfg, loop.state
    t0 = time.time()
    summary = loop.session.replay(loop.data.x_prod, loop.data.y_prod, rate=cfg.rate, duration=cfg.interval_s,
                                  batch_size=cfg.batch_size, drift=cfg.drift, feedback=cfg.feedback,
                                  seed=cfg.seed + state.intervals, classes=loop.classes)
    sent = int(getattr(summary, "sent", 0))
    failed = max(0, sent - int(getattr(summary, "ok", sent)))
    loop.sent, loop.failed = loop.sent + sent, loop.failed + failed
    t1 = time.time()
    judge = judges[phase.mode]
    since = window_start if cfg.window == "cumulative" else t0
    loop.verdict = judge.judge(collect_samples(judge.config.metrics, loop.sources, since, t1 + 1.0))
    loop.traffic_s += t1 - t0
    loop.judge_s += time.time() - t1
    outcome = state.advance(loop.verdict)
    step = {"interval": state.intervals, "mode": phase.mode, "weight": phase.weight,
            "verdict": loop.verdict.verdict, "outcome": outcome, "score": round(loop.verdict.score, 2),
            "failed_metrics": loop.verdict.failed_metrics, "sent": sent, "failed_requests": failed,
            "evidence": loop.verdict.table(), "window": [t0, t1 + 1.0]}
    state.history.append(step)
    mlflow.log_metrics({"canary_score": loop.verdict.score, "challenger_weight": phase.weight,
                        "failed_intervals": state.failures}, step=state.intervals)
    loop.log.info("interval %d (%s %.0f%%): %s -> %s", state.intervals, phase.mode, 100 * phase.weight,
                  loop.verdict.summary(), outcome)
    return step


def _run_loop(loop: _Loop, drift: DriftWorker | None, on_interval: Callable[[dict], None] | None) -> float:
    """Intervals until the rollout decides; returns the time the last one ended."""
    judges = {"split": Judge(loop.cfg.judge), "shadow": Judge(loop.cfg.judge.for_shadow())}
    admin, state = loop.session.admin, loop.state
    loop.started = window_start = time.time()
    current: Phase | None = None
    while state.decision is None:
        phase = state.phase
        if phase != current:
            admin.set_mode(phase.mode)
            admin.set_weight(phase.weight)
            if current is not None and current.mode == "shadow" and phase.mode == "split":
                window_start = time.time()  # split-phase evidence starts clean (no mirrored calls)
            current = phase
        step = _interval(loop, phase, window_start, judges)
        if drift is not None:
            drift.submit(step, *step["window"])
        if on_interval:
            on_interval(step)
    if state.decision == ROLLED_BACK:
        admin.set_weight(0.0)
    return time.time()


@flow(name="canary_rollout", log_prints=True)
def canary_rollout(model_name: str, data_path: str, config: dict | CanaryConfig | None = None) -> dict:
    """Run the progressive canary of ``@challenger`` against ``@champion`` and decide; returns a JSON-able dict."""
    return run_canary(model_name, data_path, config)


def run_canary(model_name: str, data_path: str, config: dict | CanaryConfig | str | None = None, *,
               on_interval: Callable[[dict], None] | None = None) -> dict:
    """The body of :func:`canary_rollout` (callable without Prefect, e.g. from benchmarks)."""
    cfg = parse_config(config)
    log = _logger()
    data = load_prepared(data_path)
    ensure_tracking()
    client = registry.client_for_active()
    champion, challenger = _variants(client, model_name)
    classes = list(data.meta.get("classes") or range(data.num_classes))
    reference = _reference(data, cfg)
    phases = schedule(cfg)
    parent = mlflow.active_run()
    with mlflow.start_run(run_name=f"canary-{model_name}-v{challenger.version}", nested=parent is not None) as run:
        mlflow.set_tags({tag("stage"): "canary", tag("champion_version"): str(champion.version),
                         tag("challenger_version"): str(challenger.version)})
        mlflow.log_params({"steps": json.dumps(cfg.steps), "interval_s": cfg.interval_s, "rate": cfg.rate,
                           "failure_limit": cfg.failure_limit, "shadow_first": cfg.shadow_first,
                           "drift": cfg.drift or "none", "window": cfg.window, "on_marginal": cfg.on_marginal})
        mlflow.log_dict(cfg.model_dump(mode="json"), f"{REPORT_DIR}/canary_config.json")
        log.info("canary: champion v%s vs challenger v%s, steps %s", champion.version, challenger.version, cfg.steps)
        clock = time.perf_counter()
        with gateway_session(model_name, weight=phases[0].weight, mode=phases[0].mode,
                             challenger_timeout_s=cfg.challenger_timeout_s) as session:
            loop = _Loop(session, data, cfg, classes, _sources(session, data, classes, cfg),
                         RolloutState(phases, cfg), log)
            drift = DriftWorker(session.log_engine, reference, cfg, session.admin) if cfg.drift_each_interval else None
            try:
                session.admin.wait_ready()
                session.warm_up(data.x_prod, cfg.warmup_requests, rate=cfg.rate, seed=cfg.seed)
                gateway_start_s = time.perf_counter() - clock
                finished = _run_loop(loop, drift, on_interval)
                drift_s = drift.wait() if drift is not None else 0.0
            finally:
                if drift is not None:
                    drift.close()
            assert loop.verdict is not None
            frame = session.frame(loop.started, finished + 1.0)
            result = finish(run, loop.state, loop.verdict, frame, reference, cfg, client, model_name=model_name,
                            champion_version=str(champion.version), challenger_version=str(challenger.version),
                            gateway_url=session.url)
        result["replay"] = {"sent": loop.sent, "failed": loop.failed}
        result["timings"] = {"gateway_start_s": round(gateway_start_s, 2), "traffic_s": round(loop.traffic_s, 2),
                             "judge_s": round(loop.judge_s, 2), "drift_s": round(drift_s, 2),
                             "total_s": round(time.perf_counter() - clock, 2)}
        mlflow.log_dict(result, f"{REPORT_DIR}/result.json")
    log.info("canary decision: %s (%s)", result["decision"], result["reason"])
    return result


def _sources(session: GatewaySession, data: TaskData, classes: list, cfg: CanaryConfig) -> dict[str, SampleSource]:
    sources: dict[str, SampleSource] = {
        "prediction_log": PredictionLogSource(session.log_engine, reference_classes=_class_mix(data, classes)),
    }
    if cfg.prometheus_url:
        sources["prometheus"] = PrometheusSource(cfg.prometheus_url, step_s=cfg.interval_s)
    return sources


def _logger() -> Any:
    try:
        return get_run_logger()
    except Exception:  # called outside a flow run (benchmarks, notebooks)
        return logging.getLogger("nasops.canary")
