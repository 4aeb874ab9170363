"""The refresh's canary stage: a Prefect flow that proves the challenger on live traffic, then promotes or rolls back.

One run: start the gateway on loopback serving ``@champion`` and ``@challenger`` (admin API on, with a token made
for this run), replay the ``prod`` split over HTTP interval by interval while stepping the challenger's traffic share
(5% -> 25% -> 50% -> 100% by default, optionally shadow first), send the true labels to ``/feedback``, and after
each interval let the judge (monitoring.judge) compare the variants. Pass -> next step; fail beyond the failure
limit -> roll back; the last step passed -> promote. Evidence (judge table per interval, Evidently drift report,
an HTML report) goes to an MLflow run nested under the refresh's run.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
from prefect import flow, get_run_logger

from monitoring.canary_config import CanaryConfig, load_canary_config
from monitoring.drift import data_drift_report, data_drift_share, features_frame, prediction_drift
from monitoring.judge import Judge, Verdict
from monitoring.prediction_log import create_log_engine, read_predictions
from monitoring.report import canary_report_html, score_plot_png
from monitoring.sources import (
    FAILED_STATUSES,
    PredictionLogSource,
    PrometheusSource,
    SampleSource,
    collect_samples,
    label_key,
)
from nas.data import TaskData
from pipelines import promotion, registry
from pipelines.errors import UserError
from pipelines.settings import Settings

__all__ = ["CanaryConfig", "canary_rollout", "parse_config"]

REPORT_DIR = "canary"


def parse_config(config: dict[str, Any] | CanaryConfig | str | Path | None) -> CanaryConfig:
    """Validate the canary options (a dict, a YAML path or None for the defaults); mistakes -> UserError."""
    if isinstance(config, CanaryConfig):
        return config
    try:
        return load_canary_config(config)
    except ValueError as exc:
        raise UserError(f"{exc}") from None


class GatewayAdmin:
    """The gateway's admin API with this run's bearer token."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10.0)

    def _post(self, path: str, body: dict) -> dict:
        response = self.http.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def set_weight(self, weight: float) -> dict:
        return self._post("/admin/weight", {"weight": weight})

    def set_mode(self, mode: str) -> dict:
        return self._post("/admin/mode", {"mode": mode})

    def state(self) -> dict:
        response = self.http.get("/admin/state")
        response.raise_for_status()
        return response.json()

    def publish_drift(self, variant: str, share: float) -> None:
        self._post("/admin/drift", {"variant": variant, "share": share})

    def wait_ready(self, timeout_s: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            response = self.http.get("/readyz")
            if response.status_code == 200:
                return response.json()
            last = response.json()
            time.sleep(0.2)
        raise UserError(f"the gateway did not load both models within {timeout_s:.0f}s: {last}")

    def close(self) -> None:
        self.http.close()


@dataclass
class Phase:
    """One rollout step: ``mode`` shadow or split, and the challenger's share in split mode."""

    mode: str
    weight: float


def schedule(cfg: CanaryConfig) -> list[Phase]:
    """Shadow first (if configured), then one split phase per step weight."""
    phases = [Phase("shadow", 0.0)] if cfg.shadow_first else []
    return phases + [Phase("split", float(w)) for w in cfg.steps]


@dataclass
class RolloutState:
    """Where the rollout is; :meth:`advance` applies one interval's outcome (the decision rule in one place)."""

    phases: list[Phase]
    cfg: CanaryConfig
    phase_index: int = 0
    passes_in_phase: int = 0
    failures: int = 0
    intervals: int = 0
    decision: str | None = None
    reason: str = ""
    history: list[dict] = field(default_factory=list)

    @property
    def phase(self) -> Phase:
        return self.phases[min(self.phase_index, len(self.phases) - 1)]

    @property
    def needed_passes(self) -> int:
        phase = self.phase
        return self.cfg.shadow_intervals if phase.mode == "shadow" else self.cfg.intervals_per_step

    def outcome(self, verdict: Verdict) -> str:
        """pass / fail / hold for one interval: marginal per ``on_marginal``; no data, or a promotion that would
        rest on critical metrics without data, holds."""
        result = verdict.verdict
        if result == "marginal":
            result = {"hold": "hold", "advance": "pass", "fail": "fail"}[self.cfg.on_marginal]
        if result == "nodata":
            result = "hold"
        last = self.phase_index == len(self.phases) - 1
        if result == "pass" and last and verdict.critical_nodata:
            result = "hold"
        return result

    def advance(self, verdict: Verdict) -> str:
        self.intervals += 1
        outcome = self.outcome(verdict)
        if outcome == "fail":
            self.failures += 1
            if self.failures > self.cfg.failure_limit:
                self.decision = "rolled_back"
                self.reason = (f"judge failed {self.failures} interval(s) (limit {self.cfg.failure_limit}) at "
                               f"{self._where()}: " + "; ".join(verdict.reasons))
        elif outcome == "pass":
            self.passes_in_phase += 1
            if self.passes_in_phase >= self.needed_passes:
                self.phase_index += 1
                self.passes_in_phase = 0
                if self.phase_index >= len(self.phases):
                    self.decision = "promoted"
                    self.reason = (f"passed every step ({', '.join(f'{w:.0%}' for w in self.cfg.steps)}) with "
                                   f"score {verdict.score:.0f}/100 (failed intervals: {self.failures})")
        if self.decision is None and self.intervals >= self.cfg.interval_budget:
            self.decision = "rolled_back"
            self.reason = (f"no passing decision within {self.intervals} intervals (at {self._where()}, last "
                           f"verdict {verdict.verdict}): " + ("; ".join(verdict.reasons) or "not proven better"))
        return outcome

    def _where(self) -> str:
        phase = self.phase
        return "shadow" if phase.mode == "shadow" else f"{phase.weight:.0%} traffic"


def _class_mix(data: TaskData, classes: list) -> dict[str, float]:
    counts = np.bincount(data.y_train, minlength=data.num_classes).astype(float)
    return {str(classes[i]): float(c) for i, c in enumerate(counts)}


def _online_summary(frame: pd.DataFrame) -> dict[str, dict]:
    out = {}
    for variant in ("champion", "challenger"):
        rows = frame[frame["variant"] == variant]
        requests = rows.drop_duplicates("request_id")
        latency = requests["latency_ms"].to_numpy(dtype=float)
        labelled = rows["correct"].dropna()
        out[variant] = {
            "requests": len(requests),
            "errors": int(requests["status"].isin(FAILED_STATUSES).sum()),
            "accuracy": float(labelled.astype(float).mean()) if len(labelled) else None,
            "p50_ms": float(np.percentile(latency, 50)) if len(latency) else None,
            "p99_ms": float(np.percentile(latency, 99)) if len(latency) else None,
        }
    return out


def _served_inputs(frame: pd.DataFrame) -> np.ndarray:
    """Every production row the gateway received, once (fallback and shadow duplicates removed)."""
    rows = frame[~frame["shadow"].astype(bool)].drop_duplicates(["request_id", "row"])
    return np.array(rows["inputs"].tolist(), dtype=float) if len(rows) else np.empty((0, 0))


def _predictions(frame: pd.DataFrame, variant: str) -> list:
    rows = frame[(frame["variant"] == variant) & frame["prediction"].notna()]
    return [label_key(p) for p in rows["prediction"]]


def _interval_drift(frame: pd.DataFrame, reference: pd.DataFrame, cfg: CanaryConfig) -> dict[str, float | None]:
    """Drift shares of each variant's inputs in one interval and challenger-vs-champion prediction drift."""
    out: dict[str, float | None] = {}
    for variant in ("champion", "challenger"):
        rows = frame[frame["variant"] == variant].drop_duplicates(["request_id", "row"])
        if len(rows) >= 10:
            x = np.array(rows["inputs"].tolist(), dtype=float)
            out[variant] = data_drift_share(reference, features_frame(x, list(reference.columns)),
                                            threshold=cfg.drift_threshold).share
        else:
            out[variant] = None
    champ, chall = _predictions(frame, "champion"), _predictions(frame, "challenger")
    out["prediction"] = prediction_drift(champ, chall) if len(champ) >= 10 and len(chall) >= 10 else None
    return out


class DriftWorker:
    """Per-interval drift on one background thread, so Evidently's seconds overlap the next interval's traffic
    instead of adding to it; each result lands in its step dict and on the gateway's ``nasops_drift_share``.
    Intervals that end while the previous computation still runs are skipped (recorded as such)."""

    def __init__(self, log_engine, reference: pd.DataFrame, cfg: CanaryConfig, admin: GatewayAdmin) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.log_engine, self.reference, self.cfg, self.admin = log_engine, reference, cfg, admin
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="canary-drift")
        self.futures: list = []
        self.seconds = 0.0
        self.pool.submit(_import_evidently)  # its import alone takes seconds: do it while the gateway starts

    def submit(self, step: dict, since: float, until: float) -> None:
        """Queue one interval's drift, unless the previous one is still computing (then this interval is skipped:
        at most one computation in flight bounds the overhead on a busy machine)."""
        if any(not f.done() for f in self.futures):
            step["drift"] = {"skipped": True}
            return
        self.futures.append(self.pool.submit(self._run, step, since, until))

    def _run(self, step: dict, since: float, until: float) -> None:
        t0 = time.perf_counter()
        drift = _interval_drift(read_predictions(self.log_engine, since, until), self.reference, self.cfg)
        step["drift"] = drift
        for variant in ("champion", "challenger"):
            if drift.get(variant) is not None:
                # The gauge is best effort; the values stay in the step record either way.
                with contextlib.suppress(httpx.HTTPError):
                    self.admin.publish_drift(variant, float(drift[variant]))
        self.seconds += time.perf_counter() - t0

    def wait(self, timeout_s: float = 120.0) -> float:
        """Block until every submitted interval is done; returns the seconds spent computing drift."""
        from concurrent.futures import wait

        wait(self.futures, timeout=timeout_s)
        for future in self.futures:
            if future.done() and future.exception() is not None:
                _logger().warning("interval drift failed: %s", future.exception())
        return self.seconds

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _import_evidently() -> None:
    import evidently.metrics
    import evidently.presets  # noqa: F401


