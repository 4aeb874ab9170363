"""Stage 1 of a refresh: load the user's data, validate it before any training, split it, fingerprint it.

Everything a user can get wrong about their data is caught here with one message that names the problem and the fix
(:class:`DataValidationError`, exit code 2 in the CLI). The output is a :class:`~nas.data.TaskData` saved as an
``.npz`` under the state dir plus a small JSON-able summary, so the next stages receive only a path.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from monitoring.core.metrics import default_metric, get_metric, imbalanced, metric_names, resolve_params
from monitoring.core.model_ref import DriftReference
from monitoring.core.tasks import TaskKind, get_task
from nas.data import TaskData
from nas.datasets import BUNDLED_DATASETS, load_bundled
from pipelines.config import DataSpec, config_hash
from pipelines.contracts import PreparedData
from pipelines.control.reference import MAX_ROWS, RAW_REFERENCE, bounded
from pipelines.errors import DataValidationError
from pipelines.leakage import check_leakage
from pipelines.preprocessing import ID_REASON, ColumnPlan, encode, fit_preprocessor, numeric_schema, plan_columns
from pipelines.sql_source import display_url, is_sql_url, lineage_query, read_query
from pipelines.table_files import read_table_file, repeated_header_names
from pipelines.targets import BUNDLED_TABLES, load_bundled_table, regression_target_problems, resolve_task, strata

__all__ = ["DataSpec", "DataValidationError", "PreparedData", "RowPlan", "input_schema", "load_table", "plan_rows",
           "prepare", "validate"]

log = logging.getLogger("nasops.refresh.data")  # a child of the progress logger: the CLI shows it
DUPLICATES = "nasops_duplicate_columns"
"""``DataFrame.attrs`` key: header names a CSV repeats (pandas renames the second ``y`` to ``y.1``)."""

BUNDLED = (*BUNDLED_DATASETS, *BUNDLED_TABLES)
SPLIT_FRACTIONS = {"train": 0.60, "val": 0.15, "test": 0.10, "prod": 0.15}
MIN_ROWS_PER_CLASS = 10
MAX_CLASSES = 100




# -- loading --------------------------------------------------------------------------------------------------
def _load_bundled(name: str) -> tuple[pd.DataFrame, pd.Series, tuple[int, ...]]:
    if name in BUNDLED_TABLES:  # a numeric table (pipelines/targets.py), columns named as published
        table, target = load_bundled_table(name)
        return table, target, (table.shape[1],)
    x, y, shape = load_bundled(name)
    flat = x.reshape(len(x), -1)
    columns = [f"px_{i}" for i in range(flat.shape[1])]
    return pd.DataFrame(flat, columns=columns), pd.Series(y, name="label"), shape


def _read_table(path: Path) -> pd.DataFrame:
    frame = read_table_file(path)  # bounded, sniffed, one-line refusals (pipelines/table_files.py)
    if path.suffix.lower() == ".csv":
        frame.attrs[DUPLICATES] = repeated_header_names(path)
    return frame


def _deduplicated(frame: pd.DataFrame) -> pd.DataFrame:
    """A query result that names a column twice (``SELECT a, a``), renamed as pandas reads such a CSV (``a.1``)
    and remembered, so validation names the repeat as it does for a file."""
    counts = Counter(str(c) for c in frame.columns)
    repeated = [name for name, count in counts.items() if count > 1]
    if repeated:
        seen: Counter = Counter()
        names = []
        for c in map(str, frame.columns):
            names.append(c if not seen[c] else f"{c}.{seen[c]}")
            seen[c] += 1
        frame.columns = names
    frame.attrs[DUPLICATES] = repeated
    return frame


def source_label(source: str) -> str:
    """How messages, parameters and tags name a source: a bundled name, a file's name, a URL without password."""
    if source in BUNDLED:
        return source
    return display_url(source) if is_sql_url(source) else Path(source).name


