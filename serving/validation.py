"""Turn a request body into a float32 matrix the model accepts, or a precise 4xx explaining what to send instead.

Checked in order: body size, JSON syntax, the schema (types: numbers only), the batch size, the row width against
the model signature, finite values. Every failure is a :class:`RequestRejected` carrying an HTTP status, a
low-cardinality reason (a metric label) and two sentences: what was wrong, what was expected.
"""

from __future__ import annotations

import numpy as np

from serving.schemas import PredictRequest

FLOAT32_MAX = float(np.finfo(np.float32).max)

_TYPE_ERRORS = {"float_type", "int_type", "string_type", "list_type", "bool_type", "float_parsing", "union_tag_invalid",
                "is_instance_of"}


class RequestRejected(Exception):
    """A client mistake: answered with ``status`` and ``{"error": ..., "detail": ...}``; never a 5xx."""

    def __init__(self, status: int, reason: str, error: str, detail: str) -> None:
        super().__init__(error)
        self.status = status
        self.reason = reason
        self.error = error
        self.detail = detail

    def body(self) -> dict:
        return {"error": self.error, "detail": self.detail}


def expected_contract(n_features: int, max_batch: int) -> str:
    return (
        f'a JSON object {{"inputs": [[{n_features} finite numbers], ...]}} with 1 to {max_batch} rows '
        '(or "instances", or "dataframe_split" with the feature names as columns), optional "request_id"'
    )


def describe_validation_error(exc, limit: int = 3) -> tuple[str, str]:
    """``(reason, message)`` from a pydantic error: where it is and what pydantic said, first few errors only."""
    parts = []
    reason = "schema"
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "body"
        parts.append(f"{loc}: {err.get('msg')}")
        if err.get("type") in _TYPE_ERRORS and loc.startswith(("inputs", "instances", "dataframe_split.data")):
            reason = "dtype"
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"(+{more} more)")
    return reason, "; ".join(parts)


def to_matrix(req: PredictRequest, n_features: int, max_batch: int,
              feature_names: list[str] | None = None, max_abs: float = float(FLOAT32_MAX)) -> np.ndarray:
    """The request's rows as a contiguous float32 ``(n, F)`` array, or :class:`RequestRejected`.

    Every value must be finite, within float32 (the signature's dtype) and within ``max_abs``; a failure names the
    row and the column."""
    expected = expected_contract(n_features, max_batch)
    if req.dataframe_split is not None:
        rows, order = req.dataframe_split.data, _column_order(req.dataframe_split.columns, n_features, feature_names)
        names = req.dataframe_split.columns
    else:
        rows = req.inputs if req.inputs is not None else req.instances
        order, names = None, feature_names
    if not rows:
        raise RequestRejected(422, "batch_size", "the batch has no rows", expected)
    if len(rows) > max_batch:
        raise RequestRejected(413, "batch_size", f"batch of {len(rows)} rows is over the limit",
                              f"at most {max_batch} rows per request")
    for i, row in enumerate(rows):
        if len(row) != n_features:
            raise RequestRejected(422, "shape", f"row {i} has {len(row)} features", f"{n_features} features per row "
                                  f"(the model signature is float32 (-1, {n_features}))")
    try:
        x = np.asarray(rows, dtype=np.float64)
    except OverflowError:  # an integer literal beyond float64: find it (rare, so a plain scan)
        i, j = next((i, j) for i, row in enumerate(rows) for j, v in enumerate(row)
                    if isinstance(v, int) and abs(v) > FLOAT32_MAX)
        raise RequestRejected(422, "range", f"row {i} column {_name(names, j)} is an integer beyond the float32 "
                              "range", _range_hint(max_abs)) from None
    _check_values(x, names, max_abs)
    if order is not None:
        x = x[:, order]
    return np.ascontiguousarray(x.astype(np.float32))


def _column_order(columns: list[str], n_features: int, feature_names: list[str] | None) -> list[int] | None:
    """Where each model feature sits among a ``dataframe_split``'s columns (None: already in model order)."""
    if feature_names:
        missing = [c for c in feature_names if c not in columns]
        extra = [c for c in columns if c not in feature_names]
        if missing or extra or len(columns) != len(feature_names):
            raise RequestRejected(
                422, "shape",
                f"dataframe_split columns do not match the model's features (missing {missing[:5]}, "
                f"unexpected {extra[:5]})", f"exactly these {len(feature_names)} columns: {feature_names[:8]}...",
            )
        return [columns.index(c) for c in feature_names]
    if len(columns) != n_features:
        raise RequestRejected(422, "shape", f"dataframe_split has {len(columns)} columns",
                              f"{n_features} columns, one per feature")
    return None


def _name(names: list[str] | None, j: int) -> str:
    return f"{j} ({names[j]!r})" if names and j < len(names) else str(j)


def _range_hint(max_abs: float) -> str:
    return f"finite numbers with |x| <= {max_abs:g} (float32 range, and the gateway's max_abs_input)"


def _check_values(x: np.ndarray, names: list[str] | None, max_abs: float) -> None:
    """422 for the first value that is not finite, not a float32, or over ``max_abs``."""
    finite = np.isfinite(x)
    if not finite.all():
        i, j = np.argwhere(~finite)[0]
        raise RequestRejected(422, "non_finite", f"row {i} column {_name(names, j)} is {x[i, j]}",
                              "finite numbers only (no NaN or Infinity)")
    magnitude = np.abs(x)
    if (magnitude > FLOAT32_MAX).any():
        i, j = np.argwhere(magnitude > FLOAT32_MAX)[0]
        raise RequestRejected(422, "non_finite", f"row {i} column {_name(names, j)} overflows float32",
                              "numbers within float32 range (|x| < 3.4e38)")
    if (magnitude > max_abs).any():
        i, j = np.argwhere(magnitude > max_abs)[0]
        raise RequestRejected(422, "range", f"row {i} column {_name(names, j)} is {x[i, j]:g}, beyond the accepted "
                              f"magnitude {max_abs:g}", _range_hint(max_abs))


def canonical_label(label, classes: list, where: str):
    """The model class ``label`` names (``3``, ``3.0`` and ``"3"`` all name class ``3``), or 422 naming ``where``."""
    if isinstance(label, float) and not np.isfinite(label):
        raise RequestRejected(422, "label", f"{where}: label {label} is not finite", "one of the model's classes")
    for c in classes:
        if label == c or str(label) == str(c):
            return c
    shown = ", ".join(map(repr, classes[:12])) + (", ..." if len(classes) > 12 else "")
    raise RequestRejected(422, "label", f"{where}: label {label!r} is not one of the model's classes",
                          f"one of the model's classes: {shown}")
