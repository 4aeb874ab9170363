"""The models a team would ship without NAS, trained in every refresh of a table and ranked with the NAS finalists.

Tabular deep learning rarely beats gradient-boosted trees by default (Shwartz-Ziv & Armon 2022; Grinsztajn et al.
2022; TabArena 2025), so every refresh of a table trains two baselines on the same split as the networks, inside
the same preprocessing (the fitted column encoding of the table, then the networks' training-split
standardisation, both carried by the served model):

- ``baseline-lightgbm``: LightGBM with the library's default hyperparameters; the number of boosting rounds is the
  one thing not left at its default (100): up to :data:`LIGHTGBM_MAX_ROUNDS`, early stopping picks it on the
  validation split's default loss (:data:`EARLY_STOPPING_ROUNDS` rounds of patience);
- ``baseline-linear``: scikit-learn's ``LogisticRegression`` (a classifier) or ``Ridge`` (a regression) with their
  defaults on the standardised features.

Each is a :class:`nas.estimator_module.EstimatorModule`, so it is logged, registered (same lineage tags, signature
and drift reference as a network: :func:`pipelines.retrain._register`), loaded and served by the gateway exactly
like a network. The first champion is the best baseline (:func:`crown_first_champion`); every refresh ranks the
NAS finalists and the baselines by :func:`pipelines.retrain.ranking_score`, makes the best model overall that is
not already champion the ``challenger`` (:func:`settle_challenger`), and measures the NAS winner against the best
baseline on the test rows with a paired bootstrap interval (:func:`paired_bootstrap_ci`).
LightGBM and scikit-learn are imported inside the functions that fit them.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

import mlflow
import numpy as np
import torch

from monitoring.core.tasks import TaskKind, get_task
from monitoring.vocabulary import CHALLENGER, CHAMPION, tag
from nas.data import TaskData
from nas.estimator_module import EstimatorModule
from pipelines import registry
from pipelines.config import RetrainConfig
from pipelines.contracts import (
    BaselineGap,
    BaselineOutput,
    BaselinesOutput,
    Contender,
    Lineage,
    OfflineMetrics,
)

MODEL_KIND = "model_kind"
"""The version tag saying what a model is: ``nas``, ``baseline-lightgbm``, ``baseline-linear``, ``baseline-mlp`` or
``baseline-cnn`` (the hand-designed networks of :mod:`nas.baselines`)."""
NAS = "nas"
LIGHTGBM_MAX_ROUNDS = 1000
EARLY_STOPPING_ROUNDS = 50
RESAMPLES = 2000
LEVEL = 0.95
NO_DEPLOY_FORM = "a baseline estimator has no ONNX / int8 form; the gateway serves its own predictions"


def is_tabular(input_shape: list[int] | tuple[int, ...]) -> bool:
    """A flat feature vector (a table): images keep their hand-designed CNN as the only baseline."""
    return len(input_shape) == 1


# -- fitting ---------------------------------------------------------------------------------------------------

def fit_lightgbm(data: TaskData, seed: int) -> tuple[Any, dict[str, Any]]:
    """LightGBM with library defaults, the number of rounds chosen by early stopping on the validation split."""
    import lightgbm

    x_train, x_val = data.standardize(data.x_train), data.standardize(data.x_val)
    cls = lightgbm.LGBMRegressor if data.is_regression else lightgbm.LGBMClassifier
    model = cls(n_estimators=LIGHTGBM_MAX_ROUNDS, random_state=seed, verbose=-1)
    model.fit(x_train, data.y_train, eval_X=(x_val,), eval_y=(data.y_val,),
              callbacks=[lightgbm.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)])
    # served one request at a time: one thread (LightGBM's OpenMP pool costs 30 ms a row on a busy 2-core box,
    # 0.4 ms with one thread; like the gateway's torch_threads=1); prediction only, training used them all
    model.set_params(n_jobs=1)
    rounds = int(model.best_iteration_ or model.n_estimators)
    trees = model.booster_.dump_model(num_iteration=rounds)["tree_info"]
    nodes = sum(2 * int(t["num_leaves"]) - 1 for t in trees)  # the served trees' split and leaf nodes
    return model, {"best_iteration": rounds, "params": float(nodes),
                   "arch": f"lightgbm(defaults, {rounds} rounds by early stopping)",
                   "estimator_params": {k: v for k, v in model.get_params().items() if v is not None}}


def fit_linear(data: TaskData, seed: int) -> tuple[Any, dict[str, Any]]:
    """A logistic regression (a classifier) or a ridge regression, scikit-learn defaults (``max_iter`` raised to
    1000 so lbfgs converges on a few thousand rows), standardised features."""
    from sklearn.linear_model import LogisticRegression, Ridge

    x_train = data.standardize(data.x_train)
    model = Ridge() if data.is_regression else LogisticRegression(max_iter=1000, random_state=seed)
    model.fit(x_train, data.y_train)
    name = "ridge" if data.is_regression else "logistic"
    return model, {"best_iteration": 0, "params": float(model.coef_.size + np.size(model.intercept_)),
                   "arch": f"{name}(defaults, standardised)", "estimator_params": model.get_params()}


BASELINES: dict[str, Callable[[TaskData, int], tuple[Any, dict[str, Any]]]] = {
    "baseline-lightgbm": fit_lightgbm,
    "baseline-linear": fit_linear,
}


def served(estimator: Any, data: TaskData) -> EstimatorModule:
    """The served form of a fitted estimator: the networks' input (raw flat or encoded features) and output."""
    return EstimatorModule(estimator, data.feature_mean, data.feature_std,
                           0 if data.is_regression else data.num_classes).eval()


