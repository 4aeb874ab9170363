"""The typed configuration of a refresh: one pydantic model per stage, held by :class:`RefreshConfig`.

Validation happens once, where a refresh enters (the CLI or the flow's parameters): names are checked against the
registries (spaces, strategies, predictors, proxies, ensembles), and one validator sets the refresh-wide values —
seed, top-k — in every stage, so no stage can silently run with another seed or another k. Inner layers receive
these models and trust them. ``model_dump(mode="json")`` keeps them plain across Prefect boundaries.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from monitoring.judge_config import JudgeConfig, default_judge_config
from pipelines.control.config import CanaryConfig

__all__ = [
    "CanaryConfig",
    "DataSpec",
    "JudgeConfig",
    "RefreshConfig",
    "RetrainConfig",
    "SearchStageConfig",
    "TournamentConfig",
    "config_hash",
    "default_judge_config",
]

DARTS, SUPERNET = "darts", "supernet"
DEFAULT_SPACE_CONFIG: dict[str, dict[str, Any]] = {"nb201": {"C": 8, "N": 1}, "mlp": {}, "vit": {}}
IMAGE_SPACE, FLAT_SPACE = "nb201", "tabular"
WEIGHT_SHARED_FLAT_SPACE = "mlp"  # the table space the supernet, DARTS and compound scaling know


class _Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")


Task = Literal["auto", "classification", "regression"]


class DataSpec(_Stage):
    """What to load: a bundled dataset name, or a CSV/Parquet file and its target column."""

    source: str = Field("digits", min_length=1, description="bundled dataset (digits, mnist5k) or a file path")
    target: str | None = None
    seed: int = 0
    max_rows: int | None = Field(None, ge=50, description="stratified subsample of the data (for quick runs)")
    query: str | None = Field(None, description="the SQL query whose rows are the table (a database URL source)")
    categorical: list[str] = Field(default_factory=list, description="integer columns to encode as categories")
    task: Task = Field("auto", description="classification, regression, or auto (from the target column)")
    allow_columns: list[str] = Field(default_factory=list, description="feature columns the leakage check may find "
                                     "predicting the target almost perfectly: known when a prediction is made")
    metric: str | None = Field(None, description="the refresh-level metric (None: chosen from the target)")
    metric_params: dict[str, Any] = Field(default_factory=dict, description="positive_class, cost_matrix")
    password: SecretStr | None = Field(None, exclude=True, description="the database password, handed over in "
                                       "this process only (never dumped: not a cache key, a parameter or a record)")


def _check_names(values: list[str] | None, known: list[str], what: str) -> list[str] | None:
    if values is None:
        return None
    unknown = [v for v in values if v not in known]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; choose from: {', '.join(known)}")
    return values


def _check_options(name: str, options: dict[str, Any], module: str, *cls_names: str) -> None:
    """Option dicts for library config dataclasses: unknown keys named with the valid ones."""
    if not options:
        return
    import dataclasses
    import importlib

    lib = importlib.import_module(module)
    valid = sorted({f.name for c in cls_names for f in dataclasses.fields(getattr(lib, c))})
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown {name} options {unknown}; valid: {', '.join(valid)}")


class SearchStageConfig(_Stage):
    """Options of the NAS stage (every key optional; unknown keys are an error naming the valid ones)."""

    space: str | None = Field(None, description="search space (default: nb201 for images, tabular for tables; mlp "
                              "for tables searched by weight sharing or compound-scaled)")
    space_config: dict[str, Any] | None = Field(None, description="space options; default {'C': 8, 'N': 1} for nb201")
    pool_size: int = Field(1000, ge=1, description="architectures sampled for the zero-cost pre-filter")
    prefilter_keep: int = Field(32, ge=1, description="how many the pre-filter keeps (the predictor's pool)")
    costly_fraction: float = Field(0.03, gt=0, le=1, description="share of the pool scored by data-dependent proxies")
    proxies: list[str] | None = Field(None, description="cheap data-independent proxies for the whole pool")
    costly_proxies: list[str] | None = Field(None, description="data-dependent proxies for the pool's best part")
    ensemble: str = Field("ensemble", description="zero-cost ensemble used to rank the pool")
    strategy: str = Field("predictor", description="search strategy (see `nasops search --help`)")
    predictor: str = Field("mlp", description="predictor of the predictor strategy: mlp or lgbm")
    acquisition: Literal["ucb", "its", "ei"] = Field("ucb", description="ucb, its (Thompson) or ei")
    warm_start: int = Field(4, ge=0, description="evaluate this many of the zero-cost ranking's top first")
    budget: int = Field(8, ge=1, description="number of low-fidelity trainings")
    time_budget_s: float | None = Field(None, gt=0, description="stop submitting after this many seconds")
    fidelity: dict[str, float] | str = Field(
        default_factory=lambda: {"epochs": 3.0, "data_fraction": 1.0},
        description="low-fidelity training ({epochs, data_fraction}) or 'supernet': inherited weights of one "
                    "weight-sharing supernet (SPOS), trained once")
    supernet: dict[str, Any] = Field(default_factory=dict, description="SPOS supernet options (nas.supernet)")
    darts: dict[str, Any] = Field(default_factory=dict, description="DARTS options, with strategy: darts")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="supernet / DARTS device (auto: a GPU if any)")
    top_k: int = Field(2, ge=1, description="candidates returned for full retraining (set by the refresh)")
    max_latency_ms: float | None = Field(None, gt=0)
    max_params: float | None = Field(None, gt=0)
    objective: Literal["accuracy", "latency_int8"] = Field(
        "accuracy", description="accuracy: fp32 validation accuracy, max_latency_ms bounds fp32 latency; "
        "latency_int8: every candidate is also quantized to int8 and the search ranks its int8 accuracy, "
        "max_latency_ms bounds int8 latency, and the registered version carries its int8 artifact (nas.pareto)")
    early_stop: Literal["none", "learning_curve"] = Field(
        "none", description="learning_curve: stop a low-fidelity training once its curve makes beating the best "
        "accuracy found so far unlikely (Domhan et al. 2015, nas.learning_curves); needs fidelity epochs above "
        "early_stop_min_epochs")
    early_stop_threshold: float = Field(0.05, gt=0, lt=1, description="stop when P(final > best) is below this")
    early_stop_min_epochs: int = Field(3, ge=1, description="never stop a training before this many epochs")
    runner: Literal["thread", "dask"] = "thread"
    dask_address: str | None = Field(None, description="scheduler address of an existing Dask cluster")
    workers: int = Field(2, ge=1, description="evaluations in flight at once")
    seed: int = 0
    journal: str | None = Field(None, description="JSON-lines journal path (default: under the refresh's state dir)")
    resume: bool = False

    @field_validator("space")
    @classmethod
    def _known_space(cls, value: str | None) -> str | None:
        from nas.spaces import list_spaces

        if value is not None and value not in list_spaces():
            raise ValueError(f"unknown search space {value!r}; choose one of: {', '.join(list_spaces())}")
        return value

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        from nas.strategies import list_strategies

        known = [*list_strategies(), DARTS]
        if value not in known:
            raise ValueError(f"unknown strategy {value!r}; choose one of: {', '.join(known)}")
        return value

    @field_validator("predictor")
    @classmethod
    def _known_predictor(cls, value: str) -> str:
        from nas.predictors import list_predictors

        if value not in list_predictors():
            raise ValueError(f"unknown predictor {value!r}; choose one of: {', '.join(list_predictors())}")
        return value

    @field_validator("proxies", "costly_proxies")
    @classmethod
    def _known_proxies(cls, value: list[str] | None) -> list[str] | None:
        from nas.proxies import list_proxies

        return _check_names(value, list_proxies(), "proxies")

    @field_validator("ensemble")
    @classmethod
    def _known_ensemble(cls, value: str) -> str:
        from nas.ensemble import ENSEMBLES

        if value not in ENSEMBLES:
            raise ValueError(f"unknown ensemble {value!r}; choose one of: {', '.join(ENSEMBLES)}")
        return value

    @field_validator("fidelity")
    @classmethod
    def _known_fidelity(cls, value: dict[str, float] | str) -> dict[str, float] | str:
        from nas.evaluators import TrainingEvaluator

        if isinstance(value, str):
            if value != SUPERNET:
                raise ValueError(f"fidelity is {{epochs, data_fraction}} or '{SUPERNET}', got {value!r}")
            return value
        bad = set(value) - set(TrainingEvaluator.FIDELITY_KEYS)
        if bad:
            raise ValueError(f"unknown fidelity keys {sorted(bad)}; use {', '.join(TrainingEvaluator.FIDELITY_KEYS)}")
        if int(value.get("epochs", 1)) < 1 or not 0 < float(value.get("data_fraction", 1.0)) <= 1:
            raise ValueError("fidelity needs epochs >= 1 and 0 < data_fraction <= 1")
        return value

    table_space: str | None = Field(None, description="the default space for a table when `space` is not given "
                                    "(None: tabular, or mlp for the searches and scaling that only know mlp)")

    @model_validator(mode="after")
    def _space_builds(self) -> SearchStageConfig:
        if self.space is not None and self.space_config is not None:
            from nas.spaces import get_space

            try:
                get_space(self.space, **self.space_config)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"space_config {self.space_config} for {self.space!r}: {exc}") from None
        if self.runner == "thread" and self.dask_address:
            raise ValueError("dask_address needs runner: dask")
        if self.strategy == DARTS and self.space not in (None, "nb201"):
            raise ValueError(f"strategy darts searches the nb201 cell space, not {self.space!r}")
        if self.objective != "accuracy" and (self.strategy == DARTS or self.fidelity == SUPERNET):
            raise ValueError(f"objective {self.objective} trains and quantizes each candidate; it does not work "
                             "with strategy darts or fidelity supernet (inherited weights)")
        if self.early_stop != "none":
            if self.strategy == DARTS or self.fidelity == SUPERNET:
                raise ValueError(f"early_stop {self.early_stop} stops trainings from scratch; it does not work with "
                                 "strategy darts or fidelity supernet (inherited weights)")
            epochs = int(self.fidelity.get("epochs", 3)) if isinstance(self.fidelity, dict) else 0
            if epochs <= self.early_stop_min_epochs:
                raise ValueError(f"early_stop {self.early_stop} never stops a {epochs}-epoch training "
                                 f"(early_stop_min_epochs={self.early_stop_min_epochs}); raise fidelity epochs "
                                 "or lower early_stop_min_epochs")
        if self.fidelity == SUPERNET and self.space not in (None, "nb201", "mlp"):
            raise ValueError(f"fidelity supernet needs the nb201 or mlp space, not {self.space!r}")
        _check_options("supernet", self.supernet, "nas.supernet", "SPOSConfig", "ElasticConfig")
        _check_options("darts", self.darts, "nas.supernet", "DartsConfig")
        return self

    @property
    def method(self) -> str:
        """How candidates are found, for lineage: the strategy, DARTS, or a strategy on a supernet."""
        if self.strategy == DARTS:
            return DARTS
        return f"{SUPERNET}+{self.strategy}" if self.fidelity == SUPERNET else self.strategy

    @property
    def curve_stop(self) -> Any:
        """``nas.evaluators.CurveStop`` when learning-curve early stopping is on, else ``None``."""
        if self.early_stop == "none":
            return None
        from nas.evaluators import CurveStop

        return CurveStop(threshold=self.early_stop_threshold, min_epochs=self.early_stop_min_epochs)

    @property
    def constraints(self) -> Any:
        """The search's feasibility constraints as ``nas.objectives.Constraints``."""
        from nas.objectives import Constraints
        from nas.pareto import objective_spec

        return Constraints(max_params=self.max_params, max_latency_ms=self.max_latency_ms,
                           latency_key=objective_spec(self.objective).latency_key)

    @property
    def metric(self) -> str:
        """The metric the strategy maximises under this objective (``nas.pareto.OBJECTIVES``)."""
        from nas.pareto import objective_spec

        return objective_spec(self.objective).metric

    def _table_space(self) -> str:
        if self.table_space is not None:
            return self.table_space
        weight_shared = self.fidelity == SUPERNET or self.strategy == DARTS
        return WEIGHT_SHARED_FLAT_SPACE if weight_shared else FLAT_SPACE

    def space_for(self, input_shape: tuple[int, ...] | list[int]) -> tuple[str, dict[str, Any]]:
        """The space to search for inputs of this shape: the configured one, or the default for images / tables."""
        name = self.space or (IMAGE_SPACE if len(tuple(input_shape)) > 1 else self._table_space())
        config = self.space_config if self.space_config is not None else DEFAULT_SPACE_CONFIG.get(name, {})
        return name, dict(config)