def load_table(spec: DataSpec) -> tuple[pd.DataFrame, pd.Series, tuple[int, ...]]:
    """Features, labels and the input shape a network sees, before validation."""
    if spec.query is not None and not is_sql_url(spec.source):
        raise DataValidationError(f"--query is for a database source, but --data is {source_label(spec.source)!r}; "
                                  "pass --data postgresql://USER@HOST/DB (or sqlite:///FILE.db) with it")
    if spec.source in BUNDLED:
        if spec.target is not None:
            raise DataValidationError(f"--target is only for your own files; {spec.source!r} is bundled")
        return _load_bundled(spec.source)
    if is_sql_url(spec.source):
        password = spec.password.get_secret_value() if spec.password else None
        frame = _deduplicated(read_query(spec.source, spec.query, password=password))
    else:
        path = Path(spec.source).expanduser()
        if path.suffix == "" and not path.exists():
            raise DataValidationError(f"unknown dataset {spec.source!r}; use one of {', '.join(BUNDLED)}, a path "
                                      "to a .csv/.parquet file, or a database URL with --query")
        frame = _read_table(path)
    name = source_label(spec.source)
    if not spec.target:
        raise DataValidationError(
            f"{name}: say which column holds the labels with --target COLUMN "
            f"(columns: {_preview(frame.columns)})"
        )
    if spec.target not in frame.columns:
        raise DataValidationError(
            f"{name}: target column {spec.target!r} not found; columns are {_preview(frame.columns)}"
        )
    y = frame[spec.target]
    x = frame.drop(columns=[spec.target])
    x.attrs[DUPLICATES] = frame.attrs.get(DUPLICATES, [])
    if x.shape[1] == 0:
        raise DataValidationError(f"{name}: no feature columns besides the target {spec.target!r}")
    return x, y, (x.shape[1],)


# -- validation -----------------------------------------------------------------------------------------------
def _preview(names, limit: int = 12) -> str:
    names = [str(n) for n in names]
    more = f", … ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def validate(x: pd.DataFrame, y: pd.Series, name: str = "data", task: str = "auto",
             categorical: Sequence[str] = ()) -> ColumnPlan | None:
    """Raise :class:`DataValidationError` naming *every* problem that would make training fail or lie, in one
    message; returns the per-column plan of a user's table (None for bundled images, which are used as they are).

    Accepted and encoded inside the model: string and boolean columns, missing feature values. Dropped with a note:
    constant, all-missing and ID-like columns. Refused: dates, infinite numbers, a repeated column name, labels that
    are missing, continuous, one class, too many classes or too rare to split (see docs/data.md)."""
    problems: list[str] = []
    plan = None
    repeated = list(x.attrs.get(DUPLICATES, []))
    if repeated:
        problems.append(
            f"the header repeats column name(s) {_preview(repeated)} (pandas would read the second copy as e.g. "
            f"{repeated[0] + '.1'!r}, and a repeated target is a copy of the label); rename or drop the copies")
    if name in BUNDLED:
        values = x.to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            problems.append("the features have NaN or infinite values")
    else:
        plan = plan_columns(x, categorical)
        problems.extend(plan.problems)
    numeric = get_task(resolve_task(y, task)).numeric_labels
    problems.extend(regression_target_problems(y) if numeric else _label_problems(y))
    if problems:
        if len(problems) == 1:
            raise DataValidationError(f"{name}: {problems[0]}")
        listed = "; ".join(f"({i}) {p}" for i, p in enumerate(problems, start=1))
        raise DataValidationError(f"{name}: {len(problems)} problems, fix them all before training: {listed}")
    return plan


