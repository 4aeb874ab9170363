"""Stage 3 of a refresh: train the search's best candidates fully, register the winner as ``challenger``.

Plain functions (testable without Prefect); ``pipelines.refresh`` wraps them as tasks. Each training is its own
MLflow run nested under the refresh run, with params, per-epoch metrics, the architecture, learning curves and a
confusion matrix, and the registered version carries the lineage tags (see :mod:`pipelines.registry`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from torch import nn

from monitoring.core.tasks import TaskKind, get_task
from monitoring.vocabulary import CHAMPION, candidate_alias, candidate_rank
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
    space_training_config,
    train,
    validation_output,
)
from pipelines import deploy_artifacts, plots, registry
from pipelines.calibration import register_calibration
from pipelines.canary.reference import register_drift_reference
from pipelines.config import RetrainConfig
from pipelines.contracts import (
    BaselineOutput,
    Candidate,
    Contender,
    Lineage,
    OfflineMetrics,
    RegisteredCandidate,
    RetrainInput,
    RetrainOutput,
)
from pipelines.metric import SCORER_KEY, metric_figures, metric_of, ranked_by_scorer, training_options


def train_config(config: RetrainConfig, space: str = "", regression: bool = False) -> TrainConfig:
    """The trainer's settings for a full retraining of an architecture of ``space`` (the tabular space: its own
    optimiser defaults, :func:`nas.trainer.space_training_config`)."""
    return space_training_config(space, regression=regression, epochs=config.epochs, batch_size=config.batch_size,
                                 lr=config.lr, optimizer=config.optimizer, weight_decay=config.weight_decay,
                                 patience=config.patience, seed=config.seed, regression_loss=config.regression_loss)


@dataclass
class Trained:
    """One full training: the served module, its MLflow run, every metric it logged (the task's score key,
    best epoch, seconds, latency, parameters) and its offline figures in the one shape every contract reads."""

    model: FlatInputClassifier
    run_id: str
    metrics: dict[str, float]
    offline: OfflineMetrics


@dataclass
class Ranked:
    """A trained candidate in the retraining's ranking: its score (higher is better), search rank, the search's
    candidate, the training, and the compound-scaled family member it is (None: the search's own)."""

    score: float
    search_rank: int
    candidate: Candidate
    trained: Trained
    member: Any = None




def _test_metrics(net: nn.Module, data: TaskData, result: TrainResult, kind: TaskKind) -> dict[str, float]:
    """The validation and test figures of the task kind (a regression's in the target's units)."""
    x_test, y_test = data.tensors("test")
    if kind.numeric_labels:  # the score is minus the validation RMSE
        test = evaluate_regression(net, x_test, y_test, data.target_scale[1])
        return {kind.score_key: result.val_score, "val_rmse": result.val_rmse, "val_mae": result.val_mae,
                "test_rmse": test["rmse"], "test_mae": test["mae"], "test_loss": test["loss"]}
    test_acc, test_loss = evaluate(net, x_test, y_test)
    return {"val_accuracy": result.val_accuracy, "test_accuracy": test_acc, "test_loss": test_loss}


def _metric_figures(net: nn.Module, data: TaskData, result: TrainResult) -> dict[str, float]:
    """The refresh-level metric's figures of a trained network (:func:`pipelines.metric.metric_figures`)."""
    if not ranked_by_scorer(data):
        return {}
    outputs = {split: validation_output(net, data, data.tensors(split)[0]) for split in ("val", "test")}
    return metric_figures(data, outputs, result.val_score)


def metric_tags(data: TaskData, metrics: dict[str, float]) -> dict[str, float]:
    """A version's figures of the refresh-level metric (``val_log_loss``, ``test_log_loss``), when it has them."""
    name = metric_of(data)
    return {k: float(metrics[k]) for k in (f"val_{name}", f"test_{name}") if k in metrics}


def ranking_score(data: TaskData, metrics: dict[str, float]) -> float:
    """The one key a refresh ranks its trained models by, NAS finalists and baselines alike (higher is better):
    the refresh-level metric's validation score (``val_metric``), else the task's own."""
    if SCORER_KEY in metrics:
        return float(metrics[SCORER_KEY])
    return get_task(data.task).score(metrics)


def _evaluation_plot(kind: TaskKind, net: nn.Module, model: nn.Module, data: TaskData, path: Path,
                     title: str) -> None:
    """The task kind's evaluation figure: predicted against true values, or the confusion matrix."""
    if kind.evaluation_plot == "predicted_vs_true":
        with torch.no_grad():
            predicted = model(torch.from_numpy(data.x_test)).numpy().reshape(-1)
        plots.predicted_vs_true(data.y_test, predicted, path / "predicted_vs_true.png", title)
    else:
        x_test, y_test = data.tensors("test")
        probs = predict_proba(net, x_test)
        classes = data.meta.get("classes", list(range(data.num_classes)))
        plots.confusion(y_test.numpy(), probs.argmax(1), classes, path / "confusion_matrix.png", title)


@dataclass
class Fitted:
    """One full training as a worker returns it (no MLflow there): the trained network, its per-epoch history and
    every figure measured on it."""

    net: nn.Module
    history: list[dict[str, float]]
    metrics: dict[str, float]


def fit_network(build: Callable[[], nn.Module], data: TaskData, config: RetrainConfig, space: str = "") -> Fitted:
    """Train a network fully under the config's seed and measure it (test figures, latency, parameters)."""
    kind = get_task(data.task)
    torch.manual_seed(config.seed)
    net = build()
    result = train(net, data, train_config(config, space, data.is_regression),
                   **training_options(data))  # early stopping on the refresh-level metric, class weights
    model = served_module(net, data).eval()
    latency = measure_latency_ms(model, (int(np.prod(data.input_shape)),))
    metrics = {
        **_test_metrics(net, data, result, kind),
        **_metric_figures(net, data, result),
        "best_epoch": float(result.best_epoch),
        "train_seconds": result.train_seconds,
        "latency_ms": latency,
        "params": float(sum(p.numel() for p in net.parameters())),
    }
    return Fitted(net, result.history, metrics)


def _log_fitted(fitted: Fitted, data: TaskData, config: RetrainConfig, *, run_name: str,
                params: dict[str, Any]) -> Trained:
    """A training's nested MLflow run, written by the refresh's process: params, per-epoch metrics, figures and
    plots (a worker that trained it needs no MLflow)."""
    kind = get_task(data.task)
    net = fitted.net
    model = served_module(net, data).eval()
    with mlflow.start_run(run_name=run_name, nested=mlflow.active_run() is not None) as run:
        mlflow.log_params({**params, "task": data.task, **{f"train.{k}": v for k, v in config.model_dump().items()}})
        for row in fitted.history:
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
        mlflow.log_metrics(fitted.metrics)
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            plots.learning_curves(fitted.history, tmp_path / "learning_curves.png", title=run_name, task=kind)
            _evaluation_plot(kind, net, model, data, tmp_path, run_name)
            (tmp_path / "history.json").write_text(json.dumps(fitted.history, indent=1))
            mlflow.log_artifacts(tmp, artifact_path="evaluation")
        return Trained(model=model, run_id=run.info.run_id, metrics=fitted.metrics,
                       offline=OfflineMetrics.from_metrics(data.task, fitted.metrics))


def _train_and_log(
    build: Callable[[], nn.Module], data: TaskData, config: RetrainConfig, *, run_name: str, params: dict[str, Any]
) -> Trained:
    """Train here, then log the training in a nested MLflow run with per-epoch metrics and plots."""
    fitted = fit_network(build, data, config, str(params.get("space", "")))
    return _log_fitted(fitted, data, config, run_name=run_name, params=params)


def _register(
    model: FlatInputClassifier, data: TaskData, *, model_name: str, tags: dict[str, Any],
    int8: deploy_artifacts.Int8Policy = "auto", deploy_forms: bool = True,
) -> str:
    kind = get_task(data.task)
    example = data.x_val[:2]
    base = {
        "classes": data.meta.get("classes", list(range(data.num_classes))),
        "features": data.meta.get("feature_names", []),
        "input_shape": list(data.input_shape),
        "dataset_fingerprint": data.meta.get("fingerprint", ""),
        "code_version": registry.code_version(),
        "input_schema": data.meta.get("input_schema", []),
        "dropped_columns": data.meta.get("dropped_columns") or {},  # the gateway accepts and ignores them
        "task": data.task,
        "metric": metric_of(data), "metric_params": data.meta.get("metric_params") or {},
        **({"target": data.meta.get("target"), "target_mean": data.target_scale[0],
            "target_std": data.target_scale[1]} if kind.numeric_labels else {}),
    }
    if data.meta.get("input_form") == "table":
        version = _register_table(model, data, model_name=model_name, tags={**base, **tags})
    else:
        version = registry.log_and_register(
            model, model_name=model_name, num_classes=data.num_classes, input_example=example, tags={**base, **tags}
        )
    register_drift_reference(data, model_name, version)  # a rollout of this version reads it; never the data file
    register_calibration(model, data, model_name, version)  # the label-free accuracy estimate's map (classifiers)
    if not (kind.deploy_forms and deploy_forms):  # the ONNX / int8 forms are checked by their class labels
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
    """A plausible value of a raw column for the logged input example (any known category is fine; an integer
    column's is an integer: the signature declares it long)."""
    if column.get("integer"):
        return 0
    return {"double": 0.0, "boolean": False}.get(column["type"], "")


def register_baseline(data_path: str, model_name: str, config: RetrainConfig, lineage: Lineage, *,
                      champion: bool = True) -> BaselineOutput:
    """Train the hand-designed baseline and register it; with ``champion`` make it ``champion`` (the refresh
    instead crowns the best of all baselines: :func:`pipelines.baselines.crown_first_champion`)."""
    data = TaskData.load(data_path)
    description = build_baseline(data.input_shape, data.num_classes)[1]
    model_kind = description.split("(")[0]  # baseline-mlp or baseline-cnn
    trained = _train_and_log(
        lambda: build_baseline(data.input_shape, data.num_classes)[0], data, config,
        run_name="baseline", params={"arch": description, "role": "baseline", "seed": config.seed},
    )
    offline = trained.offline
    with mlflow.start_run(run_id=trained.run_id, nested=True):
        version = _register(
            trained.model, data, model_name=model_name,
            tags={**lineage.model_dump(), "arch": description, "space": "baseline", "role": "baseline",
                  "model_kind": model_kind, "seed": config.seed, **offline.tags(), "latency_ms": offline.latency_ms,
                  **metric_tags(data, trained.metrics)},
        )
    if champion:
        registry.client_for_active().set_registered_model_alias(model_name, CHAMPION, version)
    return BaselineOutput(version=version, arch=description, run_id=trained.run_id, seed=config.seed,
                          latency_ms=offline.latency_ms, model_kind=model_kind,
                          score=ranking_score(data, trained.metrics), **offline.reported())


def _train_candidates(data: TaskData, inputs: RetrainInput, space: Any, config: RetrainConfig,
                      runner: Any = None, data_ref: dict | None = None) -> list[Ranked]:
    """Train the search's top ``config.top_k`` candidates fully (each a task on ``runner``: all at once on the
    cluster's workers), log each here; best validation score first."""
    from pipelines.finalists import train_finalists

    candidates = inputs.search.candidates[: config.top_k]
    if not candidates:
        raise ValueError("the search returned no candidates to retrain")
    jobs = [(space.name, space.config(), cand.arch) for cand in candidates]
    fitted = train_finalists(runner, data_ref, jobs, config, data)
    ranked = []
    for rank, (cand, fit) in enumerate(zip(candidates, fitted, strict=True)):
        trained = _log_fitted(fit, data, config, run_name=f"retrain-{rank}", params={
            "arch": cand.arch, "space": space.name, "search_rank": rank,
            "space_config": json.dumps(space.config()), "seed": config.seed})
        ranked.append(Ranked(ranking_score(data, trained.metrics), rank, cand, trained))
    ranked.sort(key=lambda r: (-r.score, r.search_rank))
    return ranked


def _train_scaled_family(data: TaskData, winner: Ranked, space: Any, config: RetrainConfig, runner: Any = None,
                         data_ref: dict | None = None) -> list[Ranked]:
    """Compound-scale the fully trained winner (``config.scale_phis`` within the ``scale_max_*`` budget) and train
    each member that differs from it fully (each ranked with the member it is)."""
    from nas.scaling import SCALABLE_SPACES, Budget, compound_scale
    from pipelines.errors import UserError

    if space.name not in SCALABLE_SPACES:
        raise UserError(f"retrain.scale_phis: compound scaling knows the spaces {', '.join(SCALABLE_SPACES)}, "
                        f"not {space.name!r}; leave scale_phis empty for this space")
    cand = winner.candidate
    budget = Budget(max_params=config.scale_max_params, max_latency_ms=config.scale_max_latency_ms)
    family = compound_scale(space, space.from_string(cand.arch), data.num_classes, data.input_shape, budget,
                            phis=sorted(set(config.scale_phis)))
    from pipelines.finalists import train_finalists

    same = (json.dumps(space.config(), sort_keys=True), cand.arch)
    # φ = 0 (or a rounding to the winner itself): already trained
    members = [m for m in family if (json.dumps(m.space_config, sort_keys=True), m.arch) != same]
    fitted = train_finalists(runner, data_ref, [(m.space, m.space_config, m.arch) for m in members], config, data)
    ranked = []
    for member, fit in zip(members, fitted, strict=True):
        trained = _log_fitted(fit, data, config, run_name=f"retrain-scaled-{member.phi:g}", params={
            "arch": member.arch, "space": member.space, "search_rank": winner.search_rank,
            "space_config": json.dumps(member.space_config), "seed": config.seed,
            "scaled_phi": member.phi, "scaled_from": cand.arch})
        scaled = cand.model_copy(update={"arch": member.arch, "params": int(member.params)})
        ranked.append(Ranked(ranking_score(data, trained.metrics), winner.search_rank, scaled, trained, member))
    return ranked


def _pareto_order(ranked: list[Ranked], kind: TaskKind) -> tuple[list[Ranked], set[int]]:
    """Rank the winner and its scaled family: the Pareto front (the task's score up, params and latency down)
    first, each part by score then fewer params; the first is the challenger. Also the front's positions."""
    from nas.pareto import front_indices

    points = [r.trained.metrics for r in ranked]
    key = SCORER_KEY if all(SCORER_KEY in p for p in points) else kind.score_key
    front = {id(ranked[i]) for i in front_indices(points, key, ["params", "latency_ms"])}
    ordered = sorted(ranked, key=lambda r: (id(r) not in front, -r.score, r.trained.metrics["params"],
                                            r.search_rank))
    return ordered, {i for i, r in enumerate(ordered) if id(r) in front}


def _version_tags(inputs: RetrainInput, entry: Ranked, space: Any, offline_rank: int) -> dict[str, Any]:
    """What one retrained candidate's version carries: lineage, architecture, ranks, search facts, and its
    offline figures (the task kind's keys)."""
    search, cand, member, offline = inputs.search, entry.candidate, entry.member, entry.trained.offline
    return {**inputs.lineage.model_dump(), "arch": cand.arch, "space": space.name,
            "space_config": member.space_config if member is not None else space.config(),
            "role": "nas" if offline_rank == 1 else "candidate", "model_kind": "nas",
            "tournament_rank": offline_rank, "search_rank": entry.search_rank, "proxy_scores": cand.proxy_scores,
            "search_run_id": search.search_run_id, "search_method": search.method,
            **({"supernet_run_id": search.supernet_run_id} if search.supernet_run_id else {}),
            **offline.tags(), "latency_ms": offline.latency_ms,
            **({"search_val_rmse": cand.val_rmse} if cand.val_rmse is not None
               else {"search_val_accuracy": cand.val_accuracy})}


def retrain_and_register(inputs: RetrainInput, config: RetrainConfig) -> RetrainOutput:
    """Fully train the search's top candidates and register each once; the best by validation score becomes
    ``challenger``, and aliases ``candidate-1`` .. ``candidate-k`` follow the offline rank (for the tournament).

    With ``config.scale_phis`` the winner's compound-scaled family is trained and registered too, and the ranking
    puts the Pareto front (score vs params / latency) first (:func:`_pareto_order`)."""
    from pipelines.finalists import finalists_runner

    data = TaskData.load(inputs.data.path)
    search = inputs.search
    space = get_space(search.space, **search.space_config)
    with finalists_runner(config, inputs.data.path) as (runner, data_ref):  # the trainings: on the cluster
        ranked = _train_candidates(data, inputs, space, config, runner, data_ref)
        front: set[int] = set()
        if config.scale_phis:
            family = _train_scaled_family(data, ranked[0], space, config, runner, data_ref)
            ranked, front = _pareto_order(ranked + family, get_task(data.task))
    client = registry.client_for_active()
    model_name = inputs.model_name
    registered = []
    for offline_rank, entry in enumerate(ranked, start=1):
        scaling_tags: dict[str, Any] = {}
        if config.scale_phis:
            scaling_tags = {"pareto_front": (offline_rank - 1) in front,
                            "scaled_phi": entry.member.phi if entry.member is not None else 0.0,
                            "params": int(entry.trained.metrics["params"])}
        # Each candidate is registered once, in its own training run; the best is the challenger, the others
        # are "candidate" versions a shadow tournament can serve next to it.
        with mlflow.start_run(run_id=entry.trained.run_id, nested=True):
            version = _register(
                entry.trained.model, data, model_name=model_name,
                tags={**_version_tags(inputs, entry, space, offline_rank), **scaling_tags, "seed": config.seed,
                      **metric_tags(data, entry.trained.metrics)},
                int8="always" if search.objective == "latency_int8" else "auto",
            )
        alias = candidate_alias(offline_rank)
        client.set_registered_model_alias(model_name, alias, version)
        registered.append(RegisteredCandidate(
            version=version, arch=entry.candidate.arch, alias=alias, run_id=entry.trained.run_id,
            latency_ms=entry.trained.offline.latency_ms, **entry.trained.offline.reported()))
    _drop_stale_candidate_aliases(client, model_name, len(registered))
    from pipelines.baselines import settle_challenger  # ranks them with the baselines; moves ``challenger``

    nas = [Contender(version=r.version, model_kind="nas", arch=r.arch, run_id=r.run_id, score=e.score,
                     offline=e.trained.offline, metrics=e.trained.metrics)
           for r, e in zip(registered, ranked, strict=True)]
    best, ranking, gap = settle_challenger(data, model_name, nas, inputs.baselines, config.seed)
    return RetrainOutput(version=best.version, arch=best.arch, space=space.name if best.model_kind == "nas" else
                         "baseline", run_id=best.run_id, retrained=len(ranked), seed=config.seed,
                         candidates=registered, task=data.task, **best.offline.reported(),
                         **{k: float(best.metrics.get(k, float("nan"))) for k in (
                             "test_loss", "best_epoch", "train_seconds", "latency_ms", "params")},
                         model_kind=best.model_kind, nas_version=nas[0].version, ranking=ranking,
                         versus_baseline=gap)


def _drop_stale_candidate_aliases(client: Any, model_name: str, kept: int) -> None:
    """A previous refresh with a larger top_k left ``candidate-N`` aliases beyond this one's: remove them, so the
    tournament never serves a stale candidate from an older refresh."""
    aliases = client.get_registered_model(model_name).aliases or {}
    for alias in aliases:
        rank = candidate_rank(alias)
        if rank is not None and rank > kept:
            client.delete_registered_model_alias(model_name, alias)
