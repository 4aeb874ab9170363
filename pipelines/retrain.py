"""Stage 3 of a refresh: train the search's best candidates fully, register the winner as ``challenger``.

Plain functions (testable without Prefect); ``pipelines.refresh`` wraps them as tasks. Each training is its own
MLflow run nested under the refresh run, with params, per-epoch metrics, the architecture, learning curves and a
confusion matrix, and the registered version carries the lineage tags (see :mod:`pipelines.registry`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from nas.baselines import build_baseline
from nas.data import TaskData
from nas.export import FlatInputClassifier
from nas.spaces import get_space
from nas.trainer import TrainConfig, TrainResult, evaluate, measure_latency_ms, predict_proba, train
from pipelines import plots, registry


class RetrainConfig(BaseModel):
    """Full-fidelity training: long enough to converge, early stopping on validation accuracy."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(40, ge=1, description="maximum epochs")
    patience: int = Field(6, ge=1, description="stop after this many epochs without a better validation accuracy")
    lr: float = Field(0.05, gt=0)
    batch_size: int = Field(64, ge=2)
    optimizer: str = Field("sgd", pattern="^(sgd|adam)$")
    weight_decay: float = Field(5e-4, ge=0)
    top_k: int = Field(2, ge=1, description="how many of the search's best candidates to retrain fully")
    seed: int = 0

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, optimizer=self.optimizer,
            weight_decay=self.weight_decay, patience=self.patience, seed=self.seed,
        )


def _train_and_log(
    build: Callable[[], nn.Module], data: TaskData, config: RetrainConfig, *, run_name: str, params: dict[str, Any]
) -> tuple[FlatInputClassifier, TrainResult, dict[str, float], str]:
    """Train in a nested MLflow run with per-epoch metrics and plots; returns model, result, offline metrics, run id."""
    torch.manual_seed(config.seed)
    net = build()
    with mlflow.start_run(run_name=run_name, nested=mlflow.active_run() is not None) as run:
        mlflow.log_params({**params, **{f"train.{k}": v for k, v in config.model_dump().items()}})
        result = train(
            net, data, config.train_config(),
            on_epoch=lambda row: mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"},
                                                    step=int(row["epoch"])),
        )
        x_test, y_test = data.tensors("test")
        test_acc, test_loss = evaluate(net, x_test, y_test)
        model = FlatInputClassifier(net, data.input_shape, data.feature_mean, data.feature_std).eval()
        latency = measure_latency_ms(model, (int(np.prod(data.input_shape)),))
        metrics = {
            "val_accuracy": result.val_accuracy,
            "test_accuracy": test_acc,
            "test_loss": test_loss,
            "best_epoch": float(result.best_epoch),
            "train_seconds": result.train_seconds,
            "latency_ms": latency,
            "params": float(sum(p.numel() for p in net.parameters())),
        }
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            plots.learning_curves(result.history, tmp_path / "learning_curves.png", title=run_name)
            probs = predict_proba(net, x_test)
            classes = data.meta.get("classes", list(range(data.num_classes)))
            plots.confusion(y_test.numpy(), probs.argmax(1), classes, tmp_path / "confusion_matrix.png", run_name)
            (tmp_path / "history.json").write_text(json.dumps(result.history, indent=1))
            mlflow.log_artifacts(tmp, artifact_path="evaluation")
        return model, result, metrics, run.info.run_id


def _register(
    model: FlatInputClassifier, data: TaskData, *, model_name: str, tags: dict[str, Any]
) -> str:
    example = data.x_val[:2]
    base = {
        "classes": data.meta.get("classes", list(range(data.num_classes))),
        "features": data.meta.get("feature_names", []),
        "input_shape": list(data.input_shape),
        "dataset_fingerprint": data.meta.get("fingerprint", ""),
        "code_version": registry.code_version(),
    }
    return registry.log_and_register(
        model, model_name=model_name, num_classes=data.num_classes, input_example=example, tags={**base, **tags}
    )


