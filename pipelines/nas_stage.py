"""The refresh's NAS stage as a Prefect flow: zero-cost pre-filter -> predictor-guided search at low fidelity ->
the top-k candidates, ready for full retraining.

Candidate trainings are Prefect tasks submitted to a task runner (:mod:`pipelines.cluster`): a thread pool by
default, or Dask (``runner="dask"``: a temporary LocalCluster, or ``dask_address`` of an existing scheduler), so the
same flow scales out. On Dask the zero-cost scoring of the pool goes to the same workers (chunks of architectures,
merged in the pool's order), the evaluations in flight follow the cluster's size, and the tasks read the prepared
data from the run's artifacts (:func:`pipelines.prepared.publish_prepared`), never the refresh's local path. The
search itself (ask/tell, journal) is :func:`nas.search.run_search`; this module adds Prefect, MLflow (one ``search``
run, a nested run per evaluation, PNG plots) and the config a refresh passes.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextvars
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from monitoring.core.tasks import TaskKind, get_task
from nas.data import TaskData
from nas.evaluators import CurveBar, CurveStop, Result, TrainingEvaluator
from nas.objectives import pareto_front
from nas.search import Record, SearchResult, run_search
from nas.spaces import Architecture, SearchSpace, get_space
from nas.strategies import get_strategy
from pipelines import cluster
from pipelines.config import DARTS, SUPERNET, SearchStageConfig
from pipelines.contracts import Candidate, SearchInput, SearchOutput
from pipelines.errors import UserError, parse_model
from pipelines.metric import SCORER_KEY, ranked_by_scorer, training_options
from pipelines.prepared import load_shipped, local_ref, publish_prepared


def parse_config(config: Mapping[str, Any] | SearchStageConfig | None) -> SearchStageConfig:
    """Validate a config dict; a mistake becomes a :class:`UserError` naming each bad key and the valid ones."""
    return parse_model(SearchStageConfig, config, "search config")


def resolve_space(cfg: SearchStageConfig, input_shape: Sequence[int]) -> SearchSpace:
    """The configured space (or the default for this kind of input); a space that cannot take these inputs is a
    user mistake named as such, never silently swapped for another."""
    name, space_config = cfg.space_for(input_shape)
    try:
        space = get_space(name, **space_config)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"search space {name!r} with {space_config}: {exc}") from None
    problem = space.supports_input(input_shape)
    if problem is not None:
        raise UserError(f"search space {name!r} cannot take inputs shaped {tuple(input_shape)}: {problem}")
    return space


# -- evaluation as a Prefect task ------------------------------------------------------------------------------------
@task(name="evaluate_candidate", cache_policy=NO_CACHE, task_run_name="evaluate {arch}")
def evaluate_candidate(
    data_ref: dict, space: str, space_config: dict, arch: str, fidelity: dict, seed: int = 0, int8: bool = False,
    curve_stop: dict | None = None, bar: float | None = None,
) -> dict:
    """Train one architecture at low fidelity and measure it; runs on whichever worker the task runner picks,
    reading the data ``data_ref`` names (:func:`pipelines.prepared.load_shipped`).

    ``curve_stop`` (``nas.evaluators.CurveStop`` fields) stops the training early against ``bar``, the search's best
    accuracy when the trial was submitted."""
    import torch

    torch.set_num_threads(1)
    data = load_shipped(data_ref)
    sp = get_space(space, **space_config)
    evaluator = TrainingEvaluator(data, seed=seed, int8=int8,
                                  curve_stop=CurveStop(**curve_stop) if curve_stop is not None else None, bar=bar,
                                  **training_options(data))  # the refresh-level metric (pipelines.metric)
    return evaluator.evaluate(sp.from_string(arch), fidelity).to_dict()


class TaskRunnerEvaluator:
    """An evaluator whose ``evaluate`` submits :func:`evaluate_candidate` to a Prefect task runner and waits.

    With ``curve_stop`` each submission carries the current bar (``self.curve_bar``, raised by the loop's
    ``on_result`` from feasible finished trials)."""

    metric = "val_accuracy"

    def __init__(self, runner: Any, data_ref: dict, space: SearchSpace, seed: int, objective: str = "accuracy",
                 curve_stop: CurveStop | None = None) -> None:
        from nas.pareto import objective_spec

        self.runner, self.data_ref, self.space, self.seed = runner, data_ref, space, seed
        self.metric, self.int8 = objective_spec(objective).metric, objective_spec(objective).int8
        self.curve_stop, self.curve_bar = curve_stop, CurveBar()

    def evaluate(self, arch: Architecture, fidelity: Mapping[str, float] | None = None) -> Result:
        params = {"data_ref": self.data_ref, "space": self.space.name, "space_config": self.space.config(),
                  "arch": arch.string, "fidelity": dict(fidelity or {}), "seed": self.seed, "int8": self.int8}
        if self.curve_stop is not None:
            params.update(curve_stop=dataclasses.asdict(self.curve_stop), bar=self.curve_bar.bar)
        future = self.runner.submit(evaluate_candidate, parameters=params)
        return Result.from_dict(future.result())


class ContextThreadExecutor(cf.ThreadPoolExecutor):
    """A thread pool that runs each call in a copy of the submitting thread's context (the Prefect flow run)."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        ctx = contextvars.copy_context()
        return super().submit(ctx.run, fn, *args, **kwargs)


