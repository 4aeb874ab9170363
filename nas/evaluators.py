"""Evaluators turn an architecture into measured results; strategies only ever see those results.

``evaluate(arch, fidelity) -> Result(metrics, cost)``. :class:`TrainingEvaluator` really trains (at a fidelity: a
number of epochs and a fraction of the training rows) and measures CPU inference latency; :class:`TabularEvaluator`
looks the answer up in a benchmark table, so every strategy can be measured on published benchmarks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from nas.data import TaskData
from nas.spaces.base import Architecture
from nas.tabular import BenchmarkTable

SCORER_KEY = "val_metric"
"""The result key of a caller's metric (a scorer given to :class:`TrainingEvaluator`; higher is better)."""


@dataclass
class Result:
    """What one evaluation measured (``metrics``), what it cost in seconds, and at which fidelity."""

    metrics: dict[str, float]
    cost: float = 0.0
    fidelity: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": dict(self.metrics), "cost": float(self.cost), "fidelity": dict(self.fidelity)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Result:
        return cls(
            {k: float(v) for k, v in data["metrics"].items()}, float(data.get("cost", 0.0)),
            dict(data.get("fidelity", {})),
        )


class Evaluator(Protocol):
    """Anything with an ``evaluate`` method and the name of the metric it reports (higher is better)."""

    metric: str

    def evaluate(self, arch: Architecture, fidelity: Mapping[str, float] | None = None) -> Result: ...


@dataclass(frozen=True)
class CurveStop:
    """Learning-curve early stopping of low-fidelity trainings (Domhan et al. 2015, :mod:`nas.learning_curves`):
    a training stops once ``P(final accuracy > bar) < threshold``, never before ``min_epochs`` epochs."""

    threshold: float = 0.05
    min_epochs: int = 3


class CurveBar:
    """The bar a learning-curve stop compares against: the best ``val_accuracy`` of a feasible finished trial.

    Shared by the search's evaluations (a lock: trials finish on several threads); the search loop's ``on_result``
    calls :meth:`raise_bar`, so an infeasible trial (over a latency / params limit) never sets the bar.
    """

    def __init__(self) -> None:
        self.bar: float | None = None
        self._lock = threading.Lock()

    def raise_bar(self, metrics: Mapping[str, float], feasible: bool = True) -> None:
        value = metrics.get("val_accuracy")
        if not feasible or value is None or not np.isfinite(value):
            return
        with self._lock:
            if self.bar is None or value > self.bar:
                self.bar = float(value)


