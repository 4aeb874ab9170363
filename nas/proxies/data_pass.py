"""The shared data pass: one forward over the labelled batch serves eight proxies.

From a single forward in proxy mode (batch-norm on batch statistics, dropout off) it records, for whichever of
its proxies were asked for:

- loss gradients of the weight tensors (snip, grad_norm, plain, zico) and of every conv/linear output (fisher).
  ZiCo needs gradients of several mini-batches, so the batch's loss is split into ``ZICO_SPLITS`` chunks, each
  differentiated on its own; the full-batch gradient is their size-weighted sum, so the other proxies still see
  exactly d(mean CE)/dθ. Without zico a single backward is done.
- the input Jacobian d(Σ logits)/dx, one row per input (jacob_cov, epe_nas);
- the NASWOT kernel of binary activation codes (nwot).

Hooks are removed and the graph freed before the record is returned, so memory stays flat over thousands of
networks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from nas.proxies.context import (
    ACTIVATIONS,
    FEATURE_LAYERS,
    ScoringContext,
    forward_input,
    hooks_removed_after,
    proxy_mode,
    weight_params,
)
from nas.proxies.registry import register_family

ZICO_SPLITS = 2
"""Mini-batches whose gradient statistics ZiCo compares (Li et al. 2023 use two batches)."""

WEIGHT_GRAD_PROXIES = frozenset({"snip", "grad_norm", "plain", "fisher", "zico"})
JACOBIAN_PROXIES = frozenset({"jacob_cov", "epe_nas"})


@dataclass
class DataRecord:
    """What the data pass measured (detached, float64)."""

    labels: torch.Tensor
    weights: list[torch.Tensor] = field(default_factory=list)
    grads: list[torch.Tensor] = field(default_factory=list)  # full-batch d(mean CE)/dW
    chunk_grads: list[torch.Tensor] = field(default_factory=list)  # per weight: (splits, *shape)
    activations: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (a, dL/da), channels dim 1
    jacobian: torch.Tensor | None = None  # (N, D)
    naswot_kernel: torch.Tensor | None = None  # (N, N)

    @property
    def grads_all_zero(self) -> bool:
        return all(not bool(g.any()) for g in self.grads)


def _channels_first(t: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Conv outputs already have channels at dim 1; linear outputs have features last."""
    if isinstance(module, nn.Linear) and t.dim() > 2:
        return t.movedim(-1, 1)
    return t


CLASS_PROXIES: tuple[str, ...] = ("epe_nas",)
"""Proxies that group the batch by class label: undefined for a regression target (the refresh skips them)."""


def task_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The training loss the gradient proxies differentiate: cross-entropy for class labels, and for a regression
    (a float target, one output) the mean squared error the network is trained with — never floats fed to a
    cross-entropy."""
    if y.is_floating_point():
        return F.mse_loss(logits.reshape(-1).double(), y.double())
    return F.cross_entropy(logits, y)


@register_family("data")
def run_data_pass(model: nn.Module, ctx: ScoringContext, names: set[str]) -> DataRecord:
    x, y = ctx.require_batch(sorted(names)[0])
    model = proxy_mode(model)
    x = forward_input(x, model)
    n = len(x)
    want_grads = bool(names & WEIGHT_GRAD_PROXIES)
    want_jacobian = bool(names & JACOBIAN_PROXIES)
    if want_jacobian:
        x = x.clone().requires_grad_(True)
    record = DataRecord(labels=y.clone())
    kernel = torch.zeros((n, n), dtype=torch.float64)
    outputs: list[tuple[torch.Tensor, nn.Module]] = []

    def add_codes(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        codes = (args[0].detach().reshape(n, -1) > 0).double()
        kernel.add_(codes @ codes.T).add_((1 - codes) @ (1 - codes).T)

    def keep_output(module: nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor:
        outputs.append((out, module))
        return out.clone()  # downstream in-place ops (ReLU(inplace=True)) must not overwrite what we keep

    with hooks_removed_after() as handles, torch.set_grad_enabled(want_grads or want_jacobian):
        if "nwot" in names:
            activations = [m for m in model.modules() if isinstance(m, ACTIVATIONS)]
            if activations:
                handles += [m.register_forward_pre_hook(add_codes) for m in activations]
            else:  # no activation modules (functional ReLU): code the conv/linear outputs' signs instead
                handles += [
                    m.register_forward_hook(lambda mod, a, out: add_codes(mod, (out,)))
                    for m in model.modules()
                    if isinstance(m, FEATURE_LAYERS)
                ]
        if "fisher" in names:
            handles += [m.register_forward_hook(keep_output) for m in model.modules() if isinstance(m, FEATURE_LAYERS)]
        logits = model(x)

    if "nwot" in names:
        record.naswot_kernel = kernel
    if want_grads:
        weights = weight_params(model)
        acts = [a for a, _ in outputs]
        targets = weights + acts
        splits = ZICO_SPLITS if "zico" in names and n >= ZICO_SPLITS else 1
        full = [torch.zeros_like(t, dtype=torch.float64) for t in targets]
        chunked: list[list[torch.Tensor]] = [[] for _ in weights]
        for idx in torch.arange(n).tensor_split(splits):
            loss = task_loss(logits[idx], y[idx])
            grads = torch.autograd.grad(loss, targets, retain_graph=True, allow_unused=True)
            for i, (t, g) in enumerate(zip(targets, grads, strict=True)):
                g = torch.zeros_like(t, dtype=torch.float64) if g is None else g.detach().double()
                full[i].add_(g, alpha=len(idx) / n)
                if splits > 1 and i < len(weights):
                    chunked[i].append(g)
        record.weights = [w.detach().double() for w in weights]
        record.grads = full[: len(weights)]
        if splits > 1:
            record.chunk_grads = [torch.stack(gs) for gs in chunked]
        record.activations = [
            (_channels_first(a.detach().double(), m), _channels_first(g, m))
            for (a, m), g in zip(outputs, full[len(weights) :], strict=True)
        ]
    if want_jacobian:
        (jac,) = torch.autograd.grad(logits.sum(), x, allow_unused=True)
        jac = torch.zeros_like(x) if jac is None else jac
        record.jacobian = jac.detach().double().reshape(n, -1)
    del logits
    return record