def make_task_runner(cfg: SearchStageConfig) -> Any:
    """The task runner the config names (:func:`pipelines.cluster.make_task_runner`)."""
    return cluster.make_task_runner(cfg.runner, cfg.workers, cfg.dask_address)


# -- zero-cost pool --------------------------------------------------------------------------------------------------
@task(name="score_proxies", cache_policy=NO_CACHE, task_run_name="zero-cost scores of {n} architectures")
def score_proxies(archs: list[str], names: list[str], needs_batch: bool, setup: Any, n: int = 0) -> list:
    """One chunk of the pool's zero-cost scoring (:func:`nas.prefilter.score_chunk`) on a worker."""
    from nas.prefilter import score_chunk

    cluster.pin_worker_threads()
    with cluster.RNG_LOCK:  # networks are built under the seed: one chunk at a time per process
        return score_chunk(archs, names, needs_batch, setup)


def runner_chunks(runner: Any) -> Any:
    """A :data:`nas.prefilter.ChunkMap` that scores each chunk as a :func:`score_proxies` task on ``runner``."""
    def mapper(chunks: list[list[str]], names: list[str], needs_batch: bool, setup: Any) -> list:
        return cluster.map_ordered(runner, score_proxies, [
            {"archs": c, "names": names, "needs_batch": needs_batch, "setup": setup, "n": len(c)} for c in chunks])

    return mapper


def zero_cost_pool(space: SearchSpace, data: TaskData, cfg: SearchStageConfig, runner: Any = None,
                   workers: int | None = None, cache: Path | None = None) -> tuple[list[Architecture], dict[str, dict]]:
    """Sample ``pool_size`` architectures and keep the pre-filter's best ``prefilter_keep`` (best first).

    With a started ``runner`` the pool is scored in chunks on its ``workers`` (the cluster's size), the same scores
    in the same order as scored here; without one, in ``cfg.workers`` local processes. With ``cache`` (a file beside
    the search journal) a resumed search reads back the survivors and scores a run with the same space, data and
    pre-filter settings wrote there, instead of scoring the pool again (issue 24: a resume redid it)."""
    key = _pool_key(space, data, cfg)
    cached = _read_pool(cache, key, space)
    if cached is not None:
        return cached
    pool, scores = _score_pool(space, data, cfg, runner, workers)
    if cache is not None:
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "pool": [a.string for a in pool], "scores": scores}))
        os.replace(tmp, cache)
    return pool, scores


