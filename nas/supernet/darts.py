"""DARTS (Liu et al. ICLR 2019) on the NAS-Bench-201 cell, with guards against its collapse.

Continuous relaxation: every edge outputs ``sum_k softmax(alpha_e)_k * op_k(x)`` over its candidates, with one
``(6, 5)`` matrix ``alpha`` shared by every cell position (as NAS-Bench-201 runs DARTS). Network weights ``w`` are
trained on the training split and ``alpha`` on the validation split, alternately, step by step:

- first order: ``alpha`` follows ``grad_alpha L_val(w, alpha)``;
- second order (DARTS eq. 7-8): ``alpha`` follows the gradient at the virtually stepped weights
  ``w' = w - xi * grad_w L_train(w, alpha)``, minus ``xi`` times the Hessian-vector product, the latter by central
  finite differences with ``eps = 0.01 / ||grad_w' L_val||``.

Discretisation keeps the strongest operation of each edge, excluding ``none`` (DARTS §2.4). DARTS is known to
collapse onto parameter-free operations (skip connections) as search goes on (Zela et al. 2020; Liang et al. 2019).
Two guards, both on by default:

- ``max_skip`` — the early stop of DARTS+ (Liang et al. 2019): stop the search as soon as the discretised cell holds
  ``max_skip`` or more skip connections, and keep the last cell before that happened. The rule is checked from
  epoch ``early_stop_from`` on (our addition): while ``alpha`` is still near its uniform start the argmax is close
  to random, and 2 of 6 random edges are skip connections about half the time;
- ``selection="pt"`` — perturbation-based selection of DARTS-PT (Wang et al. ICLR 2021): edge by edge, in a random
  order, remove each candidate in turn from the trained supernet, keep the one whose removal costs the most
  validation accuracy (ties broken by validation loss), fix that edge, and fine-tune the weights for a few steps
  before the next edge. ``alpha`` magnitudes, which need not reflect an operation's contribution, are not used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.data import TaskData
from nas.spaces.base import Architecture, SearchSpace
from nas.spaces.nb201 import EDGES, OPS
from nas.supernet.cell import NB201Supernet
from nas.supernet.spos import accuracy_and_loss, resolve_device

ORDERS = ("first", "second")
SELECTIONS = ("argmax", "pt")


@dataclass(frozen=True)
class DartsConfig:
    """DARTS settings; the defaults are the paper's optimisers, with an ``arch_lr`` raised for small datasets
    (digits gives ~17 steps per epoch where CIFAR gives ~390)."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float = 3e-3
    arch_weight_decay: float = 1e-3
    order: str = "first"
    selection: str = "pt"
    max_skip: int | None = 2
    early_stop_from: int = 5
    pt_finetune_steps: int = 10
    affine: bool = False
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {self.order!r}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if self.max_skip is not None and not 1 <= self.max_skip <= len(EDGES):
            raise ValueError(f"max_skip must be 1..{len(EDGES)} or None (no early stop), got {self.max_skip}")
        if not (self.lr > 0 and self.arch_lr > 0):
            raise ValueError(f"lr and arch_lr must be > 0, got {self.lr}, {self.arch_lr}")
        if self.early_stop_from < 1:
            raise ValueError(f"early_stop_from must be >= 1, got {self.early_stop_from}")
        if self.pt_finetune_steps < 0:
            raise ValueError(f"pt_finetune_steps must be >= 0, got {self.pt_finetune_steps}")


@dataclass
class DartsResult:
    """The discretised cell, how the search went (one row per epoch) and why it stopped."""

    arch: Architecture
    history: list[dict[str, Any]]
    alphas: np.ndarray
    argmax_arch: Architecture
    stopped_early: bool
    stop_reason: str
    seconds: float
    pt_scores: dict[str, dict[str, float]] = field(default_factory=dict)


def discretize(alphas: torch.Tensor | np.ndarray, ops: tuple[str, ...] = OPS) -> tuple[str, ...]:
    """The strongest operation per edge, ``none`` excluded (DARTS §2.4)."""
    a = np.asarray(alphas.detach().cpu() if isinstance(alphas, torch.Tensor) else alphas, dtype=np.float64)
    live = [k for k, op in enumerate(ops) if op != "none"]
    return tuple(ops[live[int(np.argmax(a[e, live]))]] for e in range(a.shape[0]))


