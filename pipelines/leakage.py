"""Leakage and shortcut checks before training: a feature that alone gives the target away is refused, named.

A user's table can carry the target in disguise: ``logwage`` beside ``wage``, a relabelled copy of the class, or
parts that add up to the target (``tax`` and ``net`` beside ``gross``). A network trained on it reports a test
score no model will reach in production, and nothing downstream notices. This check runs in stage 1's planning
(:func:`pipelines.data.plan_rows`, so the CLI's pre-flight and a flow run without the CLI both refuse), on a seeded
sample of at most :data:`SAMPLE_ROWS` rows, in well under a second per ten columns:

- one column at a time (every kept feature, numbers and categories): a regression target's Spearman ``|rho|`` with
  a number column (a monotone transform), and for any task the target predicted from the column's values alone —
  the mean rank of the target (regression) or the majority class (classification) of each value, or of each
  quantile bin of a number column, fitted on one half of the sample and scored on the other (out of sample, so a
  column with a different value in most rows explains nothing);
- parts (regression): a least-squares fit of the target on the number columns chosen greedily (orthogonal matching
  pursuit, at most :data:`MAX_PARTS` of them), fitted on one half and scored on the other; the same on the logs of
  a positive target and of the positive columns finds parts that multiply to the target.

An identifier is dropped by the column plan before this runs, a constant column carries nothing, and a date is
skipped. A leak is refused unless every column it names is allowed (``--allow-column NAME``, ``allow_columns``):
the user knows whether a column is known when a prediction is made. Thresholds and their reasons: docs/data.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from pipelines.errors import UserError
from pipelines.preprocessing import ColumnPlan

__all__ = ["EVIDENCE", "Leak", "LeakageError", "check_leakage", "find_leaks", "scores"]

SAMPLE_ROWS = 20_000
"""Rows the check looks at (a seeded sample): enough for every score below to be exact to the third decimal."""
MONOTONE_RHO = 0.995
"""A number column whose Spearman |rho| with a regression target reaches this is a monotone transform of it. The
strongest honest column of the four shared regression tables reaches 0.963 (diamonds' ``x``); ``log``, a square
root or a copy rounded to two significant digits reach 0.999 or more."""
ONE_COLUMN_R2 = 0.99
"""Out-of-sample R² of the target's ranks from one column's values (or bins) alone. Ranks, so a heavy tail does not
hide a copy (``logwage`` explains 0.87 of ``wage`` itself through 256 bins, 1.000 of its ranks); the four shared
regression tables' best honest column reaches 0.935 (diamonds' ``y``)."""
ONE_COLUMN_BALANCED_ACCURACY = 0.99
"""Out-of-sample balanced accuracy of the class from one column alone: 1/K is "always the majority class", so a
rare class cannot hide behind a high plain accuracy; the six shared classification tables' best honest column
reaches 0.617 (credit_data's ``Records``)."""
PARTS_R2 = 0.9999
"""Out-of-sample R² of a linear fit on a few number columns: noise-free parts give 1.0000 and parts rounded to cents
more than 0.99999; the best honest linear fit of the shared regression tables reaches 0.861 (diamonds). Parts plus
an unexplained term of 1 % of the target's spread (R² 0.9999) are the limit: a target that is a linear formula of
its features up to noise of that size (a physical law, a synthetic table) is not called a leak."""
MAX_PARTS = 6
"""Most columns a sum of parts may take (orthogonal matching pursuit steps)."""
MIN_ROWS = 40
"""Fewer labelled rows than this are not checked: 20 rows a half, and a perfect score could be chance (validation
asks at least as many of a regression, and 10 per class)."""
MAX_BINS = 256
MIN_ROWS_PER_BIN = 40


class LeakageError(UserError):
    """A feature column gives the target away; the message names it, the evidence and the way to allow it."""


@dataclass(frozen=True)
class Leak:
    """Column(s) that predict the target almost perfectly, with the score that says so."""

    columns: tuple[str, ...]
    evidence: str

    def describe(self) -> str:
        return f"{' + '.join(self.columns)}: {self.evidence}"


def _sample(x: pd.DataFrame, y: pd.Series, seed: int) -> tuple[pd.DataFrame, pd.Series, np.ndarray]:
    """At most :data:`SAMPLE_ROWS` rows with a label, and the half each row belongs to (True: the fitting half)."""
    keep = np.flatnonzero(y.notna().to_numpy())
    rng = np.random.default_rng(seed)
    if len(keep) > SAMPLE_ROWS:
        keep = np.sort(rng.choice(keep, SAMPLE_ROWS, replace=False))
    half = np.zeros(len(keep), dtype=bool)
    half[rng.permutation(len(keep))[: len(keep) // 2]] = True
    return x.iloc[keep].reset_index(drop=True), y.iloc[keep].reset_index(drop=True), half


def _cells(values: pd.Series, numeric: bool) -> np.ndarray:
    """Integer cell codes of a column: its values, or quantile bins of a number column with many values; a missing
    cell is a cell of its own (a column that is missing exactly when the class is 1 is a leak too)."""
    if numeric:
        v = values.to_numpy(dtype=np.float64, na_value=np.nan)
        present = v[~np.isnan(v)]
        bins = max(2, min(MAX_BINS, len(v) // MIN_ROWS_PER_BIN))
        if len(np.unique(present)) > bins:
            edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))
            codes = np.searchsorted(edges, v, side="right")
            return np.where(np.isnan(v), len(edges) + 1, codes)
    codes, _ = pd.factorize(values)  # a missing cell is -1: the cell after the last value
    return np.where(codes < 0, codes.max() + 1, codes)


def _one_column_r2(cells: np.ndarray, y: np.ndarray, half: np.ndarray) -> float:
    """R² of the target from each cell's mean, fitted on each half and scored on the other (cross-fitted)."""
    pred = np.empty_like(y)
    size = int(cells.max()) + 1
    for fit in (half, ~half):
        sums = np.bincount(cells[fit], weights=y[fit], minlength=size)
        counts = np.bincount(cells[fit], minlength=size)
        means = np.where(counts > 0, sums / np.maximum(counts, 1), y[fit].mean())
        pred[~fit] = means[cells[~fit]]
    total = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - pred) ** 2)) / total if total > 0 else 0.0