def _label_problems(y: pd.Series) -> list[str]:
    """Everything wrong with the target column, each as a sentence with its fix."""
    problems = []
    missing = int(y.isna().sum())
    if missing:
        problems.append(f"{missing} rows have no label in {y.name!r}; drop or label them first")
    present = y.dropna()
    counts = present.value_counts()
    if len(counts) < 2:
        problems.append(f"the target {y.name!r} has {len(counts)} class; classification needs at least 2 classes")
        return problems
    if pd.api.types.is_float_dtype(present) and not np.all(np.mod(present.to_numpy(), 1) == 0):
        problems.append(
            f"the target {y.name!r} holds non-integer numbers ({len(counts)} distinct values) but the task is "
            "classification; use --task regression (or auto), or bin the target into classes")
        return problems
    if len(counts) > MAX_CLASSES:
        problems.append(
            f"the target {y.name!r} has {len(counts)} classes (more than {MAX_CLASSES}); is it an id or a "
            "continuous value? Pick the label column with --target, or use --task regression")
        return problems
    rare = counts[counts < MIN_ROWS_PER_CLASS]
    if len(rare):
        listing = ", ".join(f"{k!r}: {v}" for k, v in rare.items())
        problems.append(
            "too few rows per class to split into train/validation/test/production "
            f"(need at least {MIN_ROWS_PER_CLASS} per class; have {listing}). Add data or merge rare classes")
    return problems


def input_schema(x: pd.DataFrame, name: str, plan: ColumnPlan | None = None) -> list[dict]:
    """The raw columns a model trained on ``x`` takes (what the schema-change check compares): a table that needs
    encoding names its kept columns with their types; a numeric table (or bundled images) its columns as numbers."""
    if plan is None and name not in BUNDLED:
        plan = plan_columns(x)
    if plan is not None and plan.needs_encoding:
        return plan.schema
    return numeric_schema(list(x.columns))


def raw_rows(frame: pd.DataFrame, schema: list[dict]) -> np.ndarray:
    """A table's rows as a client sends them (the schema's columns in order, JSON types, ``None`` for missing): the
    ``prod`` split the tournament and the canary replay to a table model."""
    rows = np.empty((len(frame), len(schema)), dtype=object)
    for j, column in enumerate(schema):
        values = frame[column["name"]].astype(object)
        cast = {"double": float, "boolean": bool}.get(column["type"], str)
        rows[:, j] = [None if pd.isna(v) else cast(v) for v in values]
    return rows


def raw_sample(frame: pd.DataFrame, train: np.ndarray, schema: list[dict], seed: int) -> dict:
    """A seeded, bounded sample of the training split's raw rows (the schema's columns but dates, JSON types):
    what a table model's served inputs are compared with for drift, as they are, so the control plane needs neither
    the training file nor the fitted transformer. Dates are left out: served dates are always new."""
    columns = [c for c in schema if c.get("format") != "datetime"]
    keep = train if len(train) <= MAX_ROWS else np.sort(
        np.random.default_rng(seed).choice(train, MAX_ROWS, replace=False))
    rows = raw_rows(frame.iloc[keep], columns).tolist()
    sample = bounded(DriftReference(columns=[c["name"] for c in columns], rows=rows, input_form="table"),
                     seed=seed)
    return {"columns": sample.columns, "rows": sample.rows}


RAW_EVAL = "raw_eval"
"""Meta key: the file of an encoded table's raw validation and test rows, beside the arrays (an older champion,
fitted on other data with its own encoder, is scored again on them: :mod:`pipelines.rescore`)."""


