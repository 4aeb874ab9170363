"""Reading a user's table file (adversarial round 3, finding 11): nested Parquet and a 10,000-column CSV ended in
tracebacks, files were read whole whatever their size, a FIFO hung, and semicolon or Latin-1 CSVs got no hint."""

from __future__ import annotations

import os
import threading

import numpy as np
import pandas as pd
import pytest

from pipelines import table_files
from pipelines.data import DataSpec, DataValidationError, load_table
from pipelines.table_files import read_table_file, sniff_delimiter


def _frame(n: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.integers(0, 5, n), "label": ["x", "y", "z"] * (n // 3)})


def test_a_semicolon_csv_is_sniffed_and_read_like_a_comma_one(tmp_path):
    frame = _frame()
    frame.to_csv(tmp_path / "comma.csv", index=False)
    frame.to_csv(tmp_path / "semi.csv", index=False, sep=";", decimal=",")
    semi = read_table_file(tmp_path / "semi.csv")
    assert list(semi.columns) == ["a", "b", "label"] and len(semi) == len(frame)
    x, y, _ = load_table(DataSpec(source=str(tmp_path / "semi.csv"), target="label"))
    assert list(x.columns) == ["a", "b"] and len(y) == len(frame)


@pytest.mark.parametrize(("text", "delimiter"), [("a,b\n1,2\n", ","), ("a;b\n1;2\n", ";"), ("a\tb\n1\t2\n", "\t"),
                                                 ("name\nx\n", ","), ('a,b\n"1;2",3\n', ",")])
def test_the_delimiter_is_the_one_that_splits_every_line_alike(text, delimiter):
    assert sniff_delimiter(text) == delimiter


def test_a_latin1_csv_is_refused_naming_the_line(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("city,label\nParis,x\nK\xf6ln,y\n".encode("latin-1"))
    with pytest.raises(DataValidationError, match=r"not UTF-8: byte 0xf6 on line 3; re-save it as UTF-8"):
        read_table_file(path)


def test_too_many_columns_are_refused_before_parsing(tmp_path, monkeypatch):
    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"c{i}" for i in range(10_000)) + "\n" + ",".join("1" * 10_000) + "\n")
    with pytest.raises(DataValidationError, match="10,000 columns, over the limit of 2,000"):
        read_table_file(path)


def test_a_file_over_the_size_limit_is_refused_without_reading_it(tmp_path, monkeypatch):
    path = tmp_path / "big.csv"
    _frame(300).to_csv(path, index=False)
    monkeypatch.setattr(table_files, "MAX_BYTES", 1000)
    with pytest.raises(DataValidationError, match=r"over the 0 MiB limit.*NASOPS_MAX_DATA_BYTES"):
        read_table_file(path)


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_only_regular_files_are_read(tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "pipe.csv"
        os.mkfifo(path)
    elif kind == "device":
        path = tmp_path / "zero.csv"
        path.symlink_to("/dev/zero")
    else:
        path = tmp_path / "dir.csv"
        path.mkdir()
    done: list[BaseException] = []

    def read() -> None:
        try:
            read_table_file(path)
        except DataValidationError as exc:
            done.append(exc)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(10)
    assert done and "is not a regular file" in str(done[0])  # refused at once: no hang, no 5 GB read


def test_nested_parquet_columns_are_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"a": [1.0, 2.0], "tags": [[1, 2], [3]], "label": ["x", "y"]})
    pq.write_table(table, tmp_path / "nested.parquet")
    with pytest.raises(DataValidationError, match=r"nested column\(s\) tags \(list<.*int64>\).*flatten"):
        read_table_file(tmp_path / "nested.parquet")