def _one_column_balanced_accuracy(cells: np.ndarray, classes: np.ndarray, half: np.ndarray) -> float:
    """Balanced accuracy of each cell's majority class, fitted on each half and scored on the other."""
    k, size = int(classes.max()) + 1, int(cells.max()) + 1
    pred = np.empty_like(classes)
    for fit in (half, ~half):
        table = np.bincount(cells[fit] * k + classes[fit], minlength=size * k).reshape(size, k)
        majority = np.bincount(classes[fit], minlength=k).argmax()
        best = np.where(table.sum(axis=1) > 0, table.argmax(axis=1), majority)
        pred[~fit] = best[cells[~fit]]
    return _balanced_accuracy(pred, classes)


def _balanced_accuracy(pred: np.ndarray, classes: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[classes == c] == c) for c in np.unique(classes)]))


def _nearest_balanced_accuracy(values: pd.Series, classes: np.ndarray, half: np.ndarray) -> float:
    """Balanced accuracy of each row's nearest value in the other half (one-dimensional 1-NN, a sort and a binary
    search; a missing value is nearest to a missing value): a class made by thresholding a number (``high = wage >
    500``) is right on both sides of the threshold, however few rows fall in the quantile bin that holds it."""
    v = values.to_numpy(dtype=np.float64, na_value=np.nan)
    v = np.where(np.isnan(v), np.inf, v)
    pred = np.empty_like(classes)
    for fit in (half, ~half):
        order = np.argsort(v[fit], kind="stable")
        ref, query = v[fit][order], v[~fit]
        right = np.clip(np.searchsorted(ref, query), 1, len(ref) - 1)
        with np.errstate(invalid="ignore"):  # inf - inf: a missing query next to missing values takes the right one
            left_closer = np.abs(query - ref[right - 1]) < np.abs(ref[right] - query)
        pred[~fit] = classes[fit][order][np.where(left_closer, right - 1, right)]
    return _balanced_accuracy(pred, classes)


def _spearman(values: pd.Series, ranks: np.ndarray) -> float:
    """|Spearman rho| of a number column with the target (given as its ranks) over the rows where the column is
    present (the target's ranks among those rows are its ranks in the sample when no cell is missing)."""
    v = values.to_numpy(dtype=np.float64, na_value=np.nan)
    present = ~np.isnan(v)
    if present.sum() < 3:
        return 0.0
    a = rankdata(v[present])
    b = ranks if present.all() else rankdata(ranks[present])
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(abs(np.corrcoef(a, b)[0, 1]))


