"""The controller's reads of the prediction log, sized by the database rather than by Python.

Why: a canary at 2 x 100 QPS writes a million rows in ~1.4 h, and reading the whole cumulative window as a frame
(every column, the ``inputs`` JSON included) cost ~40 s and 4 GB per reconcile (issue 25, finding 7). Here

- :func:`interval_stats` lets the database compute, per variant and interval (stratum), the counts, sums and sums of
  squares of the judged measures (one ``GROUP BY`` on SQLite and PostgreSQL alike): label coverage, stratum sizes and
  the sampling rates below come from it, exactly, whatever the window's size;
- :func:`sample_rows` reads the per-row values the judge still needs (its rank tests, quantiles and the winsorised
  log scale of a relative metric need values, not sums), and only the columns the judged measures use, never
  ``inputs``; above ``cap`` rows of a variant in a stratum it keeps a deterministic pseudo-random subset (see its
  docstring for what that does to the statistics);
- :func:`sample_inputs` gives drift its bounded sample of raw inputs;
- :func:`class_counts`: the predicted-class mix, counted by the database.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from monitoring.online import FAILED_STATUSES, LABEL_MEASURES
from monitoring.prediction_log import predictions
from monitoring.vocabulary import VARIANTS

__all__ = ["HASH_MODULUS", "class_counts", "columns_for", "coverage_of", "interval_stats", "sample_inputs",
           "sample_rows", "stratum_ranges"]

P = predictions.c
HASH_MULTIPLIER, HASH_MODULUS = 618_034, 1_000_003
"""A row is in a sample when ``(id * 618034) mod 1000003`` is below a threshold ``p * 1000003``: the multiplier is
the golden ratio's share of the (prime) modulus, so consecutive ids land far apart and any run of ids keeps a share
``p`` of itself, evenly spread (a Weyl sequence). The subset is fixed (the same rows at every reconcile, so
re-judging a window gives the same answer), computed by the database, and unrelated to what a row holds."""

BASE_COLUMNS = ("id", "request_id", "row", "ts", "variant", "shadow", "status", "correct")
MEASURE_COLUMNS: dict[str, tuple[str, ...]] = {
    "error": (), "latency_ms": ("latency_ms",), "compute_ms": ("compute_ms",), "correct": (),
    "abs_error": ("prediction", "label"), "confidence": ("probabilities",),
    "expected_correct": ("probabilities",), "prediction_drift": ("prediction",),
    **{m: ("prediction", "probabilities", "label") for m in LABEL_MEASURES},
}
JSON_COLUMNS = ("inputs", "prediction", "probabilities", "label")


def columns_for(measures: Iterable[str]) -> list[str]:
    """The log columns the judged ``measures`` read (the base columns always: ids, time, variant, status, label
    flag), in table order; ``inputs`` is never one of them."""
    wanted = set(BASE_COLUMNS)
    for measure in measures:
        wanted.update(MEASURE_COLUMNS.get(measure, ("prediction", "probabilities", "label")))
    return [c.name for c in predictions.columns if c.name in wanted]


def stratum_ranges(since: float | None, until: float | None, boundaries: Sequence[float] = ()
                   ) -> list[tuple[int, float | None, float | None]]:
    """``(stratum id, from, to)`` of each stratum that meets ``[since, until)``, numbered as
    :func:`monitoring.samples.stratum_of` does: ``i`` for ``[t_{i-1}, t_i)``, 0 before the first boundary, ``len``
    from the last on (None: open). One query per range reads it through the log's ``ts`` index: a ``CASE`` over a
    long rollout's hundreds of boundaries, evaluated on every row, made the database's scan the slow part."""
    bounds = sorted(float(b) for b in boundaries)
    edges: list[float | None] = [None, *bounds, None]
    out = []
    for stratum in range(len(bounds) + 1):
        lo, hi = edges[stratum], edges[stratum + 1]
        lo = since if lo is None else lo if since is None else max(lo, since)
        hi = until if hi is None else hi if until is None else min(hi, until)
        if lo is None or hi is None or lo < hi:
            out.append((stratum, lo, hi))
    return out


def _window(query: sa.Select, since: float | None, until: float | None, model_name: str | None,
            instance: str | None = None) -> sa.Select:
    """Rows of the judged variants in ``[since, until)`` of one model (and of gateways too old to say which); with
    ``instance`` only the rows one gateway wrote (an embedded canary's private gateway beside production's)."""
    query = query.where(P.variant.in_(VARIANTS))
    if since is not None:
        query = query.where(P.ts >= since)
    if until is not None:
        query = query.where(P.ts < until)
    if model_name is not None:
        query = query.where(sa.or_(P.model_name == model_name, P.model_name.is_(None)))
    if instance is not None:
        query = query.where(P.instance == instance)
    return query


def _count(condition: sa.ColumnElement) -> sa.ColumnElement:
    return sa.func.sum(sa.case((condition, 1), else_=0))


def _moments(name: str, value: sa.ColumnElement, condition: sa.ColumnElement) -> list[sa.ColumnElement]:
    """``n``, sum and sum of squares of ``value`` over the rows where ``condition`` holds."""
    kept = sa.case((condition, value), else_=None)
    return [_count(condition).label(f"{name}_n"), sa.func.sum(kept).label(f"{name}_sum"),
            sa.func.sum(kept * kept).label(f"{name}_sumsq")]


def interval_stats(engine: Engine, since: float | None, until: float | None, boundaries: Sequence[float] = (), *,
                   model_name: str | None = None, label_before: float | None = None,
                   instance: str | None = None) -> pd.DataFrame:
    """Per ``(variant, stratum)`` in ``[since, until)``: ``rows``; per request (its row 0, as
    :func:`monitoring.online.requests_of` keeps the first) ``requests`` and ``errors`` (failed or timed out);
    ``latency``/``compute`` ``_n``/``_sum``/``_sumsq`` over answered requests (compute: those that have one);
    ``eligible`` (rows older than ``label_before``: they had the time to get a label; all rows when None),
    ``labelled`` and ``correct`` among them (``correct`` is 0/1, so its sum of squares is its sum)."""
    first = P.row == 0
    answered = sa.and_(first, P.status.notin_(FAILED_STATUSES))
    eligible = sa.true() if label_before is None else P.ts < label_before
    labelled = sa.and_(eligible, P.correct.is_not(None))
    measures = [
        sa.func.count().label("rows"), _count(first).label("requests"),
        _count(sa.and_(first, P.status.in_(FAILED_STATUSES))).label("errors"),
        *_moments("latency", P.latency_ms, answered),
        *_moments("compute", P.compute_ms, sa.and_(answered, P.compute_ms.is_not(None))),
        _count(eligible).label("eligible"), _count(labelled).label("labelled"),
        _count(sa.and_(labelled, P.correct.is_(True))).label("correct"),
    ]
    parts = []
    with engine.connect() as conn:
        for stratum, lo, hi in stratum_ranges(since, until, boundaries):
            query = _window(sa.select(P.variant, *measures), lo, hi, model_name, instance).group_by(P.variant)
            parts.extend({**row, "stratum": stratum} for row in conn.execute(query).mappings())
    frame = pd.DataFrame(parts)
    columns = ["variant", "stratum", "rows", "requests", "errors", "latency_n", "latency_sum", "latency_sumsq",
               "compute_n", "compute_sum", "compute_sumsq", "eligible", "labelled", "correct"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame[columns].fillna(0.0).sort_values(["variant", "stratum"], ignore_index=True)
    counts = [c for c in columns if c not in ("variant", "stratum") and not c.endswith(("_sum", "_sumsq"))]
    frame[counts] = frame[counts].astype(int)
    frame["stratum"] = frame["stratum"].astype(int)
    for c in columns:
        if c.endswith(("_sum", "_sumsq")):
            frame[c] = frame[c].astype(float)
    return frame


def sample_rows(engine: Engine, since: float | None, until: float | None, columns: Sequence[str],
                stats: pd.DataFrame, boundaries: Sequence[float] = (), *, cap: int | None = None,
                model_name: str | None = None, instance: str | None = None
                ) -> tuple[pd.DataFrame, dict[tuple[str, int], float]]:
    """The window's rows, ``columns`` only (JSON ones decoded), and the share of each ``(variant, stratum)``'s rows
    they hold (1.0 where all were read).

    A ``(variant, stratum)`` with more than ``cap`` rows (its ``rows`` in ``stats``, from :func:`interval_stats`)
    is read as the pseudo-random subset of about ``cap`` rows whose id hashes below a threshold. Statistically: a
    uniform random sample (Bernoulli, rate ``cap / rows``) of that stratum's rows, independent of the values, so
    every mean, share and quantile stays unbiased and the time-matched weights stay right once scaled by the
    sampled share (:meth:`monitoring.sources.PredictionLogSource.stratified` does); what is lost is precision, as
    if the variant had served only ``cap`` rows in that stratum: the tests' effective n is the sample's, so a
    difference that needs more rows than the cap to show takes longer to be declared. Rows are sampled, not
    requests: a multi-row request is in when any of its rows is (the request-level measures keep its row 0), which
    over-weights multi-row requests alike for both variants."""
    totals = {(v, int(st)): int(n) for v, st, n in stats[["variant", "stratum", "rows"]].itertuples(index=False)}
    selected = [getattr(P, c) for c in columns]
    parts, fractions = [], {}
    with engine.connect() as conn:
        for stratum, lo, hi in stratum_ranges(since, until, boundaries):
            query = _window(sa.select(*selected), lo, hi, model_name, instance)
            limits = {v: math.ceil(HASH_MODULUS * cap / totals[(v, stratum)]) for v in VARIANTS
                      if cap is not None and totals.get((v, stratum), 0) > cap}
            if limits:
                threshold = sa.case(*[(P.variant == v, t) for v, t in limits.items()], else_=HASH_MODULUS)
                query = query.where(P.id * HASH_MULTIPLIER % HASH_MODULUS < threshold)
            part = pd.DataFrame(conn.execute(query.order_by(P.id)).mappings().all(), columns=list(columns))
            for v in limits:
                fractions[(v, stratum)] = int((part["variant"] == v).sum()) / totals[(v, stratum)]
            parts.append(part)
    parts = [part for part in parts if len(part)]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(columns))
    if len(parts) > 1 and "id" in frame:  # late rows of one stratum may carry lower ids than the next one's
        frame = frame.sort_values("id", ignore_index=True)
    _decode(frame)
    return frame, fractions


def sample_inputs(engine: Engine, since: float | None, until: float | None, *, per_variant: int = 5000,
                  model_name: str | None = None, instance: str | None = None) -> pd.DataFrame:
    """At most about ``per_variant`` rows of each variant in ``[since, until)`` with their raw ``inputs`` (and the
    columns drift reads beside them), the same hashed subset as :func:`sample_rows`: what drift compares with its
    training rows. Drift is judged on distinct inputs and a share of drifted features: a few thousand rows per side
    test it as well as a million, and a million JSON rows are what made a reconcile heavy."""
    columns = ["id", "request_id", "row", "ts", "variant", "shadow", "inputs", "prediction"]
    count = _window(sa.select(P.variant, sa.func.count().label("n")), since, until, model_name,
                    instance).group_by(P.variant)
    with engine.connect() as conn:
        counts = dict(conn.execute(count).all())
        parts = []
        for variant, n in counts.items():
            query = _window(sa.select(*[getattr(P, c) for c in columns]), since, until, model_name, instance)
            query = query.where(P.variant == variant)
            if n > per_variant:
                threshold = math.ceil(HASH_MODULUS * per_variant / n)
                query = query.where(P.id * HASH_MULTIPLIER % HASH_MODULUS < threshold)
            parts.append(pd.DataFrame(conn.execute(query.order_by(P.id).limit(per_variant)).mappings().all(),
                                      columns=columns))
    frame = (pd.concat(parts, ignore_index=True).sort_values("id", ignore_index=True) if parts
             else pd.DataFrame(columns=columns))
    _decode(frame)
    return frame


def class_counts(engine: Engine, since: float | None, until: float | None, variant: str, *,
                 model_name: str | None = None, instance: str | None = None) -> dict[str, float]:
    """How often ``variant`` predicted each class in ``[since, until)``, counted by the database (keys: the decoded
    JSON as :func:`monitoring.sources.label_key` spells it, so ``3`` and ``3.0`` are one class)."""
    from monitoring.sources import label_key

    query = _window(sa.select(P.prediction, sa.func.count()), since, until, model_name, instance)
    query = query.where(P.variant == variant, P.prediction.is_not(None)).group_by(P.prediction)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    out: dict[str, float] = {}
    for text, n in rows:
        key = label_key(json.loads(text))
        out[key] = out.get(key, 0.0) + float(n)
    return out


def _decode(frame: pd.DataFrame) -> None:
    for column in JSON_COLUMNS:
        if column in frame:
            frame[column] = frame[column].map(lambda v: None if v is None else json.loads(v))


def coverage_of(stats: pd.DataFrame, variants: Sequence[str] = VARIANTS) -> dict[str, dict[str, Any]]:
    """Each variant's label coverage over the window from :func:`interval_stats`: served rows, rows old enough for
    a label, labelled rows among them and the labelled share (None without eligible rows)."""
    out: dict[str, dict[str, Any]] = {}
    for variant in variants:
        rows = stats[stats["variant"] == variant]
        eligible, labelled = int(rows["eligible"].sum()), int(rows["labelled"].sum())
        out[variant] = {"rows": int(rows["rows"].sum()), "eligible": eligible, "labelled": labelled,
                        "coverage": labelled / eligible if eligible else None}
    return out

