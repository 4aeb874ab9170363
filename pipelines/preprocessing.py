"""What each column of a user's table is, and the scikit-learn encoding fitted on the training split.

:func:`plan_columns` reads the whole feature table once and decides, per column: a number (imputed with the
training median, then scaled), a category (strings, booleans, and integer columns the user declares categorical:
imputed with the most frequent value, then one-hot encoded with unknown categories ignored, or ordinal-coded above
:data:`MAX_ONE_HOT` categories), a date (a datetime type or ISO date strings: expanded by
:class:`pipelines.date_features.DateParts` into year, month, weekday, day of year, hour), dropped (constant, all
missing, or an ID: unique per row) with a note, or refused (unparseable dates, infinite numbers, a declared
category that is not an integer column) with a problem — every problem of the table at once, so the user fixes
them in one round. :func:`build_preprocessor` turns the plan into a
``ColumnTransformer``; :class:`nas.table_model.TableClassifier` serves it inside the registered model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler

from nas.table_model import _category, coerce_frame
from pipelines.date_features import ISO_DATE, DateParts, parse_dates

MAX_ONE_HOT = 20
"""A category column with more distinct values than this is ordinal-coded (one-hot would add a column per value)."""
ID_REASON = "an identifier (a different value in every row)"
MIN_ROWS_FOR_ID = 20
"""Below this many rows, unique values per row say nothing about a column being an identifier."""
DATE_SHARE = 0.9
"""A text column is a date column when at least this share of its values look like ISO dates."""


@dataclass
class ColumnPlan:
    """The per-column decisions for one table; ``problems`` non-empty means the table is refused."""

    numeric: list[str] = field(default_factory=list)
    one_hot: list[str] = field(default_factory=list)
    ordinal: list[str] = field(default_factory=list)
    dates: list[str] = field(default_factory=list)
    declared: list[str] = field(default_factory=list)
    """Integer columns encoded as categories because the user said so (``--categorical``): sent as numbers."""
    schema: list[dict] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    has_missing: bool = False

    @property
    def kept(self) -> list[str]:
        return [c["name"] for c in self.schema]

    @property
    def needs_encoding(self) -> bool:
        """False for a table of complete numeric columns only: it is served as a plain float matrix, as before."""
        return bool(self.one_hot or self.ordinal or self.dates or self.dropped or self.has_missing)


def _is_date_column(col: pd.Series, present: pd.Series) -> bool:
    """A datetime type, or text of which :data:`DATE_SHARE` or more looks like ISO dates (``2024-01-31…``)."""
    if pd.api.types.is_datetime64_any_dtype(col):
        return True
    if col.dtype != object:
        return False
    return bool(present.astype(str).str.match(ISO_DATE).mean() >= DATE_SHARE)


def _date_problem(label: str, present: pd.Series) -> str | None:
    """The refusal of a date column some of whose values are not dates (a typo, ``2024-13-45``), or None."""
    bad = present[parse_dates(present).isna()]
    if bad.empty:
        return None
    examples = ", ".join(repr(str(v)) for v in bad.unique()[:3])
    return (f"column {label!r} holds dates, but {len(bad)} of its values are not (e.g. {examples}); fix those "
            "cells (ISO dates like 2024-01-31 or 2024-01-31 10:00) or leave them empty (imputed)")


def plan_columns(x: pd.DataFrame, categorical: Sequence[str] = ()) -> ColumnPlan:
    """Decide what every feature column is (see the module docstring); never raises, collects problems.
    ``categorical``: integer columns to encode as categories rather than numbers (codes, ratings, ZIP-like IDs)."""
    plan = ColumnPlan()
    declared = {str(c) for c in categorical}
    unknown = sorted(declared - {str(c) for c in x.columns})
    if unknown:
        plan.problems.append(
            f"--categorical names {', '.join(map(repr, unknown))}, not feature column(s) of the table; use the "
            f"names of feature columns (columns: {', '.join(map(str, list(x.columns)[:12]))})")
    for name in x.columns:
        _plan_column(plan, str(name), x[name], len(x), declared)
    if not plan.schema and not plan.problems:
        plan.problems.append("no usable feature column remains (" + "; ".join(
            f"{k}: {v}" for k, v in plan.dropped.items()) + ")")
    return plan


def _plan_column(plan: ColumnPlan, label: str, col: pd.Series, n: int, declared: set[str]) -> None:
    """One column's fate in ``plan``: dropped (with why), a problem, a date, a number or a category."""
    present = col.dropna()
    if present.empty:
        plan.dropped[label] = "all values missing"
        return
    is_number = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
    distinct = present.nunique()
    if distinct <= 1:
        value = present.iloc[0]
        value = value.item() if isinstance(value, np.generic) else value
        plan.dropped[label] = f"constant ({value!r} in every row)"
        return
    if _is_date_column(col, present):
        problem = None if pd.api.types.is_datetime64_any_dtype(col) else _date_problem(label, present)
        if problem:
            plan.problems.append(problem)
            return
        missing = int(col.isna().sum())
        plan.has_missing = plan.has_missing or missing > 0
        plan.dates.append(label)
        plan.schema.append({"name": label, "type": "string", "optional": missing > 0, "format": "datetime"})
        return
    integral = is_number and (pd.api.types.is_integer_dtype(col) or bool(np.all(np.mod(present, 1) == 0)))
    if label in declared and is_number and not integral:
        plan.problems.append(
            f"column {label!r} is declared categorical (--categorical) but holds non-integer numbers (e.g. "
            f"{present[np.mod(present, 1) != 0].iloc[0]!r}); declare only integer or text columns")
        return
    if n >= MIN_ROWS_FOR_ID and len(present) == n and distinct == n and (integral or not is_number):
        plan.dropped[label] = ID_REASON
        plan.warnings.append(f"column {label!r} looks like an ID (unique per row) and is not used as a feature")
        return
    missing = int(col.isna().sum())
    plan.has_missing = plan.has_missing or missing > 0
    if is_number:
        _plan_number(plan, label, present, distinct, optional=missing > 0, declared=label in declared)
    else:
        _plan_category(plan, label, col, present, distinct, optional=missing > 0)