class TrainingEvaluator:
    """Train each architecture from scratch on ``data`` at a fidelity; report validation accuracy and latency.

    ``fidelity`` keys: ``epochs`` (int) and ``data_fraction`` (0-1]; anything else is an error so a typo does not
    silently train at the default. The training seed is fixed, so the same arch and fidelity give the same result.
    """

    metric = "val_accuracy"
    FIDELITY_KEYS = ("epochs", "data_fraction")

    def __init__(
        self,
        data: TaskData,
        *,
        epochs: int = 3,
        data_fraction: float = 1.0,
        batch_size: int = 64,
        lr: float = 0.05,
        optimizer: str = "sgd",
        seed: int = 0,
        measure_latency: bool = True,
        latency_repeats: int = 20,
        int8: bool = False,
        curve_stop: CurveStop | None = None,
        bar: float | None = None,
        scorer: Callable[[np.ndarray, np.ndarray], float] | None = None,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        self.data = data
        self.metric = data.score_key  # val_accuracy, or val_neg_rmse for a regression (higher is better, both)
        # the caller's metric (nas.trainer.train's scorer): reported as val_metric, which the search then ranks
        self.scorer, self.class_weights = scorer, class_weights
        if scorer is not None:
            self.metric = SCORER_KEY
        self.default = {"epochs": epochs, "data_fraction": data_fraction}
        self.batch_size, self.lr, self.optimizer, self.seed = batch_size, lr, optimizer, seed
        self.measure_latency, self.latency_repeats = measure_latency, latency_repeats
        self.int8 = int8  # also measure the int8 form (nas.deploy.int8_metrics): --objective latency_int8
        # Opt-in learning-curve stop against ``bar`` (None: the first trainings of a search, which never stop).
        # Its curve models extrapolate accuracies in [0, 1]: a regression's RMSE curves are not stopped by it.
        # The same for a caller's metric: the curves model accuracy, not it.
        self.curve_stop, self.bar = (None if data.is_regression or scorer is not None else curve_stop), bar

    def resolve(self, fidelity: Mapping[str, float] | None) -> dict[str, float]:
        fid = dict(self.default)
        for key, value in (fidelity or {}).items():
            if key not in self.FIDELITY_KEYS:
                raise ValueError(f"unknown fidelity key {key!r}; use {', '.join(self.FIDELITY_KEYS)}")
            fid[key] = value
        fid["epochs"] = int(fid["epochs"])
        fid["data_fraction"] = float(fid["data_fraction"])
        return fid

    def evaluate(self, arch: Architecture, fidelity: Mapping[str, float] | None = None) -> Result:
        if self.int8:  # FX tracing patches nn.Module.__call__ process-wide: no other training may run meanwhile
            from nas.deploy import FX_LOCK

            with FX_LOCK:
                return self._evaluate(arch, fidelity)
        return self._evaluate(arch, fidelity)

    def _evaluate(self, arch: Architecture, fidelity: Mapping[str, float] | None = None) -> Result:
        from nas.trainer import measure_latency_ms, space_training_config, train

        fid = self.resolve(fidelity)
        start = time.perf_counter()
        model = arch.build(self.data.num_classes, self.data.input_shape)
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        config = space_training_config(  # the tabular space trains with its own defaults (AdamW, warm-up cosine)
            arch.space.name, regression=self.data.is_regression, epochs=fid["epochs"],
            data_fraction=fid["data_fraction"], batch_size=self.batch_size, lr=self.lr, optimizer=self.optimizer,
            seed=self.seed,
        )
        stopper = None
        if self.curve_stop is not None:
            from nas.learning_curves import LearningCurveStopper

            stopper = LearningCurveStopper(self.bar, fid["epochs"], threshold=self.curve_stop.threshold,
                                           min_epochs=self.curve_stop.min_epochs)
        epochs_run = fid["epochs"]
        try:
            trained = train(model, self.data, config, stop_when=stopper, scorer=self.scorer,
                            class_weights=self.class_weights)
            score, train_seconds, epochs_run = trained.val_score, trained.train_seconds, trained.epochs_run
            if self.scorer is not None:  # the task's own figure beside the ranked one
                metric_score, score = score, (-trained.val_rmse if self.data.is_regression else trained.val_accuracy)
        except FloatingPointError:  # a diverging network is a legitimate (bad) result, not a crash of the search
            # chance level: a uniform guess, or a regression predicting the training mean (RMSE = the target's std)
            score = -self.data.target_scale[1] if self.data.is_regression else 1.0 / self.data.num_classes
            if self.scorer is not None:
                metric_score = self.scorer(self.data.y_val, self._chance_output())
            train_seconds = time.perf_counter() - start
        # the trained score under its own key (val_accuracy / val_neg_rmse), whatever metric the search ranks:
        # with --objective latency_int8 the searched metric is accuracy_int8, added below, and the fp32
        # accuracy must stay in the result beside it
        metrics = {self.data.score_key: float(score), "params": float(params), "train_seconds": float(train_seconds)}
        if self.data.is_regression:
            metrics["val_rmse"] = -float(score)
        if self.scorer is not None:
            metrics[SCORER_KEY] = float(metric_score)
        if stopper is not None:  # only with the option on: default results keep their exact metric set
            metrics["epochs_run"] = float(epochs_run)
            metrics["epochs_saved"] = float(fid["epochs"] - epochs_run)
            if stopper.stopped_at is not None and stopper.last_prediction is not None:
                metrics["lc_predicted_final"] = float(stopper.last_prediction.mean)
        if self.measure_latency:
            metrics["latency_ms"] = measure_latency_ms(model, self.data.input_shape, repeats=self.latency_repeats)
        if self.int8:
            from nas.deploy import int8_metrics

            metrics.update(int8_metrics(model, self.data, repeats=self.latency_repeats))
        return Result(metrics, cost=time.perf_counter() - start, fidelity=fid)


    def _chance_output(self) -> np.ndarray:
        """A diverged network's stand-in: uniform class probabilities, or the training mean of a regression."""
        n = len(self.data.y_val)
        if self.data.is_regression:
            return np.full(n, self.data.target_scale[0])
        return np.full((n, self.data.num_classes), 1.0 / self.data.num_classes)


class TabularEvaluator:
    """Look results up in a :class:`~nas.tabular.BenchmarkTable`.

    ``metric`` is the searched column; every metric column of the row is returned. With a fidelity ``epochs`` and
    ``METRIC@EPOCHS`` columns, the metric at the nearest tabulated epoch count at or below it is returned (the final
    column when no fidelity is given). ``cost`` comes from the cost column (0 without one), scaled by
    ``epochs / max_epochs`` at a lower fidelity.
    """

    def __init__(self, table: BenchmarkTable, metric: str | None = None) -> None:
        self.table = table
        self.metric = metric or next(iter(table.metrics))
        if self.metric not in table.metrics:
            raise ValueError(f"metric {self.metric!r} is not a metric column; choose one of {list(table.metrics)}")

    def true_value(self, arch: Architecture | str) -> float:
        """The searched metric at full fidelity (used for regret and predictor Kendall τ on unseen rows)."""
        return float(self.table.metrics[self.metric][self.table.row(str(arch))])

    def evaluate(self, arch: Architecture, fidelity: Mapping[str, float] | None = None) -> Result:
        i = self.table.row(str(arch))
        metrics = {m: float(v[i]) for m, v in self.table.metrics.items()}
        cost = float(self.table.cost[i]) if self.table.cost is not None else 0.0
        fid: dict[str, float] = {}
        epochs = (fidelity or {}).get("epochs")
        levels = self.table.fidelities.get(self.metric)
        if epochs is not None and levels:
            usable = [e for e in levels if e <= epochs] or [min(levels)]
            level = max(usable)
            metrics[self.metric] = float(levels[level][i])
            cost *= level / max(levels)
            fid = {"epochs": level}
        for name, values in self.table.proxies.items():
            metrics.setdefault(f"proxy.{name}", float(values[i]))
        if not np.isfinite(metrics[self.metric]):
            metrics[self.metric] = float("-inf")
        return Result(metrics, cost=cost, fidelity=fid)
