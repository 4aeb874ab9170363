"""MLflow registry glue: log a served network with its signature, register it, tag its lineage, read aliases.

The aliases ``champion`` and ``challenger`` are the only pointers serving follows; every version carries, as tags,
enough lineage (data fingerprint, code version, search run, architecture, proxy scores, seed) to be rebuilt and
audited. Tag names are the contract with ``serving`` and the canary (see docs/architecture.md).
"""

from __future__ import annotations

import json
import logging
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

from monitoring.vocabulary import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION, REJECTED, TAG_PREFIX, tag

if TYPE_CHECKING:  # the control plane reads tags and moves aliases through this module: it must not import torch
    from nas.export import FlatInputClassifier

__all__ = ["CHALLENGER", "CHAMPION", "PREVIOUS_CHAMPION", "TAG_PREFIX", "alias_version", "log_and_register"]


@lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of the code that trained a model (``+dirty`` if uncommitted changes), else the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True,
            timeout=5,
        ).stdout.strip()
        if commit:
            return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return "nasops-" + version("nasops")
    except PackageNotFoundError:
        return "unknown"


def signature(num_features: int, num_classes: int) -> ModelSignature:
    """Input: float32 ``(-1, F)`` raw features; output: float32 ``(-1, C)`` logits."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_features))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes))]),
    )


def _tag_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=float)


def log_and_register(
    model: FlatInputClassifier,
    *,
    model_name: str,
    num_classes: int,
    input_example: np.ndarray,
    tags: dict[str, Any],
) -> str:
    """Log ``model`` to the active run, register it under ``model_name`` and tag the version; returns the version."""
    import torch

    active = mlflow.active_run()
    if active is None:
        raise RuntimeError("log_and_register needs an active MLflow run")
    info = mlflow.pytorch.log_model(
        model,
        name="model",
        signature=signature(model.num_features, num_classes),
        input_example=np.asarray(input_example, dtype=np.float32),
        registered_model_name=model_name,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy", "nasops"],
        await_registration_for=60,
        # MLflow's default (None: torch.export) cannot trace a module that calls a fitted estimator (a baseline's
        # nas.estimator_module.EstimatorModule says "pickle")
        serialization_format=getattr(model, "serialization_format", None),
    )
    version = str(info.registered_model_version)
    client = client_for_active()
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, tag(key), _tag_value(value))
    client.set_model_version_tag(model_name, version, tag("training_run_id"), active.info.run_id)
    return version


def table_signature(schema: list[dict], regression: bool = False) -> ModelSignature:
    """Input: the raw columns by name and type (an optional column may be absent); the output is a DataFrame of the
    predicted label and one probability per class (not pinned: class labels may be numbers or text), or for a
    regression one float column ``prediction`` in the target's units."""
    from mlflow.types import ColSpec

    # An integer column is ``long``: MLflow refuses to cast int64 to double ("Can not safely convert"), so a
    # DataFrame read straight from the training file failed on a model that declared it double.
    inputs = Schema([ColSpec("long" if c.get("integer") else c["type"], c["name"], required=not c["optional"])
                     for c in schema])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double", "prediction")]) if regression else None)


def log_and_register_table(
    model: FlatInputClassifier,
    preprocessor: Any,
    *,
    model_name: str,
    classes: list,
    schema: list[dict],
    input_example: Any,
    tags: dict[str, Any],
) -> str:
    """Log the network *with* its fitted encoding as one pyfunc model (:class:`nas.table_model.TableClassifier`),
    register it under ``model_name`` and tag it, like :func:`log_and_register`; returns the version."""
    from nas.table_model import TableClassifier

    active = mlflow.active_run()
    if active is None:
        raise RuntimeError("log_and_register_table needs an active MLflow run")
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    pyfunc_log.setLevel(logging.ERROR)  # its warning about pickled Python objects: the object is ours, by design
    try:
        info = _log_table(TableClassifier(preprocessor, model, classes, schema), schema, input_example, model_name)
    finally:
        pyfunc_log.setLevel(level)
    version = str(info.registered_model_version)
    client = client_for_active()
    for key, value in {**tags, "input_form": "table", "input_schema": schema}.items():
        client.set_model_version_tag(model_name, version, tag(key), _tag_value(value))
    client.set_model_version_tag(model_name, version, tag("training_run_id"), active.info.run_id)
    return version


def _log_table(python_model: Any, schema: list[dict], input_example: Any, model_name: str) -> Any:
    import sklearn
    import torch

    return mlflow.pyfunc.log_model(
        name="model",
        python_model=python_model,
        signature=table_signature(schema, regression=not getattr(python_model, "classes", [None])),
        input_example=input_example,
        registered_model_name=model_name,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"scikit-learn=={sklearn.__version__}",
                          "pandas", "numpy", "nasops"],
        await_registration_for=60,
    )


def alias_version(client: MlflowClient, model_name: str, alias: str) -> ModelVersion | None:
    """The version an alias points at, or ``None`` (no such model or alias)."""
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None


def version_tags(mv: ModelVersion) -> dict[str, str]:
    """A version's ``nasops.*`` tags without the prefix."""
    return {k[len(TAG_PREFIX):]: v for k, v in (mv.tags or {}).items() if k.startswith(TAG_PREFIX)}


def list_versions(client: MlflowClient, model_name: str) -> list[dict[str, Any]]:
    """Every version of ``model_name``, newest first, with its aliases and nasops tags (empty if unregistered)."""
    try:
        model = client.get_registered_model(model_name)
    except MlflowException:
        return []
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name='{model_name}'"):
        rows.append(
            {
                "version": str(mv.version),
                "aliases": sorted(aliases.get(str(mv.version), [])),
                "created": mv.creation_timestamp,
                "tags": version_tags(mv),
                "rejected": (mv.tags or {}).get(REJECTED),
                "run_id": mv.run_id,
            }
        )
    rows.sort(key=lambda r: int(r["version"]), reverse=True)
    return rows


def client_for_active() -> MlflowClient:
    """A client on the store ``mlflow.set_tracking_uri`` configured (see ``pipelines.tracking.configure_mlflow``)."""
    uri = mlflow.get_tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)