def _plan_number(plan: ColumnPlan, label: str, present: pd.Series, distinct: int, *, optional: bool,
                 declared: bool) -> None:
    values = present.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        plan.problems.append(
            f"column {label!r} has {int((~np.isfinite(values)).sum())} infinite values; replace them with "
            "a number or leave the cell empty (missing values are imputed)")
        return
    if declared:  # sent as numbers, encoded as categories
        plan.declared.append(label)
        (plan.ordinal if distinct > MAX_ONE_HOT else plan.one_hot).append(label)
    else:
        plan.numeric.append(label)
    column = {"name": label, "type": "double", "optional": optional}
    if pd.api.types.is_integer_dtype(present.dtype) and not optional:
        column["integer"] = True  # the signature says long: a frame read from the same file (int64) is accepted
    plan.schema.append(column)


def _plan_category(plan: ColumnPlan, label: str, col: pd.Series, present: pd.Series, distinct: int, *,
                   optional: bool) -> None:
    kind = "boolean" if pd.api.types.is_bool_dtype(col) or present.map(type).eq(bool).all() else "string"
    (plan.ordinal if distinct > MAX_ONE_HOT else plan.one_hot).append(label)
    plan.schema.append({"name": label, "type": kind, "optional": optional})
    if kind == "string":
        numbers = pd.to_numeric(present, errors="coerce")
        if numbers.notna().mean() >= 0.9:
            bad = present[numbers.isna()].iloc[0]
            plan.warnings.append(f"column {label!r} is mostly numbers but holds {str(bad)!r}: it is treated as "
                                 "a category; fix those cells if it is numeric")


def as_categories(frame: pd.DataFrame) -> pd.DataFrame:
    """Declared integer columns (float64 after :func:`nas.table_model.coerce_frame`) as category text, one
    spelling per value (``3`` and ``3.0`` are ``"3"``, as :class:`nas.table_model.RowEncoder` spells them); text
    columns pass unchanged, missing cells stay NaN for the imputer."""
    frame = pd.DataFrame(frame)
    return frame.apply(lambda c: c.astype(object).where(c.isna(), c.map(_category, na_action="ignore")))


def _category_steps(plan: ColumnPlan, columns: list[str]) -> list[tuple[str, object]]:
    if not set(columns) & set(plan.declared):
        return []
    return [("as_text", FunctionTransformer(as_categories, feature_names_out="one-to-one"))]


def build_preprocessor(plan: ColumnPlan) -> ColumnTransformer:
    """The unfitted encoding of ``plan``'s kept columns (dropped columns are simply not selected)."""
    parts = []
    if plan.numeric:
        parts.append(("num", Pipeline([("impute", SimpleImputer(strategy="median")),
                                       ("scale", StandardScaler())]), plan.numeric))
    if plan.one_hot:
        parts.append(("cat", Pipeline([*_category_steps(plan, plan.one_hot),
                                       ("impute", SimpleImputer(strategy="most_frequent")),
                                       ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False))]),
                      plan.one_hot))
    if plan.ordinal:
        parts.append(("ord", Pipeline([*_category_steps(plan, plan.ordinal),
                                       ("impute", SimpleImputer(strategy="most_frequent")),
                                       ("ordinal", OrdinalEncoder(handle_unknown="use_encoded_value",
                                                                  unknown_value=-1)),
                                       ("scale", StandardScaler())]), plan.ordinal))
    if plan.dates:  # missing or unparseable dates at /predict are NaN here, imputed with the training median
        parts.append(("date", Pipeline([("parts", DateParts()),
                                        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                                        ("scale", StandardScaler())]), plan.dates))
    return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=True)


def fit_preprocessor(plan: ColumnPlan, train: pd.DataFrame) -> ColumnTransformer:
    """Fit on the training split only: medians, most frequent values, categories and scales never see the
    validation, test or production rows."""
    return build_preprocessor(plan).fit(coerce_frame(train, plan.schema))


def encode(preprocessor: ColumnTransformer, plan: ColumnPlan, frame: pd.DataFrame) -> np.ndarray:
    """Raw rows -> float32 features (the same :func:`nas.table_model.coerce_frame` the served model uses)."""
    return np.asarray(preprocessor.transform(coerce_frame(frame, plan.schema)), dtype=np.float32)


def numeric_schema(columns: list[str]) -> list[dict]:
    """The input schema of a plain numeric table (or bundled images): every column a required number."""
    return [{"name": str(c), "type": "double", "optional": False} for c in columns]
