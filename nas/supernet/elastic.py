"""Once-for-All elastic MLP (Cai et al. ICLR 2020): one trained network holds every sub-network of the mlp space.

Layer ``i`` keeps one ``Linear`` of the largest width; a sub-network of width ``w`` uses its first ``w`` units
(elastic width) and of depth ``d`` its first ``d`` layers (elastic depth). Batch and layer norm are sliced the same
way; activation, dropout and residual carry no weights and follow the path. One classifier serves every depth.

Training is progressive shrinking (OFA §3.2): first the largest network only, then smaller depths are allowed
stage by stage, then smaller widths stage by stage; before each width stage the hidden units are re-sorted by
importance (L1 norm of their incoming weights) so that narrow sub-networks keep the most important ones. Each step
trains ``paths_per_step`` sub-networks sampled from what the stage allows and updates once (OFA samples several
sub-networks per step). Optional in-place distillation from the largest network (``kd_weight``).

After training, :func:`pick_for_latency` serves a latency budget: sub-networks ranked by validation accuracy with
inherited weights (BN recalibrated), walked best-first, each extracted as an ordinary
:class:`~nas.spaces.mlp.MLPNetwork` and timed with :func:`nas.trainer.measure_latency_ms`, until one meets the
budget — so one training serves any number of budgets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas.data import TaskData
from nas.spaces.base import Architecture, SearchSpace
from nas.spaces.mlp import ACTIVATIONS, MLPConfig, MLPNetwork
from nas.supernet.spos import SPOSConfig, resolve_device, train_supernet


@dataclass(frozen=True)
class ElasticConfig:
    """Progressive shrinking: ``full_epochs`` on the largest network, then ``depth_epochs`` spread over the depth
    stages, then ``width_epochs`` over the width stages. ``spos`` holds the optimiser, batch, BN-calibration,
    seed and device settings (its ``epochs`` is ignored: the phases set the total)."""

    full_epochs: int = 6
    depth_epochs: int = 6
    width_epochs: int = 12
    paths_per_step: int = 2
    kd_weight: float = 0.0
    spos: SPOSConfig = field(default_factory=lambda: SPOSConfig(lr=0.05, sampling="uniform"))

    def __post_init__(self) -> None:
        for name in ("full_epochs", "depth_epochs", "width_epochs"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.full_epochs + self.depth_epochs + self.width_epochs < 1:
            raise ValueError("the phases need at least one epoch in total")
        if self.paths_per_step < 1:
            raise ValueError(f"paths_per_step must be >= 1, got {self.paths_per_step}")
        if self.kd_weight < 0:
            raise ValueError(f"kd_weight must be >= 0, got {self.kd_weight}")

    @property
    def epochs(self) -> int:
        return self.full_epochs + self.depth_epochs + self.width_epochs


class DynamicBatchNorm1d(nn.BatchNorm1d):
    """Batch norm over the first ``x.shape[1]`` features of a max-width layer (running statistics sliced too)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.shape[1]
        factor = 0.0
        if self.training:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else float(self.momentum)
        # Slices of the buffers are views: the running statistics of the first w units update in place.
        return F.batch_norm(x, self.running_mean[:w], self.running_var[:w], self.weight[:w], self.bias[:w],
                            self.training, factor, self.eps)


