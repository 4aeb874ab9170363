"""The gateway's Prometheus metrics: one definition, shared by the gateway (writes) and the canary (reads by name).

Base units (seconds), low cardinality: every metric carries ``model`` (the registered model the gateway serves), so
teams sharing one Prometheus never mix; the others are the variant, the version, a status word and a class label,
never a request id. The replica is Prometheus' own ``instance`` (the scrape target), not a label of ours.
Metrics live on a registry passed in, so two gateways in one process (tests) do not share counters. With
``PROMETHEUS_MULTIPROC_DIR`` set *before* ``prometheus_client`` is first imported, every worker process writes its
own memory-mapped files and :func:`render_latest` merges them, so several uvicorn workers report correct totals;
gauges use the ``live*`` modes and a dead worker's gauges are left out of the merge.
"""

from __future__ import annotations

import contextlib
import glob
import os
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REQUESTS_TOTAL = "nasops_requests_total"
REQUEST_DURATION_SECONDS = "nasops_request_duration_seconds"
MODEL_COMPUTE_SECONDS = "nasops_model_compute_seconds"
PREDICTIONS_TOTAL = "nasops_predictions_total"
FEEDBACK_TOTAL = "nasops_feedback_total"
FEEDBACK_RETRACTED_TOTAL = "nasops_feedback_retracted_total"
MODEL_FAULTS_TOTAL = "nasops_model_faults_total"
FALLBACK_TOTAL = "nasops_fallback_total"
SHADOW_TOTAL = "nasops_shadow_total"
DRIFT_SHARE = "nasops_drift_share"
INVALID_REQUESTS_TOTAL = "nasops_invalid_requests_total"
MODEL_INFO = "nasops_model_version_info"
CHALLENGER_WEIGHT = "nasops_challenger_weight"
ROUTED_REQUESTS_TOTAL = "nasops_routed_requests_total"
ROLLOUT_ACTIVE = "nasops_rollout_active"
ROLLOUT_LAST_JUDGED = "nasops_rollout_last_judged_timestamp_seconds"
ROLLOUT_STEP_STARTED = "nasops_rollout_step_started_timestamp_seconds"
ROLLOUT_INTERVAL = "nasops_rollout_interval_seconds"
PRESENCE_GAUGES = (MODEL_INFO,)  # 1 while present; a series at 0 is one that was dropped (drop_series)
IGNORED_COLUMNS_TOTAL = "nasops_ignored_columns_total"
UNSEEN_VALUES_TOTAL = "nasops_unseen_values_total"
LOG_WRITE_FAILURES_TOTAL = "nasops_log_write_failures_total"
LOG_SPILLED_ROWS_TOTAL = "nasops_log_spilled_rows_total"
LOG_DROPPED_ROWS_TOTAL = "nasops_log_dropped_rows_total"
LOG_SPILL_DEPTH = "nasops_log_spill_depth_rows"

# Latency buckets in seconds: sub-millisecond model calls up to multi-second stalls.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# A small model's call alone takes tens of microseconds: two finer buckets below the request latency's.
COMPUTE_BUCKETS = (0.0001, 0.00025, *LATENCY_BUCKETS)

# Values of the ``status`` label of nasops_requests_total (the set is closed: low cardinality).
STATUSES = ("ok", "error", "timeout", "fallback", "invalid")
CONTENT_TYPE = CONTENT_TYPE_LATEST