def _pool_key(space: SearchSpace, data: TaskData, cfg: SearchStageConfig) -> str:
    """What decides the pre-filter's result: the space, the data (its fingerprint) and the pre-filter's settings."""
    facts = {"space": space.name, "config": space.config(), "data": data.meta.get("fingerprint"),
             "shape": list(data.input_shape), "task": data.task,
             **{k: getattr(cfg, k) for k in ("seed", "pool_size", "prefilter_keep", "ensemble", "proxies",
                                             "costly_proxies", "costly_fraction")}}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def _read_pool(cache: Path | None, key: str, space: SearchSpace) -> tuple[list[Architecture], dict[str, dict]] | None:
    if cache is None or not cache.is_file():
        return None
    try:
        saved = json.loads(cache.read_text())
        if saved.get("key") != key:
            return None
        return [space.from_string(s) for s in saved["pool"]], dict(saved["scores"])
    except (ValueError, KeyError, TypeError):  # torn or foreign: scored again
        return None


def _score_pool(space: SearchSpace, data: TaskData, cfg: SearchStageConfig, runner: Any,
                workers: int | None) -> tuple[list[Architecture], dict[str, dict]]:
    from nas.prefilter import prefilter

    rng = np.random.default_rng(cfg.seed)
    pool = space.sample_many(cfg.pool_size, rng)  # unique by canonical form
    kwargs: dict[str, Any] = {"keep": min(cfg.prefilter_keep, len(pool)), "ensemble": cfg.ensemble,
                              "seed": cfg.seed, "workers": workers or cfg.workers,
                              "costly_fraction": cfg.costly_fraction}
    if runner is not None:
        kwargs["map_chunks"] = runner_chunks(runner)
    if cfg.proxies:
        kwargs["cheap"] = tuple(cfg.proxies)
    if cfg.costly_proxies is not None:
        kwargs["costly"] = tuple(cfg.costly_proxies)
    if not get_task(data.task).class_proxies:
        kwargs.update(_regression_proxies(cfg))
    try:
        scored = prefilter(space, pool, data, **kwargs)
    except (KeyError, ValueError) as exc:
        raise UserError(f"zero-cost pre-filter: {exc}") from None
    return [s.arch for s in scored], {s.arch.string: dict(s.scores) for s in scored}


def _regression_proxies(cfg: SearchStageConfig) -> dict[str, Any]:
    """A regression has no classes: proxies that group the batch by class (epe_nas) are skipped, with the reason
    logged, and naming one is an error; the gradient proxies differentiate the MSE (nas.proxies.data_pass)."""
    from nas.ensemble import ENSEMBLES
    from nas.proxies.data_pass import CLASS_PROXIES

    named = [p for p in (cfg.proxies or []) + (cfg.costly_proxies or []) if p in CLASS_PROXIES]
    if named:
        raise UserError(f"proxy {named[0]!r} groups inputs by class, and a regression target has no classes; drop "
                        "it from search.proxies / search.costly_proxies")
    members = ENSEMBLES[cfg.ensemble]
    kept = [m for m in members if m not in CLASS_PROXIES]
    if len(kept) < len(members):
        logging.getLogger("nasops.refresh.search").info(
            "regression target: zero-cost proxy %s skipped (it groups inputs by class); ranking the pool with %s",
            ", ".join(m for m in members if m in CLASS_PROXIES), ", ".join(kept))
    return {"ensemble": kept} if kept != members else {}


# -- MLflow ---------------------------------------------------------------------------------------------------------
def _log_evaluation(client: MlflowClient, experiment_id: str, parent: str, rec: Record, space: SearchSpace) -> None:
    run = client.create_run(experiment_id, run_name=f"eval-{rec.index:03d}",
                            tags={"mlflow.parentRunId": parent, "nasops.stage": "search-evaluation",
                                  "nasops.arch": rec.arch, "nasops.space": space.name})
    client.log_batch(
        run.info.run_id,
        metrics=[mlflow.entities.Metric(k, float(v), int(time.time() * 1000), 0)
                 for k, v in rec.result.metrics.items() if np.isfinite(v)]
        + [mlflow.entities.Metric("cost_seconds", rec.result.cost, int(time.time() * 1000), 0)],
        params=[mlflow.entities.Param("arch", rec.arch)]
        + [mlflow.entities.Param(f"fidelity.{k}", str(v)) for k, v in rec.result.fidelity.items()],
    )
    client.set_terminated(run.info.run_id)


