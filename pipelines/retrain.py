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
from torch import nn

from monitoring.vocabulary import CHALLENGER, CHAMPION, candidate_alias, candidate_rank
from nas.baselines import build_baseline
from nas.data import TaskData
from nas.export import FlatInputClassifier, served_module
from nas.spaces import get_space
from nas.trainer import (
    TrainConfig,
    TrainResult,
    evaluate,
    evaluate_regression,
    measure_latency_ms,
    predict_proba,
    train,
)
from pipelines import deploy_artifacts, plots, registry
from pipelines.canary.reference import register_drift_reference
from pipelines.config import RetrainConfig
from pipelines.contracts import BaselineOutput, Lineage, RegisteredCandidate, RetrainInput, RetrainOutput


def train_config(config: RetrainConfig) -> TrainConfig:
    """The trainer's settings for a full retraining."""
    return TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, optimizer=config.optimizer,
                       weight_decay=config.weight_decay, patience=config.patience, seed=config.seed,
                       regression_loss=config.regression_loss)


NAN = float("nan")


def score(metrics: dict[str, float]) -> float:
    """The retraining's selection score, higher is better: validation accuracy, or minus a regression's RMSE."""
    return metrics["val_neg_rmse"] if "val_neg_rmse" in metrics else metrics["val_accuracy"]


def _reported(metrics: dict[str, float]) -> dict[str, float | None]:
    """The offline figures every contract carries: accuracy (NaN for a regression) and RMSE / MAE (None for a
    classifier)."""
    return {"val_accuracy": metrics.get("val_accuracy", NAN), "test_accuracy": metrics.get("test_accuracy", NAN),
            "val_rmse": metrics.get("val_rmse"), "test_rmse": metrics.get("test_rmse"),
            "test_mae": metrics.get("test_mae")}


def _train_and_log(
    build: Callable[[], nn.Module], data: TaskData, config: RetrainConfig, *, run_name: str, params: dict[str, Any]
) -> tuple[FlatInputClassifier, TrainResult, dict[str, float], str]:
    """Train in a nested MLflow run with per-epoch metrics and plots; returns model, result, offline metrics, run id."""
    torch.manual_seed(config.seed)
    net = build()
    with mlflow.start_run(run_name=run_name, nested=mlflow.active_run() is not None) as run:
        mlflow.log_params({**params, "task": data.task, **{f"train.{k}": v for k, v in config.model_dump().items()}})
        result = train(
            net, data, train_config(config),
            on_epoch=lambda row: mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"},
                                                    step=int(row["epoch"])),
        )
        x_test, y_test = data.tensors("test")
        model = served_module(net, data).eval()
        latency = measure_latency_ms(model, (int(np.prod(data.input_shape)),))
        if data.is_regression:  # RMSE / MAE in the target's units; the score is minus the validation RMSE
            test = evaluate_regression(net, x_test, y_test, data.target_scale[1])
            offline = {"val_neg_rmse": result.val_score, "val_rmse": result.val_rmse, "val_mae": result.val_mae,
                       "test_rmse": test["rmse"], "test_mae": test["mae"], "test_loss": test["loss"]}
        else:
            test_acc, test_loss = evaluate(net, x_test, y_test)
            offline = {"val_accuracy": result.val_accuracy, "test_accuracy": test_acc, "test_loss": test_loss}
        metrics = {
            **offline,
            "best_epoch": float(result.best_epoch),
            "train_seconds": result.train_seconds,
            "latency_ms": latency,
            "params": float(sum(p.numel() for p in net.parameters())),
        }
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            plots.learning_curves(result.history, tmp_path / "learning_curves.png", title=run_name)
            if data.is_regression:
                with torch.no_grad():
                    predicted = model(torch.from_numpy(data.x_test)).numpy().reshape(-1)
                plots.predicted_vs_true(data.y_test, predicted, tmp_path / "predicted_vs_true.png", run_name)
            else:
                probs = predict_proba(net, x_test)
                classes = data.meta.get("classes", list(range(data.num_classes)))
                plots.confusion(y_test.numpy(), probs.argmax(1), classes, tmp_path / "confusion_matrix.png", run_name)
            (tmp_path / "history.json").write_text(json.dumps(result.history, indent=1))
            mlflow.log_artifacts(tmp, artifact_path="evaluation")
        return model, result, metrics, run.info.run_id


def _register(
    model: FlatInputClassifier, data: TaskData, *, model_name: str, tags: dict[str, Any],
    int8: deploy_artifacts.Int8Policy = "auto",
) -> str:
    example = data.x_val[:2]
    base = {
        "classes": data.meta.get("classes", list(range(data.num_classes))),
        "features": data.meta.get("feature_names", []),
        "input_shape": list(data.input_shape),
        "dataset_fingerprint": data.meta.get("fingerprint", ""),
        "code_version": registry.code_version(),
        "input_schema": data.meta.get("input_schema", []),
        "task": data.task,
        **({"target": data.meta.get("target"), "target_mean": data.target_scale[0],
            "target_std": data.target_scale[1]} if data.is_regression else {}),
    }
    if data.meta.get("input_form") == "table":
        version = _register_table(model, data, model_name=model_name, tags={**base, **tags})
    else:
        version = registry.log_and_register(
            model, model_name=model_name, num_classes=data.num_classes, input_example=example, tags={**base, **tags}
        )
    register_drift_reference(data, model_name, version)  # a rollout of this version reads it; never the data file
    if data.is_regression:  # the ONNX / int8 forms are checked by their class labels; not built for a regression
        return version
    deploy_artifacts.log_deploy_artifacts(model, data.x_val, data.x_train, model_name=model_name, version=version,
                                          int8=int8)
    return version


