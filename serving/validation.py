"""Turn a request body into what the model accepts, or a precise 4xx explaining what to send instead.

A float-matrix model (images, numeric tables) gets a float32 matrix: checked in order are body size, JSON syntax,
the schema (types: numbers only), the batch size, the row width against the model signature, finite values. A
table model (raw named columns, encoded inside the model) gets named rows checked against its input schema
(:func:`to_table_rows`): unknown columns, missing required columns and wrong types are named, all of them at once.
Named columns the model does not take are sorted by :func:`ignored_columns` first: a column the refresh dropped at
training (constant, an ID) is always accepted and ignored, as MLflow's pyfunc ignores extra columns; any other
follows the gateway's ``unknown_columns`` policy (``ignore``, counted, or ``reject``, a 422).
Every failure is a :class:`RequestRejected` carrying an HTTP status, a low-cardinality reason (a metric label) and
two sentences: what was wrong, what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

import numpy as np
from pydantic import TypeAdapter, ValidationError

from serving.schemas import PredictRequest, Row

_NUMBER_ROWS = TypeAdapter(list[Row])

DROPPED_AT_TRAINING = "dropped_at_training"
UNKNOWN = "unknown"
UNKNOWN_POLICIES = ("ignore", "reject")

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
        if err.get("type") in _TYPE_ERRORS and loc.startswith(("inputs", "instances", "dataframe_split.data",
                                                               "records", "dataframe_records")):
            reason = "dtype"
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"(+{more} more)")
    return reason, "; ".join(parts)


def to_matrix(req: PredictRequest, n_features: int, max_batch: int,
              feature_names: list[str] | None = None, max_abs: float = float(FLOAT32_MAX),
              ignore: Collection[str] = ()) -> np.ndarray:
    """The request's rows as a contiguous float32 ``(n, F)`` array, or :class:`RequestRejected`.

    Every value must be finite, within float32 (the signature's dtype) and within ``max_abs``; a failure names the
    row and the column. Named columns in ``ignore`` (see :func:`ignored_columns`) are left out."""
    expected = expected_contract(n_features, max_batch)
    if req.dataframe_split is not None:
        columns, rows = _without(req.dataframe_split.columns, req.dataframe_split.data, ignore)
        order, names = _column_order(columns, n_features, feature_names), columns
        _numbers_only(rows, names)
    elif _records(req) is not None:
        records = [{k: v for k, v in r.items() if k not in ignore} for r in _records(req)] if ignore else _records(req)
        rows, order, names = _records_as_rows(records, feature_names, max_batch), None, feature_names
    else:
        rows = req.inputs if req.inputs is not None else req.instances
        order, names = None, feature_names
        _numbers_only(rows, names)
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


def _without(columns: list[str], rows: list[list], ignore: Collection[str]) -> tuple[list[str], list[list]]:
    """A ``dataframe_split`` without its ignored columns (rows of another length are left for the shape check)."""
    if not ignore or not any(c in ignore for c in columns):
        return columns, rows
    keep = [j for j, c in enumerate(columns) if c not in ignore]
    return [columns[j] for j in keep], [[row[j] for j in keep] if len(row) == len(columns) else row for row in rows]


def sent_columns(req: PredictRequest) -> list[str]:
    """The column names a request sends, in first-seen order (none for the positional ``inputs`` forms)."""
    if req.dataframe_split is not None:
        return list(dict.fromkeys(req.dataframe_split.columns))
    return list(dict.fromkeys(k for r in _records(req) or [] for k in r))


def ignored_columns(req: PredictRequest, known: Collection[str], dropped: Mapping[str, str],
                    policy: str = "ignore") -> dict[str, str]:
    """``{column: reason}`` for the sent columns the model does not take and the gateway accepts and ignores:
    those the refresh dropped at training (:data:`DROPPED_AT_TRAINING`: the training table's own rows are
    answered), and, under ``policy="ignore"``, any other (:data:`UNKNOWN`). Under ``reject`` an unknown column is
    left for the validator, which names it in its 422."""
    out = {}
    for column in sent_columns(req):
        if column in known:
            continue
        if column in dropped:
            out[column] = DROPPED_AT_TRAINING
        elif policy == "ignore":
            out[column] = UNKNOWN
    return out


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


def _records(req: PredictRequest) -> list[dict] | None:
    return req.records if req.records is not None else req.dataframe_records


def _batch_size(n: int, max_batch: int, expected: str) -> None:
    if n == 0:
        raise RequestRejected(422, "batch_size", "the batch has no rows", expected)
    if n > max_batch:
        raise RequestRejected(413, "batch_size", f"batch of {n} rows is over the limit",
                              f"at most {max_batch} rows per request")


def _numbers_only(rows: list[list], names: list[str] | None) -> None:
    """A float-matrix model takes numbers only (``dataframe_split`` cells may also be text for a table model)."""
    try:
        _NUMBER_ROWS.validate_python(rows)  # strict numbers, in Rust: the common case costs microseconds
        return
    except ValidationError:
        pass
    number = (int, float)  # exact types: a JSON true is a bool, not the number 1
    for i, row in enumerate(rows):
        if all(type(v) in number for v in row):
            continue
        j, v = next((j, v) for j, v in enumerate(row) if type(v) not in number)
        raise RequestRejected(422, "dtype", f"row {i} column {_name(names, j)} is {v!r}, not a valid number",
                              "numbers only: this model takes a float matrix")


def _records_as_rows(records: list[dict], feature_names: list[str] | None, max_batch: int) -> list[list]:
    """Named rows for a float-matrix model: every feature by name, nothing else, numbers only, in model order."""
    if not feature_names:
        raise RequestRejected(422, "shape", "this model does not name its features, so named rows cannot be "
                              "matched to its columns", 'rows of numbers: {"inputs": [[...], ...]}')
    _batch_size(len(records), max_batch, f"1 to {max_batch} named rows")
    known = set(feature_names)
    unknown = sorted({k for r in records for k in r} - known)
    missing = [c for c in feature_names if any(c not in r for r in records)]
    if unknown or missing:
        raise RequestRejected(422, "shape", f"named rows do not match the model's features (unknown column(s) "
                              f"{unknown[:5]}, missing {missing[:5]})",
                              f"exactly these {len(feature_names)} columns: {feature_names[:8]}...")
    rows = [[r[c] for c in feature_names] for r in records]
    _numbers_only(rows, feature_names)
    return rows


def table_contract(schema: list[dict], max_batch: int) -> str:
    shown = ", ".join(f"{c['name']} ({c['type']}{', optional' if c['optional'] else ''})" for c in schema[:12])
    more = f", … ({len(schema) - 12} more)" if len(schema) > 12 else ""
    return (f'named rows {{"records": [{{"column": value, ...}}, ...]}} (or "dataframe_records", "dataframe_split") '
            f"with 1 to {max_batch} rows and the model's columns {shown}{more}; an optional column may be absent "
            "or null")


_KINDS = {"double": "a number", "string": "text (a category)", "boolean": "true or false"}


def within(value: int | float, max_abs: float) -> bool:
    """True for a finite number with ``|value| <= max_abs``: the one bound every numeric input passes (matrix,
    named rows, regression labels). An ``int`` is compared exactly: ``math.isfinite`` and ``float()`` raise
    ``OverflowError`` on integers past ~1e308 (a 309-digit JSON integer was a 500)."""
    if isinstance(value, int):
        return abs(value) <= max_abs
    return math.isfinite(value) and abs(value) <= max_abs


def _cell_problem(value, column: dict, max_abs: float) -> tuple[str, str] | None:
    """``(reason, what is wrong)`` for one present value of a column, or None."""
    kind = column["type"]
    if kind == "double":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "dtype", f"is {value!r}, expected {_KINDS[kind]}"
        if not within(value, max_abs):
            return "range", f"is {short_value(value)}, beyond the accepted magnitude {max_abs:g}"
        return None
    expected_type = str if kind == "string" else bool
    if not isinstance(value, expected_type):
        return "dtype", f"is {value!r}, expected {_KINDS.get(kind, kind)}"
    return None


def to_table_rows(req: PredictRequest, schema: list[dict], max_batch: int,
                  max_abs: float = float(FLOAT32_MAX), limit: int = 5, ignore: Collection[str] = ()) -> list[dict]:
    """The request's rows as dicts over every schema column (absent or null optional values ``None``: the model
    imputes them), or :class:`RequestRejected` naming unknown columns (but those in ``ignore``), missing required
    ones and wrong types — every problem (up to ``limit``) in one answer. The ``inputs`` form means rows in the
    schema's column order."""
    names = [c["name"] for c in schema]
    expected = table_contract(schema, max_batch)
    records = _records(req)
    if records is None and req.dataframe_split is not None:
        columns = req.dataframe_split.columns
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise RequestRejected(422, "shape", f"dataframe_split names column(s) {repeated} more than once",
                                  expected)
        for i, row in enumerate(req.dataframe_split.data):
            if len(row) != len(columns):
                raise RequestRejected(422, "shape", f"row {i} has {len(row)} values for {len(columns)} columns",
                                      "one value per column of `columns`")
        records = [dict(zip(columns, row, strict=True)) for row in req.dataframe_split.data]
    elif records is None:
        rows = req.inputs if req.inputs is not None else req.instances
        for i, row in enumerate(rows or []):
            if len(row) != len(names):
                raise RequestRejected(422, "shape", f"row {i} has {len(row)} values", f"{len(names)} values per row "
                                      f"in the model's column order {names[:8]}, or named rows: {expected}")
        records = [dict(zip(names, row, strict=True)) for row in rows or []]
    _batch_size(len(records), max_batch, expected)
    unknown = sorted({k for r in records for k in r} - set(names) - set(ignore))
    problems: list[tuple[str, str]] = []
    if unknown:
        problems.append(("unknown_column", f"unknown column(s) {', '.join(map(repr, unknown[:8]))}"))
    out = []
    for i, record in enumerate(records):
        row = {}
        for column in schema:
            name = column["name"]
            value = record.get(name)
            if isinstance(value, float) and math.isnan(value):
                value = None  # NaN is how a DataFrame spells a missing cell
            if value is None:
                if not column["optional"]:
                    problems.append(("missing_column", f"row {i}: required column {name!r} is "
                                     f"{'null' if name in record else 'missing'}"))
            elif (bad := _cell_problem(value, column, max_abs)) is not None:
                problems.append((bad[0], f"row {i} column {name!r} {bad[1]}"))
            row[name] = value
        out.append(row)
        if len(problems) >= limit:
            break
    if problems:
        typos = [c for c in ignore if isinstance(ignore, Mapping) and ignore[c] == UNKNOWN]
        if typos:  # refused anyway: an unknown column next to a missing one is most likely its misspelling
            problems.append(("unknown_column", f"unknown column(s) {', '.join(map(repr, typos[:8]))} (ignored)"))
        shown = "; ".join(p for _, p in problems[:limit])
        more = " (and more)" if len(problems) > limit else ""
        raise RequestRejected(422, problems[0][0], f"{shown}{more}", expected)
    return out


def short_value(value) -> str:
    """A value for a message: a huge integer as its digit count, not 4,000 digits."""
    if isinstance(value, int) and abs(value) > 10**15:
        return f"an integer of {len(str(abs(value)))} digits"
    return repr(value)


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
