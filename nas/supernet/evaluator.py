"""The supernet as an ``Evaluator`` (fidelity ``supernet``): rank any sub-network with inherited weights.

Train once (:meth:`SupernetEvaluator.fit`), then every :meth:`~SupernetEvaluator.evaluate` recalibrates batch norm
for that sub-network on a fixed set of training batches and measures validation accuracy and loss — milliseconds
instead of a training run, so random search, evolution or the predictor strategy can search on it unchanged
(Guo et al. 2020 search with evolution on exactly this kind of evaluator).

``nb201`` uses :class:`~nas.supernet.cell.NB201Supernet` trained by single-path sampling with strict fairness;
``mlp`` uses the Once-for-All elastic network (:class:`~nas.supernet.elastic.OnceForAll`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from nas.data import TaskData
from nas.evaluators import Result
from nas.spaces.base import Architecture, SearchSpace
from nas.supernet.spos import SPOSConfig, accuracy_and_loss, calibration_batches, recalibrate_bn, resolve_device

SUPPORTED_SPACES = ("nb201", "mlp")
METRICS = ("val_accuracy", "neg_val_loss")


class SupernetEvaluator:
    """``evaluate(arch, fidelity) -> Result`` from one trained supernet of ``space`` on ``data``.

    ``config`` is an :class:`~nas.supernet.spos.SPOSConfig` (nb201) or an
    :class:`~nas.supernet.elastic.ElasticConfig` (mlp); ``None`` takes the defaults. ``metric`` is what strategies
    maximise: ``val_accuracy`` or ``neg_val_loss`` (finer-grained on a small validation split). Reported metrics:
    ``val_accuracy``, ``val_loss``, ``neg_val_loss``, ``params`` (of the stand-alone network) and, with
    ``measure_latency``, ``latency_ms`` of the extracted stand-alone network. Thread-safe (evaluations are
    serialised: recalibration writes the shared batch-norm buffers).
    """

    FIDELITY_KEYS = ("supernet", "calib_batches")

    def __init__(
        self,
        data: TaskData,
        space: SearchSpace,
        config: Any = None,
        *,
        metric: str = "val_accuracy",
        measure_latency: bool = False,
        latency_repeats: int = 20,
    ) -> None:
        if space.name not in SUPPORTED_SPACES:
            raise ValueError(
                f"the supernet evaluator supports the spaces {', '.join(SUPPORTED_SPACES)}, got {space.name!r}"
            )
        problem = space.supports_input(data.input_shape)
        if problem is not None:
            raise ValueError(problem)
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        self.data, self.space, self.metric = data, space, metric
        self.measure_latency, self.latency_repeats = measure_latency, latency_repeats
        self._lock = threading.Lock()
        self._params: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.fit_seconds = 0.0
        self.fitted = False
        if space.name == "nb201":
            from nas.supernet.cell import NB201Supernet

            self.config = config if config is not None else SPOSConfig()
            if not isinstance(self.config, SPOSConfig):
                raise TypeError(f"an nb201 supernet takes an SPOSConfig, got {type(self.config).__name__}")
            self.device = resolve_device(self.config.device)
            torch.manual_seed(self.config.seed)
            self.net: nn.Module = NB201Supernet(
                space.C, space.N, int(data.input_shape[0]), data.num_classes
            ).to(self.device)
            self._ofa = None
        else:
            from nas.supernet.elastic import ElasticConfig, OnceForAll

            self.config = config if config is not None else ElasticConfig()
            if not isinstance(self.config, ElasticConfig):
                raise TypeError(f"an mlp supernet takes an ElasticConfig, got {type(self.config).__name__}")
            self._ofa = OnceForAll(data, space, self.config)
            self.device = self._ofa.device
            self.net = self._ofa.net
        self._calib = calibration_batches(data, self._spos_config(), self.device)
        x_val, y_val = data.tensors("val")
        self._val = (x_val.to(self.device), y_val.to(self.device))

    def _spos_config(self) -> SPOSConfig:
        return self.config if isinstance(self.config, SPOSConfig) else self.config.spos

    # -- training -----------------------------------------------------------------------------------------------
    def fit(self, on_epoch: Callable[[dict[str, float]], None] | None = None) -> SupernetEvaluator:
        """Train the supernet; a second call runs one more schedule on the trained weights. Returns ``self``."""
        from nas.supernet.spos import train_supernet

        start = time.perf_counter()
        with self._lock:
            if self._ofa is not None:
                rows = self._ofa.fit(on_epoch=on_epoch)
            else:
                rows = train_supernet(self.net, self.data, self.config, on_epoch=on_epoch)
        self.history.extend(rows)
        self.fit_seconds += time.perf_counter() - start
        self.fitted = True
        return self

    # -- evaluation ---------------------------------------------------------------------------------------------
    def path_of(self, arch: Architecture) -> Any:
        """The supernet path of ``arch`` (checks that ``arch`` belongs to this evaluator's space)."""
        if arch.space != self.space:
            raise ValueError(
                f"architecture of space {arch.space.name} {arch.space.config()} given to a supernet of "
                f"{self.space.name} {self.space.config()}"
            )
        if self._ofa is not None:
            return self._ofa.path_of(arch)
        return self.net.path_of(self.space.to_ops(arch))

    def _forward(self, path: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda xb: self.net(xb, path=path)

    def resolve(self, fidelity: Mapping[str, float] | None) -> dict[str, float]:
        fid = {"supernet": 1.0, "calib_batches": float(len(self._calib))}
        for key, value in (fidelity or {}).items():
            if key not in self.FIDELITY_KEYS:
                raise ValueError(
                    f"unknown fidelity key {key!r} for the supernet evaluator; use {', '.join(self.FIDELITY_KEYS)} "
                    "(epochs/data_fraction belong to TrainingEvaluator)"
                )
            fid[key] = float(value)
        if not 1 <= fid["calib_batches"] <= len(self._calib):
            raise ValueError(f"calib_batches must be 1..{len(self._calib)}, got {fid['calib_batches']:g}")
        return fid

    def evaluate(self, arch: Architecture, fidelity: Mapping[str, float] | None = None) -> Result:
        """Recalibrate BN for ``arch``'s path and score it on the validation split with inherited weights."""
        if not self.fitted:
            raise RuntimeError("call SupernetEvaluator.fit() before evaluate()")
        fid = self.resolve(fidelity)
        path = self.path_of(arch)
        start = time.perf_counter()
        with self._lock:
            recalibrate_bn(self.net, self._forward(path), self._calib[: int(fid["calib_batches"])])
            accuracy, loss = accuracy_and_loss(self._forward(path), *self._val)
            metrics = {"val_accuracy": float(accuracy), "val_loss": float(loss), "neg_val_loss": -float(loss)}
            if self.measure_latency:
                from nas.trainer import measure_latency_ms

                module = self._extract_locked(arch)
                metrics["latency_ms"] = measure_latency_ms(module, self.data.input_shape,
                                                           repeats=self.latency_repeats)
        metrics["params"] = self._param_count(arch)
        return Result(metrics, cost=time.perf_counter() - start, fidelity=fid)

    def rank(self, archs: Iterable[Architecture]) -> list[tuple[Architecture, Result]]:
        """Every architecture evaluated, best first by :attr:`metric`."""
        scored = [(a, self.evaluate(a)) for a in archs]
        return sorted(scored, key=lambda t: -t[1].metrics[self.metric])

    def _param_count(self, arch: Architecture) -> float:
        if arch.string not in self._params:
            if self._ofa is None:  # counted from the supernet's own tensors: no network is built
                count = self.net.path_param_count(self.path_of(arch))
            else:
                count = self.space.count_params(arch, self.data.num_classes, self.data.input_shape)
            self._params[arch.string] = float(count)
        return self._params[arch.string]

    # -- hand-off -----------------------------------------------------------------------------------------------
    def extract(self, arch: Architecture) -> nn.Module:
        """The stand-alone network of ``arch`` (the space's own module) with inherited, recalibrated weights, on
        the CPU: a warm start for retraining, or the real module to time."""
        with self._lock:
            return self._extract_locked(arch)

    def _extract_locked(self, arch: Architecture) -> nn.Module:
        path = self.path_of(arch)
        recalibrate_bn(self.net, self._forward(path), self._calib)
        if self._ofa is not None:
            module = self._ofa.net.extract(path)
        else:
            module = self.net.extract(self.space.to_ops(arch))
        return module.cpu().eval()