def register_baseline(data_path: str, model_name: str, config: RetrainConfig, lineage: dict[str, Any]) -> dict:
    """Train the hand-designed baseline, register it and make it ``champion`` (used when none exists yet)."""
    data = TaskData.load(data_path)
    description = build_baseline(data.input_shape, data.num_classes)[1]
    model, _, metrics, run_id = _train_and_log(
        lambda: build_baseline(data.input_shape, data.num_classes)[0], data, config,
        run_name="baseline", params={"arch": description, "role": "baseline"},
    )
    with mlflow.start_run(run_id=run_id, nested=True):
        version = _register(
            model, data, model_name=model_name,
            tags={**lineage, "arch": description, "space": "baseline", "role": "baseline", "seed": config.seed,
                  "val_accuracy": metrics["val_accuracy"], "test_accuracy": metrics["test_accuracy"],
                  "latency_ms": metrics["latency_ms"]},
        )
    client = registry.client_for_active()
    client.set_registered_model_alias(model_name, registry.CHAMPION, version)
    return {"version": version, "arch": description, "run_id": run_id, **metrics}


def retrain_and_register(
    data_path: str, search: dict[str, Any], model_name: str, config: RetrainConfig, lineage: dict[str, Any]
) -> dict:
    """Fully train the search's top candidates and register each once; the best by validation accuracy becomes
    ``challenger``, and aliases ``candidate-1`` .. ``candidate-k`` follow the offline rank (for the tournament)."""
    data = TaskData.load(data_path)
    space = get_space(search["space"], **search.get("space_config", {}))
    candidates = search["candidates"][: config.top_k]
    if not candidates:
        raise ValueError("the search returned no candidates to retrain")
    trained = []
    for rank, cand in enumerate(candidates):
        arch = space.from_string(cand["arch"])
        model, _, metrics, run_id = _train_and_log(
            lambda arch=arch: arch.build(data.num_classes, data.input_shape), data, config,
            run_name=f"retrain-{rank}", params={"arch": arch.string, "space": space.name, "search_rank": rank,
                                                "space_config": json.dumps(space.config())},
        )
        trained.append((metrics["val_accuracy"], rank, cand, model, metrics, run_id))
    trained.sort(key=lambda t: (-t[0], t[1]))
    client = registry.client_for_active()
    registered = []
    for offline_rank, (_, search_rank, cand, model, metrics, run_id) in enumerate(trained, start=1):
        # Each candidate is registered once, in its own training run; the best is the challenger, the others
        # are "candidate" versions a shadow tournament can serve next to it.
        role = "nas" if offline_rank == 1 else "candidate"
        with mlflow.start_run(run_id=run_id, nested=True):
            version = _register(
                model, data, model_name=model_name,
                tags={**lineage, "arch": cand["arch"], "space": space.name, "space_config": space.config(),
                      "role": role, "tournament_rank": offline_rank, "search_rank": search_rank,
                      "proxy_scores": cand.get("proxy_scores", {}),
                      "search_run_id": search.get("search_run_id", ""), "seed": config.seed,
                      "val_accuracy": metrics["val_accuracy"], "test_accuracy": metrics["test_accuracy"],
                      "latency_ms": metrics["latency_ms"], "search_val_accuracy": cand.get("val_accuracy")},
            )
        alias = candidate_alias(offline_rank)
        client.set_registered_model_alias(model_name, alias, version)
        registered.append({"version": version, "arch": cand["arch"], "val_accuracy": metrics["val_accuracy"],
                           "test_accuracy": metrics["test_accuracy"], "latency_ms": metrics["latency_ms"],
                           "alias": alias, "run_id": run_id})
    _drop_stale_candidate_aliases(client, model_name, len(registered))
    best = registered[0]
    client.set_registered_model_alias(model_name, registry.CHALLENGER, best["version"])
    _, _, cand, _, metrics, run_id = trained[0]
    return {"version": best["version"], "arch": cand["arch"], "space": space.name, "run_id": run_id,
            "retrained": len(trained), **metrics, "candidates": registered}


CANDIDATE_ALIAS_PREFIX = "candidate-"


def candidate_alias(rank: int) -> str:
    """``candidate-<rank>``: the alias of the retrained candidate with this offline rank (1 = the challenger)."""
    return f"{CANDIDATE_ALIAS_PREFIX}{rank}"


def _drop_stale_candidate_aliases(client, model_name: str, kept: int) -> None:
    """A previous refresh with a larger top_k left ``candidate-N`` aliases beyond this one's: remove them, so the
    tournament never serves a stale candidate from an older refresh."""
    aliases = client.get_registered_model(model_name).aliases or {}
    for alias in aliases:
        suffix = alias[len(CANDIDATE_ALIAS_PREFIX):] if alias.startswith(CANDIDATE_ALIAS_PREFIX) else ""
        if suffix.isdigit() and int(suffix) > kept:
            client.delete_registered_model_alias(model_name, alias)
