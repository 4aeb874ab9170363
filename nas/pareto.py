"""Search objectives and the Pareto view of a search: accuracy vs latency (fp32, and int8 when asked) vs params.

An objective names what the strategy maximises and which latency ``max_latency_ms`` bounds:

- ``accuracy``: fp32 validation accuracy; the bound is on fp32 eager latency (``latency_ms``);
- ``latency_int8``: every candidate is also quantized (``nas.deploy.int8_metrics``), the strategy maximises its
  *int8* validation accuracy (``accuracy_int8``: what would be deployed) and the bound is on the int8 latency.

:func:`pareto_rows` marks, over all evaluated candidates, the non-dominated ones on every axis at once
(maximise accuracy, minimise each latency and the parameter count): a candidate is on the front unless another is
at least as good on all of them and better on one. :func:`pareto_plot` draws accuracy against each latency with the
parameter count as colour; ``pipelines.pareto_report.log_pareto`` logs the plot and the table to the MLflow run.
The 2-D front of :func:`nas.objectives.pareto_front` stays what the search-stage plot uses for one cost axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ObjectiveSpec:
    name: str
    metric: str
    latency_key: str
    int8: bool
    """Whether candidates are quantized during the search (and the registered version gets its int8 form)."""


OBJECTIVES: dict[str, ObjectiveSpec] = {
    "accuracy": ObjectiveSpec("accuracy", "val_accuracy", "latency_ms", False),
    "latency_int8": ObjectiveSpec("latency_int8", "accuracy_int8", "latency_int8_ms", True),
}


def objective_spec(name: str) -> ObjectiveSpec:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; choose one of: {', '.join(OBJECTIVES)}") from None


def axes(objective: str) -> tuple[str, list[str]]:
    """``(maximise, [minimise...])`` of the Pareto view for ``objective``."""
    spec = objective_spec(objective)
    lower = ["latency_ms", "params"] + (["latency_int8_ms"] if spec.int8 else [])
    return ("val_accuracy", lower)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` dominates ``b`` (all coordinates to minimise): no worse anywhere, better somewhere."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def front_indices(points: Sequence[Mapping[str, float]], maximize: str, minimize: Sequence[str]) -> list[int]:
    """Indices of the points non-dominated on (``maximize`` up, every ``minimize`` down); points lacking a finite
    value on an axis are left out. O(n^2): a search evaluates tens to hundreds of candidates."""
    keys = [maximize, *minimize]
    idx = [i for i, p in enumerate(points) if all(k in p and np.isfinite(p[k]) for k in keys)]
    vecs = {i: [-float(points[i][maximize]), *(float(points[i][k]) for k in minimize)] for i in idx}
    return [i for i in idx if not any(dominates(vecs[j], vecs[i]) for j in idx if j != i)]


def pareto_rows(records: Sequence[Any], objective: str = "accuracy") -> list[dict[str, Any]]:
    """One row per evaluated architecture (``nas.search.Record``: ``arch``, ``result.metrics``, failed ones left
    out; or plain dicts with ``arch`` and the metrics), with ``on_front``; sorted front first, then by accuracy."""
    maximize, minimize = axes(objective)
    points, rows = [], []
    latest: dict[str, Any] = {}
    for r in records:  # one row per architecture: its last evaluation (successive halving's highest fidelity)
        if getattr(r, "ok", True):
            latest[r.arch if hasattr(r, "arch") else r["arch"]] = r
    for r in latest.values():
        metrics = dict(getattr(getattr(r, "result", None), "metrics", None) or
                       {k: v for k, v in r.items() if k != "arch"})
        arch = r.arch if hasattr(r, "arch") else r["arch"]
        points.append(metrics)
        rows.append({"arch": arch, **{k: float(metrics[k]) for k in (maximize, *minimize, "accuracy_int8",
                                                                      "int8_accuracy_drop") if k in metrics}})
    front = set(front_indices(points, maximize, minimize))
    for i, row in enumerate(rows):
        row["on_front"] = i in front
    rows.sort(key=lambda r: (not r["on_front"], -r.get(maximize, -np.inf)))
    return rows


def pareto_plot(rows: Sequence[Mapping[str, Any]], path: str | Path, objective: str = "accuracy") -> Path:
    """Accuracy vs each latency (one panel each), parameter count as colour, the front circled in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maximize, minimize = axes(objective)
    latencies = [k for k in minimize if k != "params" and any(k in r for r in rows)]
    fig, panels = plt.subplots(1, max(len(latencies), 1), figsize=(5 * max(len(latencies), 1), 3.8), squeeze=False)
    params = np.array([r.get("params", np.nan) for r in rows], dtype=float)
    for ax, key in zip(panels.ravel(), latencies or ["latency_ms"], strict=False):
        xs = np.array([r.get(key, np.nan) for r in rows], dtype=float)
        ys = np.array([r.get(maximize, np.nan) for r in rows], dtype=float)
        sc = ax.scatter(xs, ys, c=params, cmap="viridis", s=28, alpha=0.8)
        on = np.array([bool(r.get("on_front")) for r in rows])
        if on.any():
            ax.scatter(xs[on], ys[on], facecolors="none", edgecolors="red", s=90, linewidths=1.5,
                       label="Pareto front (acc, latencies, params)")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xlabel(f"{key} (batch 1, CPU)")
        ax.set_ylabel(maximize)
        ax.set_title(f"{maximize} vs {key}", fontsize=9)
        fig.colorbar(sc, ax=ax, label="params")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
