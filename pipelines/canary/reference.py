"""The drift reference of a trained model, built from its prepared data (the training side's half of
:mod:`pipelines.control.reference`): registration logs it with every version, and a caller that has the prepared
data (the embedded canary, ``canary start --data``) hands it to the rollout at start. The control plane only reads
the stored result, so it never loads a training file (nor ``nas``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from monitoring.core.model_ref import DriftReference
from monitoring.core.tasks import get_task
from pipelines.control.reference import MAX_ROWS, RAW_REFERENCE, bounded, log_reference

if TYPE_CHECKING:
    from nas.data import TaskData

__all__ = ["drift_reference", "register_drift_reference"]


def drift_reference(data: TaskData, rows: int = MAX_ROWS, seed: int = 0) -> DriftReference:
    """Class mix (classifier) or training targets (regression), and a bounded sample of the training inputs as
    the gateway logs them: the feature values of a float-matrix model, or a table model's raw rows, which data
    preparation saved beside its encoded arrays (``meta["raw_reference"]``; data prepared before that has none, and
    its reference names the columns without rows: its input drift is not computed)."""
    numeric = get_task(data.task).numeric_labels
    classes = list(data.meta.get("classes") or range(data.num_classes))
    mix = None
    if not numeric:
        counts = np.bincount(np.asarray(data.y_train, dtype=int), minlength=len(classes)).astype(float)
        mix = {str(classes[i]): float(c) for i, c in enumerate(counts)}
    targets = [float(v) for v in data.y_train] if numeric else None
    if data.meta.get("input_form") == "table":
        raw = data.meta.get(RAW_REFERENCE) or {}
        columns = [str(c) for c in raw.get("columns") or [c["name"] for c in data.meta.get("input_schema") or []]]
        reference = DriftReference(class_mix=mix, target_values=targets, columns=columns,
                                   rows=list(raw.get("rows") or []), input_form="table")
    else:
        names = [str(n) for n in data.meta.get("feature_names") or []]
        x = np.asarray(data.x_train, dtype=float)
        columns = names if len(names) == x.shape[1] else [f"f{i}" for i in range(x.shape[1])]
        reference = DriftReference(class_mix=mix, target_values=targets, columns=columns,
                                   rows=np.round(x, 6).tolist(), input_form="tensor")
    return bounded(reference, rows, seed)


def register_drift_reference(data: TaskData, model_name: str, version: str, client: Any = None) -> str | None:
    """Log the version's drift reference in the active (training) run and tag the version with its path."""
    import mlflow

    from pipelines import registry

    active = mlflow.active_run()
    if active is None:
        return None
    client = client or registry.client_for_active()
    return log_reference(client, active.info.run_id, model_name, version, drift_reference(data))
