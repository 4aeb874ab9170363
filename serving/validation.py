"""Turn a request body into a float32 matrix the model accepts, or a precise 4xx explaining what to send instead.

Checked in order: body size, JSON syntax, the schema (types: numbers only), the batch size, the row width against
the model signature, finite values. Every failure is a :class:`RequestRejected` carrying an HTTP status, a
low-cardinality reason (a metric label) and two sentences: what was wrong, what was expected.
"""

from __future__ import annotations

import numpy as np

from serving.schemas import PredictRequest

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
              feature_names: list[str] | None = None) -> np.ndarray:
    """The request's rows as a contiguous float32 ``(n, F)`` array, or :class:`RequestRejected`."""
    expected = expected_contract(n_features, max_batch)
    if req.dataframe_split is not None:
        rows = req.dataframe_split.data
        columns = req.dataframe_split.columns
        if feature_names:
            missing = [c for c in feature_names if c not in columns]
            extra = [c for c in columns if c not in feature_names]
            if missing or extra or len(columns) != len(feature_names):
                raise RequestRejected(
                    422, "shape",
                    f"dataframe_split columns do not match the model's features (missing {missing[:5]}, "
                    f"unexpected {extra[:5]})", f"exactly these {len(feature_names)} columns: {feature_names[:8]}...",
                )
            order = [columns.index(c) for c in feature_names]
        elif len(columns) != n_features:
            raise RequestRejected(422, "shape", f"dataframe_split has {len(columns)} columns",
                                  f"{n_features} columns, one per feature")
        else:
            order = None
    else:
        rows = req.inputs if req.inputs is not None else req.instances
        order = None
    if not rows:
        raise RequestRejected(422, "batch_size", "the batch has no rows", expected)
    if len(rows) > max_batch:
        raise RequestRejected(413, "batch_size", f"batch of {len(rows)} rows is over the limit",
                              f"at most {max_batch} rows per request")
    for i, row in enumerate(rows):
        if len(row) != n_features:
            raise RequestRejected(422, "shape", f"row {i} has {len(row)} features", f"{n_features} features per row "
                                  f"(the model signature is float32 (-1, {n_features}))")
    x = np.asarray(rows, dtype=np.float64)
    if order is not None:
        x = x[:, order]
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise RequestRejected(422, "non_finite", f"row {bad[0]} feature {bad[1]} is {x[bad[0], bad[1]]}",
                              "finite numbers only (no NaN or Infinity)")
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    if not np.isfinite(x32).all():
        bad = np.argwhere(~np.isfinite(x32))[0]
        raise RequestRejected(422, "non_finite", f"row {bad[0]} feature {bad[1]} overflows float32",
                              "numbers within float32 range (|x| < 3.4e38)")
    return np.ascontiguousarray(x32)