EVIDENCE = {
    "spearman": (MONOTONE_RHO, "Spearman {score:.3f} with {target!r} (a monotone transform of the target)"),
    "r2": (ONE_COLUMN_R2, "its values alone explain R² {score:.3f} of the ranks of {target!r} out of sample (the "
                          "target as a function of this one column)"),
    "balanced_accuracy": (ONE_COLUMN_BALANCED_ACCURACY, "its values alone give {target!r} with balanced accuracy "
                          "{score:.3f} out of sample (a relabelled copy of the target)"),
    "parts_r2": (PARTS_R2, "a linear fit on {them} alone explains R² {score:.4f} of {target!r} out of sample (parts "
                           "that add up to the target)"),
    "product_r2": (PARTS_R2, "a linear fit on the logs of {them} alone explains R² {score:.4f} of log {target!r} out "
                             "of sample (parts that multiply to the target)"),
}
"""Each score the check computes: the threshold at which it is a leak, and how the refusal words it."""


@dataclass(frozen=True)
class _Target:
    """The sampled target as every one-column score reads it, computed once: its values and ranks (regression) or
    its class codes (classification)."""

    regression: bool
    values: np.ndarray
    ranks: np.ndarray

    @classmethod
    def of(cls, y: pd.Series, regression: bool) -> _Target:
        if regression:
            values = y.to_numpy(dtype=np.float64)
            return cls(True, values, rankdata(values))
        classes, _ = pd.factorize(y.astype(object).map(str))
        return cls(False, classes, classes)


def _column_scores(values: pd.Series, numeric: bool, target: _Target, half: np.ndarray) -> dict[str, float]:
    """How well one column alone predicts the target, by each of its scores (keys of :data:`EVIDENCE`)."""
    cells = _cells(values, numeric)
    if target.regression:
        scores = {"r2": _one_column_r2(cells, target.ranks, half)}
        return {"spearman": _spearman(values, target.ranks), **scores} if numeric else scores
    score = _one_column_balanced_accuracy(cells, target.values, half)
    if numeric:
        score = max(score, _nearest_balanced_accuracy(values, target.values, half))
    return {"balanced_accuracy": score}


