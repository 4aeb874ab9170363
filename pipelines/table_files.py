"""Reading a user's CSV or Parquet file: bounded, sniffed, and every refusal one line that names the fix.

Why: a table file is the most common user input and the easiest to get subtly wrong. Before, a nested-type Parquet
file or a 10,000-column CSV ended in a traceback; files were read whole whatever their size (a 2 GB file took
2.5 GB of memory, ``/dev/zero`` 5.4 GB, a FIFO hung); a semicolon-separated export became one column named
``a;b;c`` and a Latin-1 file a decode error without a line. Here, before pandas parses anything:

* only a regular file is read, and at most :data:`MAX_BYTES` of it (``NASOPS_MAX_DATA_BYTES``);
* a CSV's delimiter is sniffed from its first lines (``,`` ``;`` tab ``|``) and its header counted
  (at most :data:`MAX_COLUMNS`, ``NASOPS_MAX_DATA_COLUMNS``); a byte that is not UTF-8 is named with its line;
* a Parquet file's schema is read first: nested columns (lists, structs, maps) are named.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import pandas as pd

from pipelines.errors import DataValidationError

__all__ = ["MAX_BYTES", "MAX_COLUMNS", "read_table_file", "repeated_header_names"]

MAX_BYTES = int(os.environ.get("NASOPS_MAX_DATA_BYTES", str(1 << 30)))
"""Largest file read (bytes, default 1 GiB): a table this size already needs a few GB of memory as a DataFrame."""
MAX_COLUMNS = int(os.environ.get("NASOPS_MAX_DATA_COLUMNS", "2000"))
"""Most columns a table may have: the tabular networks and the encoding are built for tens to hundreds."""
SNIFF_BYTES = 64 * 1024
DELIMITERS = ",;\t|"


TableFileError = DataValidationError  # a file that cannot be read as a table: a data problem, never retried


def _check_file(path: Path) -> None:
    if not path.exists():
        raise TableFileError(f"data file {str(path)!r} does not exist; pass --data with a CSV or Parquet file")
    if not path.is_file():  # a directory, a FIFO, a device such as /dev/zero: never read
        raise TableFileError(f"--data {str(path)!r} is not a regular file; pass a CSV or Parquet file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise TableFileError(f"{path.name} is {size / 2**20:,.0f} MiB, over the {MAX_BYTES / 2**20:,.0f} MiB limit; "
                             "sample it (or load it through --data postgresql://… --query with a LIMIT), or raise "
                             "NASOPS_MAX_DATA_BYTES")


def _sample(path: Path) -> str:
    """The first bytes as text; a byte that is not UTF-8 is refused naming its line."""
    raw = path.read_bytes()[:SNIFF_BYTES] if path.stat().st_size <= SNIFF_BYTES else _head(path)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if exc.start >= len(raw) - 4:  # a character cut by the sample's end, not a bad byte
            return raw[:exc.start].decode("utf-8-sig")
        line = raw[:exc.start].count(b"\n") + 1
        raise TableFileError(f"{path.name} is not UTF-8: byte 0x{raw[exc.start]:02x} on line {line}; re-save it as "
                             "UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from None


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(SNIFF_BYTES)


def sniff_delimiter(sample: str) -> str:
    """The delimiter of a CSV from its first lines: of ``,`` ``;`` tab ``|`` (in that order of preference), the one
    that splits the header and the next lines into the same number of fields, the most fields (> 1); ``,`` when
    none does (a one-column file)."""
    lines = sample.splitlines()[:20]
    if len(lines) > 1 and not sample.endswith("\n"):
        lines = lines[:-1]  # the sample may cut its last line
    best, fields = ",", 1
    for delimiter in DELIMITERS:
        counts = {len(row) for row in csv.reader(lines, delimiter=delimiter) if row}
        if len(counts) == 1 and (n := counts.pop()) > fields:
            best, fields = delimiter, n
    return best


def _read_csv(path: Path) -> pd.DataFrame:
    sample = _sample(path)
    sep = sniff_delimiter(sample)
    header = next(csv.reader([sample.splitlines()[0] if sample else ""], delimiter=sep), [])
    if len(header) > MAX_COLUMNS:
        raise TableFileError(f"{path.name} has {len(header):,} columns, over the limit of {MAX_COLUMNS:,}; select the "
                             "columns to train on (or raise NASOPS_MAX_DATA_COLUMNS)")
    try:
        return pd.read_csv(path, sep=sep, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TableFileError(f"{path.name} is not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset "
                             f"{exc.start:,} of a read block); re-save it as UTF-8") from None


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise TableFileError(f"could not read {path.name} as Parquet: {exc}") from None
    nested = [f"{f.name} ({f.type})" for f in schema if pa.types.is_nested(f.type)]
    if nested:
        raise TableFileError(f"{path.name} has nested column(s) {', '.join(nested[:5])}; nasops trains on flat "
                             "columns (numbers, text, booleans, dates): flatten or drop them")
    if len(schema) > MAX_COLUMNS:
        raise TableFileError(f"{path.name} has {len(schema):,} columns, over the limit of {MAX_COLUMNS:,}; select "
                             "the columns to train on (or raise NASOPS_MAX_DATA_COLUMNS)")
    return pd.read_parquet(path)


def read_table_file(path: Path) -> pd.DataFrame:
    """The table in ``path`` (``.csv``, ``.parquet``/``.pq``), or :class:`TableFileError` in one line."""
    _check_file(path)
    suffix = path.suffix.lower()
    readers = {".csv": _read_csv, ".parquet": _read_parquet, ".pq": _read_parquet}
    if suffix not in readers:
        raise TableFileError(f"{path.name}: unsupported file type {suffix!r}; use a .csv or .parquet file")
    try:
        frame = readers[suffix](path)
    except TableFileError:
        raise
    except Exception as exc:  # pandas/pyarrow parse errors: say which file and why, on one line
        said = " ".join(str(exc).split())[:300]
        raise TableFileError(f"could not read {path.name} as {suffix[1:].upper()}: {said}. Check that the file is a "
                             "valid table with a header row") from None
    if frame.empty:
        raise TableFileError(f"{path.name} has no rows; nasops needs labelled examples to train on")
    return frame


def repeated_header_names(path: Path) -> list[str]:
    """Names a CSV header holds more than once (pandas would silently keep both as ``y`` and ``y.1``)."""
    try:
        sample = _sample(path)
    except (OSError, TableFileError):
        return []
    sep = sniff_delimiter(sample)
    header = next(csv.reader([sample.splitlines()[0] if sample else ""], delimiter=sep), [])
    return [name for name, count in Counter(h.strip() for h in header).items() if count > 1]