def _register_table(model: FlatInputClassifier, data: TaskData, *, model_name: str, tags: dict[str, Any]) -> str:
    """A network trained on an encoded table is registered with its fitted encoding: the model takes raw rows.
    Its ``features`` tag names the raw columns a caller sends; ``encoded_features`` what the network sees."""
    import joblib
    import pandas as pd

    schema = data.meta["input_schema"]
    preprocessor = joblib.load(data.meta["preprocessor"])
    example = pd.DataFrame([{c["name"]: _example_value(c) for c in schema}])
    return registry.log_and_register_table(
        model, preprocessor, model_name=model_name, classes=list(tags["classes"]), schema=schema,
        input_example=example,
        tags={**tags, "features": [c["name"] for c in schema], "encoded_features": tags["features"]},
    )


def _example_value(column: dict) -> Any:
    """A plausible value of a raw column for the logged input example (any known category is fine)."""
    return {"double": 0.0, "boolean": False}.get(column["type"], "")


def register_baseline(data_path: str, model_name: str, config: RetrainConfig, lineage: Lineage) -> BaselineOutput:
    """Train the hand-designed baseline, register it and make it ``champion`` (used when none exists yet)."""
    data = TaskData.load(data_path)
    description = build_baseline(data.input_shape, data.num_classes)[1]
    model, _, metrics, run_id = _train_and_log(
        lambda: build_baseline(data.input_shape, data.num_classes)[0], data, config,
        run_name="baseline", params={"arch": description, "role": "baseline", "seed": config.seed},
    )
    with mlflow.start_run(run_id=run_id, nested=True):
        version = _register(
            model, data, model_name=model_name,
            tags={**lineage.model_dump(), "arch": description, "space": "baseline", "role": "baseline",
                  "seed": config.seed, **_offline_tags(metrics), "latency_ms": metrics["latency_ms"]},
        )
    registry.client_for_active().set_registered_model_alias(model_name, CHAMPION, version)
    return BaselineOutput(version=version, arch=description, run_id=run_id, seed=config.seed,
                          latency_ms=metrics["latency_ms"], **_reported(metrics))


def _offline_tags(metrics: dict[str, float]) -> dict[str, float]:
    """The version tags of its offline figures: accuracies, or a regression's RMSE / MAE."""
    keys = ("val_rmse", "val_mae", "test_rmse", "test_mae") if "val_rmse" in metrics else ("val_accuracy",
                                                                                            "test_accuracy")
    return {k: metrics[k] for k in keys}


def _train_candidates(data: TaskData, inputs: RetrainInput, space: Any, config: RetrainConfig) -> list[tuple]:
    """Train the search's top ``config.top_k`` candidates fully; best validation accuracy first."""
    candidates = inputs.search.candidates[: config.top_k]
    if not candidates:
        raise ValueError("the search returned no candidates to retrain")
    trained = []
    for rank, cand in enumerate(candidates):
        arch = space.from_string(cand.arch)
        model, _, metrics, run_id = _train_and_log(
            lambda arch=arch: arch.build(data.num_classes, data.input_shape), data, config,
            run_name=f"retrain-{rank}", params={"arch": arch.string, "space": space.name, "search_rank": rank,
                                                "space_config": json.dumps(space.config()), "seed": config.seed},
        )
        trained.append((score(metrics), rank, cand, model, metrics, run_id))
    trained.sort(key=lambda t: (-t[0], t[1]))
    return trained


def _train_scaled_family(data: TaskData, winner: tuple, space: Any, config: RetrainConfig) -> list[tuple]:
    """Compound-scale the fully trained winner (``config.scale_phis`` within the ``scale_max_*`` budget) and train
    each member that differs from it fully; entries shaped like :func:`_train_candidates`' plus the member."""
    from nas.scaling import SCALABLE_SPACES, Budget, compound_scale
    from pipelines.errors import UserError

    if space.name not in SCALABLE_SPACES:
        raise UserError(f"retrain.scale_phis: compound scaling knows the spaces {', '.join(SCALABLE_SPACES)}, "
                        f"not {space.name!r}; leave scale_phis empty for this space")
    _, search_rank, cand, *_ = winner
    budget = Budget(max_params=config.scale_max_params, max_latency_ms=config.scale_max_latency_ms)
    family = compound_scale(space, space.from_string(cand.arch), data.num_classes, data.input_shape, budget,
                            phis=sorted(set(config.scale_phis)))
    same = (json.dumps(space.config(), sort_keys=True), cand.arch)
    trained = []
    for member in family:
        if (json.dumps(member.space_config, sort_keys=True), member.arch) == same:
            continue  # φ = 0 (or a rounding to the winner itself): already trained
        model, _, metrics, run_id = _train_and_log(
            lambda member=member: member.build(data.num_classes), data, config,
            run_name=f"retrain-scaled-{member.phi:g}",
            params={"arch": member.arch, "space": member.space, "search_rank": search_rank,
                    "space_config": json.dumps(member.space_config), "seed": config.seed,
                    "scaled_phi": member.phi, "scaled_from": cand.arch},
        )
        scaled = cand.model_copy(update={"arch": member.arch, "params": int(member.params)})
        trained.append((score(metrics), search_rank, scaled, model, metrics, run_id, member))
    return trained


