"""The champion scored on this refresh's rows: champion and challenger are compared on the same split.

A champion's registered figures are from the split of the data it was trained on (its ``dataset_fingerprint``
tag). When the data changed, those figures and the challenger's come from different rows (issue 24: 0.969 against
0.979 in the summary, 0.980 against 0.979 on the same test rows). So whenever the fingerprints differ, the
champion's served model is scored again on the new validation and test rows — the served module on the raw
features, or a table model's own encoder on the raw rows — and every number says which split it is from.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.contracts import ChampionFacts

if TYPE_CHECKING:  # `nasops status` imports this module for `short`: no numpy / torch at import time
    import numpy as np

    from nas.data import TaskData

    Outputs = dict[str, np.ndarray]
    """A model's output per split (``val``, ``test``): class probabilities, or values in the target's units."""

log = logging.getLogger(__name__)


def short(fingerprint: str | None) -> str:
    """A fingerprint as the summary, tags and descriptions print it (8 characters; ``unknown`` when absent)."""
    return (fingerprint or "")[:8] or "unknown"


def scored_figures(data: TaskData, outputs: Outputs) -> dict[str, float]:
    """The task's figures (accuracy, or RMSE / MAE) and the refresh-level metric's of one model's outputs on this
    data's validation and test rows (:func:`pipelines.metric.metric_figures`, as retraining computes them)."""
    import numpy as np

    from pipelines.metric import metric_figures

    figures: dict[str, float] = {}
    for split in ("val", "test"):
        y, out = np.asarray(getattr(data, f"y_{split}")), np.asarray(outputs[split], dtype=np.float64)
        if data.is_regression:
            err = out.reshape(-1) - y
            figures[f"{split}_rmse"] = float(np.sqrt(np.mean(err**2)))
            figures[f"{split}_mae"] = float(np.mean(np.abs(err)))
        else:
            figures[f"{split}_accuracy"] = float(np.mean(out.argmax(axis=1) == y))
    return {**figures, **metric_figures(data, outputs)}


def served_outputs(model_name: str, version: str, data: TaskData) -> Outputs:
    """A registered version's outputs on this data's validation and test rows: a table model through its own
    fitted encoder on the raw rows (its encoder was fitted on other data), else its served module on the raw
    features (the module normalises them itself)."""
    import torch

    from pipelines.data import RAW_EVAL

    if data.meta.get(RAW_EVAL):
        import mlflow
        import pandas as pd

        model = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}").unwrap_python_model()
        rows = json.loads(Path(data.meta[RAW_EVAL]).read_text())
        columns = [c["name"] for c in data.meta["input_schema"]]
        return {s: model.predict_proba(pd.DataFrame(rows[s], columns=columns)) for s in ("val", "test")}
    from pipelines.baselines import load_served

    module = load_served(model_name, version)
    outputs = {}
    with torch.inference_mode():
        for split in ("val", "test"):
            out = module(torch.from_numpy(getattr(data, f"x_{split}"))).double()
            outputs[split] = out.reshape(-1).numpy() if data.is_regression else torch.softmax(out, 1).numpy()
    return outputs


def champion_on_split(facts: ChampionFacts | None, data_path: str, model_name: str,
                      champion_fingerprint: str | None,
                      outputs: Callable[[str, str, TaskData], Outputs] = served_outputs) -> ChampionFacts | None:
    """The champion's figures on this refresh's split: its registered ones when it was trained on the same data,
    else scored again on the new rows. A champion that cannot answer them (other columns) keeps its registered
    figures, labelled with their own split, and a warning says why."""
    from nas.data import TaskData

    if facts is None:
        return None
    data = TaskData.load(data_path)
    here = str(data.meta.get("fingerprint") or "")
    same = {"split": short(champion_fingerprint), "registered_split": short(champion_fingerprint)}
    if champion_fingerprint and champion_fingerprint == here:
        return facts.model_copy(update=same)
    try:
        figures = scored_figures(data, outputs(model_name, facts.version, data))
    except Exception as exc:  # informs the summary; the canary still judges both on live rows
        log.warning("the champion (version %s) could not be scored on the new split %s (%s: %s): its figures are "
                    "from its own split %s", facts.version, short(here), type(exc).__name__, exc,
                    short(champion_fingerprint))
        return facts.model_copy(update=same)
    known = {k: v for k, v in figures.items() if k in ChampionFacts.model_fields}
    return facts.model_copy(update={**known, "split": short(here), "rescored": True,
                                    "registered_split": short(champion_fingerprint), "figures": figures})


def champion_fingerprint(model_name: str, version: str, client: Any = None) -> str | None:
    """The ``dataset_fingerprint`` tag of a version (the data its registered figures are from)."""
    from pipelines import registry

    client = client or registry.client_for_active()
    return registry.version_tags(client.get_model_version(model_name, version)).get("dataset_fingerprint")


def on_this_split(model_name: str, data_path: str, facts: ChampionFacts | None) -> ChampionFacts | None:
    """:func:`champion_on_split` of the registered champion (the refresh's one call)."""
    if facts is None:
        return None
    return champion_on_split(facts, data_path, model_name, champion_fingerprint(model_name, facts.version))
