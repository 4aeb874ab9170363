"""Single-path one-shot training (SPOS, Guo et al. ECCV 2020) and batch-norm recalibration.

Each step trains one uniformly sampled path of the supernet, so every sub-network's weights are trained as part of
all the others. With ``sampling="fair"`` each step instead trains as many paths as an edge has operations, chosen so
that every operation of every edge is trained exactly once, and updates once from the summed gradients (the strict
fairness of FairNAS, Chu et al. ICCV 2021), which removes the bias of uneven sampling early in training.

During training a batch-norm layer sees the statistics of whichever path ran, so its running statistics are a mix
of all paths and wrong for any one of them. :func:`recalibrate_bn` recomputes them for one sub-network on a few
training batches before it is evaluated (SPOS §3.3; also Once-for-All's ``set_running_statistics``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nas.data import TaskData

SAMPLINGS = ("uniform", "fair")


class WeightSharingNet(Protocol):
    """What the training loop needs of a supernet: a path sampler and ``forward(x, path=...)``."""

    def sample_paths(self, rng: np.random.Generator, fair: bool) -> list[Any]: ...

    def __call__(self, x: torch.Tensor, path: Any = ...) -> torch.Tensor: ...


@dataclass(frozen=True)
class SPOSConfig:
    """How to train a supernet. ``calib_batches`` x ``calib_batch_size`` training rows recalibrate BN per path.

    The default of 4 epochs is measured, not guessed: on the digits ground truth (2-epoch stand-alone training) the
    supernet's ranking agrees best after 3-6 epochs (Kendall 0.39) and worse after 10-20 (0.27-0.34), see
    ``docs/weight-sharing.md``."""

    epochs: int = 4
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float = 5.0
    sampling: str = "fair"
    calib_batches: int = 1
    calib_batch_size: int = 256
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "calib_batches", "calib_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}")
        if not (self.device == "cpu" or self.device.startswith(("cuda", "mps"))):
            raise ValueError(f"device must be 'cpu', 'cuda[:N]' or 'mps', got {self.device!r}")


def resolve_device(device: str) -> torch.device:
    """``torch.device(device)``; asking for a GPU that is absent is a ``ValueError`` saying so."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but torch sees no CUDA GPU; use device='cpu'")
    return torch.device(device)


def calibration_batches(data: TaskData, config: SPOSConfig, device: torch.device) -> list[torch.Tensor]:
    """A fixed, seeded set of training batches: every sub-network is recalibrated on the same images."""
    x, _ = data.tensors("train")
    gen = torch.Generator().manual_seed(config.seed + 1)
    idx = torch.randperm(len(x), generator=gen)[: config.calib_batches * config.calib_batch_size]
    return [x[idx[i : i + config.calib_batch_size]].to(device) for i in range(0, len(idx), config.calib_batch_size)]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor],
                   batches: Sequence[torch.Tensor]) -> None:
    """Reset every batch-norm layer's running statistics and re-estimate them as the exact average over
    ``batches`` (``momentum=None``) with ``forward``; dropout stays off so the statistics are the eval-time ones.
    The model is left in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    for xb in batches:
        forward(xb)
    for m, momentum in zip(bns, saved, strict=True):
        m.momentum = momentum
    model.eval()


@torch.no_grad()
def accuracy_and_loss(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                      batch_size: int = 1024) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of ``forward`` on ``(x, y)``."""
    correct, total = 0, 0.0
    for i in range(0, len(x), batch_size):
        logits = forward(x[i : i + batch_size])
        yb = y[i : i + batch_size]
        total += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    n = max(len(x), 1)
    return correct / n, total / n


def train_supernet(
    net: nn.Module,
    data: TaskData,
    config: SPOSConfig,
    *,
    sampler: Callable[[int, np.random.Generator], list[Any]] | None = None,
    before_epoch: Callable[[int], None] | None = None,
    teacher: Callable[[int], Any] | None = None,
    kd_weight: float = 0.0,
    probe: Sequence[Any] = (),
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``net`` (already on the device) by path sampling; one history row per epoch.

    ``sampler(epoch, rng)`` overrides the paths trained per step (default: ``net.sample_paths`` with the configured
    fairness); ``before_epoch(epoch)`` runs first each epoch (progressive shrinking re-sorts channels there);
    ``teacher(epoch)`` names a path whose soft labels each sampled path also learns, weighted by ``kd_weight``
    (in-place distillation, Yu et al. 2020, BigNAS). ``probe`` paths are recalibrated and scored on the
    validation split after every epoch (their mean is the ``probe_val_accuracy`` curve).
    """
    device = next(net.parameters()).device
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    x, y = data.tensors("train")
    x, y = x.to(device), y.to(device)
    x_val, y_val = (t.to(device) for t in data.tensors("val"))
    calib = calibration_batches(data, config, device)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                          nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
    fair = config.sampling == "fair"
    draw = sampler or (lambda _epoch, r: net.sample_paths(r, fair))
    gen = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        if before_epoch is not None:
            before_epoch(epoch)
        net.train()
        perm = torch.randperm(len(x), generator=gen).to(device)
        seen, loss_sum, correct, paths_trained = 0, 0.0, 0, 0
        teacher_path = teacher(epoch) if teacher is not None and kd_weight > 0 else None
        for i in range(0, len(x), config.batch_size):
            idx = perm[i : i + config.batch_size]
            if len(idx) < 2:  # a batch of one breaks batch norm
                continue
            xb, yb = x[idx], y[idx]
            paths = draw(epoch, rng)
            opt.zero_grad(set_to_none=True)
            soft = None
            if teacher_path is not None:
                with torch.no_grad():
                    soft = torch.softmax(net(xb, path=teacher_path), dim=1)
            for path in paths:
                logits = net(xb, path=path)
                loss = nn.functional.cross_entropy(logits, yb)
                if soft is not None:
                    kd = nn.functional.kl_div(torch.log_softmax(logits, dim=1), soft, reduction="batchmean")
                    loss = loss + kd_weight * kd
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"supernet training diverged at epoch {epoch}; lower the lr")
                loss.backward()
                loss_sum += float(loss.detach()) * len(idx)
                correct += int((logits.argmax(1) == yb).sum())
                seen += len(idx)
                paths_trained += 1
            nn.utils.clip_grad_norm_(params, config.grad_clip)
            opt.step()
        sched.step()
        row = {"epoch": float(epoch), "train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
               "lr": float(sched.get_last_lr()[0]), "paths": float(paths_trained),
               "seconds": time.perf_counter() - start}
        if probe:
            scores = []
            for path in probe:
                recalibrate_bn(net, lambda xb, p=path: net(xb, path=p), calib)
                scores.append(accuracy_and_loss(lambda xb, p=path: net(xb, path=p), x_val, y_val)[0])
            row["probe_val_accuracy"] = float(np.mean(scores))
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
    net.eval()
    return history