def _pareto_order(trained: list[tuple]) -> tuple[list[tuple], set[int]]:
    """Rank the winner and its scaled family: the Pareto front (validation accuracy up, params and latency down)
    first, each part by accuracy then fewer params; the first is the challenger. Also the front's run ids."""
    from nas.pareto import front_indices

    points = [t[4] for t in trained]
    key = "val_neg_rmse" if "val_neg_rmse" in points[0] else "val_accuracy"
    front = {id(trained[i]) for i in front_indices(points, key, ["params", "latency_ms"])}
    ordered = sorted(trained, key=lambda t: (id(t) not in front, -t[0], t[4]["params"], t[1]))
    return ordered, {i for i, t in enumerate(ordered) if id(t) in front}


def retrain_and_register(inputs: RetrainInput, config: RetrainConfig) -> RetrainOutput:
    """Fully train the search's top candidates and register each once; the best by validation accuracy becomes
    ``challenger``, and aliases ``candidate-1`` .. ``candidate-k`` follow the offline rank (for the tournament).

    With ``config.scale_phis`` the winner's compound-scaled family is trained and registered too, and the ranking
    puts the Pareto front (accuracy vs params / latency) first (:func:`_pareto_order`)."""
    data = TaskData.load(inputs.data.path)
    search = inputs.search
    space = get_space(search.space, **search.space_config)
    trained = [(*t, None) for t in _train_candidates(data, inputs, space, config)]
    front: set[int] = set()
    if config.scale_phis:
        trained, front = _pareto_order(trained + _train_scaled_family(data, trained[0], space, config))
    client = registry.client_for_active()
    model_name = inputs.model_name
    registered = []
    for offline_rank, (_, search_rank, cand, model, metrics, run_id, member) in enumerate(trained, start=1):
        scaling_tags: dict[str, Any] = {}
        if config.scale_phis:
            scaling_tags = {"pareto_front": (offline_rank - 1) in front,
                            "scaled_phi": member.phi if member is not None else 0.0,
                            "params": int(metrics["params"])}
        # Each candidate is registered once, in its own training run; the best is the challenger, the others
        # are "candidate" versions a shadow tournament can serve next to it.
        with mlflow.start_run(run_id=run_id, nested=True):
            version = _register(
                model, data, model_name=model_name,
                tags={**inputs.lineage.model_dump(), "arch": cand.arch, "space": space.name,
                      "space_config": member.space_config if member is not None else space.config(),
                      **scaling_tags, "role": "nas" if offline_rank == 1 else "candidate",
                      "tournament_rank": offline_rank, "search_rank": search_rank, "proxy_scores": cand.proxy_scores,
                      "search_run_id": search.search_run_id, "search_method": search.method,
                      **({"supernet_run_id": search.supernet_run_id} if search.supernet_run_id else {}),
                      "seed": config.seed, **_offline_tags(metrics), "latency_ms": metrics["latency_ms"],
                      **({"search_val_rmse": cand.val_rmse} if cand.val_rmse is not None
                         else {"search_val_accuracy": cand.val_accuracy})},
                int8="always" if search.objective == "latency_int8" else "auto",
            )
        alias = candidate_alias(offline_rank)
        client.set_registered_model_alias(model_name, alias, version)
        registered.append(RegisteredCandidate(
            version=version, arch=cand.arch, alias=alias, run_id=run_id, latency_ms=metrics["latency_ms"],
            **_reported(metrics)))
    _drop_stale_candidate_aliases(client, model_name, len(registered))
    best = registered[0]
    client.set_registered_model_alias(model_name, CHALLENGER, best.version)
    metrics = trained[0][4]
    return RetrainOutput(version=best.version, arch=best.arch, space=space.name, run_id=best.run_id,
                         retrained=len(trained), seed=config.seed, candidates=registered, task=data.task,
                         **_reported(metrics),
                         **{k: float(metrics[k]) for k in ("test_loss", "best_epoch", "train_seconds", "latency_ms",
                                                           "params")})


def _drop_stale_candidate_aliases(client: Any, model_name: str, kept: int) -> None:
    """A previous refresh with a larger top_k left ``candidate-N`` aliases beyond this one's: remove them, so the
    tournament never serves a stale candidate from an older refresh."""
    aliases = client.get_registered_model(model_name).aliases or {}
    for alias in aliases:
        rank = candidate_rank(alias)
        if rank is not None and rank > kept:
            client.delete_registered_model_alias(model_name, alias)
