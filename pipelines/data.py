"""Stage 1 of a refresh: load the user's data, validate it before any training, split it, fingerprint it.

Everything a user can get wrong about their data is caught here with one message that names the problem and the fix
(:class:`DataValidationError`, exit code 2 in the CLI). The output is a :class:`~nas.data.TaskData` saved as an
``.npz`` under the state dir plus a small JSON-able summary, so the next stages receive only a path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from nas.data import TaskData
from nas.datasets import BUNDLED_DATASETS, load_bundled
from pipelines.config import DataSpec
from pipelines.contracts import PreparedData
from pipelines.errors import UserError

__all__ = ["DataSpec", "DataValidationError", "PreparedData", "load_table", "prepare", "validate"]

BUNDLED = BUNDLED_DATASETS
SPLIT_FRACTIONS = {"train": 0.60, "val": 0.15, "test": 0.10, "prod": 0.15}
MIN_ROWS_PER_CLASS = 10
MAX_CLASSES = 100


class DataValidationError(UserError):
    """The data cannot be trained on as it is; the message says what to change."""


# -- loading --------------------------------------------------------------------------------------------------
def _load_bundled(name: str) -> tuple[pd.DataFrame, pd.Series, tuple[int, ...]]:
    x, y, shape = load_bundled(name)
    flat = x.reshape(len(x), -1)
    columns = [f"px_{i}" for i in range(flat.shape[1])]
    return pd.DataFrame(flat, columns=columns), pd.Series(y, name="label"), shape


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise DataValidationError(f"data file {str(path)!r} does not exist; pass --data with a CSV or Parquet file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise DataValidationError(
                f"{path.name}: unsupported file type {suffix!r}; use a .csv or .parquet file"
            )
    except DataValidationError:
        raise
    except Exception as exc:  # pandas/pyarrow parse errors: say which file and why
        raise DataValidationError(
            f"could not read {path.name} as {suffix[1:].upper()}: {exc}. Check that the file is a valid table "
            "with a header row."
        ) from exc
    if frame.empty:
        raise DataValidationError(f"{path.name} has no rows; nasops needs labelled examples to train on")
    return frame


def load_table(spec: DataSpec) -> tuple[pd.DataFrame, pd.Series, tuple[int, ...]]:
    """Features, labels and the input shape a network sees, before validation."""
    if spec.source in BUNDLED:
        if spec.target is not None:
            raise DataValidationError(f"--target is only for your own files; {spec.source!r} is bundled")
        return _load_bundled(spec.source)
    path = Path(spec.source).expanduser()
    if path.suffix == "" and not path.exists():
        raise DataValidationError(
            f"unknown dataset {spec.source!r}; use one of {', '.join(BUNDLED)} or a path to a .csv/.parquet file"
        )
    frame = _read_table(path)
    if not spec.target:
        raise DataValidationError(
            f"{path.name}: say which column holds the labels with --target COLUMN "
            f"(columns: {_preview(frame.columns)})"
        )
    if spec.target not in frame.columns:
        raise DataValidationError(
            f"{path.name}: target column {spec.target!r} not found; columns are {_preview(frame.columns)}"
        )
    y = frame[spec.target]
    x = frame.drop(columns=[spec.target])
    if x.shape[1] == 0:
        raise DataValidationError(f"{path.name}: no feature columns besides the target {spec.target!r}")
    return x, y, (x.shape[1],)


# -- validation -----------------------------------------------------------------------------------------------
def _preview(names, limit: int = 12) -> str:
    names = [str(n) for n in names]
    more = f", … ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def validate(x: pd.DataFrame, y: pd.Series, name: str = "data") -> None:
    """Raise :class:`DataValidationError` for anything that would make training fail or lie."""
    non_numeric = [c for c in x.columns if not pd.api.types.is_numeric_dtype(x[c]) or pd.api.types.is_bool_dtype(x[c])]
    if non_numeric:
        raise DataValidationError(
            f"{name}: non-numeric feature columns: {_preview(non_numeric)}. Encode them as numbers "
            "(e.g. one-hot) or drop them before running nasops."
        )
    values = x.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        counts = bad.sum(axis=0)
        cols = [f"{c} ({n})" for c, n in zip(x.columns, counts, strict=True) if n]
        raise DataValidationError(
            f"{name}: {int(bad.any(axis=1).sum())} rows have NaN or infinite feature values, in columns "
            f"{_preview(cols)}. Impute or drop those rows first."
        )
    if y.isna().any():
        raise DataValidationError(
            f"{name}: {int(y.isna().sum())} rows have no label in {y.name!r}; drop or label them first."
        )
    counts = y.value_counts()
    if len(counts) < 2:
        raise DataValidationError(
            f"{name}: the target {y.name!r} has {len(counts)} class; classification needs at least 2 classes"
        )
    if pd.api.types.is_float_dtype(y) and not np.all(np.mod(y.to_numpy(), 1) == 0):
        raise DataValidationError(
            f"{name}: the target {y.name!r} holds non-integer numbers ({len(counts)} distinct values); nasops "
            "searches classifiers — bin the target into classes, or pick a categorical column."
        )
    if len(counts) > MAX_CLASSES:
        raise DataValidationError(
            f"{name}: the target {y.name!r} has {len(counts)} classes (more than {MAX_CLASSES}); is it an id or a "
            "continuous value? Pick the label column with --target."
        )
    rare = counts[counts < MIN_ROWS_PER_CLASS]
    if len(rare):
        listing = ", ".join(f"{k!r}: {v}" for k, v in rare.items())
        raise DataValidationError(
            f"{name}: too few rows per class to split into train/validation/test/production "
            f"(need at least {MIN_ROWS_PER_CLASS} per class; have {listing}). Add data or merge rare classes."
        )


# -- split and fingerprint --------------------------------------------------------------------------------------
def fingerprint(x: pd.DataFrame, y: pd.Series) -> str:
    """Content hash of features (as float32), labels and column names: same data, same fingerprint, any file type."""
    h = hashlib.sha256()
    h.update(json.dumps([str(c) for c in x.columns]).encode())
    h.update(np.ascontiguousarray(x.to_numpy(dtype=np.float32)).tobytes())  # what training sees
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


def prepare(spec: DataSpec, out_dir: Path) -> PreparedData:
    """Load, validate, split and save; returns where the arrays went and their fingerprint."""
    x, y, input_shape = load_table(spec)
    label = spec.source if spec.source in BUNDLED else Path(spec.source).name
    validate(x, y, label)
    if spec.max_rows is not None and len(x) > spec.max_rows:
        keep, _ = train_test_split(np.arange(len(y)), train_size=spec.max_rows, stratify=y, random_state=spec.seed)
        keep = np.sort(keep)
        x, y = x.iloc[keep].reset_index(drop=True), y.iloc[keep].reset_index(drop=True)
        validate(x, y, label)
    digest = fingerprint(x, y)
    classes = sorted(pd.unique(y).tolist(), key=lambda v: (str(type(v)), v))
    classes = [c.item() if hasattr(c, "item") else c for c in classes]
    index_of = {c: i for i, c in enumerate(classes)}
    codes = np.array([index_of[v.item() if hasattr(v, "item") else v] for v in y], dtype=np.int64)
    features = x.to_numpy(dtype=np.float32)
    parts = split_indices(codes, spec.seed)
    train = features[parts["train"]]
    if len(input_shape) > 1:  # images: one scale for all pixels keeps spatial structure intact
        mean, std = np.full(features.shape[1], train.mean()), np.full(features.shape[1], train.std())
    else:
        mean, std = train.mean(axis=0), train.std(axis=0)
    task = TaskData(
        x_train=train,
        y_train=codes[parts["train"]],
        x_val=features[parts["val"]],
        y_val=codes[parts["val"]],
        x_test=features[parts["test"]],
        y_test=codes[parts["test"]],
        x_prod=features[parts["prod"]],
        y_prod=codes[parts["prod"]],
        input_shape=input_shape,
        num_classes=len(classes),
        feature_mean=mean,
        feature_std=std,
        meta={
            "classes": classes,
            "feature_names": [str(c) for c in x.columns],
            "fingerprint": digest,
            "source": label,
            "target": spec.target,
            "seed": spec.seed,
        },
    )
    path = task.save(Path(out_dir) / f"{digest}-seed{spec.seed}.npz")
    return PreparedData(
        path=str(path),
        fingerprint=digest,
        source=label,
        target=spec.target,
        input_shape=list(input_shape),
        num_classes=len(classes),
        classes=classes,
        feature_names=[str(c) for c in x.columns],
        rows={k: len(v) for k, v in parts.items()},
    )
