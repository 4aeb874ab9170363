"""Where the judge's samples come from: the prediction log (one sample per request or row) or Prometheus (one
sample per interval from a PromQL range query). Both return, per metric, ``(champion samples, challenger samples)``
for a time window ``[since, until)`` in unix seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import httpx
import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance
from sqlalchemy.engine import Engine

from monitoring.cbpe import expected_correct
from monitoring.core.model_ref import Calibration
from monitoring.judge_config import MetricConfig
from monitoring.log_aggregates import class_counts, columns_for, coverage_of, interval_stats, sample_rows
from monitoring.online import (
    FAILED_STATUSES,
    LABEL_MEASURES,
    absolute_errors,
    answered_latency_ms,
    correct_flags,
    error_flags,
    label_measure,
    requests_of,
)
from monitoring.prediction_log import create_log_engine, read_predictions
from monitoring.samples import MetricSamples, stratum_of, stratum_weights
from monitoring.vocabulary import CHALLENGER, CHAMPION, VARIANTS

__all__ = [
    "FAILED_STATUSES",
    "VARIANTS",
    "PredictionLogSource",
    "PrometheusSource",
    "SampleSource",
    "collect_samples",
    "label_key",
]

# PromQL for the gateway's metrics (monitoring.metrics); {model}, {variant} and {window} are filled in per query.
# ``model="{model}"``: several models' gateways may share one Prometheus; a query without it would mix their traffic.
# ``or vector(0)``: a variant with no failed request has no error series at all, which means a rate of 0, not "no
# data"; the denominator stays empty (no data) when the variant served nothing in the window.
PROMETHEUS_QUERIES = {
    "error_rate": (
        '(sum(rate(nasops_requests_total{model="{model}",variant="{variant}",status=~"error|timeout"}[{window}])) '
        'or vector(0)) / sum(rate(nasops_requests_total{model="{model}",variant="{variant}"}[{window}]))'
    ),
    "latency_p99_ms": (
        'histogram_quantile(0.99, sum by (le) (rate(nasops_request_duration_seconds_bucket{model="{model}",'
        'variant="{variant}"}[{window}]))) * 1000'
    ),
    "model_latency_p99_ms": (
        'histogram_quantile(0.99, sum by (le) (rate(nasops_model_compute_seconds_bucket{model="{model}",'
        'variant="{variant}"}[{window}]))) * 1000'
    ),
    "online_accuracy": (
        '(sum(rate(nasops_feedback_total{model="{model}",variant="{variant}",correct="true"}[{window}])) '
        'or vector(0)) / sum(rate(nasops_feedback_total{model="{model}",variant="{variant}"}[{window}]))'
    ),
}

Samples = dict[str, tuple[np.ndarray, np.ndarray] | MetricSamples]


class SampleSource(Protocol):
    def collect(self, metrics: Sequence[MetricConfig], since: float, until: float) -> Samples: ...


class PredictionLogSource:
    """Per-request samples from the gateway's prediction log (SQLAlchemy; SQLite or PostgreSQL).

    Measures: ``error`` (1 for a request the variant failed or timed out), ``latency_ms`` (per answered request,
    end to end in the gateway), ``compute_ms`` (per answered request, the model call alone as the gateway's worker
    thread measured it; rows without it, logged before schema 0003, are no sample), ``correct`` (1/0 per row
    with a true label), ``confidence`` (top class probability per row), ``expected_correct`` (per row, the
    calibrated probability that it is right, from the variant's map in ``calibrations``: no labels needed) and
    ``prediction_drift`` (per chunk of consecutive predictions, the Jensen-Shannon distance between the chunk's
    predicted-class mix and ``reference_classes``, e.g. the training labels' mix) and, for a regression model,
    ``abs_error`` (``|prediction - label|`` per labelled row, in the target's units: its ``rms`` is the online RMSE,
    its mean the MAE) with ``prediction_drift`` against ``reference_values`` (the training targets): per chunk the
    Wasserstein distance divided by their standard deviation (Evidently's normed ``wasserstein`` drift method).

    Labels arrive late, from another system. ``correct`` is therefore measured only over rows older than
    ``label_wait_s`` (those that have had the time to get their label), and a variant whose label coverage among
    them is below ``min_label_coverage`` gives no sample (the judge reads NoData and holds, never fails). The
    coverage of the last collect is in :attr:`coverage`.

    A collect stays light at millions of rows (:mod:`monitoring.log_aggregates`): the database counts each
    variant's rows, labels and measures per interval (the coverage and the time-matched strata's sizes come from
    it, exact), and the judge's per-row values are read once, only the columns its measures use (never ``inputs``),
    at most ``max_rows`` per variant (spread evenly over the strata, at least :data:`MIN_STRATUM_ROWS` each): above
    that, a pseudo-random subset of each large stratum, re-weighted to its true size.
    """

    MIN_STRATUM_ROWS = 500

    def __init__(
        self,
        log: Engine | str,
        *,
        reference_classes: Mapping[Any, float] | None = None,
        chunk: int | None = None,
        label_wait_s: float = 0.0,
        min_label_coverage: float = 0.0,
        reference_values: Sequence[float] | None = None,
        calibrations: Mapping[str, Calibration | None] | None = None,
        classes: Sequence[Any] = (),
        metric_params: Mapping[str, Any] | None = None,
        model_name: str | None = None,
        max_rows: int | None = 200_000,
        instance: str | None = None,
    ) -> None:
        self.max_rows = max_rows  # per variant, over the whole window (None: every row)
        self.model_name = model_name  # only this model's rows (several models may share one log)
        self.instance = instance  # only one gateway's rows (an embedded canary's, beside production's)
        self.classes, self.metric_params = list(classes), dict(metric_params or {})  # the refresh metric's terms
        self.engine = create_log_engine(log) if isinstance(log, str) else log
        self.reference = _normalise(reference_classes) if reference_classes else None
        self.reference_values = (np.asarray(reference_values, dtype=float) if reference_values is not None
                                 and len(reference_values) else None)
        self.chunk = chunk
        self.label_wait_s = label_wait_s
        self.min_label_coverage = min_label_coverage
        self.calibrations = dict(calibrations or {})  # variant -> its version's map (monitoring.cbpe)
        self.coverage: dict[str, dict[str, float | int | None]] = {}
        self._until: float | None = None
        self._fractions: dict[tuple[str, int], float] = {}  # (variant, stratum) -> share read, where sampled

    def frame(self, since: float | None, until: float | None) -> pd.DataFrame:
        return read_predictions(self.engine, since, until, model_name=self.model_name, instance=self.instance)

    def collect(self, metrics: Sequence[MetricConfig], since: float | None, until: float | None,
                strata: Sequence[float] | None = None) -> Samples:
        """Per metric the two variants' samples in ``[since, until)``. With ``strata`` (boundaries in unix
        seconds, e.g. the rollout's interval ends) each sample carries its stratum and the time-matched weights
        (:mod:`monitoring.samples`): the champion re-weighted to the challenger's time composition."""
        self._until = until
        chosen = [m for m in metrics if m.source == "prediction_log"]
        bounds = sorted(strata) if strata is not None else []
        label_before = until - self.label_wait_s if self.label_wait_s > 0 and until is not None else None
        stats = interval_stats(self.engine, since, until, bounds, model_name=self.model_name,
                               label_before=label_before, instance=self.instance)
        self.coverage = coverage_of(stats)
        if not chosen:
            return {}
        measures = {m.measure or "" for m in chosen}
        frame, self._fractions = sample_rows(self.engine, since, until, columns_for(measures), stats, bounds,
                                             cap=self._cap(len(bounds) + 1), model_name=self.model_name,
                                             instance=self.instance)
        by_variant = {v: frame[frame["variant"] == v] for v in VARIANTS}
        reference: Mapping[str, float] = {}
        if self.reference_values is None and measures & {"prediction_drift", *LABEL_MEASURES}:
            reference = self.reference or _normalise(class_counts(self.engine, since, until, CHAMPION,
                                                                  model_name=self.model_name,
                                                                  instance=self.instance))
        out: Samples = {}
        for metric in chosen:
            if strata is None:
                out[metric.name] = tuple(  # type: ignore[assignment]
                    self.measure(by_variant[v], metric.measure or "", reference) for v in VARIANTS
                )
            else:
                out[metric.name] = self.stratified(by_variant, metric.measure or "", reference, strata)
        return out

    def _cap(self, strata: int) -> int | None:
        """Rows read per variant and stratum: :attr:`max_rows` spread over the strata."""
        return None if self.max_rows is None else max(self.MIN_STRATUM_ROWS, self.max_rows // max(strata, 1))

    def stratified(self, by_variant: Mapping[str, pd.DataFrame], measure: str, reference: Mapping[str, float],
                   strata: Sequence[float]) -> MetricSamples:
        """One measure per stratum of each variant's rows (served time), with the time-matched weights."""
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        for variant in VARIANTS:
            rows = by_variant[variant]
            ids = stratum_of(rows["ts"].to_numpy(dtype=float), strata) if len(rows) else np.array([], dtype=int)
            values, labels = [], []
            for stratum in np.unique(ids):
                sample = self.measure(rows[ids == stratum], measure, reference)
                values.append(sample)
                labels.append(np.full(len(sample), stratum, dtype=int))
            parts.append((np.concatenate(values) if values else np.array([], dtype=float),
                          np.concatenate(labels) if labels else np.array([], dtype=int)))
        (b, s_b), (c, s_c) = parts
        w_b, w_c = stratum_weights(s_b, s_c)
        fractions = self._fractions
        if fractions:  # a sampled stratum: its weights scaled to the challenger's true rows there
            for stratum in np.unique(s_c):
                scale = 1.0 / max(fractions.get((CHALLENGER, int(stratum)), 1.0), 1e-12)
                w_b[s_b == stratum] *= scale
                w_c[s_c == stratum] *= scale
        return MetricSamples(b, c, w_b, w_c, s_b, s_c)

    def measure(self, rows: pd.DataFrame, measure: str, reference: Mapping[str, float]) -> np.ndarray:
        """One variant's samples of ``measure`` from its log rows."""
        if rows.empty:
            return np.array([], dtype=float)
        if measure == "error":
            return error_flags(rows)
        if measure == "latency_ms":
            return answered_latency_ms(rows)
        if measure == "compute_ms":
            return answered_compute_ms(rows)
        if measure == "correct":
            old_enough = self._labelable(rows, self._until)
            coverage = _coverage(old_enough)
            if coverage is None or coverage < self.min_label_coverage:
                return np.array([], dtype=float)
            return correct_flags(old_enough)
        if measure == "abs_error":
            old_enough = self._labelable(rows, self._until)
            coverage = _coverage(old_enough)
            if coverage is None or coverage < self.min_label_coverage:
                return np.array([], dtype=float)
            return absolute_errors(old_enough)
        if measure in LABEL_MEASURES:  # log_loss, balanced_correct, cost: the refresh-level metric's row terms
            old_enough = self._labelable(rows, self._until)
            coverage = _coverage(old_enough)
            if coverage is None or coverage < self.min_label_coverage:
                return np.array([], dtype=float)
            return label_measure(measure, old_enough, classes=self.classes, reference=reference,
                                 params=self.metric_params)
        if measure == "confidence":
            probs = rows["probabilities"].dropna()
            return np.array([max(p) for p in probs if p], dtype=float)
        if measure == "expected_correct":  # label-free: available from the first interval (monitoring.cbpe)
            return expected_correct(rows, self.calibrations.get(str(rows["variant"].iloc[0])))
        if measure == "prediction_drift":
            if self.reference_values is not None:
                return self._value_distances(rows["prediction"].dropna().tolist())
            return self._chunk_distances(rows["prediction"].dropna().tolist(), reference)
        raise ValueError(f"unknown prediction-log measure {measure!r}")

    def _labelable(self, rows: pd.DataFrame, until: float | None) -> pd.DataFrame:
        """Rows old enough to have had their label (all rows when labels are not waited for)."""
        if self.label_wait_s <= 0 or until is None or rows.empty:
            return rows
        return rows[rows["ts"] < until - self.label_wait_s]

    def label_coverage(self, rows: pd.DataFrame, until: float | None) -> dict[str, float | int | None]:
        """Served rows, rows old enough for a label, labelled rows among them and the coverage (labelled share)."""
        old_enough = self._labelable(rows, until)
        return {"rows": len(rows), "eligible": len(old_enough),
                "labelled": int(old_enough["correct"].notna().sum()) if len(old_enough) else 0,
                "coverage": _coverage(old_enough)}

    def _value_distances(self, predictions: list) -> np.ndarray:
        """Per chunk of predicted values: Wasserstein distance to the reference values / their std."""
        reference = self.reference_values
        scale = float(np.std(reference)) or 1.0
        values = np.asarray([float(p) for p in predictions], dtype=float)
        size = self.chunk or 20
        return np.array([wasserstein_distance(values[i:i + size], reference) / scale
                         for i in range(0, len(values) - size + 1, size)], dtype=float)

    def _chunk_distances(self, predictions: list, reference: Mapping[str, float]) -> np.ndarray:
        if not reference:
            return np.array([], dtype=float)
        keys = [label_key(p) for p in predictions]
        classes = sorted(set(reference) | set(keys))
        size = self.chunk or max(10, len(reference))
        q = np.array([reference.get(c, 0.0) for c in classes])
        index = {c: i for i, c in enumerate(classes)}
        out = []
        for start in range(0, len(keys) - size + 1, size):
            counts = np.zeros(len(classes))
            for key in keys[start:start + size]:
                counts[index[key]] += 1
            out.append(float(jensenshannon(counts / counts.sum(), q, base=2)))
        return np.array(out, dtype=float)


def answered_compute_ms(rows: pd.DataFrame) -> np.ndarray:
    """The model's compute time of each answered request that has one, in milliseconds (same requests as
    :func:`monitoring.online.answered_latency_ms`)."""
    if "compute_ms" not in rows:
        return np.array([], dtype=float)
    requests = requests_of(rows)
    answered = requests.loc[~requests["status"].isin(FAILED_STATUSES), "compute_ms"]
    return answered.dropna().to_numpy(dtype=float)


def _coverage(rows: pd.DataFrame) -> float | None:
    return float(rows["correct"].notna().mean()) if len(rows) else None


def label_key(label: Any) -> str:
    """A class label as a comparable string: ``3``, ``3.0`` (pandas turns int columns with gaps into floats) and
    ``"3"`` are the same class."""
    if isinstance(label, float | np.floating) and float(label).is_integer():
        return str(int(label))
    if isinstance(label, np.integer):
        return str(int(label))
    return str(label)


def _class_counts(predictions: pd.Series) -> dict[str, float]:
    counts: dict[str, float] = {}
    for p in predictions.dropna():
        counts[label_key(p)] = counts.get(label_key(p), 0.0) + 1.0
    return counts


def _normalise(mix: Mapping[Any, float]) -> dict[str, float]:
    total = float(sum(mix.values()))
    return {label_key(k): float(v) / total for k, v in mix.items()} if total > 0 else {}


class PrometheusError(RuntimeError):
    """Prometheus answered with an error (bad PromQL, unreachable server)."""


class PrometheusSource:
    """Per-interval samples from a Prometheus server's HTTP API (``/api/v1/query_range``, one point per step).

    Each metric's ``query`` is a PromQL template; ``{model}`` becomes ``model_name`` (the rollout's model: the
    gateway labels every metric with it), ``{variant}`` the variant name and ``{window}`` the rate window
    (``window_s``, default the step). Intervals without traffic evaluate to NaN/no point and are dropped.
    """

    def __init__(self, url: str, *, step_s: float, window_s: float | None = None, timeout_s: float = 10.0,
                 model_name: str = "") -> None:
        if step_s <= 0:
            raise ValueError(f"step_s must be positive, got {step_s}")
        from monitoring.core.urls import redact_url

        self.url = url.rstrip("/")
        self.shown = redact_url(self.url)  # what messages say: never the password
        self.step_s = float(step_s)
        self.window_s = float(window_s or step_s)
        self.timeout_s = timeout_s
        self.model_name = model_name

    def render(self, template: str, variant: str) -> str:
        if "{model}" in template and not self.model_name:
            raise ValueError("a PromQL template with {model} needs the source's model_name (the rollout's model)")
        window = f"{max(1, math.ceil(self.window_s))}s"
        model = self.model_name.replace("\\", "\\\\").replace('"', '\\"')  # a PromQL string literal's escapes
        return template.replace("{model}", model).replace("{variant}", variant).replace("{window}", window)

    def query_range(self, promql: str, start: float, end: float) -> list[tuple[float, float]]:
        """``(timestamp, value)`` points of every returned series, in time order."""
        try:
            response = httpx.get(
                f"{self.url}/api/v1/query_range",
                params={"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{self.step_s:g}s"},
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as exc:
            said = str(exc) if self.shown == self.url else type(exc).__name__  # a driver may echo the URL
            raise PrometheusError(f"cannot reach Prometheus at {self.shown}: {said}") from None
        try:
            body = response.json()
        except ValueError:
            raise PrometheusError(f"Prometheus at {self.shown} answered {response.status_code} without JSON") from None
        if body.get("status") != "success":
            raise PrometheusError(f"Prometheus rejected {promql!r}: {body.get('errorType')}: {body.get('error')}")
        points: list[tuple[float, float]] = []
        for series in body["data"]["result"]:
            points.extend((float(ts), float(value)) for ts, value in series.get("values", []))
        points.sort()
        return points

    def collect(self, metrics: Sequence[MetricConfig], since: float, until: float) -> Samples:
        out: Samples = {}
        for metric in metrics:
            if metric.source != "prometheus":
                continue
            pair = []
            for variant in VARIANTS:
                values = np.array([v for _, v in self.query_range(self.render(metric.query or "", variant),
                                                                  since, until)], dtype=float)
                pair.append(values[np.isfinite(values)])
            out[metric.name] = (pair[0], pair[1])
        return out


def collect_samples(
    metrics: Sequence[MetricConfig], sources: Mapping[str, SampleSource], since: float, until: float,
    strata: Sequence[float] | None = None,
) -> Samples:
    """Samples of every metric from its configured source; a metric whose source is absent raises ValueError.
    ``strata`` (interval boundaries): the prediction log's samples come time-matched (``PredictionLogSource``);
    Prometheus's per-interval points are already matched in time."""
    needed = {m.source for m in metrics}
    missing = needed - set(sources)
    if missing:
        raise ValueError(f"metrics need source(s) {sorted(missing)} but only {sorted(sources)} are configured")
    samples: Samples = {}
    for name, source in sources.items():
        if name in needed:
            chosen = [m for m in metrics if m.source == name]
            if strata is not None and isinstance(source, PredictionLogSource):
                samples.update(source.collect(chosen, since, until, strata=strata))
            else:
                samples.update(source.collect(chosen, since, until))
    return samples