def evaluate_module(module: torch.nn.Module, data: TaskData, kind: TaskKind) -> dict[str, float]:
    """The metric keys a network's retraining logs (:func:`pipelines.retrain._test_metrics`), of a served module
    on the raw validation and test rows."""
    from nas.trainer import evaluate, evaluate_regression

    def split(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(getattr(data, f"x_{name}")), torch.from_numpy(getattr(data, f"y_{name}"))

    if kind.numeric_labels:  # the module answers target units: errors in units, the loss on the standardised scale
        val, test = (evaluate_regression(module, *split(s), 1.0) for s in ("val", "test"))
        std = data.target_scale[1]
        return {kind.score_key: -val["rmse"], "val_rmse": val["rmse"], "val_mae": val["mae"],
                "test_rmse": test["rmse"], "test_mae": test["mae"], "test_loss": test["loss"] / std**2}
    val_acc, _ = evaluate(module, *split("val"))
    test_acc, test_loss = evaluate(module, *split("test"))
    return {"val_accuracy": val_acc, "test_accuracy": test_acc, "test_loss": test_loss}


def _metric_figures(module: torch.nn.Module, data: TaskData) -> dict[str, float]:
    """The refresh-level metric's figures of a baseline, as a network's are computed (same key, same ranking)."""
    from pipelines.metric import metric_figures, ranked_by_scorer

    if not ranked_by_scorer(data):
        return {}
    outputs = {}
    with torch.no_grad():
        for split in ("val", "test"):
            out = module(torch.from_numpy(getattr(data, f"x_{split}")))
            outputs[split] = (out.reshape(-1).double().numpy() if data.is_regression  # target units already
                              else torch.softmax(out, dim=1).double().numpy())
    return metric_figures(data, outputs)


def train_baseline(model_kind: str, data: TaskData, config: RetrainConfig) -> tuple[EstimatorModule, Contender]:
    """Fit one baseline in its own nested MLflow run (params, metrics, model kind); its module and its facts (the
    version is filled in when it is registered)."""
    from nas.trainer import measure_latency_ms
    from pipelines.retrain import ranking_score

    kind = get_task(data.task)
    with mlflow.start_run(run_name=model_kind, nested=mlflow.active_run() is not None) as run:
        started = time.perf_counter()
        estimator, info = BASELINES[model_kind](data, config.seed)
        seconds = time.perf_counter() - started
        module = served(estimator, data)
        metrics = {**evaluate_module(module, data, kind), **_metric_figures(module, data),
                   "best_epoch": float(info["best_iteration"]),
                   "train_seconds": seconds, "params": info["params"],
                   "latency_ms": measure_latency_ms(module, (module.num_features,))}
        mlflow.log_params({"arch": info["arch"], "role": "baseline", MODEL_KIND: model_kind, "seed": config.seed,
                           "task": data.task, **{f"estimator.{k}": v for k, v in info["estimator_params"].items()}})
        mlflow.log_metrics(metrics)
        mlflow.set_tag(tag(MODEL_KIND), model_kind)
    offline = OfflineMetrics.from_metrics(data.task, metrics)
    return module, Contender(version="", model_kind=model_kind, arch=info["arch"], run_id=run.info.run_id,
                             score=ranking_score(data, metrics), offline=offline, metrics=metrics)


def register_baselines(data_path: str, model_name: str, config: RetrainConfig, lineage: Lineage) -> BaselinesOutput:
    """Train every baseline on a table's split and register each as a version of ``model_name`` (no alias moves:
    :func:`crown_first_champion` and :func:`settle_challenger` decide). Images: none (their CNN stays)."""
    from pipelines.retrain import _register, metric_tags

    data = TaskData.load(data_path)
    if not is_tabular(data.input_shape):
        return BaselinesOutput()
    client = registry.client_for_active()
    models = []
    for model_kind in BASELINES:
        module, contender = train_baseline(model_kind, data, config)
        with mlflow.start_run(run_id=contender.run_id, nested=True):
            version = _register(module, data, model_name=model_name, deploy_forms=False, tags={
                **lineage.model_dump(), "arch": contender.arch, "space": "baseline", "role": "baseline",
                MODEL_KIND: model_kind, "seed": config.seed, **contender.offline.tags(),
                "latency_ms": contender.offline.latency_ms, **metric_tags(data, contender.metrics),
                **({"boosting_rounds": int(contender.metrics["best_epoch"])} if model_kind == "baseline-lightgbm"
                   else {})})
        for why in ("onnx_error", "int8_skipped"):  # the gateway's flavour note says why it serves this form
            client.set_model_version_tag(model_name, version, tag(why), NO_DEPLOY_FORM)
        models.append(contender.model_copy(update={"version": version}))
    return BaselinesOutput(models=models)


# -- ranking ---------------------------------------------------------------------------------------------------

def _key(score: float) -> float:
    return -math.inf if score is None or math.isnan(score) else float(score)


def rank_contenders(nas: list[Contender], baselines: list[Contender]) -> list[Contender]:
    """NAS finalists (in retraining's own order) and baselines in one ranking, best first: each baseline goes before
    the first model it strictly out-scores, so a tie keeps the NAS model ahead and retraining's own order (by score,
    or the Pareto front of a scaled family) stands among the networks."""
    ranking = list(nas)
    for base in sorted(baselines, key=lambda c: -_key(c.score)):
        at = next((i for i, c in enumerate(ranking) if _key(c.score) < _key(base.score)), len(ranking))
        ranking.insert(at, base)
    return ranking


def crown_first_champion(model_name: str, hand: BaselineOutput, baselines: BaselinesOutput | None) -> BaselineOutput:
    """The first champion is the best baseline (LightGBM, linear or the hand-designed network, ranked by the same
    score as everything else; a tie goes to the library baselines); returns it as the refresh reports it."""
    contenders = [*(baselines.models if baselines else []), Contender(
        version=hand.version, model_kind=hand.model_kind, arch=hand.arch, run_id=hand.run_id, score=hand.score,
        offline=OfflineMetrics())]
    best = rank_contenders([], contenders)[0]
    registry.client_for_active().set_registered_model_alias(model_name, CHAMPION, best.version)
    if best.version == hand.version:
        return hand
    return BaselineOutput(version=best.version, arch=best.arch, run_id=best.run_id, seed=hand.seed,
                          latency_ms=best.offline.latency_ms, model_kind=best.model_kind, score=best.score,
                          **best.offline.reported())


def settle_challenger(data: TaskData, model_name: str, nas: list[Contender], baselines: BaselinesOutput | None,
                      seed: int) -> tuple[Contender, list[Contender], BaselineGap | None]:
    """Rank the NAS finalists with this refresh's baselines, point ``challenger`` at the best model overall that
    is not already champion (a baseline may be the challenger), and measure the NAS winner (``nas[0]``) against the
    best baseline on the test rows (tagged and described on both versions)."""
    client = registry.client_for_active()
    bases = baselines.models if baselines else []
    ranking = rank_contenders(nas, bases)
    champion = registry.alias_version(client, model_name, CHAMPION)
    taken = str(champion.version) if champion is not None else None
    challenger = next((c for c in ranking if c.version != taken), ranking[0])
    client.set_registered_model_alias(model_name, CHALLENGER, challenger.version)
    gap = None
    if bases:
        best = rank_contenders([], bases)[0]
        gap = compare_on_test(data, nas[0].version, load_served(model_name, nas[0].version),
                              best, load_served(model_name, best.version), seed)
        record_gap(client, model_name, gap, challenger)
    for entry in ranking:
        client.set_model_version_tag(model_name, entry.version, tag("overall_rank"), str(ranking.index(entry) + 1))
    return challenger, ranking, gap


# -- the NAS winner against the best baseline, paired on the test rows -------------------------------------------

def load_served(model_name: str, version: str) -> torch.nn.Module:
    """A registered version's served module (the network, or a baseline's estimator module, on the encoded
    features a table model's encoder produces), read back from the registry."""
    uri = f"models:/{model_name}/{version}"
    if "pytorch" not in mlflow.models.get_model_info(uri).flavors:
        return mlflow.pyfunc.load_model(uri).unwrap_python_model().module.eval()
    module = mlflow.pytorch.load_model(uri, map_location="cpu")
    with contextlib.suppress(NotImplementedError):  # a torch.export (pt2) module refuses .eval(): it is already
        module.eval()
    return module


def headline_metric(kind: TaskKind) -> Callable[[np.ndarray, np.ndarray], float]:
    """The task's headline test metric of served outputs: accuracy of logits, or RMSE of values."""
    if kind.numeric_labels:
        return lambda y, out: float(np.sqrt(np.mean((out.reshape(-1) - y) ** 2)))
    return lambda y, out: float(np.mean(out.argmax(axis=1) == y))


def paired_bootstrap_ci(y: np.ndarray, a: np.ndarray, b: np.ndarray, metric: Callable[[np.ndarray, np.ndarray], float],
                        *, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0
                        ) -> tuple[float, float, float]:
    """``metric(a) - metric(b)`` on the same rows and its percentile interval under a paired bootstrap: each
    resample draws the test rows with replacement and scores both models on the same draw, so the interval
    reflects the difference's own variance, not each score's (Efron & Tibshirani 1993, ch. 13 and 16; the
    paired form as in Koehn 2004 and Dror et al. 2018). Any metric of (labels, outputs) works, not only means."""
    y, a, b = np.asarray(y), np.asarray(a), np.asarray(b)
    if len(y) == 0:
        raise ValueError("no test rows to compare on")
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    for i in range(resamples):
        idx = rng.integers(0, len(y), len(y))
        diffs[i] = metric(y[idx], a[idx]) - metric(y[idx], b[idx])
    tail = (1 - level) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return metric(y, a) - metric(y, b), float(low), float(high)


def _scored(data: TaskData) -> tuple[str, bool, Callable[[np.ndarray, np.ndarray], float]]:
    """``(name, higher is better, metric(y, served output))`` of the refresh-level metric (the task's headline for
    data prepared before it): the comparison is on what the refresh ranks and the canary judges."""
    from monitoring.core.metrics import get_metric
    from pipelines.metric import metric_of

    entry = get_metric(metric_of(data))
    classes = data.meta.get("classes") or list(range(data.num_classes))
    params = data.meta.get("metric_params") or {}
    if data.is_regression:
        return entry.name, entry.higher_is_better, lambda y, out: entry.score(y, out.reshape(-1), classes, **params)

    def on_probabilities(y: np.ndarray, logits: np.ndarray) -> float:
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return entry.score(y, shifted / shifted.sum(axis=1, keepdims=True), classes, **params)

    return entry.name, entry.higher_is_better, on_probabilities


def compare_on_test(data: TaskData, nas_version: str, nas_module: torch.nn.Module, best: Contender,
                    best_module: torch.nn.Module, seed: int) -> BaselineGap:
    """The NAS winner against the best baseline on the test rows: the refresh-level metric's difference in its
    better direction (positive: NAS better), its paired bootstrap interval, and for a classifier the exact McNemar
    p of the paired correct rows."""
    kind = get_task(data.task)
    x = torch.from_numpy(data.x_test)
    with torch.inference_mode():
        a, b = nas_module(x).double().numpy(), best_module(x).double().numpy()
    name, higher, metric = _scored(data)
    diff, low, high = paired_bootstrap_ci(data.y_test, a, b, metric, seed=seed)
    sign = 1.0 if higher else -1.0
    low, high = sorted((sign * low, sign * high))
    p_value = None
    if not kind.numeric_labels:
        from pipelines.tournament import mcnemar_exact

        p_value = mcnemar_exact(a.argmax(1) == data.y_test, b.argmax(1) == data.y_test).p_value
    return BaselineGap(task=data.task, nas_version=nas_version, baseline_version=best.version,
                       baseline_kind=best.model_kind, metric=f"test_{name}", nas_value=metric(data.y_test, a),
                       baseline_value=metric(data.y_test, b), advantage=sign * diff, low=low, high=high,
                       level=LEVEL, rows=len(data.y_test), resamples=RESAMPLES, p_value=p_value)


def record_gap(client: Any, model_name: str, gap: BaselineGap, challenger: Contender) -> None:
    """The comparison on the NAS winner's version (tags ``vs_best_baseline``: the whole gap as JSON, and
    ``vs_best_baseline_verdict``) and, as the version description, on the winner, the best baseline and the
    challenger."""
    from pipelines.summary import gap_line

    line = gap_line(gap)
    if challenger.model_kind != NAS:
        line += (f" The challenger is {challenger.model_kind} version {challenger.version}: it ranked above the NAS "
                 "winner.")
    client.set_model_version_tag(model_name, gap.nas_version, tag("vs_best_baseline"), gap.model_dump_json())
    client.set_model_version_tag(model_name, gap.nas_version, tag("vs_best_baseline_verdict"), gap.verdict)
    for version in dict.fromkeys([gap.nas_version, gap.baseline_version, challenger.version]):
        client.update_model_version(model_name, version, description=line)
