"""The NAS stage's weight-sharing methods, with their MLflow evidence: a SPOS supernet as the low-fidelity
evaluator (``search.fidelity: supernet``), and DARTS as the whole search (``search.strategy: darts``).

The library (``nas.supernet``) trains and ranks; this module chooses the device, logs the supernet's training curve
and DARTS's architecture-weight evolution (metrics per epoch and a PNG each) in a nested MLflow run whose id becomes
part of every candidate's lineage.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import mlflow

from monitoring.vocabulary import tag
from nas.data import TaskData
from nas.spaces import SearchSpace
from pipelines.config import SearchStageConfig
from pipelines.contracts import Candidate
from pipelines.errors import UserError


def resolve_device(device: str) -> str:
    """``auto`` -> a GPU when one is present, else the CPU."""
    if device != "auto":
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise UserError("search.device is 'cuda' but no GPU is visible; use device: auto or cpu")
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _numeric(row: dict[str, Any]) -> dict[str, float]:
    return {k.replace("|", "_").replace("~", "_"): float(v) for k, v in row.items()
            if isinstance(v, int | float) and k != "epoch"}


def _log_history(history: list[dict[str, Any]], prefix: str) -> None:
    for step, row in enumerate(history, start=1):
        mlflow.log_metrics({f"{prefix}.{k}": v for k, v in _numeric(row).items()}, step=int(row.get("epoch", step)))


def trained_supernet(space: SearchSpace, data: TaskData, cfg: SearchStageConfig) -> tuple[Any, str]:
    """A fitted :class:`nas.supernet.SupernetEvaluator` and the id of the MLflow run that holds its training."""
    from nas.supernet import ElasticConfig, SPOSConfig, SupernetEvaluator, plot_supernet_history

    device = resolve_device(cfg.device)
    config_cls = SPOSConfig if space.name == "nb201" else ElasticConfig
    fields = {f.name for f in dataclasses.fields(config_cls)}
    options = {"seed": cfg.seed, **cfg.supernet}
    if "device" in fields:
        options["device"] = device
    unknown = sorted(set(options) - fields)
    if unknown:
        raise UserError(f"search.supernet options {unknown} do not apply to the {space.name} supernet; valid: "
                        f"{', '.join(sorted(fields))}")
    try:
        evaluator = SupernetEvaluator(data, space, config_cls(**{k: v for k, v in options.items() if k in fields}))
    except ValueError as exc:
        raise UserError(f"supernet: {exc}") from None
    with mlflow.start_run(run_name="supernet", nested=mlflow.active_run() is not None) as run:
        mlflow.set_tags({tag("stage"): "supernet", tag("space"): space.name})
        mlflow.log_params({f"supernet.{k}": v for k, v in options.items()})
        evaluator.fit()
        _log_history(evaluator.history, "supernet")
        mlflow.log_metric("supernet_fit_seconds", float(evaluator.fit_seconds))
        if evaluator.history:
            with tempfile.TemporaryDirectory() as tmp:
                mlflow.log_artifact(str(plot_supernet_history(evaluator.history, Path(tmp) / "supernet.png")),
                                    "plots")
    return evaluator, run.info.run_id


def darts_candidates(space: SearchSpace, data: TaskData, cfg: SearchStageConfig) -> tuple[list[Candidate], Any]:
    """Run DARTS on the nb201 cell; the discretised cell (and, if different, the plain argmax cell) as candidates."""
    from nas.supernet import DartsConfig, darts_search, plot_darts_alphas

    if space.name != "nb201":
        raise UserError(f"strategy darts searches the nb201 cell space; the data needs {space.name!r} — use "
                        "another strategy, or image-shaped data")
    options = {"seed": cfg.seed, "device": resolve_device(cfg.device), **cfg.darts}
    with mlflow.start_run(run_name="darts", nested=mlflow.active_run() is not None):
        mlflow.set_tags({tag("stage"): "darts", tag("space"): space.name})
        mlflow.log_params({f"darts.{k}": v for k, v in options.items()})
        result = darts_search(space, data, DartsConfig(**options))
        _log_history(result.history, "darts")
        mlflow.set_tags({tag("darts_stop_reason"): result.stop_reason or "epochs done",
                         tag("arch"): result.arch.string})
        with tempfile.TemporaryDirectory() as tmp:
            mlflow.log_artifact(str(plot_darts_alphas(result.history, Path(tmp) / "darts_alphas.png")), "plots")
    last = result.history[-1] if result.history else {}
    score = float(last.get("val_accuracy", float("nan")))
    archs = [result.arch] + ([result.argmax_arch] if result.argmax_arch != result.arch else [])
    return [Candidate(arch=a.string, val_accuracy=score, fidelity={"darts_epochs": float(len(result.history))})
            for a in archs[: cfg.top_k]], result