class RetrainConfig(_Stage):
    """Full-fidelity training: long enough to converge, early stopping on validation accuracy."""

    epochs: int = Field(40, ge=1, description="maximum epochs")
    patience: int = Field(6, ge=1, description="stop after this many epochs without a better validation accuracy")
    lr: float = Field(0.05, gt=0)
    batch_size: int = Field(64, ge=2)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    weight_decay: float = Field(5e-4, ge=0)
    regression_loss: Literal["mse", "mae"] = Field(
        "mse", description="loss of a regression target (on the standardised target); ignored for classifiers")
    top_k: int = Field(2, ge=1, description="how many of the search's best candidates to retrain fully")
    scale_phis: list[float] = Field(
        default_factory=list, description="compound scaling of the winner (Tan & Le 2019, nas.scaling): retrain "
        "its scaled family at these φ (e.g. [-1, 1, 2]) within the scale_max_* budget, register each as a "
        "candidate and make the Pareto-best (accuracy vs params / latency) the challenger; empty: off")
    scale_max_params: int | None = Field(None, gt=0, description="parameter budget of a scaled member")
    scale_max_latency_ms: float | None = Field(None, gt=0, description="CPU latency budget of a scaled member")
    runner: Literal["serial", "thread", "dask"] = Field(
        "serial", description="where the finalists train (pipelines.finalists): here one after another, a thread "
        "pool, or Dask; a refresh whose search runs on Dask retrains there too unless this is set")
    dask_address: str | None = Field(None, description="scheduler address of an existing Dask cluster")
    workers: int = Field(2, ge=1, description="thread pool size / LocalCluster workers")
    seed: int = 0

    @field_validator("scale_phis")
    @classmethod
    def _finite_phis(cls, value: list[float]) -> list[float]:
        import math

        bad = [v for v in value if not math.isfinite(v)]
        if bad:
            raise ValueError(f"scale_phis must be finite numbers, got {bad}")
        return value