def multiprocess_dir() -> str | None:
    """The prometheus_client multiprocess directory, if this process runs in multiprocess mode."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


@dataclass
class GatewayMetrics:
    """The metric objects one gateway updates. Build with :meth:`create`."""

    registry: CollectorRegistry
    requests: Counter
    duration: Histogram
    compute: Histogram
    predictions: Counter
    feedback: Counter
    feedback_retracted: Counter
    model_faults: Counter
    fallback: Counter
    shadow: Counter
    drift_share: Gauge
    invalid: Counter
    model_info: Gauge
    challenger_weight: Gauge
    routed: Counter
    rollout_active: Gauge
    rollout_last_judged: Gauge
    rollout_step_started: Gauge
    rollout_interval: Gauge
    ignored_columns: Counter
    unseen_values: Counter
    log_write_failures: Counter
    log_spilled: Counter
    log_dropped: Counter
    log_spill_depth: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> GatewayMetrics:
        """New metric objects on ``registry`` (a fresh one by default)."""
        reg = registry if registry is not None else CollectorRegistry(auto_describe=True)
        return cls(registry=reg, **_answer_metrics(reg), **_label_metrics(reg), **_state_metrics(reg),
                   **_rollout_metrics(reg), **_log_metrics(reg))


def _answer_metrics(reg: CollectorRegistry) -> dict:
    """How each variant answered: outcomes, latency, predicted classes, faults, fallbacks, shadow calls."""
    return dict(
        requests=Counter(
            REQUESTS_TOTAL,
            "Answers attempted per variant (shadow calls included), by outcome: ok, error, timeout, fallback "
            "(the champion answering for a failed challenger) or invalid (a rejected client request).",
            ["model", "variant", "version", "status"], registry=reg,
        ),
        duration=Histogram(
            REQUEST_DURATION_SECONDS, "Seconds a variant took to answer one request, end to end in the gateway "
            "(the wait for a pool thread, the model call and post-processing).", ["model", "variant"],
            buckets=LATENCY_BUCKETS, registry=reg,
        ),
        compute=Histogram(
            MODEL_COMPUTE_SECONDS, "Seconds of the model call alone (predict_proba, measured on the worker thread) "
            "per answered request: what the canary judge compares, free of the gateway's queueing.",
            ["model", "variant"], buckets=COMPUTE_BUCKETS, registry=reg,
        ),
        predictions=Counter(
            PREDICTIONS_TOTAL, "Predicted rows per variant and predicted class.", ["model", "variant", "class"],
            registry=reg,
        ),
        model_faults=Counter(
            MODEL_FAULTS_TOTAL, "Model calls that failed on a valid request, per variant, by reason (error, "
            "timeout, invalid_output: non-finite or mis-shaped logits); never a caller's mistake.",
            ["model", "variant", "reason"], registry=reg,
        ),
        fallback=Counter(
            FALLBACK_TOTAL, "Challenger answers replaced by the champion's, by reason (error, timeout, "
            "invalid_output).", ["model", "reason"], registry=reg,
        ),
        shadow=Counter(
            SHADOW_TOTAL, "Mirrored (shadow) challenger calls by outcome (ok, error, timeout, invalid_output, "
            "dropped).", ["model", "status"], registry=reg,
        ),
    )


def _label_metrics(reg: CollectorRegistry) -> dict:
    """What callers sent back or got wrong: labels joined and retracted, rejected requests."""
    return dict(
        feedback=Counter(
            FEEDBACK_TOTAL, "Rows whose true label arrived, per variant, by correctness.",
            ["model", "variant", "correct"],
            registry=reg,
        ),
        feedback_retracted=Counter(
            FEEDBACK_RETRACTED_TOTAL, "Labelled rows whose label was replaced (feedback sent with overwrite), "
            "per variant and the correctness they had; rows labelled now = nasops_feedback_total minus this.",
            ["model", "variant", "correct"], registry=reg,
        ),
        invalid=Counter(
            INVALID_REQUESTS_TOTAL, "Rejected client requests by reason (json, schema, shape, dtype, non_finite, "
            "range, batch_size, body_size, media_type, label).", ["model", "reason"], registry=reg,
        ),
        ignored_columns=Counter(
            IGNORED_COLUMNS_TOTAL, "Named columns accepted and ignored in answered requests (once per request), by "
            "reason: dropped_at_training (the refresh did not use it) or unknown (unknown_columns=ignore; names "
            "past the first few are counted as column '(other)').", ["model", "column", "reason"], registry=reg,
        ),
        unseen_values=Counter(
            UNSEEN_VALUES_TOTAL, "Values of answered rows the model could not use as sent, per column, by kind: "
            "unseen_category (not in the training split: encoded as no category) or unparseable (a date that is "
            "not one: imputed).", ["model", "column", "kind"], registry=reg,
        ),
    )


def _state_metrics(reg: CollectorRegistry) -> dict:
    """What the gateway serves and how it routes: versions, the split, drift, routed requests per worker."""
    return dict(
        drift_share=Gauge(
            DRIFT_SHARE, "Share of drifted input features (0-1) per variant's traffic, set by the drift step.",
            ["model", "variant"], registry=reg, multiprocess_mode="livemostrecent",
        ),
        model_info=Gauge(
            MODEL_INFO, "1 for the model version each alias currently serves.", ["model", "variant", "version"],
            registry=reg, multiprocess_mode="livemax",
        ),
        challenger_weight=Gauge(
            CHALLENGER_WEIGHT, "Share of traffic routed to the challenger in split mode (0 in shadow mode); "
            "in multiprocess mode one series per live worker (a ``pid`` label), so workers that disagree show.",
            ["model"], registry=reg, multiprocess_mode="liveall",
        ),
        routed=Counter(
            ROUTED_REQUESTS_TOTAL, "Requests routed per worker process and the split it applied (the "
            "challenger weight, or 'shadow'): proves every worker followed every rollout step.",
            ["model", "worker", "weight"], registry=reg,
        ),
    )


def _rollout_metrics(reg: CollectorRegistry) -> dict:
    """The rollout record as every gateway worker reads it: what alerts on a dead controller or a stuck step need.

    The controller runs as short-lived flow runs (nothing to scrape without a pushgateway); the record it writes
    each judged interval is read by every gateway worker anyway, so the gateway publishes its clock."""
    def gauge(name: str, doc: str) -> Gauge:
        return Gauge(name, doc, ["model"], registry=reg, multiprocess_mode="livemostrecent")

    return dict(
        rollout_active=gauge(ROLLOUT_ACTIVE, "1 while a controller's rollout is judging (shadow or split phase); "
                             "0 when paused, decided, manual or absent."),
        rollout_last_judged=gauge(ROLLOUT_LAST_JUDGED, "Unix time of the rollout's last judged interval (a "
                                  "controller heartbeat: it moves every interval while the controller runs)."),
        rollout_step_started=gauge(ROLLOUT_STEP_STARTED, "Unix time the rollout's current step (weight) began."),
        rollout_interval=gauge(ROLLOUT_INTERVAL, "Seconds between two judged intervals of the rollout (its "
                               "configured interval_s)."),
    )


def drop_series(gauge: Gauge, *labelvalues: str) -> None:
    """Stop publishing one series of a presence gauge (``nasops_model_version_info``: a version no longer served).

    ``Gauge.remove`` only forgets the in-memory child: in multiprocess mode the worker's file keeps the last value
    and the merge showed a version /readyz said was unloaded. There the series is set to 0, which
    :func:`render_latest` leaves out (a version is shown while at least one live worker serves it)."""
    if multiprocess_dir():
        gauge.labels(*labelvalues).set(0)
        return
    with contextlib.suppress(KeyError):
        gauge.remove(*labelvalues)


def _log_metrics(reg: CollectorRegistry) -> dict:
    """The prediction log's writer: failed commits, rows journaled while the database is away, rows lost."""
    return dict(
        log_write_failures=Counter(
            LOG_WRITE_FAILURES_TOTAL, "Prediction log commits that failed (each retry of the journal counts): the "
            "database is away or refused a batch.", ["model"], registry=reg,
        ),
        log_spilled=Counter(
            LOG_SPILLED_ROWS_TOTAL, "Prediction log rows written to the local journal because the database did not "
            "take them (replayed in order when it returns).", ["model"], registry=reg,
        ),
        log_dropped=Counter(
            LOG_DROPPED_ROWS_TOTAL, "Prediction log rows lost: the journal was full (its bound), its disk failed, or "
            "the database refused the rows for their content.", ["model"], registry=reg,
        ),
        log_spill_depth=Gauge(
            LOG_SPILL_DEPTH, "Rows waiting in the prediction log's local journal for the database (0: none).",
            ["model"], registry=reg, multiprocess_mode="livesum",
        ),
    )


