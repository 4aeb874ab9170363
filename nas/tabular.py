"""Benchmark tables: published (or our own) results of many architectures, as a CSV, so strategies can be compared
on thousands of searches without training anything.

CSV format: one row per architecture; an architecture-string column; one or more numeric metric columns (higher is
better for the searched metric); optional per-fidelity columns named ``METRIC@EPOCHS`` (e.g. ``val_accuracy@4``);
an optional cost column (seconds one evaluation would have taken); optional zero-cost proxy columns.

:class:`TableSpace` turns the rows into a search space: an architecture string is split into tokens (at ``|`` by
default), each token position with more than one value is a decision, neighbours differ in exactly one decision.
It works for NAS-Bench-201 strings and for the converted nas-bench-graph strings alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nas.spaces.base import Architecture, InvalidArchitectureError, SearchSpace

FIDELITY_COLUMN = re.compile(r"^(?P<metric>.+)@(?P<epochs>\d+)$")


@dataclass
class BenchmarkTable:
    """Validated table: ``metrics[name]``, ``proxies[name]`` and ``cost`` are float arrays aligned with ``archs``."""

    archs: list[str]
    metrics: dict[str, np.ndarray]
    proxies: dict[str, np.ndarray] = field(default_factory=dict)
    cost: np.ndarray | None = None
    fidelities: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        self.index = {a: i for i, a in enumerate(self.archs)}

    def __len__(self) -> int:
        return len(self.archs)

    def row(self, arch: str) -> int:
        try:
            return self.index[arch]
        except KeyError:
            raise KeyError(f"architecture {arch!r} is not in the table {self.source or ''}".rstrip()) from None

    def optimum(self, metric: str) -> float:
        return float(np.nanmax(self.metrics[metric]))


def _numeric(df: pd.DataFrame, column: str, arch_column: str, what: str) -> np.ndarray:
    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna() & df[column].notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(
            f"{what} column {column!r} must be numeric, but row {i + 2} (architecture {df[arch_column].iloc[i]!r}) "
            f"holds {df[column].iloc[i]!r}; fix that cell or choose another column"
        )
    if values.isna().all():
        raise ValueError(f"{what} column {column!r} is empty")
    return values.to_numpy(dtype=np.float64)


def load_table(
    path: str | Path,
    arch_column: str,
    metric_columns: str | Sequence[str],
    *,
    proxy_columns: Sequence[str] = (),
    cost_column: str | None = None,
) -> BenchmarkTable:
    """Read and validate a benchmark CSV; every problem raises ``ValueError`` naming the column and the fix."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"benchmark table {str(path)!r} does not exist")
    df = pd.read_csv(path)
    if isinstance(metric_columns, str):
        metric_columns = [metric_columns]
    wanted = [("architecture", arch_column)] + [("metric", m) for m in metric_columns]
    wanted += [("proxy", p) for p in proxy_columns] + ([("cost", cost_column)] if cost_column else [])
    for what, column in wanted:
        if column not in df.columns:
            raise ValueError(
                f"{what} column {column!r} is not in {path.name}; its columns are: {', '.join(map(str, df.columns))}"
            )
    if not metric_columns:
        raise ValueError("name at least one metric column")
    archs = df[arch_column].astype(str).str.strip()
    dup = archs[archs.duplicated(keep=False)]
    if len(dup):
        first = dup.iloc[0]
        rows = [int(i) + 2 for i in np.flatnonzero((archs == first).to_numpy())]
        raise ValueError(
            f"{path.name} has {dup.nunique()} duplicate architecture(s) in column {arch_column!r}, e.g. {first!r} on "
            f"lines {rows}; keep one row per architecture (average repeated runs first)"
        )
    df = df.assign(**{arch_column: archs})
    metrics = {m: _numeric(df, m, arch_column, "metric") for m in metric_columns}
    proxies = {p: _numeric(df, p, arch_column, "proxy") for p in proxy_columns}
    cost = _numeric(df, cost_column, arch_column, "cost") if cost_column else None
    fidelities: dict[str, dict[int, np.ndarray]] = {}
    for column in df.columns:
        match = FIDELITY_COLUMN.match(str(column))
        if match and match["metric"] in metrics:
            fidelities.setdefault(match["metric"], {})[int(match["epochs"])] = _numeric(
                df, column, arch_column, "fidelity"
            )
    return BenchmarkTable(list(archs), metrics, proxies, cost, fidelities, source=str(path))


