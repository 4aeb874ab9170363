"""Stage 1: every way a user's data can be wrong gets one clear message; good data splits and fingerprints."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nas.data import TaskData
from pipelines.data import (
    MIN_ROWS_PER_CLASS,
    DataSpec,
    DataValidationError,
    fingerprint,
    prepare,
)


def _frame(rows: int = 60, classes: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, 4)), columns=["a", "b", "c", "d"])
    frame["label"] = [f"class-{i % classes}" for i in range(rows)]
    return frame


def _write(frame: pd.DataFrame, path) -> str:
    if str(path).endswith(".parquet"):
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return str(path)


def test_digits_splits_are_stratified_and_disjoint(tmp_path):
    prepared = prepare(DataSpec(source="digits"), tmp_path)
    assert prepared.rows == {"train": 1077, "val": 270, "test": 180, "prod": 270}
    assert prepared.input_shape == [1, 8, 8]
    task = TaskData.load(prepared.path)
    assert task.num_classes == 10 and task.meta["fingerprint"] == prepared.fingerprint
    # every class appears in every split (stratified), and splits do not share rows
    for split in ("train", "val", "test", "prod"):
        assert set(np.unique(getattr(task, f"y_{split}"))) == set(range(10))
    rows = {split: {r.tobytes() for r in getattr(task, f"x_{split}")} for split in ("train", "prod")}
    assert len(rows["train"] & rows["prod"]) < 5  # digits has a handful of duplicate images, nothing more
    x, _ = task.tensors("train")
    assert x.shape == (1077, 1, 8, 8) and abs(float(x.mean())) < 1e-3


def test_same_data_same_fingerprint_whatever_the_file(tmp_path):
    frame = _frame()
    a = prepare(DataSpec(source=_write(frame, tmp_path / "a.csv"), target="label"), tmp_path / "out")
    b = prepare(DataSpec(source=_write(frame, tmp_path / "b.parquet"), target="label"), tmp_path / "out")
    assert a.fingerprint == b.fingerprint
    changed = frame.copy()
    changed.loc[0, "a"] += 1.0
    assert fingerprint(changed.drop(columns="label"), changed["label"]) != a.fingerprint


def test_csv_with_string_labels_keeps_original_classes(tmp_path):
    prepared = prepare(DataSpec(source=_write(_frame(), tmp_path / "t.csv"), target="label"), tmp_path)
    assert prepared.classes == ["class-0", "class-1", "class-2"]
    assert prepared.input_shape == [4]
    assert prepared.feature_names == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("mutate", "target", "message"),
    [
        (lambda f: f, None, "--target COLUMN"),
        (lambda f: f, "nope", "target column 'nope' not found"),
        (lambda f: f.assign(c=[np.inf] + [0.0] * (len(f) - 1)), "label", "'c' has 1 infinite values"),
        (lambda f: f.assign(when=["2024-02-30", *pd.date_range("2024-01-01", periods=len(f) - 1).astype(str)]),
         "label", r"'when' holds dates, but 1 of its values are not \(e.g. '2024-02-30'\)"),
        (lambda f: f.assign(a=np.nan, b=np.nan, c=np.nan, d=np.nan), "label", "no usable feature column"),
        (lambda f: f.assign(label=["only"] * len(f)), "label", "at least 2 classes"),
        (lambda f: f.assign(label=[None, *list(f["label"][1:])]), "label", "have no label"),
        (lambda f: f.iloc[: 3 * (MIN_ROWS_PER_CLASS - 2)], "label", "too few rows per class"),
        (lambda f: f[["label"]], "label", "no feature columns"),
    ],
    ids=["no-target", "unknown-target", "inf", "dates", "all-missing", "one-class", "missing-label",
         "rare-class", "no-features"],
)
def test_invalid_tables_name_the_problem_and_the_fix(tmp_path, mutate, target, message):
    path = _write(mutate(_frame()), tmp_path / "bad.csv")
    with pytest.raises(DataValidationError, match=message):
        prepare(DataSpec(source=path, target=target), tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.npz"))


def test_text_columns_and_missing_values_are_accepted_and_encoded(tmp_path):
    """What used to be refused in two rounds (encode the strings, then impute the NaN) now trains as it is."""
    frame = _frame().assign(a=["x", "y", "x", None] * 15)  # not in step with the label (a copy is refused)
    frame.loc[4, "b"] = np.nan
    prepared = prepare(DataSpec(source=_write(frame, tmp_path / "t.csv"), target="label"), tmp_path / "out")
    assert prepared.input_form == "table"
    assert {c["name"]: (c["type"], c["optional"]) for c in prepared.input_schema} == {
        "a": ("string", True), "b": ("double", True), "c": ("double", False), "d": ("double", False)}
    task = TaskData.load(prepared.path)
    assert np.isfinite(task.x_train).all() and task.x_train.shape[1] == 3 + 2  # b, c, d + one-hot x, y


def test_all_label_and_column_problems_come_in_one_message(tmp_path):
    frame = _frame().assign(c=[np.inf] + [0.0] * 59, label=[None] + [f"class-{i % 3}" for i in range(1, 60)])
    with pytest.raises(DataValidationError, match=r"2 problems.*\(1\) column 'c' has 1 infinite.*\(2\) 1 rows "
                       "have no label"):
        prepare(DataSpec(source=_write(frame, tmp_path / "bad.csv"), target="label"), tmp_path / "out")


def test_a_repeated_target_column_is_refused(tmp_path):
    text = _frame().to_csv(index=False).splitlines()
    path = tmp_path / "dup.csv"
    path.write_text("\n".join([text[0] + ",label"] + [line + ",class-0" for line in text[1:]]) + "\n")
    with pytest.raises(DataValidationError, match=r"repeats column name\(s\) label .*'label\.1'"):
        prepare(DataSpec(source=str(path), target="label"), tmp_path / "out")


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(DataValidationError, match="does not exist"):
        prepare(DataSpec(source=str(tmp_path / "missing.csv"), target="y"), tmp_path)
    bad = tmp_path / "broken.parquet"
    bad.write_text("this is not parquet")
    with pytest.raises(DataValidationError, match=r"could not read broken\.parquet"):
        prepare(DataSpec(source=str(bad), target="y"), tmp_path)
    other = tmp_path / "table.xlsx"
    other.write_text("x")
    with pytest.raises(DataValidationError, match="unsupported file type"):
        prepare(DataSpec(source=str(other), target="y"), tmp_path)
    with pytest.raises(DataValidationError, match="unknown dataset 'cifar'"):
        prepare(DataSpec(source="cifar"), tmp_path)
    empty = tmp_path / "empty.csv"
    empty.write_text("a,b,label\n")
    with pytest.raises(DataValidationError, match="no rows"):
        prepare(DataSpec(source=str(empty), target="label"), tmp_path)


def test_a_continuous_target_declared_a_classification_is_refused(tmp_path):
    """With ``task: auto`` a continuous target is a regression (tests/test_regression.py); declared a
    classification, it is refused with the fix named."""
    path = _write(_frame().assign(label=np.linspace(0, 1, 60)), tmp_path / "cont.csv")
    with pytest.raises(DataValidationError, match=r"non-integer numbers .* use --task regression"):
        prepare(DataSpec(source=path, target="label", task="classification"), tmp_path / "out")