def render_latest(registry: CollectorRegistry) -> bytes:
    """Prometheus text exposition: merged over all worker processes in multiprocess mode, else ``registry``."""
    path = multiprocess_dir()
    if path:
        merged = CollectorRegistry()
        merged.register(_LiveWorkers(path))
        return generate_latest(merged)
    return generate_latest(registry)


class _LiveWorkers:
    """The merge of every worker's files, without the gauges of workers that are gone (a restarted or killed
    uvicorn worker never calls ``mark_process_dead``: its last versions and weight stayed on show) and without
    presence-gauge series at 0 (:func:`drop_series`). Counters and histograms of dead workers still count."""

    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self):
        from prometheus_client.multiprocess import MultiProcessCollector

        files = [f for f in glob.glob(os.path.join(self.path, "*.db")) if _live_file(f)]
        for metric in MultiProcessCollector.merge(files, accumulate=True):
            if metric.name in PRESENCE_GAUGES:
                metric.samples = [s for s in metric.samples if s.value != 0]
            yield metric


def _live_file(path: str) -> bool:
    """False for a ``gauge_live*_<pid>.db`` file of a process that no longer exists."""
    parts = os.path.basename(path)[:-3].split("_")
    if len(parts) != 3 or parts[0] != "gauge" or not parts[1].startswith("live") or not parts[2].isdigit():
        return True
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