def _replay_interval(url: str, x: np.ndarray, y: np.ndarray, cfg: CanaryConfig, seed: int, classes: list) -> Any:
    """One interval of traffic; the seed (one per interval) gives each interval its own row order."""
    from pipelines.replay import replay

    return replay(url, x, y, rate=cfg.rate, duration=cfg.interval_s, batch_size=cfg.batch_size,
                  drift=cfg.drift, feedback=cfg.feedback, seed=seed, classes=classes)


def _warm_up(url: str, admin: GatewayAdmin, x: np.ndarray, cfg: CanaryConfig) -> None:
    """Mirror a few requests to both models before the judged window opens: first calls of a freshly loaded model
    are slow (lazy initialisation), and on the variant with fewer samples those outliers would dominate its p99."""
    if cfg.warmup_requests <= 0:
        return
    from pipelines.replay import replay

    admin.set_mode("shadow")
    rows = x[np.arange(cfg.warmup_requests) % len(x)]
    replay(url, rows, None, rate=max(cfg.rate, 50.0), feedback=False, seed=cfg.seed)
    deadline = time.monotonic() + 5.0
    while admin.state().get("shadow_in_flight", 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # the last mirrored calls reach the prediction log before the window opens


def _summary_counts(summary: Any) -> tuple[int, int]:
    """(requests sent, requests that failed for the user) from a ReplaySummary."""
    sent = int(getattr(summary, "sent", 0))
    ok = int(getattr(summary, "ok", sent))
    return sent, max(0, sent - ok)


def _ensure_tracking() -> None:
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    if not is_tracking_uri_set() and not mlflow.active_run():
        from pipelines.tracking import configure_mlflow

        configure_mlflow(Settings())


def _load_data(data_path: str) -> TaskData:
    path = Path(data_path)
    if not path.is_file():
        raise UserError(f"prepared data {data_path!r} does not exist; run the refresh's prepare_data stage first")
    data = TaskData.load(path)
    if data.x_prod is None or len(data.x_prod) == 0:
        raise UserError(f"prepared data {data_path!r} has no 'prod' split to replay; re-run prepare_data")
    return data


@flow(name="canary_rollout", log_prints=True)
def canary_rollout(model_name: str, data_path: str, config: dict | None = None) -> dict:
    """Run the progressive canary of ``@challenger`` against ``@champion`` and decide; returns a JSON-able dict."""
    return run_canary(model_name, data_path, config)


def run_canary(model_name: str, data_path: str, config: dict | CanaryConfig | str | None = None, *,
               on_interval: Callable[[dict], None] | None = None) -> dict:
    """The body of :func:`canary_rollout` (callable without Prefect, e.g. from benchmarks)."""
    from serving.config import GatewaySettings
    from serving.server import start_gateway

    cfg = parse_config(config)
    log = _logger()
    data = _load_data(data_path)
    _ensure_tracking()
    client = registry.client_for_active()
    champion = registry.alias_version(client, model_name, registry.CHAMPION)
    challenger = registry.alias_version(client, model_name, registry.CHALLENGER)
    if champion is None or challenger is None:
        missing = [a for a, v in ((registry.CHAMPION, champion), (registry.CHALLENGER, challenger)) if v is None]
        raise UserError(f"model {model_name!r} has no {' and no '.join(missing)} alias; register versions and set "
                        "the aliases 'champion' and 'challenger' before running the canary")
    if str(champion.version) == str(challenger.version):
        raise UserError(f"'champion' and 'challenger' of {model_name!r} both point at version {champion.version}; "
                        "register a new version as challenger")
    classes = list(data.meta.get("classes") or range(data.num_classes))
    reference_x = data.x_train
    if len(reference_x) > cfg.reference_rows:
        idx = np.random.default_rng(cfg.seed).choice(len(reference_x), cfg.reference_rows, replace=False)
        reference_x = reference_x[np.sort(idx)]
    feature_names = [str(n) for n in data.meta.get("feature_names") or []] or None
    reference = features_frame(reference_x, feature_names)

    settings = Settings()
    token = secrets.token_urlsafe(24)
    phases = schedule(cfg)
    gateway_settings = GatewaySettings(
        tracking_uri=mlflow.get_tracking_uri(), model_name=model_name, challenger_weight=phases[0].weight,
        mode=phases[0].mode, admin_token=token, prediction_log_url=settings.prediction_log_url, poll_interval_s=0,
        challenger_timeout_s=cfg.challenger_timeout_s,
    )
    log_engine = create_log_engine(settings.prediction_log_url)
    sources: dict[str, SampleSource] = {
        "prediction_log": PredictionLogSource(log_engine, reference_classes=_class_mix(data, classes)),
    }
    if cfg.prometheus_url:
        sources["prometheus"] = PrometheusSource(cfg.prometheus_url, step_s=cfg.interval_s)
    judge = Judge(cfg.judge)
    shadow_judge = Judge(cfg.judge.for_shadow())
    state = RolloutState(phases, cfg)
    parent = mlflow.active_run()
    sent_total = failed_total = 0
    verdict: Verdict | None = None
    with mlflow.start_run(run_name=f"canary-{model_name}-v{challenger.version}", nested=parent is not None) as run:
        mlflow.set_tags({"nasops.stage": "canary", "nasops.champion_version": str(champion.version),
                         "nasops.challenger_version": str(challenger.version)})
        mlflow.log_params({"steps": json.dumps(cfg.steps), "interval_s": cfg.interval_s, "rate": cfg.rate,
                           "failure_limit": cfg.failure_limit, "shadow_first": cfg.shadow_first,
                           "drift": cfg.drift or "none", "window": cfg.window, "on_marginal": cfg.on_marginal})
        mlflow.log_dict(cfg.model_dump(mode="json"), f"{REPORT_DIR}/canary_config.json")
        log.info("canary: champion v%s vs challenger v%s, steps %s", champion.version, challenger.version, cfg.steps)
        clock = time.perf_counter()
        timings = {"gateway_start_s": 0.0, "traffic_s": 0.0, "judge_s": 0.0, "drift_s": 0.0}
        # Its own process, as in production: the flow's replay and drift threads must not share its GIL, or the
        # judge would measure their contention as model latency.
        with start_gateway(gateway_settings, mode="process") as gateway:
            admin = GatewayAdmin(gateway.url, token)
            drift_worker = DriftWorker(log_engine, reference, cfg, admin) if cfg.drift_each_interval else None
            try:
                admin.wait_ready()
                _warm_up(gateway.url, admin, data.x_prod, cfg)
                timings["gateway_start_s"] = time.perf_counter() - clock
                started = window_start = time.time()
                current: Phase | None = None
                while state.decision is None:
                    phase = state.phase
                    if phase != current:
                        admin.set_mode(phase.mode)
                        admin.set_weight(phase.weight)
                        if current is not None and current.mode == "shadow" and phase.mode == "split":
                            window_start = time.time()  # split-phase evidence starts clean (no mirrored calls)
                        current = phase
                    t0 = time.time()
                    summary = _replay_interval(gateway.url, data.x_prod, data.y_prod, cfg, cfg.seed + state.intervals,
                                               classes)
                    sent, failed = _summary_counts(summary)
                    sent_total += sent
                    failed_total += failed
                    t1 = time.time()
                    timings["traffic_s"] += t1 - t0
                    since = window_start if cfg.window == "cumulative" else t0
                    active = shadow_judge if phase.mode == "shadow" else judge
                    verdict = active.judge(collect_samples(active.config.metrics, sources, since, t1 + 1.0))
                    timings["judge_s"] += time.time() - t1
                    outcome = state.advance(verdict)
                    step = {"interval": state.intervals, "mode": phase.mode, "weight": phase.weight,
                            "verdict": verdict.verdict, "outcome": outcome, "score": round(verdict.score, 2),
                            "failed_metrics": verdict.failed_metrics, "sent": sent, "failed_requests": failed,
                            "evidence": verdict.table()}
                    if drift_worker is not None:
                        drift_worker.submit(step, t0, t1 + 1.0)
                    state.history.append(step)
                    mlflow.log_metrics({"canary_score": verdict.score, "challenger_weight": phase.weight,
                                        "failed_intervals": state.failures}, step=state.intervals)
                    log.info("interval %d (%s %.0f%%): %s -> %s", state.intervals, phase.mode, 100 * phase.weight,
                             verdict.summary(), outcome)
                    if on_interval:
                        on_interval(step)
                if state.decision == "rolled_back":
                    admin.set_weight(0.0)
                finished = time.time()
                if drift_worker is not None:
                    timings["drift_s"] = drift_worker.wait()
            finally:
                if drift_worker is not None:
                    drift_worker.close()
                admin.close()
        assert verdict is not None
        clock = time.perf_counter()
        frame = read_predictions(log_engine, started, finished + 1.0)
        result = _finish(run, model_name, str(champion.version), str(challenger.version), cfg, state, verdict,
                         frame, reference, client, gateway.url)
        timings["report_s"] = time.perf_counter() - clock
        result["replay"] = {"sent": sent_total, "failed": failed_total}
        result["timings"] = {k: round(v, 2) for k, v in timings.items()}
        mlflow.log_dict(result, f"{REPORT_DIR}/result.json")
    log_engine.dispose()
    log.info("canary decision: %s (%s)", result["decision"], result["reason"])
    return result


def _finish(run, model_name: str, champion_version: str, challenger_version: str, cfg: CanaryConfig,
            state: RolloutState, verdict: Verdict, frame: pd.DataFrame, reference: pd.DataFrame, client,
            gateway_url: str) -> dict:
    """Drift report, evidence artifacts, the registry decision; returns the flow's result dict."""
    run_id = run.info.run_id
    served = _served_inputs(frame)
    champ_preds, chall_preds = _predictions(frame, "champion"), _predictions(frame, "challenger")
    steps_drift = [s.get("drift", {}) for s in state.history]
    with tempfile.TemporaryDirectory(prefix="nasops-canary-") as tmp:
        drift_html = Path(tmp) / "data_drift.html"
        if len(served) >= 10:
            drift = data_drift_report(reference, features_frame(served, list(reference.columns)), drift_html,
                                      threshold=cfg.drift_threshold, detail_columns=cfg.drift_report_features)
            mlflow.log_artifact(str(drift_html), REPORT_DIR)
            drift_info: dict[str, Any] = {"share": drift.share, "dataset_drift": drift.dataset_drift,
                                          "drifted_features": drift.count, "features": drift.columns}
        else:
            drift_info = {"share": None, "dataset_drift": False}
        pred = prediction_drift(champ_preds, chall_preds) if champ_preds and chall_preds else float("nan")
        drift_info["prediction_drift"] = None if pred != pred else pred
        for variant in ("champion", "challenger"):
            values = [d.get(variant) for d in steps_drift if d.get(variant) is not None]
            drift_info[f"{variant}_share"] = values[-1] if values else None
        decided_champion = challenger_version if state.decision == "promoted" else champion_version
        result: dict[str, Any] = {
            "decision": state.decision,
            "reason": state.reason,
            "verdict": "fail" if verdict.verdict == "nodata" else verdict.verdict,
            "score": round(float(verdict.score), 2),
            "champion_version": decided_champion,
            "challenger_version": challenger_version,
            "previous_champion_version": champion_version,
            "intervals": state.intervals,
            "failed_intervals": state.failures,
            "steps": [{k: s[k] for k in ("interval", "mode", "weight", "verdict", "outcome", "score")}
                      for s in state.history],
            "evidence": verdict.table(),
            "online": _online_summary(frame),
            "drift": drift_info,
            "report_uri": f"{run.info.artifact_uri}/{REPORT_DIR}/canary_report.html",
            "canary_run_id": run_id,
            "gateway_url": gateway_url,
            "model_name": model_name,
        }
        evidence = verdict.table()
        evidence_rows = [{"interval": s["interval"], "weight": s["weight"], **row}
                         for s in state.history for row in s["evidence"]]
        mlflow.log_table(pd.DataFrame(evidence_rows), artifact_file=f"{REPORT_DIR}/judge_table.json")
        plot = score_plot_png(state.history)
        (Path(tmp) / "score.png").write_bytes(plot)
        mlflow.log_artifact(str(Path(tmp) / "score.png"), REPORT_DIR)
        page = canary_report_html(result, evidence, state.history,
                                  drift_report_name="data_drift.html" if drift_html.exists() else None, plot_png=plot)
        (Path(tmp) / "canary_report.html").write_text(page)
        mlflow.log_artifact(str(Path(tmp) / "canary_report.html"), REPORT_DIR)
    mlflow.log_metrics({k: float(v) for k, v in {
        "final_score": verdict.score, "intervals": state.intervals, "drift_share": drift_info.get("share"),
        "prediction_drift": drift_info.get("prediction_drift")}.items() if v is not None})
    mlflow.set_tags({"nasops.decision": state.decision or "", "nasops.verdict": result["verdict"]})
    reason = state.reason
    if state.decision == "promoted":
        promotion.promote(client, model_name, challenger_version, reason=reason, verdict=result["verdict"],
                          score=verdict.score, canary_run_id=run_id, keep_challenger_alias=cfg.keep_challenger_alias)
    else:
        promotion.roll_back(client, model_name, challenger_version, reason=reason, verdict=result["verdict"],
                            score=verdict.score, canary_run_id=run_id, keep_challenger_alias=cfg.keep_challenger_alias)
    return result


def _logger():
    try:
        return get_run_logger()
    except Exception:  # called outside a flow run (benchmarks, notebooks)
        import logging

        return logging.getLogger("nasops.canary")