class TableSpace(SearchSpace):
    """The architectures of a table as a search space (identity-hashed: two tables are two spaces)."""

    name = "table"

    def __init__(self, archs: Sequence[str], *, separator: str = "|") -> None:
        if not archs:
            raise ValueError("a table space needs at least one architecture")
        self.archs = list(archs)
        self.separator = separator
        self.index = {a: i for i, a in enumerate(self.archs)}
        tokens = [a.split(separator) for a in self.archs]
        lengths = {len(t) for t in tokens}
        width = max(lengths)
        tokens = [t + [""] * (width - len(t)) for t in tokens]
        self.tokens = tokens
        positions = [sorted({t[p] for t in tokens}) for p in range(width)]
        self.decisions = [p for p in range(width) if len(positions[p]) > 1]
        self.values = {p: {v: j for j, v in enumerate(positions[p])} for p in self.decisions}
        self._offsets = np.cumsum([0] + [len(self.values[p]) for p in self.decisions])
        # neighbours: rows that agree everywhere except one decision position
        self._groups: dict[tuple[int, tuple[str, ...]], list[int]] = {}
        for i, t in enumerate(tokens):
            for p in self.decisions:
                key = (p, tuple(t[:p] + t[p + 1 :]))
                self._groups.setdefault(key, []).append(i)

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    def config(self) -> dict[str, Any]:
        return {"rows": len(self.archs), "separator": self.separator}

    def from_string(self, text: str) -> Architecture:
        text = text.strip()
        if text not in self.index:
            raise InvalidArchitectureError(f"architecture {text!r} is not a row of this benchmark table")
        return Architecture(self, text)

    def sample(self, rng: np.random.Generator) -> Architecture:
        return Architecture(self, self.archs[int(rng.integers(len(self.archs)))])

    def _neighbour_rows(self, i: int) -> list[int]:
        t = self.tokens[i]
        out: list[int] = []
        for p in self.decisions:
            out.extend(j for j in self._groups[(p, tuple(t[:p] + t[p + 1 :]))] if j != i)
        return out

    def mutate(self, arch: Architecture, rng: np.random.Generator) -> Architecture:
        rows = self._neighbour_rows(self.index[arch.string])
        if not rows:  # an isolated row: any other row is the nearest we can do
            return self.sample(rng)
        return Architecture(self, self.archs[rows[int(rng.integers(len(rows)))]])

    def neighbours(self, arch: Architecture) -> list[Architecture]:
        return [Architecture(self, self.archs[j]) for j in self._neighbour_rows(self.index[arch.string])]

    def categorical(self) -> list[tuple[str, tuple[str, ...]]]:
        """One decision per token position that varies across the rows, its options the tokens seen there."""
        return [(f"pos{p}", tuple(sorted(self.values[p], key=self.values[p].get))) for p in self.decisions]

    def categorical_index(self, arch: Architecture) -> tuple[int, ...]:
        t = self.tokens[self.index[arch.string]]
        return tuple(self.values[p][t[p]] for p in self.decisions)

    def from_categorical(self, index: Sequence[int]) -> Architecture:
        if not hasattr(self, "_row_of_categorical"):
            self._row_of_categorical = {self.categorical_index(Architecture(self, a)): i
                                        for i, a in enumerate(self.archs)}
        row = self._row_of_categorical.get(tuple(int(i) for i in index))
        if row is None:
            raise InvalidArchitectureError(f"choice {list(index)} is not a row of this benchmark table")
        return Architecture(self, self.archs[row])

    def enumerate(self) -> Iterator[Architecture]:
        return (Architecture(self, a) for a in self.archs)

    def size(self) -> int:
        return len(self.archs)

    def encode(self, arch: Architecture) -> np.ndarray:
        """One-hot of the token at every decision position (the standard adjacency-free NB201 encoding)."""
        t = self.tokens[self.index[arch.string]]
        vec = np.zeros(int(self._offsets[-1]), dtype=np.float32)
        for k, p in enumerate(self.decisions):
            vec[self._offsets[k] + self.values[p][t[p]]] = 1.0
        return vec

    def build(self, arch: Architecture, num_classes: int, input_shape: tuple[int, ...]):
        raise NotImplementedError(
            "a benchmark table holds results, not networks; pass --space (e.g. nb201) to build its architectures"
        )


def proxy_lookup(table: BenchmarkTable) -> Mapping[str, Mapping[str, float]]:
    """``{arch: {proxy: value}}`` for the table's proxy columns (what predictor strategies take as features)."""
    names = list(table.proxies)
    return {a: {n: float(table.proxies[n][i]) for n in names} for i, a in enumerate(table.archs)}


def percent_to_fraction(table: BenchmarkTable) -> BenchmarkTable:
    """The same table with every metric (and fidelity) column divided by 100, when the metrics are accuracies in
    percent (NAS-Bench-201's tables are), so that regret and the 0.5-point tolerance read as fractions like every
    other table here; a table already in fractions is returned unchanged."""
    peak = max(float(np.nanmax(v)) for v in table.metrics.values())
    if peak <= 1.0:
        return table
    if peak > 100.0:
        raise ValueError(f"metric columns of {table.source or 'the table'} reach {peak:g}: neither fractions nor "
                         "percentages; divide them yourself or choose accuracy columns")
    return BenchmarkTable(
        table.archs, {m: v / 100.0 for m, v in table.metrics.items()}, table.proxies, table.cost,
        {m: {e: v / 100.0 for e, v in lv.items()} for m, lv in table.fidelities.items()}, source=table.source,
    )