def save_raw_eval(frame: pd.DataFrame, parts: dict[str, np.ndarray], schema: list[dict], stem: Path) -> str:
    """The validation and test rows as a client sends them, in a JSON file beside the arrays (not in the meta,
    which every search evaluation loads)."""
    path = stem.with_suffix(".raw_eval.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({s: raw_rows(frame.iloc[parts[s]], schema).tolist() for s in ("val", "test")}))
    return str(path)


# -- split and fingerprint --------------------------------------------------------------------------------------
def fingerprint(x: pd.DataFrame, y: pd.Series) -> str:
    """Content hash of features, labels and column names: same data, same fingerprint, any file type. Numeric
    tables hash as float32 (what training sees); a table with text or missing cells hashes its values per column."""
    h = hashlib.sha256()
    h.update(json.dumps([str(c) for c in x.columns]).encode())
    numeric = all(pd.api.types.is_numeric_dtype(x[c]) and not pd.api.types.is_bool_dtype(x[c]) for c in x.columns)
    if numeric and not x.isna().to_numpy().any():
        h.update(np.ascontiguousarray(x.to_numpy(dtype=np.float32)).tobytes())  # what training sees
    else:
        for c in x.columns:  # per column: a CSV and a Parquet file of one table agree
            cells = x[c].astype(object).where(x[c].notna(), None).map(lambda v: None if v is None else str(v))
            h.update(json.dumps(cells.tolist()).encode())
    h.update(json.dumps([str(v) for v in y.tolist()]).encode())
    return h.hexdigest()[:16]


def split_indices(y: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Stratified train/val/test/prod indices with :data:`SPLIT_FRACTIONS`."""
    idx = np.arange(len(y))
    rest, prod = train_test_split(idx, test_size=SPLIT_FRACTIONS["prod"], stratify=y, random_state=seed)
    test_share = SPLIT_FRACTIONS["test"] / (1 - SPLIT_FRACTIONS["prod"])
    rest, test = train_test_split(rest, test_size=test_share, stratify=y[rest], random_state=seed + 1)
    val_share = SPLIT_FRACTIONS["val"] / (SPLIT_FRACTIONS["train"] + SPLIT_FRACTIONS["val"])
    train, val = train_test_split(rest, test_size=val_share, stratify=y[rest], random_state=seed + 2)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test), "prod": np.sort(prod)}


@dataclass(frozen=True)
class RowPlan:
    """The rows a refresh trains on and how they split: what :func:`plan_rows` decides, before anything is saved."""

    x: pd.DataFrame
    y: pd.Series
    label: str
    columns: ColumnPlan | None
    task: str
    classes: list
    codes: np.ndarray
    parts: dict[str, np.ndarray]
    metric: str = "accuracy"
    metric_params: dict = field(default_factory=dict)
    metric_reason: str = ""


def plan_rows(spec: DataSpec, x: pd.DataFrame, y: pd.Series) -> RowPlan:
    """Validate, subsample (``max_rows``), validate the subsample, refuse a feature that gives the target away
    (:mod:`pipelines.leakage`), encode the labels and split: the planning that
    :func:`prepare` and the CLI's pre-flight both run, so a subsample that cannot be split (a class left too small)
    is refused before Prefect starts, not minutes later inside the flow."""
    label = source_label(spec.source)
    columns = validate(x, y, label, spec.task, spec.categorical)
    task = resolve_task(y, spec.task)
    total = len(y)
    if spec.max_rows is not None and total > spec.max_rows:
        x, y = _subsample(x, y, spec, task, label)
        try:
            columns = validate(x, y, label, task, spec.categorical)
        except DataValidationError as exc:
            raise DataValidationError(f"--max-rows {spec.max_rows}: {exc}; raise --max-rows, or leave it out to use "
                                      f"all {total} rows") from None
    check_leakage(x, y, task, columns, spec.allow_columns, label, spec.seed)  # a target in disguise: refused here
    classes, codes = _encode_target(y, get_task(task))
    metric, params, reason = resolve_metric(spec, task, classes, codes, label)
    return RowPlan(x, y, label, columns, task, classes, codes, split_indices(strata(codes, task), spec.seed),
                   metric, params, reason)


def resolve_metric(spec: DataSpec, task: str, classes: list, codes: np.ndarray, label: str
                   ) -> tuple[str, dict, str]:
    """The refresh-level metric: the one named (checked against the task and the classes), or the default chosen
    from the target (``monitoring.core.metrics.default_metric``); its parameters; why it was chosen."""
    counts = np.bincount(codes, minlength=len(classes)).tolist() if classes else []
    if spec.metric is None:
        name, reason = default_metric(task, counts)
        return name, {}, f"default for {reason}"
    if task not in get_metric(spec.metric).tasks:
        fits = ", ".join(metric_names(task))
        raise DataValidationError(f"{label}: metric {spec.metric} does not apply to a {task} target; choose one of "
                                  f"{fits}")
    try:
        params = resolve_params(spec.metric, classes, spec.metric_params)
    except ValueError as exc:
        raise DataValidationError(f"{label}: {exc}") from None
    return spec.metric, params, "named by the refresh"


def class_weights(task: str, metric: str, y_train: np.ndarray, num_classes: int) -> list[float] | None:
    """Inverse-frequency class weights (``n / (k * count)``, as scikit-learn's ``balanced``) for an imbalanced binary
    target under a metric that rewards finding the rare class (balanced accuracy, F1, cost); None otherwise: log
    loss and accuracy are best served by unweighted probabilities (weights would shift them off the base rate)."""
    counts = np.bincount(np.asarray(y_train, dtype=np.int64), minlength=num_classes).astype(float)
    if not (imbalanced(task, counts.tolist()) and get_metric(metric).class_weighting) or (counts == 0).any():
        return None
    return (counts.sum() / (len(counts) * counts)).round(6).tolist()


def _subsample(x: pd.DataFrame, y: pd.Series, spec: DataSpec, task: str, label: str
               ) -> tuple[pd.DataFrame, pd.Series]:
    """A stratified ``max_rows`` subsample (every class keeps its share)."""
    try:
        keep, _ = train_test_split(np.arange(len(y)), train_size=spec.max_rows, random_state=spec.seed,
                                   stratify=strata(y.to_numpy(), task))
    except ValueError as exc:  # fewer rows than classes: scikit-learn's words, with the option that caused it
        raise DataValidationError(f"{label}: --max-rows {spec.max_rows} cannot keep every class ({exc}); raise "
                                  "--max-rows") from None
    keep = np.sort(keep)
    return x.iloc[keep].reset_index(drop=True), y.iloc[keep].reset_index(drop=True)


def prepare(spec: DataSpec, out_dir: Path) -> PreparedData:
    """Load, validate, split and save; returns where the arrays went and their fingerprint.

    A table that needs encoding (text or boolean columns, missing values, dropped columns) gets a
    ``ColumnTransformer`` fitted on the training split only, saved beside the arrays; the arrays hold the encoded
    features the networks train on, and the registered model carries the transformer (``input_form`` ``table``)."""
    x, y, input_shape = load_table(spec)
    rows = plan_rows(spec, x, y)
    x, y, label, plan, task = rows.x, rows.y, rows.label, rows.columns, rows.task
    classes, codes, parts = rows.classes, rows.codes, rows.parts
    weights = class_weights(task, rows.metric, codes[parts["train"]], len(classes)) if classes else None
    log.info("%s: metric %s (%s)%s", label, rows.metric, rows.metric_reason,
             f"; class weights {weights} in the training loss" if weights else "")
    digest = fingerprint(x, y)
    kind = get_task(task)
    named = f"-{config_hash(rows.metric, rows.metric_params)[:8]}" if spec.metric else ""  # its own file's meta
    stem = Path(out_dir) / f"{digest}-seed{spec.seed}{named}"
    encoded = _encoded_features(x, plan, parts, stem, label, input_shape)
    schema = input_schema(x, label, plan)
    for warning in plan.warnings if plan is not None else []:
        log.warning("%s: %s", label, warning)
    task_data = _task_data(encoded, x, codes, parts, schema, kind.num_classes(classes), meta={
        "classes": classes, "feature_names": encoded.names, "fingerprint": digest, "source": label,
        "target": spec.target, "seed": spec.seed, "input_form": encoded.form, "input_schema": schema, "task": task,
        "metric": rows.metric, "metric_params": rows.metric_params, "class_weights": weights,
        "dropped_columns": dict(plan.dropped) if plan is not None else {},
        **encoded.meta, **({RAW_REFERENCE: raw_sample(x, parts["train"], schema, spec.seed),
                            RAW_EVAL: save_raw_eval(x, parts, schema, stem)} if encoded.table else {})})
    path = task_data.save(stem.with_suffix(".npz"))
    return PreparedData(
        path=str(path), fingerprint=digest, source=label,
        query=lineage_query(spec.query) if spec.query else None, target=spec.target,
        input_shape=list(encoded.input_shape), num_classes=task_data.num_classes, classes=classes, task=task,
        feature_names=encoded.names, rows={k: len(v) for k, v in parts.items()}, input_schema=schema,
        input_form=encoded.form, dropped_columns=dict(plan.dropped) if plan is not None else {},
        metric=rows.metric, metric_params=rows.metric_params,
        warnings=list(plan.warnings) if plan is not None else [],
    )


def _encode_target(y: pd.Series, kind: TaskKind) -> tuple[list, np.ndarray]:
    """The classes and the target as the network learns it: class indices, or a numeric target in its own units
    (TaskData standardises it on the training split)."""
    if kind.numeric_labels:
        return [], y.to_numpy(dtype=np.float64)
    classes = sorted(pd.unique(y).tolist(), key=lambda v: (str(type(v)), v))
    classes = [c.item() if hasattr(c, "item") else c for c in classes]
    index_of = {c: i for i, c in enumerate(classes)}
    return classes, np.array([index_of[v.item() if hasattr(v, "item") else v] for v in y], dtype=np.int64)


@dataclass
class _Encoded:
    """The feature matrix the networks train on, its names and shape, and whether it is an encoded table."""

    features: np.ndarray
    names: list[str]
    input_shape: tuple[int, ...]
    table: bool
    meta: dict = field(default_factory=dict)

    @property
    def form(self) -> str:
        return "table" if self.table else "tensor"


def _encoded_features(x: pd.DataFrame, plan: ColumnPlan | None, parts: dict[str, np.ndarray], stem: Path,
                      label: str, input_shape: tuple[int, ...]) -> _Encoded:
    """A table that needs encoding: its transformer fitted on the training split and saved beside the arrays;
    otherwise the numbers as they are."""
    if plan is None or not plan.needs_encoding:
        return _Encoded(x.to_numpy(dtype=np.float32), [str(c) for c in x.columns], input_shape, table=False)
    preprocessor = fit_preprocessor(plan, x.iloc[parts["train"]])
    features = encode(preprocessor, plan, x)
    stem.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(preprocessor, stem.with_suffix(".preprocessor.joblib"))
    for column, why in plan.dropped.items():
        if why != ID_REASON:  # an ID column is said by its warning
            log.warning("%s: column %r is not used as a feature: %s", label, column, why)
    return _Encoded(features, [str(n) for n in preprocessor.get_feature_names_out()], (features.shape[1],),
                    table=True, meta={"preprocessor": str(stem.with_suffix(".preprocessor.joblib"))})


def _task_data(encoded: _Encoded, x: pd.DataFrame, codes: np.ndarray, parts: dict[str, np.ndarray],
               schema: list[dict], num_classes: int, meta: dict) -> TaskData:
    """The splits with the training split's normalisation; a table's ``prod`` rows raw, as a caller sends them."""
    features = encoded.features
    train = features[parts["train"]]
    if len(encoded.input_shape) > 1:  # images: one scale for all pixels keeps spatial structure intact
        mean, std = np.full(features.shape[1], train.mean()), np.full(features.shape[1], train.std())
    else:
        mean, std = train.mean(axis=0), train.std(axis=0)
    return TaskData(
        x_train=train, y_train=codes[parts["train"]],
        x_val=features[parts["val"]], y_val=codes[parts["val"]],
        x_test=features[parts["test"]], y_test=codes[parts["test"]],
        x_prod=raw_rows(x.iloc[parts["prod"]], schema) if encoded.table else features[parts["prod"]],
        y_prod=codes[parts["prod"]],
        input_shape=encoded.input_shape, num_classes=num_classes, feature_mean=mean, feature_std=std, meta=meta,
    )
