"""Cost proxies: parameter count and FLOPs — the baselines every zero-cost proxy must beat.

Abdelfattah et al. (2021, "Zero-cost proxies for lightweight NAS") report both as surprisingly strong baselines
(Spearman ≈0.75 on NAS-Bench-201 CIFAR-10). They are costs, so they keep their true value even for a network
whose output ignores its input (budgets and pre-filters read them).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nas.proxies.context import ScoringContext, fast_paths_enabled, forward_input
from nas.proxies.registry import register_proxy

# modules whose forward adds nothing to torch.utils.flop_counter's count (it counts matrix products and convolutions)
_UNCOUNTED = (nn.Sequential, nn.BatchNorm1d, nn.LayerNorm, nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Dropout)


def analytic_flops(model: nn.Module) -> float | None:
    """``flops`` in closed form where it is exact, else ``None`` (then the flop counter runs).

    Exact for the ``mlp`` space's networks built only of known parts: each ``nn.Linear`` runs once per input on
    one row, and the flop counter counts it as ``addmm`` = 2·in·out (the bias add, norms, activations, dropout and
    residual adds count nothing). Any other module type in the network, or another network class, returns ``None``.
    ``tests/test_prefilter_fast.py`` pins it equal to the counter on every network of a sampled pool. Running the
    counter was ~3 ms of a small MLP's ~4 ms of cheap proxies.
    """
    from nas.spaces.mlp import MLPNetwork, ResidualLayer

    if type(model) is not MLPNetwork:
        return None
    total = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            total += 2 * module.in_features * module.out_features
        elif type(module) not in (*_UNCOUNTED, MLPNetwork, ResidualLayer):
            return None
    return float(total)


@register_proxy("params", needs_data=False, is_cost=True, paper="Abdelfattah et al. 2021 (baseline)")
def params(model: nn.Module, ctx: ScoringContext) -> float:
    """Number of trainable parameters."""
    return float(sum(p.numel() for p in model.parameters() if p.requires_grad))


@register_proxy("flops", needs_data=False, is_cost=True, paper="Abdelfattah et al. 2021 (baseline)")
def flops(model: nn.Module, ctx: ScoringContext) -> float:
    """FLOPs of one forward pass for a single input, counted by ``torch.utils.flop_counter`` (eval mode)."""
    if fast_paths_enabled():
        exact = analytic_flops(model)
        if exact is not None:
            return exact
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(forward_input(torch.zeros(1, *ctx.input_shape), model))
    return float(counter.get_total_flops())