def _standardised(frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Number columns with missing cells at the median, centred and scaled; constant ones left out."""
    filled = frame.astype(np.float64).fillna(frame.median()).fillna(0.0)
    values = filled.to_numpy(dtype=np.float64)
    std = values.std(axis=0)
    keep = std > 0
    values = (values[:, keep] - values[:, keep].mean(axis=0)) / std[keep]
    return values, [str(c) for c, k in zip(frame.columns, keep, strict=True) if k]


class _Halves:
    """Least squares fitted on one half of the sample and scored (R²) on the other."""

    def __init__(self, values: np.ndarray, target: np.ndarray, half: np.ndarray) -> None:
        centre = values[half].mean(axis=0)  # the fitting half's means: a fit without intercept is then exact
        self.a, self.b = values[half] - centre, values[~half] - centre
        self.ya, self.yb = target[half] - target[half].mean(), target[~half] - target[half].mean()

    def fit(self, columns: list[int]) -> tuple[np.ndarray, float]:
        """The fitting half's residual and the other half's R² of a fit on ``columns``."""
        coef, *_ = np.linalg.lstsq(self.a[:, columns], self.ya, rcond=None)
        spread = float(np.sum((self.yb - self.yb.mean()) ** 2)) or 1.0
        left = float(np.sum((self.yb - self.b[:, columns] @ coef) ** 2))
        return self.ya - self.a[:, columns] @ coef, 1.0 - left / spread


def _parts_fit(frame: pd.DataFrame, y: pd.Series, half: np.ndarray) -> tuple[tuple[str, ...], float]:
    """The number columns whose linear combination best is the target, and its R²: orthogonal matching pursuit on
    the fitting half (the column most correlated with what is left, then a least-squares refit), scored on the other
    half, at most :data:`MAX_PARTS` columns; once it reaches :data:`PARTS_R2`, every column the fit does not need
    is dropped again (a column picked early for its correlation with the target is not one of the parts)."""
    values, names = _standardised(frame)
    halves = _Halves(values, y.to_numpy(dtype=np.float64), half)
    chosen: list[int] = []
    residual, best = halves.ya, ((), 0.0)
    for _ in range(min(MAX_PARTS, len(names))):
        fit = np.abs(halves.a.T @ residual)
        fit[chosen] = -1.0
        chosen.append(int(fit.argmax()))
        residual, r2 = halves.fit(chosen)
        best = max(best, (tuple(chosen), r2), key=lambda pair: pair[1])
        if r2 >= PARTS_R2:
            for column in list(chosen):
                rest = [c for c in chosen if c != column]
                if rest and (pruned := halves.fit(rest)[1]) >= PARTS_R2:
                    chosen, r2 = rest, pruned
            best = (tuple(chosen), r2)
            break
    return tuple(names[i] for i in sorted(best[0])), best[1]


def scores(x: pd.DataFrame, y: pd.Series, task: str, plan: ColumnPlan, seed: int = 0
           ) -> dict[tuple[str, ...], dict[str, float]]:
    """Every score of the plan's kept feature columns (dates aside), one column at a time, then (a regression) the
    best few number columns together: what :func:`find_leaks` compares with :data:`EVIDENCE`'s thresholds."""
    sample, target, half = _sample(x, y, seed)
    if len(target) < MIN_ROWS:
        return {}
    regression = task == "regression"
    numeric = set(plan.numeric)
    encoded = _Target.of(target, regression)
    found = {(name,): _column_scores(sample[name], name in numeric, encoded, half)
             for name in dict.fromkeys((*plan.numeric, *plan.one_hot, *plan.ordinal))}
    if regression:
        for kind, frame, values in _parts_inputs(sample[plan.numeric], target):
            columns, r2 = _parts_fit(frame, values, half)
            if columns:
                found.setdefault(columns, {})[kind] = r2
    return found


def _parts_inputs(frame: pd.DataFrame, target: pd.Series) -> list[tuple[str, pd.DataFrame, pd.Series]]:
    """What the parts fit runs on: the number columns and the target (a sum), and, for a positive target, the logs
    of the positive number columns and of the target (a product: ``price = unit_price * quantity``)."""
    inputs = [("parts_r2", frame, target)] if frame.shape[1] >= 2 else []
    positive = [c for c in frame.columns if (frame[c].dropna() > 0).all()]
    if len(positive) >= 2 and (target > 0).all():
        inputs.append(("product_r2", np.log(frame[positive].astype(np.float64)), np.log(target.astype(np.float64))))
    return inputs


def find_leaks(x: pd.DataFrame, y: pd.Series, task: str, plan: ColumnPlan, seed: int = 0) -> list[Leak]:
    """Every leak among the plan's kept feature columns: each score at or above its threshold, worded; parts that
    only repeat a single-column leak are not said twice."""
    leaks: list[Leak] = []
    for columns, found in scores(x, y, task, plan, seed).items():
        over = [(kind, score) for kind, score in found.items() if score >= EVIDENCE[kind][0]]
        if not over or (len(columns) > 1 and any(set(leak.columns) <= set(columns) for leak in leaks)):
            continue
        kind, score = over[0]
        them = "these columns" if len(columns) > 1 else "it"
        leaks.append(Leak(columns, EVIDENCE[kind][1].format(score=score, target=y.name, them=them)))
    return leaks


def check_leakage(x: pd.DataFrame, y: pd.Series, task: str, plan: ColumnPlan | None, allow: Sequence[str] = (),
                  label: str = "data", seed: int = 0) -> None:
    """Raise :class:`LeakageError` (one line: the columns, the evidence, the fix) unless every leak found is made
    only of allowed columns; an allowed name that is not a feature column is refused too (a typo must not pass).
    ``plan`` None: a bundled dataset (ours, known clean), not checked."""
    if plan is None:
        if allow:
            raise LeakageError(f"{label}: --allow-column is for your own tables; {label!r} is bundled")
        return
    unknown = [a for a in allow if a not in {str(c) for c in x.columns}]
    if unknown:
        raise LeakageError(f"{label}: --allow-column names {', '.join(map(repr, unknown))}, not feature column(s) "
                           f"of the table (columns: {', '.join(map(str, list(x.columns)[:12]))})")
    leaks = [leak for leak in find_leaks(x, y, task, plan, seed) if not set(leak.columns) <= set(allow)]
    if not leaks:
        return
    names = [c for leak in leaks for c in leak.columns if c not in allow]
    flags = " ".join(f"--allow-column {c}" for c in dict.fromkeys(names))
    found = "; ".join(leak.describe() for leak in leaks)
    one = len(set(names)) == 1
    raise LeakageError(f"{label}: {found}. A feature that gives the target {y.name!r} away makes every score a "
                       f"lie: remove {'it' if one else 'them'}, or pass {flags} if {'it is' if one else 'they are'} "
                       "known when a prediction is made")