class ElasticMLP(nn.Module):
    """Every network of an :class:`~nas.spaces.mlp.MLPSpace` as a path (an :class:`MLPConfig`) through one set
    of weights."""

    def __init__(self, space: SearchSpace, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.space = space
        self.widths = tuple(sorted(space.widths))
        self.max_width = self.widths[-1]
        self.max_depth = space.max_depth
        self.in_features, self.num_classes = in_features, num_classes
        self.linears = nn.ModuleList(
            nn.Linear(in_features if i == 0 else self.max_width, self.max_width) for i in range(self.max_depth)
        )
        self.batch_norms = nn.ModuleList(DynamicBatchNorm1d(self.max_width) for _ in range(self.max_depth))
        self.ln_weight = nn.Parameter(torch.ones(self.max_depth, self.max_width))
        self.ln_bias = nn.Parameter(torch.zeros(self.max_depth, self.max_width))
        self.classifier = nn.Linear(self.max_width, num_classes)

    # -- paths ---------------------------------------------------------------------------------------------------
    def largest(self, like: MLPConfig) -> MLPConfig:
        return MLPConfig((self.max_width,) * self.max_depth, like.act, like.norm, like.dropout, like.residual)

    def sample_path(self, rng: np.random.Generator, depths: Sequence[int], widths: Sequence[int]) -> MLPConfig:
        """A sub-network with a depth from ``depths``, widths from ``widths`` and uniform categorical choices."""
        s = self.space
        depth = int(depths[int(rng.integers(len(depths)))])
        return MLPConfig(
            tuple(int(widths[int(rng.integers(len(widths)))]) for _ in range(depth)),
            s.activations[int(rng.integers(len(s.activations)))], s.norms[int(rng.integers(len(s.norms)))],
            s.dropouts[int(rng.integers(len(s.dropouts)))], bool(rng.integers(2)),
        )

    def sample_paths(self, rng: np.random.Generator, fair: bool) -> list[MLPConfig]:
        """One uniform path over the whole space (``fair`` has no exact meaning for elastic widths: ignored)."""
        return [self.sample_path(rng, range(1, self.max_depth + 1), self.widths)]

    # -- forward -------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, path: MLPConfig) -> torch.Tensor:
        h = x.flatten(1)
        act = ACTIVATIONS[path.act]()
        for i, w in enumerate(path.widths):
            lin = self.linears[i]
            out = F.linear(h, lin.weight[:w, : h.shape[1]], lin.bias[:w])
            if path.norm == "batch":
                out = self.batch_norms[i](out)
            elif path.norm == "layer":
                out = F.layer_norm(out, (w,), self.ln_weight[i, :w], self.ln_bias[i, :w])
            out = act(out)
            if path.dropout > 0:
                out = F.dropout(out, path.dropout, self.training)
            h = out + h if path.residual and h.shape[1] == w else out
        return F.linear(h, self.classifier.weight[:, : h.shape[1]], self.classifier.bias)

    # -- progressive shrinking -----------------------------------------------------------------------------------
    @torch.no_grad()
    def sort_units(self) -> None:
        """Re-order the hidden units of every layer by importance, most important first (OFA's channel sorting).

        One permutation serves all hidden layers (importance summed over layers), so residual links and the shared
        classifier still line up unit by unit; the first layer's inputs are raw features and are not permuted.
        """
        importance = sum(lin.weight.abs().sum(1) for lin in self.linears)
        order = torch.argsort(importance, descending=True)
        for i, lin in enumerate(self.linears):
            lin.weight.copy_(lin.weight[order][:, order] if i > 0 else lin.weight[order])
            lin.bias.copy_(lin.bias[order])
            bn = self.batch_norms[i]
            for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                t.copy_(t[order])
        self.ln_weight.copy_(self.ln_weight[:, order])
        self.ln_bias.copy_(self.ln_bias[:, order])
        self.classifier.weight.copy_(self.classifier.weight[:, order])

    # -- hand-off ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, path: MLPConfig) -> MLPNetwork:
        """An ordinary ``MLPNetwork`` of ``path`` holding the inherited weights (and BN statistics)."""
        net = MLPNetwork(path, self.in_features, self.num_classes)
        width = self.in_features
        for i, (layer, w) in enumerate(zip(net.hidden, path.widths, strict=True)):
            linear = layer.body[0]
            linear.weight.copy_(self.linears[i].weight[:w, :width])
            linear.bias.copy_(self.linears[i].bias[:w])
            if path.norm == "batch":
                bn, src = layer.body[1], self.batch_norms[i]
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(bn, name).copy_(getattr(src, name)[:w])
            elif path.norm == "layer":
                layer.body[1].weight.copy_(self.ln_weight[i, :w])
                layer.body[1].bias.copy_(self.ln_bias[i, :w])
            width = w
        net.classifier.weight.copy_(self.classifier.weight[:, :width])
        net.classifier.bias.copy_(self.classifier.bias)
        return net


def shrinking_schedule(config: ElasticConfig, max_depth: int, widths: Sequence[int]) -> list[tuple[str, tuple, tuple]]:
    """Per epoch (index 0 = epoch 1): ``(phase, allowed depths, allowed widths)``, the OFA order."""
    widths = tuple(sorted(widths))
    out: list[tuple[str, tuple, tuple]] = [("full", (max_depth,), (widths[-1],))] * config.full_epochs
    depth_stages = [tuple(range(max_depth, max_depth - k - 1, -1)) for k in range(1, max_depth)] or [(max_depth,)]
    for e in range(config.depth_epochs):
        out.append(("depth", depth_stages[e * len(depth_stages) // config.depth_epochs], (widths[-1],)))
    all_depths = tuple(range(1, max_depth + 1))
    width_stages = [widths[-k - 1:] for k in range(1, len(widths))] or [widths]
    for e in range(config.width_epochs):
        out.append(("width", all_depths, width_stages[e * len(width_stages) // config.width_epochs]))
    return out


class OnceForAll:
    """An :class:`ElasticMLP` on ``data`` with its progressive-shrinking trainer."""

    def __init__(self, data: TaskData, space: SearchSpace, config: ElasticConfig | None = None) -> None:
        if space.name != "mlp":
            raise ValueError(f"the elastic network is built for the mlp space, got {space.name!r}")
        self.data, self.space = data, space
        self.config = config or ElasticConfig()
        self.device = resolve_device(self.config.spos.device)
        torch.manual_seed(self.config.spos.seed)
        self.net = ElasticMLP(space, int(np.prod(data.input_shape)), data.num_classes).to(self.device)
        self.schedule = shrinking_schedule(self.config, space.max_depth, space.widths)
        self.history: list[dict[str, float]] = []

    def path_of(self, arch: Architecture) -> MLPConfig:
        return self.space.parse(arch.string)

    def fit(self, on_epoch: Callable[[dict[str, float]], None] | None = None) -> list[dict[str, float]]:
        cfg = self.config
        spos = SPOSConfig(**{**cfg.spos.__dict__, "epochs": cfg.epochs})
        sorted_at = {i + 1 for i, (phase, _, widths) in enumerate(self.schedule)
                     if phase == "width" and (i == 0 or self.schedule[i - 1][2] != widths)}

        def sampler(epoch: int, rng: np.random.Generator) -> list[MLPConfig]:
            _, depths, widths = self.schedule[epoch - 1]
            return [self.net.sample_path(rng, depths, widths) for _ in range(cfg.paths_per_step)]

        def before(epoch: int) -> None:
            if epoch in sorted_at:
                self.net.sort_units()

        def teacher(_epoch: int) -> MLPConfig:
            s = self.space
            return self.net.largest(MLPConfig((), s.activations[0], s.norms[0], 0.0, False))

        def log(row: dict[str, float]) -> None:
            phase = self.schedule[int(row["epoch"]) - 1][0]
            row["phase"] = float(("full", "depth", "width").index(phase))
            if on_epoch is not None:
                on_epoch(row)

        rows = train_supernet(self.net, self.data, spos, sampler=sampler, before_epoch=before,
                              teacher=teacher, kd_weight=cfg.kd_weight, on_epoch=log)
        self.history.extend(rows)
        return rows


@dataclass
class LatencyPick:
    """The sub-network chosen for a budget, what it scored, and how much was looked at to find it."""

    arch: Architecture
    val_accuracy: float
    latency_ms: float
    module: nn.Module
    ranked: int
    timed: int


def pick_for_latency(
    evaluator,
    max_latency_ms: float,
    *,
    candidates: Sequence[Architecture] | None = None,
    n_candidates: int = 300,
    seed: int = 0,
    latency_fn: Callable[[nn.Module], float] | None = None,
    cache: dict | None = None,
) -> LatencyPick:
    """The most accurate sub-network (by the evaluator's metric) whose extracted module meets ``max_latency_ms``.

    ``evaluator`` is a fitted :class:`~nas.supernet.evaluator.SupernetEvaluator`; ``candidates`` default to
    ``n_candidates`` seeded unique samples of its space. ``latency_fn(module)`` defaults to
    :func:`nas.trainer.measure_latency_ms` on the real extracted module (pass a deterministic proxy in tests).
    ``cache`` (a dict kept by the caller) carries rankings and latencies across budgets, so serving several budgets
    costs one ranking. Raises ``ValueError`` naming the fastest candidate when none meets the budget.
    """
    if not max_latency_ms > 0:
        raise ValueError(f"max_latency_ms must be > 0, got {max_latency_ms}")
    from nas.trainer import measure_latency_ms

    space = evaluator.space
    measure = latency_fn or (lambda m: measure_latency_ms(m, evaluator.data.input_shape, repeats=20))
    cache = cache if cache is not None else {}
    if "ranked" not in cache:
        pool = list(candidates) if candidates is not None else space.sample_many(
            n_candidates, np.random.default_rng(seed))
        cache["ranked"] = evaluator.rank(pool)
        cache["latency"] = {}
    ranked, latency = cache["ranked"], cache["latency"]
    timed_before = len(latency)
    for arch, result in ranked:
        if arch.string not in latency:
            latency[arch.string] = float(measure(evaluator.extract(arch)))
        if latency[arch.string] <= max_latency_ms:
            return LatencyPick(arch, result.metrics["val_accuracy"], latency[arch.string], evaluator.extract(arch),
                               len(ranked), len(latency) - timed_before)
    fastest = min(latency.items(), key=lambda kv: kv[1])
    raise ValueError(
        f"no sub-network among {len(ranked)} candidates meets max_latency_ms={max_latency_ms:g}; the fastest is "
        f"{fastest[0]} at {fastest[1]:.3f} ms — raise the budget"
    )