def _plots(out: Path, result: SearchResult, proxy_scores: Mapping[str, Mapping[str, float]],
           cost_key: str, kind: TaskKind) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    key = kind.score_key
    acc = [r.result.metrics.get(key, np.nan) for r in result.records]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(range(1, len(acc) + 1), acc, "o", alpha=0.6, label="evaluation")
    ax.plot(range(1, len(acc) + 1), np.maximum.accumulate(np.nan_to_num(acc, nan=0.0)), "-", label="best so far")
    ax.set_xlabel("evaluation")
    ax.set_ylabel("validation accuracy (low fidelity)")
    ax.legend()
    ax.set_title("search trajectory", fontsize=9)
    paths.append(out / "search_trajectory.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    points = [r.result.metrics for r in result.records]
    front = pareto_front(points, key, cost_key)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.scatter([p.get(cost_key, np.nan) for p in points], acc, alpha=0.6, label="evaluated")
    fx = [points[i][cost_key] for i in front]
    fy = [points[i][key] for i in front]
    ax.step(fx, fy, "r-", where="post", label="Pareto front")
    ax.set_xlabel(cost_key)
    ax.set_ylabel("validation accuracy")
    ax.legend()
    ax.set_title(f"accuracy vs {cost_key}", fontsize=9)
    paths.append(out / "pareto_front.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    names = sorted({n for r in result.records for n in proxy_scores.get(r.arch, {})})
    if names:
        cols = min(len(names), 4)
        rows = (len(names) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
        for ax, name in zip(axes.ravel(), names, strict=False):
            xs = [proxy_scores.get(r.arch, {}).get(name, np.nan) for r in result.records]
            ax.scatter(xs, acc, s=12, alpha=0.7)
            ax.set_xlabel(name)
            ax.set_ylabel("val accuracy")
        for ax in axes.ravel()[len(names):]:
            ax.axis("off")
        fig.suptitle("zero-cost proxy vs trained accuracy", fontsize=9)
        paths.append(out / "proxy_vs_accuracy.png")
        fig.tight_layout()
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def _check_task(cfg: SearchStageConfig, kind: TaskKind) -> None:
    """What a search of this task kind cannot do (yet), said before anything trains."""
    if cfg.objective not in kind.search_objectives:
        raise UserError(f"search.objective {cfg.objective!r} ranks int8 accuracy; a {kind.name} target searches "
                        f"with the default objective (validation {kind.headline_label}): drop --objective")
    if not kind.weight_sharing and (cfg.strategy == DARTS or cfg.fidelity == SUPERNET):
        raise UserError(f"weight-sharing searches (darts, supernet fidelity) train classifiers only; a {kind.name} "
                        "target needs a strategy that trains each candidate (the default predictor)")


def _check_metric(cfg: SearchStageConfig, data: TaskData) -> None:
    """The searches that rank by accuracy alone (weight sharing, the int8 objective) with another refresh metric:
    refused, never run ranking something else than the metric the refresh names."""
    if not ranked_by_scorer(data):
        return
    sharing = cfg.strategy == DARTS or cfg.fidelity == SUPERNET
    what = ("weight-sharing searches (darts, the supernet fidelity)" if sharing
            else "--objective latency_int8" if cfg.objective != "accuracy" else None)
    if what is not None:
        raise UserError(f"{what} rank by accuracy, and this refresh ranks by {data.meta.get('metric')}; use the "
                        "default strategy and objective, or --metric accuracy")


class _ProxySource:
    """Proxy features for the predictor: the pre-filter's scores, or the data-free proxies computed for the
    architectures it has not scored (mutants). With a runner, :meth:`prefetch` scores the predictor's whole candidate
    set in chunks on the workers (the same scores: :func:`nas.prefilter.score_chunk` with this seed); without one
    each is computed here when asked."""

    def __init__(self, space: SearchSpace, data: TaskData, known: dict[str, dict], names: list[str],
                 runner: Any = None, workers: int = 1) -> None:
        from nas.prefilter import ScoringSetup
        from nas.proxies import needs_data

        self.names = [n for n in names if not needs_data(n)]  # mutants outside the pool get the data-free ones
        self.known, self.runner, self.workers = known, runner, workers
        self.setup = ScoringSetup(space, None, tuple(data.input_shape), int(data.num_classes), 0)

    def prefetch(self, archs: Sequence[Architecture]) -> None:
        todo = list(dict.fromkeys(a.string for a in archs if a.string not in self.known))
        if self.runner is None or not todo or not self.names:
            return
        size = max(1, -(-len(todo) // (self.workers * 2)))
        chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
        for part in runner_chunks(self.runner)(chunks, self.names, False, self.setup):
            self.known.update(dict(part))

    def __call__(self, arch: Architecture) -> dict[str, float]:
        from nas.prefilter import score_chunk

        if arch.string not in self.known:
            self.known.update(dict(score_chunk([arch.string], self.names, False, self.setup)))
        return {n: self.known[arch.string][n] for n in self.names if n in self.known[arch.string]}


def prepare_strategy(cfg: SearchStageConfig, space: SearchSpace, data: TaskData, runner: Any = None,
                     workers: int | None = None, pool_cache: Path | None = None
                     ) -> tuple[Any, list[Architecture], dict[str, dict]]:
    """Pre-filter a pool (on ``runner``'s workers when given), then the configured strategy warm-started from its
    zero-cost ranking."""
    pool, proxy_scores = zero_cost_pool(space, data, cfg, runner, workers, cache=pool_cache)
    cheap_names = sorted(set.intersection(*(set(s) for s in proxy_scores.values()))) if proxy_scores else []
    metric = get_task(data.task).search_metric(cfg.metric)
    if ranked_by_scorer(data) and cfg.objective == "accuracy":  # the refresh-level metric, not accuracy
        metric = SCORER_KEY
    kwargs: dict[str, Any] = {"pool": pool, "metric": metric, "constraints": cfg.constraints,
                              "warm_start": pool[: cfg.warm_start]}
    if cfg.strategy == "predictor":
        kwargs.update(proxies=_ProxySource(space, data, proxy_scores, cheap_names, runner, workers or 1),
                      predictor=cfg.predictor,
                      acquisition=cfg.acquisition, n_init=max(2, min(cfg.warm_start or 4, cfg.budget // 2)))
    try:
        strategy = get_strategy(cfg.strategy, space, seed=cfg.seed, **kwargs)
    except (KeyError, ValueError) as exc:
        raise UserError(f"strategy {cfg.strategy!r}: {exc}") from None
    return strategy, pool, proxy_scores


# -- the flow -------------------------------------------------------------------------------------------------------
def _journal_path(inputs: SearchInput, cfg: SearchStageConfig) -> Path:
    if cfg.journal:
        return Path(cfg.journal)
    if inputs.journal:
        return Path(inputs.journal)
    return Path(tempfile.mkdtemp(prefix="nasops-search-")) / "journal.jsonl"


def _log_search_params(space: SearchSpace, cfg: SearchStageConfig) -> None:
    mlflow.set_tags({"nasops.stage": "search", "nasops.space": space.name, "nasops.strategy": cfg.strategy})
    mlflow.log_params({"space": space.name, "space_config": json.dumps(space.config()), "budget": cfg.budget,
                       "pool_size": cfg.pool_size, "prefilter_keep": cfg.prefilter_keep,
                       "strategy": cfg.strategy, "fidelity": json.dumps(cfg.fidelity), "runner": cfg.runner,
                       "workers": cfg.workers, "seed": cfg.seed, "max_latency_ms": cfg.max_latency_ms,
                       "max_params": cfg.max_params, "objective": cfg.objective})
    if cfg.early_stop != "none":  # only with the option on, so a default search logs exactly the same params
        mlflow.log_params({"early_stop": cfg.early_stop, "early_stop_threshold": cfg.early_stop_threshold,
                           "early_stop_min_epochs": cfg.early_stop_min_epochs})


def _run_loop(strategy: Any, space: SearchSpace, data_ref: dict, cfg: SearchStageConfig, journal: Path,
              resume: bool, run: Any, runner: Any, workers: int) -> SearchResult:
    """The shared search loop with evaluations as Prefect tasks on the started task runner, ``workers`` (its
    size) in flight: the strategy is asked for that many at first, then one per finished evaluation."""
    client = MlflowClient()
    logger = get_run_logger()

    evaluator: TaskRunnerEvaluator | None = None

    def on_result(rec: Record) -> None:
        _log_evaluation(client, run.info.experiment_id, run.info.run_id, rec, space)
        if evaluator is not None and evaluator.curve_stop is not None:
            evaluator.curve_bar.raise_bar(rec.result.metrics, feasible=rec.ok and bool(np.isfinite(rec.score)))
            logger.info("evaluation %d: %s val_accuracy=%.4f epochs_saved=%d", rec.index + 1, rec.arch,
                        rec.result.metrics.get("val_accuracy", float("nan")),
                        rec.result.metrics.get("epochs_saved", 0))
            return
        logger.info("evaluation %d: %s val_accuracy=%.4f", rec.index + 1, rec.arch,
                    rec.result.metrics.get("val_accuracy", float("nan")))

    with ContextThreadExecutor(max_workers=workers, thread_name_prefix="nas-submit") as pool_exec:
        evaluator = TaskRunnerEvaluator(runner, data_ref, space, cfg.seed, cfg.objective, cfg.curve_stop)
        evaluator.metric = strategy.metric  # val_neg_rmse for a regression (prepare_strategy)
        if evaluator.curve_stop is not None and resume:  # replayed trials skip on_result: they set the bar here
            from nas.search import Journal

            for row in Journal(journal).read()[1]:
                evaluator.curve_bar.raise_bar(row.get("metrics", {}), feasible=row.get("state") == "complete"
                                              and np.isfinite(float(row.get("score", float("-inf")))))
        try:
            return run_search(strategy, evaluator, budget=cfg.budget, time_budget_s=cfg.time_budget_s,
                              fidelity=cfg.fidelity, workers=workers, executor=pool_exec,
                              journal=journal, resume=resume, on_result=on_result)
        except ValueError as exc:
            raise UserError(f"search: {exc}") from None


def _log_search_results(result: SearchResult, candidates: list[Candidate], proxy_scores: dict, journal: Path,
                        seconds: float, prefilter_seconds: float, objective: str = "accuracy",
                        kind: TaskKind | None = None) -> None:
    from pipelines.pareto_report import log_pareto

    kind = get_task(kind)
    best_key = f"val_{kind.headline}"  # the low-fidelity validation figure a Candidate carries
    best = {f"best_{best_key}": getattr(candidates[0], best_key)}
    mlflow.log_metrics({"evaluations": len(result.records), "search_seconds": seconds,
                        "prefilter_seconds": prefilter_seconds, **best})
    saved = epochs_saved(result)
    if saved is not None:  # learning-curve early stopping was on
        mlflow.log_metrics(saved)
    for t in result.tau:
        if "tau_prospective" in t:
            mlflow.log_metric("predictor_tau_prospective", t["tau_prospective"], step=int(t["evaluations"]))
    with tempfile.TemporaryDirectory() as tmp:
        cost_key = "latency_ms" if any("latency_ms" in r.result.metrics for r in result.records) else "params"
        for path in _plots(Path(tmp), result, proxy_scores, cost_key, kind):
            mlflow.log_artifact(str(path), artifact_path="plots")
        if journal.exists():
            mlflow.log_artifact(str(journal), artifact_path="search")
        (Path(tmp) / "candidates.json").write_text(json.dumps([c.model_dump(mode="json") for c in candidates],
                                                              indent=2))
        mlflow.log_artifact(str(Path(tmp) / "candidates.json"), artifact_path="search")
    if kind.ranks_by_objective:  # the Pareto view ranks the objective; a regression's front is in the plots
        log_pareto(result.records, objective)


@flow(name="search_architectures")
def search_architectures(inputs: SearchInput, config: SearchStageConfig | None = None) -> SearchOutput:
    """Zero-cost pre-filter, then a low-fidelity search; returns the top-k candidates."""
    from pipelines.tracking import ensure_tracking

    cfg = parse_config(config)
    inputs = SearchInput.model_validate(inputs)
    logger = get_run_logger()
    started = time.perf_counter()
    data_path = inputs.data.path
    if not Path(data_path).exists():
        raise UserError(f"data file {data_path!r} does not exist; run the refresh's prepare_data stage first")
    data = TaskData.load(data_path)
    kind = get_task(data.task)
    _check_task(cfg, kind)
    _check_metric(cfg, data)
    space = resolve_space(cfg, data.input_shape)
    logger.info("searching %s %s for input %s, %d classes", space.name, space.config(), data.input_shape,
                data.num_classes)
    ensure_tracking()
    journal = _journal_path(inputs, cfg)
    supernet_run_id = None
    with mlflow.start_run(run_name="search", nested=mlflow.active_run() is not None) as run:
        _log_search_params(space, cfg)
        if cfg.strategy == DARTS:
            from pipelines.weight_sharing import darts_candidates

            candidates, darts = darts_candidates(space, data, cfg)
            seconds = time.perf_counter() - started
            mlflow.log_metrics({"search_seconds": seconds, "darts_epochs": len(darts.history)})
            return _output(run, space, data, cfg, candidates, evaluations=len(darts.history), failed=0,
                           seconds=seconds, prefilter_seconds=0.0, journal=journal, tau=[])
        with cluster.started(make_task_runner(cfg)) as runner:
            workers = cluster.slots(runner)  # the cluster's size, not the configured number, on Dask
            remote = runner if cfg.runner == "dask" else None  # threads: the pre-filter's own processes
            strategy, pool, proxy_scores = prepare_strategy(cfg, space, data, remote, workers,
                                                            pool_cache=journal.with_name(journal.stem + ".pool.json"))
            prefilter_seconds = time.perf_counter() - started
            logger.info("pre-filter kept %d of %d architectures in %.1f s; %d evaluations in flight", len(pool),
                        cfg.pool_size, prefilter_seconds, workers)
            mlflow.log_metric("evaluations_in_flight", workers)
            if cfg.fidelity == SUPERNET:
                from pipelines.weight_sharing import trained_supernet

                evaluator, supernet_run_id = trained_supernet(space, data, cfg)
                mlflow.set_tag("nasops.supernet_run_id", supernet_run_id)
                result = _run_on(evaluator, strategy, space, cfg, journal, inputs.resume or cfg.resume, run)
            else:
                ref = (publish_prepared(data_path, run.info.run_id, mlflow.get_tracking_uri()) if remote is not None
                       else local_ref(data_path))
                result = _run_loop(strategy, space, ref, cfg, journal, inputs.resume or cfg.resume, run, runner,
                                   workers)
        seconds = time.perf_counter() - started
        candidates = _candidates(result, cfg, proxy_scores)
        if not candidates:
            raise UserError(
                "no evaluated architecture meets the constraints "
                f"(max_latency_ms={cfg.max_latency_ms}, max_params={cfg.max_params}); relax them or raise the budget"
            )
        _log_search_results(result, candidates, proxy_scores, journal, seconds, prefilter_seconds, cfg.objective,
                            kind)
    return _output(run, space, data, cfg, candidates, evaluations=len(result.records), failed=_failed(result),
                   seconds=seconds, prefilter_seconds=prefilter_seconds, journal=journal,
                   tau=[dict(t) for t in result.tau], supernet_run_id=supernet_run_id)


def _output(run: Any, space: SearchSpace, data: TaskData, cfg: SearchStageConfig, candidates: list[Candidate], *,
            evaluations: int, failed: int, seconds: float, prefilter_seconds: float, journal: Path,
            tau: list[dict[str, float]], supernet_run_id: str | None = None) -> SearchOutput:
    return SearchOutput(
        search_run_id=run.info.run_id, space=space.name, space_config=space.config(),
        input_shape=list(data.input_shape), num_classes=int(data.num_classes), pool_size=int(cfg.pool_size),
        evaluations=evaluations, failed_evaluations=failed, seconds=float(seconds),
        prefilter_seconds=float(prefilter_seconds), candidates=candidates, journal=str(journal), seed=cfg.seed,
        predictor_tau=tau, method=cfg.method, supernet_run_id=supernet_run_id, objective=cfg.objective,
    )


def _run_on(evaluator: Any, strategy: Any, space: SearchSpace, cfg: SearchStageConfig, journal: Path, resume: bool,
            run: Any) -> SearchResult:
    """The shared loop on an in-process evaluator (the supernet: milliseconds per architecture, one at a time)."""
    client = MlflowClient()

    def on_result(rec: Record) -> None:
        _log_evaluation(client, run.info.experiment_id, run.info.run_id, rec, space)

    try:
        return run_search(strategy, evaluator, budget=cfg.budget, time_budget_s=cfg.time_budget_s, fidelity=None,
                          workers=1, journal=journal, resume=resume, on_result=on_result)
    except ValueError as exc:
        raise UserError(f"search: {exc}") from None


def epochs_saved(result: SearchResult) -> dict[str, float] | None:
    """Totals of a search with learning-curve early stopping (``None`` without it): epochs trained, epochs saved,
    trainings stopped. Per trial the same numbers are the evaluation's ``epochs_run`` / ``epochs_saved`` metrics."""
    rows = [r.result.metrics for r in result.records if "epochs_saved" in r.result.metrics]
    if not rows:
        return None
    return {"epochs_saved_total": float(sum(m["epochs_saved"] for m in rows)),
            "epochs_run_total": float(sum(m["epochs_run"] for m in rows)),
            "trainings_stopped_early": float(sum(1 for m in rows if m["epochs_saved"] > 0))}


def _failed(result: SearchResult) -> int:
    return sum(1 for r in result.records if getattr(r, "state", "complete") == "fail")


def _candidates(result: SearchResult, cfg: SearchStageConfig, proxy_scores: Mapping[str, Mapping[str, float]]
                ) -> list[Candidate]:
    """The top-k feasible records, best first."""
    feasible = [r for r in result.records if np.isfinite(r.score)]
    feasible.sort(key=lambda r: (-r.score, r.result.metrics.get("latency_ms", 0.0)))
    out = []
    for r in feasible[: cfg.top_k]:
        m = r.result.metrics
        out.append(Candidate(
            arch=r.arch, val_accuracy=float(m.get("val_accuracy", float("nan"))),
            val_rmse=float(m["val_rmse"]) if "val_rmse" in m else None,
            latency_ms=float(m.get("latency_ms", float("nan"))),
            params=int(m.get("params", 0)),
            proxy_scores={k: float(v) for k, v in proxy_scores.get(r.arch, {}).items()},
            fidelity=dict(r.result.fidelity),
        ))
    return out