class _Search:
    """State of one DARTS run: network, architecture parameters, optimisers and data on the device."""

    def __init__(self, space: SearchSpace, data: TaskData, config: DartsConfig) -> None:
        self.space, self.data, self.cfg = space, data, config
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        self.net = NB201Supernet(space.C, space.N, int(data.input_shape[0]), data.num_classes,
                                 affine=config.affine).to(self.device)
        self.alpha = nn.Parameter(1e-3 * torch.randn(len(EDGES), len(OPS), device=self.device))
        self.weights = [p for p in self.net.parameters() if p.requires_grad]
        self.w_opt = torch.optim.SGD(self.weights, lr=config.lr, momentum=config.momentum,
                                     weight_decay=config.weight_decay)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, config.epochs, eta_min=config.lr_min)
        self.a_opt = torch.optim.Adam([self.alpha], lr=config.arch_lr, betas=(0.5, 0.999),
                                      weight_decay=config.arch_weight_decay)
        self.x, self.y = (t.to(self.device) for t in data.tensors("train"))
        self.xv, self.yv = (t.to(self.device) for t in data.tensors("val"))
        self.gen = torch.Generator().manual_seed(config.seed)

    def loss(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return nn.functional.cross_entropy(self.net(x, weights=self.mixture(mask)), y)

    def mixture(self, mask: torch.Tensor | None = None) -> torch.Tensor:
        w = torch.softmax(self.alpha, dim=-1)
        return w if mask is None else w * mask

    # -- architecture step ---------------------------------------------------------------------------------------
    def arch_step(self, xt, yt, xv, yv) -> None:
        self.a_opt.zero_grad(set_to_none=True)
        if self.cfg.order == "first":
            self.loss(xv, yv).backward(inputs=[self.alpha])
        else:
            self._unrolled_grad(xt, yt, xv, yv)
        self.a_opt.step()

    def _unrolled_grad(self, xt, yt, xv, yv) -> None:
        xi = self.w_opt.param_groups[0]["lr"]
        backup = [p.detach().clone() for p in self.weights]
        grads = torch.autograd.grad(self.loss(xt, yt), self.weights, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(self.weights, grads, strict=True):
                if g is not None:
                    p.sub_(xi * (g + self.cfg.weight_decay * p))
        val = self.loss(xv, yv)
        d_alpha, *d_w = torch.autograd.grad(val, [self.alpha, *self.weights], allow_unused=True)
        d_w = [torch.zeros_like(p) if g is None else g for p, g in zip(self.weights, d_w, strict=True)]
        eps = 0.01 / (torch.cat([g.flatten() for g in d_w]).norm() + 1e-12)
        hessian = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for p, b, g in zip(self.weights, backup, d_w, strict=True):
                    p.copy_(b + sign * eps * g)
            hessian.append(torch.autograd.grad(self.loss(xt, yt), self.alpha)[0])
        with torch.no_grad():
            for p, b in zip(self.weights, backup, strict=True):
                p.copy_(b)
        self.alpha.grad = d_alpha - xi * (hessian[0] - hessian[1]) / (2 * eps)

    # -- weight step ---------------------------------------------------------------------------------------------
    def weight_step(self, xb, yb, mask: torch.Tensor | None = None) -> tuple[float, int]:
        self.w_opt.zero_grad(set_to_none=True)
        logits = self.net(xb, weights=self.mixture(mask).detach())
        loss = nn.functional.cross_entropy(logits, yb)
        if not torch.isfinite(loss):
            raise FloatingPointError("DARTS weight training diverged; lower lr")
        loss.backward(inputs=self.weights)
        nn.utils.clip_grad_norm_(self.weights, self.cfg.grad_clip)
        self.w_opt.step()
        return float(loss.detach()), int((logits.argmax(1) == yb).sum())

    def epoch(self) -> tuple[float, float]:
        self.net.train()
        perm = torch.randperm(len(self.x), generator=self.gen).to(self.device)
        vperm = torch.randperm(len(self.xv), generator=self.gen).to(self.device)
        bs = self.cfg.batch_size
        loss_sum, correct, seen = 0.0, 0, 0
        for step, i in enumerate(range(0, len(self.x), bs)):
            idx = perm[i : i + bs]
            if len(idx) < 2:
                continue
            j = (step * bs) % max(len(self.xv) - bs + 1, 1)
            vidx = vperm[j : j + bs]
            xt, yt, xv, yv = self.x[idx], self.y[idx], self.xv[vidx], self.yv[vidx]
            self.arch_step(xt, yt, xv, yv)
            loss, right = self.weight_step(xt, yt)
            loss_sum += loss * len(idx)
            correct += right
            seen += len(idx)
        self.sched.step()
        return loss_sum / max(seen, 1), correct / max(seen, 1)

    def val_score(self, mask: torch.Tensor | None = None) -> tuple[float, float]:
        """Validation accuracy and loss of the (masked) supernet, batch statistics (train-mode BN, no update of
        any weight): after masking, the running statistics belong to a different network."""
        self.net.train()
        with torch.no_grad():
            return accuracy_and_loss(lambda xb: self.net(xb, weights=self.mixture(mask)), self.xv, self.yv)

    # -- DARTS-PT ------------------------------------------------------------------------------------------------
    def perturbation_select(self) -> tuple[tuple[str, ...], dict[str, dict[str, float]]]:
        rng = np.random.default_rng(self.cfg.seed)
        mask = torch.ones(len(EDGES), len(OPS), device=self.device)
        chosen: dict[int, str] = {}
        scores: dict[str, dict[str, float]] = {}
        for e in (int(v) for v in rng.permutation(len(EDGES))):
            trial: dict[str, tuple[float, float]] = {}
            for k, op in enumerate(OPS):
                if op == "none":
                    continue
                m = mask.clone()
                m[e, k] = 0.0
                trial[op] = self.val_score(m)
            best = min(trial, key=lambda o: (trial[o][0], -trial[o][1]))  # removal that hurts most
            chosen[e] = best
            scores[f"{EDGES[e][0]}_{EDGES[e][1]}"] = {op: acc for op, (acc, _) in trial.items()}
            mask[e] = 0.0
            mask[e, OPS.index(best)] = 1.0
            self._finetune(mask)
        return tuple(chosen[e] for e in range(len(EDGES))), scores

    def _finetune(self, mask: torch.Tensor) -> None:
        self.net.train()
        bs = self.cfg.batch_size
        for _ in range(self.cfg.pt_finetune_steps):
            idx = torch.randint(len(self.x), (bs,), generator=self.gen).to(self.device)
            self.weight_step(self.x[idx], self.y[idx], mask)


def darts_search(
    space: SearchSpace,
    data: TaskData,
    config: DartsConfig | None = None,
    *,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> DartsResult:
    """Run DARTS on ``space`` (nb201) and ``data``; the result's ``arch`` is an ordinary nb201 ``Architecture``.

    Each history row (also passed to ``on_epoch``): ``epoch``, ``train_loss``, ``train_accuracy``,
    ``val_accuracy``/``val_loss`` of the relaxed network, ``skip_count`` and ``seconds`` (floats), one float
    ``alpha.<s>_<t>.<op>`` per edge and operation (softmax weights), and ``arch`` (the argmax cell's string).
    """
    if space.name != "nb201":
        raise ValueError(f"DARTS here searches the nb201 cell space, got {space.name!r}")
    problem = space.supports_input(data.input_shape)
    if problem is not None:
        raise ValueError(problem)
    cfg = config or DartsConfig()
    run = _Search(space, data, cfg)
    start = time.perf_counter()
    history: list[dict[str, Any]] = []
    stopped, reason = False, f"ran all {cfg.epochs} epochs"
    kept_alpha = run.alpha.detach().clone()
    for epoch in range(1, cfg.epochs + 1):
        train_loss, train_acc = run.epoch()
        val_acc, val_loss = run.val_score()
        ops = discretize(run.alpha)
        skips = sum(op == "skip_connect" for op in ops)
        probs = torch.softmax(run.alpha.detach(), dim=-1).cpu().numpy()
        row: dict[str, Any] = {"epoch": float(epoch), "train_loss": train_loss, "train_accuracy": train_acc,
                               "val_loss": val_loss, "val_accuracy": val_acc, "skip_count": float(skips),
                               "seconds": time.perf_counter() - start}
        for e, (s, t) in enumerate(EDGES):
            for k, op in enumerate(OPS):
                row[f"alpha.{s}_{t}.{op}"] = float(probs[e, k])
        row["arch"] = space.from_ops(ops).string
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if cfg.max_skip is not None and epoch >= cfg.early_stop_from and skips >= cfg.max_skip:
            stopped = True
            reason = (f"DARTS+ early stop at epoch {epoch}: {skips} skip connections >= max_skip={cfg.max_skip}; "
                      f"kept the architecture weights of epoch {epoch - 1}")
            with torch.no_grad():
                run.alpha.copy_(kept_alpha)
            break
        kept_alpha = run.alpha.detach().clone()
    argmax_arch = space.from_ops(discretize(run.alpha))
    pt_scores: dict[str, dict[str, float]] = {}
    if cfg.selection == "pt":
        ops, pt_scores = run.perturbation_select()
        arch = space.from_ops(ops)
    else:
        arch = argmax_arch
    return DartsResult(arch, history, torch.softmax(run.alpha.detach(), -1).cpu().numpy(), argmax_arch, stopped,
                       reason, time.perf_counter() - start, pt_scores)
