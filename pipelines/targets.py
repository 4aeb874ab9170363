"""The target column's side of stage 1: which task it is (classification or regression), what is wrong with a
regression target, how its rows are split, and the bundled regression table.

A float target with many distinct values is a quantity to predict, not a set of classes: with ``task: auto`` it is
trained as a regression (MSE on the target standardised on the training split; see docs/data.md). ``--task`` says
it explicitly, e.g. a float column that holds class codes (``classification``) or integer counts (``regression``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from monitoring.core.tasks import get_task, task_names

if TYPE_CHECKING:
    from pipelines.settings import Settings

TASKS = ("auto", *task_names())
REGRESSION_MIN_DISTINCT = 20
"""A float target with at least this many distinct values (or any non-integer value) is a regression under auto."""
MIN_REGRESSION_ROWS = 40
"""Fewest labelled rows a regression needs (train / validation / test / production splits of at least a few)."""
MAX_TARGET_MAGNITUDE = 1e12
"""Largest absolute target value accepted: beyond it float32 training loses the digits that matter."""
BUNDLED_TABLES: tuple[str, ...] = ("diabetes",)
"""Public tables that ship with scikit-learn (no download): ``--data diabetes``."""
QUANTILE_BINS = 10


def resolve_task(y: pd.Series, requested: str = "auto") -> str:
    """``classification`` or ``regression``: ``requested`` unless ``auto``; auto is regression for a numeric float
    target with non-integer values or at least :data:`REGRESSION_MIN_DISTINCT` distinct values."""
    if requested not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {requested!r}")
    if requested != "auto":
        return requested
    present = y.dropna()
    if not pd.api.types.is_float_dtype(present) or present.empty:
        return "classification"
    values = present.to_numpy(dtype=np.float64)
    finite = values[np.isfinite(values)]
    if len(finite) and not np.all(np.mod(finite, 1) == 0):
        return "regression"
    return "regression" if present.nunique() >= REGRESSION_MIN_DISTINCT else "classification"


def regression_target_problems(y: pd.Series) -> list[str]:
    """Everything wrong with a regression target, each as a sentence with its fix."""
    name = y.name
    problems = []
    missing = int(y.isna().sum())
    if missing:
        problems.append(f"{missing} rows have no target value in {name!r}; drop or fill them first")
    present = y.dropna()
    if pd.api.types.is_bool_dtype(present) or not pd.api.types.is_numeric_dtype(present):
        problems.append(f"the target {name!r} is not numeric (a regression needs numbers); use --task "
                        "classification for class labels, or convert the column to numbers")
        return problems
    values = present.to_numpy(dtype=np.float64)
    bad = int((~np.isfinite(values)).sum())
    if bad:
        problems.append(f"the target {name!r} has {bad} infinite value(s); drop those rows")
        values = values[np.isfinite(values)]
    if len(values) and np.abs(values).max() > MAX_TARGET_MAGNITUDE:
        problems.append(f"the target {name!r} has values beyond ±{MAX_TARGET_MAGNITUDE:g}; rescale it (e.g. to "
                        "thousands) first")
    if len(values) < MIN_REGRESSION_ROWS:
        problems.append(f"a regression needs at least {MIN_REGRESSION_ROWS} labelled rows, the target {name!r} has "
                        f"{len(values)}")
    elif np.unique(values).size < 2:
        problems.append(f"the target {name!r} is constant; there is nothing to predict")
    return problems


def strata(y: np.ndarray, task: str) -> np.ndarray:
    """What the splits are stratified on: the class codes, or a regression target's quantile bins (so every split
    spans the whole range of the target)."""
    if not get_task(task).numeric_labels:
        return y
    bins = min(QUANTILE_BINS, max(1, len(y) // 20))
    return pd.qcut(pd.Series(y).rank(method="first"), q=bins, labels=False).to_numpy()


def load_bundled_table(name: str) -> tuple[pd.DataFrame, pd.Series]:
    """A bundled regression table as teams have it: unscaled features, the target in its own units.

    ``diabetes``: scikit-learn's diabetes table (Efron et al. 2004, "Least Angle Regression"): 442 patients, 10
    baseline variables, the target a measure of disease progression one year later (25..346)."""
    if name != "diabetes":
        raise KeyError(f"unknown bundled table {name!r}; choose one of: {', '.join(BUNDLED_TABLES)}")
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(as_frame=True, scaled=False)
    return bunch.data.astype(np.float64), bunch.target.astype(np.float64).rename("progression")


def check_champion_task(model_name: str, task: str, client=None) -> None:
    """A regression and a classifier cannot share a model name: the canary would judge one against the other's
    labels. Raises a one-line :class:`~pipelines.errors.UserError` naming the fix, before anything trains."""
    from monitoring.vocabulary import CHAMPION
    from pipelines import registry
    from pipelines.errors import UserError

    mv = registry.alias_version(client or registry.client_for_active(), model_name, CHAMPION)
    if mv is None:
        return
    theirs = registry.version_tags(mv).get("task", "classification")
    if theirs != task:
        raise UserError(f"model {model_name!r}: its champion (version {mv.version}) is a {theirs} model, but this "
                        f"target is a {task}; register it under another name with --model-name, or pass --task "
                        f"{theirs} if the target is meant that way")


def preflight_task(config, y: pd.Series, settings: Settings) -> None:
    """:func:`check_champion_task` from the CLI, before Prefect starts (one line, no flow run); reads the registry
    only when one exists."""
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    uri = settings.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return
    check_champion_task(config.model_name or settings.model_name, resolve_task(y, config.task),
                        client=MlflowClient(tracking_uri=uri, registry_uri=uri))