class TournamentConfig(_Stage):
    """How the shadow tournament drives traffic and judges a winner that falls behind."""

    aliases: list[str] | None = Field(
        None, description="candidate aliases to serve in shadow (default: every candidate-N alias, in rank order)")
    rate: float = Field(150.0, gt=0, description="requests per second of the replay (each prod row once)")
    batch_size: int = Field(1, ge=1, description="rows per request (1: one latency sample per row)")
    max_rows: int | None = Field(None, ge=10, description="replay at most this many prod rows")
    shadow_timeout_s: float = Field(1.0, gt=0, description="a candidate slower than this is logged as a timeout")
    shadow_max_in_flight: int = Field(64, ge=1, description="mirrored calls in flight before the gateway drops some")
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level of the 'winner falls behind' test")
    warmup_requests: int = Field(10, ge=0, description="requests before the measured window (lazy first calls)")
    ready_timeout_s: float = Field(120.0, gt=0, description="how long to wait for every candidate to load")
    seed: int = 0


# Refresh-wide values: set once on RefreshConfig, copied into every stage that uses them.
_SEEDED_STAGES = ("search", "retrain", "tournament", "canary")


class RefreshConfig(_Stage):
    """Everything a refresh needs; every field has a default that runs on a laptop in a few minutes."""

    data: str = Field("digits", min_length=1, description="bundled dataset (digits, mnist5k), a .csv/.parquet path, "
                      "or a database URL (postgresql://…, sqlite:///…) with query")
    target: str | None = Field(None, description="label column of a CSV/Parquet file")
    max_rows: int | None = Field(None, ge=50, description="stratified subsample of the data (for quick runs)")
    query: str | None = Field(None, description="SQL query whose rows are the table, when data is a database URL")
    categorical: list[str] = Field(default_factory=list, description="integer feature columns to one-hot encode as "
                                   "categories (e.g. codes 1-5) instead of treating them as numbers")
    task: Task = Field("auto", description="classification, regression, or auto: a float target with many "
                       "distinct values is regression (docs/data.md)")
    allow_columns: list[str] = Field(default_factory=list, description="feature columns that predict the target "
                                     "almost perfectly but are known when a prediction is made (the leakage check "
                                     "refuses any other such column; docs/data.md)")
    metric: str | None = Field(
        None, description="what the search, retraining, the tournament and the canary rank by (monitoring.core."
        "metrics): accuracy, balanced_accuracy, log_loss, roc_auc, f1, cost, rmse, mae; None: chosen from the target "
        "(log_loss for an imbalanced binary target, accuracy for other classes, rmse for a number)")
    metric_params: dict[str, Any] = Field(
        default_factory=dict, description="the metric's parameters: positive_class (roc_auc, f1), cost_matrix (cost: "
        "one row per true class, one column per predicted class, classes in sorted order)")
    seed: int = Field(0, description="seed of the split, the search and every training (all stages)")
    model_name: str | None = Field(None, description="registered model name (default: NASOPS_MODEL_NAME)")
    top_k: int | None = Field(None, ge=1, description="candidates searched for and retrained (both stages)")
    search: SearchStageConfig = Field(default_factory=SearchStageConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    tournament: TournamentConfig = Field(default_factory=TournamentConfig)
    canary: CanaryConfig = Field(default_factory=CanaryConfig)
    skip_canary: bool = Field(False, description="register the challenger but do not run the canary")
    skip_tournament: bool = Field(False, description="do not serve the retrained candidates in a shadow tournament")
    allow_schema_change: bool = Field(False, description="retrain the model although the data's columns differ from "
                                      "its champion's (otherwise the refresh stops, naming the columns)")
    gateway_url: str | None = Field(
        default_factory=lambda: os.environ.get("NASOPS_GATEWAY_URL") or None,
        description="the running gateway real callers use (default NASOPS_GATEWAY_URL): the refresh starts the "
        "rollout there and returns; without one, the canary runs embedded (a local gateway and traffic process)")
    controller_work_pool: str | None = Field(
        None, description="Prefect work pool whose workers run the controller deployment of a handed-over rollout")
    data_password: SecretStr | None = Field(
        None, exclude=True, description="the password of a database URL as --data, moved out of the URL by the CLI: "
        "handed to the data stage in this process, never dumped (Prefect records parameters, the record its config)")

    @model_validator(mode="after")
    def _refresh_wide_values(self) -> RefreshConfig:
        """One seed and one k for every stage; a stage that names another one is a mistake, not a silent override."""
        for name in _SEEDED_STAGES:
            stage = getattr(self, name)
            if "seed" in stage.model_fields_set and stage.seed != self.seed:
                raise ValueError(f"{name}.seed={stage.seed} differs from the refresh seed {self.seed}; set the "
                                 "seed once, at the top level (--seed)")
            stage.seed = self.seed
        ks = {f"{name}.top_k": getattr(self, name).top_k for name in ("search", "retrain")
              if "top_k" in getattr(self, name).model_fields_set}
        if self.top_k is not None:
            ks["top_k"] = self.top_k
        if len(set(ks.values())) > 1:
            raise ValueError(f"conflicting top_k values {ks}; set it once, at the top level (--top-k)")
        k = next(iter(ks.values()), self.retrain.top_k)
        self.top_k = self.search.top_k = self.retrain.top_k = k
        if self.search.runner == "dask" and not {"runner", "dask_address", "workers"} & self.retrain.model_fields_set:
            self.retrain.runner, self.retrain.dask_address = self.search.runner, self.search.dask_address
            self.retrain.workers = self.search.workers
        if self.retrain.scale_phis and self.search.space is None and self.search.table_space is None:
            self.search.table_space = WEIGHT_SHARED_FLAT_SPACE  # compound scaling knows mlp (and nb201 for images)
        return self  # model_name None: the settings' model name, resolved at the entry point

    @model_validator(mode="after")
    def _known_metric(self) -> RefreshConfig:
        """A metric name the registry knows, parameters it takes, and one the canary can judge when a canary runs
        (the classes a positive class or cost matrix names are checked once the data is read: pipelines.data)."""
        from monitoring.core.metrics import get_metric, online_problem

        if self.metric is None:
            if self.metric_params:
                raise ValueError("metric_params given without a metric; name the metric (--metric)")
            return self
        entry = get_metric(self.metric)
        unknown = sorted(set(self.metric_params) - set(entry.params))
        if unknown:
            raise ValueError(f"metric {self.metric} takes no metric_params {unknown} (accepted: "
                             f"{', '.join(entry.params) or 'none'})")
        problem = online_problem(self.metric)
        if problem is not None and not self.skip_canary:
            raise ValueError(problem)
        return self

    def stage_config(self, name: str) -> BaseModel:
        return getattr(self, name)


def config_hash(*parts: Any) -> str:
    """A short stable hash of configs / values (pydantic models dumped as JSON): part of every stage's cache key."""
    def plain(value: Any) -> Any:
        return value.model_dump(mode="json") if isinstance(value, BaseModel) else value

    text = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
