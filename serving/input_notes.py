"""What the gateway noticed about an accepted request's inputs: columns it ignored, values the model could not use.

A row the contract accepts may still carry information the model cannot use: a column the refresh dropped at
training or one it never saw (ignored, see :func:`serving.validation.ignored_columns`), a category the training
split never had, a date that is not one (encoded as "no category" or imputed, see
``nas.table_model.TableClassifier.input_flags``). Each is answered 200, so without a count nobody would know how
much of the traffic the model half-ignores; this module counts them per column in ``/metrics`` and, when the
caller asks (``"explain_inputs": true``), says them in the answer.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from monitoring.metrics import GatewayMetrics
from serving.validation import UNKNOWN

MAX_UNKNOWN_LABELS = 32
"""Distinct unknown column names counted by name per process; later ones are counted as :data:`OTHER` (a client
inventing names must not grow /metrics without bound)."""
OTHER = "(other)"

_unknown_seen: set[str] = set()
_lock = threading.Lock()


def _label(column: str, reason: str) -> str:
    """``column``, or :data:`OTHER` for an unknown name past the first :data:`MAX_UNKNOWN_LABELS` seen."""
    if reason != UNKNOWN or column in _unknown_seen:
        return column
    with _lock:
        if len(_unknown_seen) >= MAX_UNKNOWN_LABELS:
            return OTHER
        _unknown_seen.add(column)
    return column


def row_flags(model: Any, rows: Any) -> list[dict[str, str]] | None:
    """Per row ``{column: kind}`` from a table model (None for a float-matrix model: every value is a number it
    takes as it is)."""
    flag = getattr(model, "input_flags", None)
    if flag is None or not isinstance(rows, list):
        return None
    return flag(rows)


def count(metrics: GatewayMetrics, model: str, ignored: Mapping[str, str],
          flags: list[dict[str, str]] | None) -> None:
    """Add one request's ignored columns (once per request) and flagged values (once per row) to ``metrics``."""
    for column, reason in ignored.items():
        metrics.ignored_columns.labels(model, _label(column, reason), reason).inc()
    totals: dict[tuple[str, str], int] = {}
    for row in flags or ():
        for column, kind in row.items():
            totals[column, kind] = totals.get((column, kind), 0) + 1
    for (column, kind), n in totals.items():
        metrics.unseen_values.labels(model, column, kind).inc(n)


def explained(payload: dict, ignored: Mapping[str, str], flags: list[dict[str, str]] | None, rows: int) -> dict:
    """The answer with ``input_flags`` (one object per row, empty where nothing was flagged) and
    ``ignored_columns`` (``{column: reason}``)."""
    payload["input_flags"] = flags if flags is not None else [{} for _ in range(rows)]
    payload["ignored_columns"] = dict(ignored)
    return payload
