"""What a rollout knows about its two models, fixed when it starts and stored with its record (``model_ref``).

Both versions are read as :class:`~monitoring.core.model_ref.ModelRef` from their tags (the challenger's task picks
the judge) and the drift reference is resolved once: the prepared data when the caller has it (a refresh,
``canary start --data``), else the ``drift_reference.json`` artifact registration logged in the challenger's
training run (tag ``nasops.drift_reference``), else none, said in a warning and in the evidence. Every later step
reads the record: no step needs the training file, on any host.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from monitoring.core.model_ref import DriftReference, ModelRef
from monitoring.vocabulary import tag
from pipelines.control.versions import model_ref

log = logging.getLogger("nasops.canary")

__all__ = ["DRIFT_REFERENCE_ARTIFACT", "MAX_CELLS", "MAX_ROWS", "RAW_REFERENCE", "RolloutModels", "bounded",
           "log_reference", "reference_frame", "resolve_models"]

DRIFT_REFERENCE_ARTIFACT = "drift_reference.json"
MAX_ROWS = 2000
"""At most this many training rows (and target values) in a stored reference: the record is read on every poll."""
MAX_CELLS = 100_000
"""And at most this many input values (a wide image model keeps fewer rows, never fewer than ``MIN_ROWS``)."""
MIN_ROWS = 50
RAW_REFERENCE = "raw_reference"
"""``TaskData.meta`` key of a table's raw training sample (``{"columns", "rows"}``, saved by data preparation): a
table model's drift reference rows, compared with the raw rows the gateway logs."""

Source = Literal["prepared", "artifact"]


class RolloutModels(BaseModel):
    """The ``model_ref`` column of a rollout record: both versions and the drift reference, resolved at start."""

    model_config = ConfigDict(extra="forbid")

    champion: ModelRef
    challenger: ModelRef
    reference: DriftReference | None = None
    reference_source: Source | None = None
    note: str | None = None


def bounded(reference: DriftReference, rows: int = MAX_ROWS, seed: int = 0) -> DriftReference:
    """``reference`` with at most ``rows`` input rows and target values (a seeded sample, order kept), within
    :data:`MAX_ROWS` and :data:`MAX_CELLS`."""
    rows = min(rows, MAX_ROWS)
    width = len(reference.rows[0]) if reference.rows else 0
    row_cap = max(MIN_ROWS, MAX_CELLS // width) if width else rows
    rng = np.random.default_rng(seed)

    def sample(values: list, n: int) -> list:
        if len(values) <= n:
            return values
        keep = np.sort(rng.choice(len(values), n, replace=False))
        return [values[i] for i in keep]

    targets = None if reference.target_values is None else sample(reference.target_values, rows)
    return reference.model_copy(update={"rows": sample(reference.rows, min(rows, row_cap)), "target_values": targets})


def log_reference(client: Any, run_id: str, model_name: str, version: str, reference: DriftReference) -> str:
    """Log ``reference`` in the version's training run and tag the version with its artifact path (registration
    calls this, so a rollout started anywhere later finds its reference)."""
    client.log_dict(run_id, bounded(reference).model_dump(mode="json"), DRIFT_REFERENCE_ARTIFACT)
    client.set_model_version_tag(model_name, version, tag("drift_reference"), DRIFT_REFERENCE_ARTIFACT)
    return DRIFT_REFERENCE_ARTIFACT


def _artifact_reference(client: Any, ref: ModelRef, run_id: str | None) -> DriftReference | None:
    if not ref.drift_reference_artifact or not run_id:
        return None
    with tempfile.TemporaryDirectory(prefix="nasops-reference-") as tmp:
        path = client.download_artifacts(run_id, ref.drift_reference_artifact, tmp)
        return DriftReference.model_validate(json.loads(Path(path).read_text()))


def resolve_models(client: Any, champion: Any, challenger: Any, given: DriftReference | None, *,
                   rows: int = MAX_ROWS, seed: int = 0) -> RolloutModels:
    """Both versions as ModelRefs and the drift reference: ``given`` (from prepared data), else the challenger's
    registered artifact, else none (a warning, and a note the evidence carries)."""
    champ, chall = model_ref(champion), model_ref(challenger)
    source: Source | None = "prepared" if given is not None else None
    reference, note = given, None
    if reference is None:
        try:
            reference = _artifact_reference(client, chall, getattr(challenger, "run_id", None))
            source = "artifact" if reference is not None else None
        except Exception as exc:  # an unreadable artifact: the rollout runs, without a drift reference
            note = f"the drift reference artifact of v{chall.version} could not be read ({exc})"
    if reference is None:
        note = note or (f"v{chall.version} has no drift reference (registered before references were logged) and "
                        "no prepared data was given (--data)")
        log.warning("rollout of %s v%s starts without a drift reference: %s; data and target drift are not "
                    "computed", chall.name, chall.version, note)
    else:
        reference = bounded(reference, rows, seed)
    return RolloutModels(champion=champ, challenger=chall, reference=reference, reference_source=source, note=note)


def reference_frame(reference: DriftReference | None) -> Any:
    """The reference's input rows as the frame drift compares served inputs with: feature values (a float-matrix
    model), or a table model's raw training rows, numeric columns as numbers and the others as categories, as the
    gateway logs its inputs (None: no rows)."""
    if reference is None or not reference.rows:
        return None
    from monitoring.drift import features_frame, table_frame

    if reference.input_form == "table":
        return table_frame(reference.rows, reference.columns)
    return features_frame(np.asarray(reference.rows, dtype=float), reference.columns or None)
